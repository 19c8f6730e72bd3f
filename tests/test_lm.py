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
    post_only = lm.harvest(model, 1024, kinds=("post",), seq_len=64, batch_size=4, progress=False)
    assert not post_only.from_cache and post_only.folder != first.folder, "different hooks are a different cache entry"
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


def test_evaluate_saes_counts_match_a_hand_computation(model, tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    acts = lm.harvest(model, 1024, kinds=("post",), seq_len=64, batch_size=8, progress=False)
    sae = _identity_sae(model.cfg.d_mlp)
    (ev,) = lm.evaluate_saes(model, sae, acts, n_rows=512, n_seq=4)
    rows = np.arange(1024 - 512, 1024)
    x = np.asarray(acts.acts["post"][rows[rows % 64 != 0]])         # the rows it evaluates on
    pos, neg = (x > 0), (x < 0)                                       # latent i fires on x_i > 0, latent d+i on x_i < 0
    assert ev.l0 == pytest.approx((pos | neg).sum(1).mean(), rel=1e-5), f"L0 should count nonzero coordinates: {ev.l0}"
    assert ev.dead == int((~pos.any(0)).sum() + (~neg.any(0)).sum()), "dead = latents that never fire"
    assert ev.dense == int((pos.mean(0) > 0.1).sum() + (neg.mean(0) > 0.1).sum()), "dense = latents on > 10% of tokens"
    assert ev.fvu < 1e-8, f"an exact reconstruction leaves no variance unexplained: {ev.fvu}"
    assert ev.ce.recovered == pytest.approx(1.0, abs=1e-4)


def test_geometry_table_sorts_pairs_into_the_four_cells():
    geo = lm.PairGeometry(latents=np.arange(4), lift=np.array([0.0, 0.0, 2.0, 2.0, 0.5]),
                          output_cos=np.array([0.9, 0.1, 0.9, 0.1, 0.2]),
                          decoder_cos=np.array([-0.5, -0.3, 0.6, 0.0, -0.1]))
    table = lm.geometry_table(geo, similar_quantile=0.7)  # the two 0.9 pairs are "similar"
    assert table[True, False] == (pytest.approx(-0.5), 1) and table[True, True] == (pytest.approx(0.6), 1)
    assert table[False, True] == (pytest.approx(0.0), 1), "co-occurring, different output: the 4th pair"
    assert table[False, False] == (pytest.approx(-0.2), 2), "never together, different output: pairs 2 and 5"
