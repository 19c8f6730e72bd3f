"""Language-model plumbing: loading (offline model, clear errors), harvesting into a cache,
CE loss recovered with an SAE spliced in, and the linear read of a latent's output."""
import numpy as np
import pytest
import torch

from helpers import lm
from helpers.sae import SAE, SAEConfig


@pytest.fixture(scope="module")
def model():
    return lm.load_model(lm.OFFLINE_MODEL, device="cpu")


def test_missing_offline_checkpoint_says_how_to_rebuild(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA", str(tmp_path))
    (tmp_path / "tiny_lm").mkdir()
    with pytest.raises(FileNotFoundError, match="python -m helpers.tiny_lm"):
        lm.load_model(lm.OFFLINE_MODEL)


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ValueError, match="Could not load model"):
        lm.load_model("no-such-org/no-such-model-for-this-course", offline=True)


def test_offline_model_is_a_one_layer_gpt2_with_mlp_hooks(model):
    assert model.cfg.n_layers == 1 and model.cfg.d_mlp == 4 * model.cfg.d_model, (
        f"expected the shipped 1-layer GPT-2 with a 4x MLP, got {model.cfg.n_layers} layers, d_mlp {model.cfg.d_mlp}")
    names = set(model.hook_dict)
    for hook in lm.mlp_hooks(0).values():
        assert hook in names, f"TransformerBridge has no hook {hook}; MLP hooks found: {[n for n in names if 'mlp' in n]}"
    toks = lm.corpus_token_windows(model, 512, seq_len=64)
    loss = float(model(toks[:4], return_type="loss"))
    assert loss < 6.0, f"the trained model should predict its corpus far better than chance (ln 4096 = 8.3), got {loss:.2f}"


def test_harvest_shapes_cache_reuse_and_invalidation(model, tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    first = lm.harvest(model, 1024, seq_len=64, batch_size=4, progress=False)
    assert not first.from_cache
    assert first.tokens.shape == (16, 64) and (first.tokens[:, 0] == model.tokenizer.bos_token_id).all()
    assert first.acts["post"].shape == (1024, model.cfg.d_mlp) and first.acts["out"].shape == (1024, model.cfg.d_model)
    # the cached rows are the model's own activations for those tokens
    got = {}
    model.run_with_hooks(torch.as_tensor(first.tokens[:1], dtype=torch.long), return_type=None,
                         fwd_hooks=[(lm.mlp_hooks(0)["post"], lambda x, hook: got.setdefault("p", x.detach()))])
    assert np.allclose(first.acts["post"][:64], got["p"][0].numpy(), atol=1e-5), "cached activations differ from a fresh forward"
    again = lm.harvest(model, 1024, seq_len=64, batch_size=4, progress=False)
    assert again.from_cache and again.folder == first.folder, "the same request should reuse the cache"
    assert isinstance(again.acts["post"], np.memmap), "cached activations should be memory-mapped, not read into RAM"
    other = lm.harvest(model, 2048, seq_len=64, batch_size=4, progress=False)
    assert not other.from_cache and other.folder != first.folder, "a different token budget is a different cache entry"
    assert not list(tmp_path.rglob("*.partial")), "a finished harvest must not leave a partial folder"
    with pytest.raises(ValueError, match="unknown activation kind"):
        lm.harvest(model, 1024, kinds=("resid",), progress=False)


def _identity_sae(d):
    """ReLU(x) - ReLU(-x) = x: a 2d-latent SAE that reconstructs any input exactly."""
    sae = SAE(SAEConfig(d_in=d, d_sae=2 * d, l1_coeffs=(0.0,)), device="cpu")
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1)[None])
        sae.b_enc.zero_()
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0)[None])
    return sae


def test_ce_recovered_is_one_for_a_perfect_sae_and_zero_for_a_silent_one(model):
    toks = lm.corpus_token_windows(model, 256, seq_len=64)
    sae = _identity_sae(model.cfg.d_mlp)
    perfect = lm.ce_with_sae(model, toks, sae)
    assert perfect.zero_ablated > perfect.clean, "deleting the MLP should raise the loss"
    assert perfect.recovered == pytest.approx(1.0, abs=1e-4), f"a perfect reconstruction recovers all the loss: {perfect}"
    with torch.no_grad():
        sae.b_enc.fill_(-1e4)  # no latent ever fires: the reconstruction is 0, like zero-ablation
    silent = lm.ce_with_sae(model, toks, sae)
    assert silent.recovered == pytest.approx(0.0, abs=1e-4), f"an SAE that outputs zeros recovers nothing: {silent}"


def test_residual_effects_are_the_mlp_output_matrix(model):
    W_out = model.original_model.transformer.h[0].mlp.c_proj.weight  # GPT-2 Conv1D: (d_mlp, d_model)
    v = torch.randn(5, model.cfg.d_mlp, generator=torch.Generator().manual_seed(0))
    got = lm.residual_effects(model, v)
    assert torch.allclose(got, v @ W_out.detach(), atol=1e-4), "residual_effects should equal v @ W_out"
