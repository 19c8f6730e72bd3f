"""Stacked SAEs: shapes, the unit-norm decoder, the loss, the hand-written gradients, training
in a stack vs alone, SAELens-layout save/load, and the report's L1 Goldilocks zone."""
import json

import pytest
import torch

from helpers.data import GroundTruthConfig, GroundTruthData
from helpers.device import sizes
from helpers.metrics import mmcs
from helpers.sae import SAE, SAE_LENS_VERSION, SAEConfig, load_sae, save_sae, train_sae


def _random_sae(decoder_bias=False, divide=True, l1=(0.1, 1.0, 3.0), seed=0, batch_size=256) -> SAE:
    """A 16 -> 32 SAE with non-trivial weights: decoder rows off unit norm, non-zero biases."""
    sae = SAE(SAEConfig(d_in=16, d_sae=32, l1_coeffs=l1, decoder_bias=decoder_bias,
                        l1_divide_by_d_sae=divide, seed=seed, batch_size=batch_size), device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(sae.W_dec.shape[:2] + (1,), generator=g) + 0.5)
        sae.b_enc.normal_(0, 0.1, generator=g)
        if decoder_bias:
            sae.b_dec.normal_(0, 1, generator=g)
    return sae


def test_shapes_of_encode_decode_and_forward():
    sae = _random_sae()
    x = torch.randn(5, 16)
    out = sae(x)
    assert out.acts.shape == (3, 5, 32), f"acts should be (inst, batch, d_sae), got {tuple(out.acts.shape)}"
    assert out.x_hat.shape == (3, 5, 16), f"x_hat should be (inst, batch, d_in), got {tuple(out.x_hat.shape)}"
    assert out.recon_loss.shape == out.l1_loss.shape == (3,), "losses are per instance"
    assert out.loss.shape == (), "the total loss is a scalar"
    assert sae(torch.randn(3, 5, 16)).acts.shape == (3, 5, 32), "a per-instance batch (inst, batch, d_in) works too"
    assert (out.acts >= 0).all(), "latents come out of a ReLU"
    with pytest.raises(ValueError, match="expected activations"):
        sae(torch.randn(5, 17))


def test_decoder_rows_are_unit_norm_whatever_w_dec_holds():
    sae = _random_sae()
    norms = sae.decoder_directions().norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5), "decoder directions must be unit vectors"
    fresh = SAE(SAEConfig(d_in=16, d_sae=32), device="cpu")
    assert torch.allclose(fresh.W_dec.norm(dim=-1), torch.ones(1, 32), atol=1e-5), "init: unit decoder rows"
    assert torch.allclose(fresh.W_enc, fresh.W_dec.transpose(1, 2)), "init: the encoder is the decoder's transpose"


def test_l1_divided_by_dictionary_size_is_j_times_smaller():
    x = torch.randn(64, 16)
    a, b = _random_sae(divide=True), _random_sae(divide=False)
    out_a, out_b = a(x), b(x)
    assert torch.allclose(out_a.recon_loss, out_b.recon_loss), "the L1 switch must not touch the reconstruction"
    assert torch.allclose(out_a.l1_loss * 32, out_b.l1_loss, rtol=1e-5), (
        "with l1_divide_by_d_sae the L1 term is (alpha/J)||c||_1: J=32 times smaller than alpha||c||_1"
    )
    manual = (out_b.acts.sum(-1).mean(-1) * torch.tensor([0.1, 1.0, 3.0]))
    assert torch.allclose(out_b.l1_loss, manual, rtol=1e-5), "L1 term = alpha * mean over batch of sum_j c_j"


def test_reconstruction_loss_is_squared_error_over_d_in():
    sae = _random_sae()
    x = torch.randn(8, 16)
    out = sae(x)
    expect = ((out.x_hat - x) ** 2).sum(-1).mean(-1) / 16
    assert torch.allclose(out.recon_loss, expect, rtol=1e-5), "recon loss = (1/h)||x - x_hat||^2, batch mean"


@pytest.mark.parametrize("decoder_bias", [False, True])
@pytest.mark.parametrize("divide", [True, False])
def test_hand_written_gradients_equal_autograd(decoder_bias, divide):
    sae = _random_sae(decoder_bias=decoder_bias, divide=divide)
    x = torch.randn(40, 16)
    target = x + 0.1 * torch.randn(40, 16)  # a denoising target, so input and target differ
    out = sae(x, target=target)
    out.loss.backward()
    expected = {n: p.grad.clone() for n, p in sae.named_parameters() if p.requires_grad}
    for p in sae.parameters():
        p.grad = None
    stats = sae.compute_grads(x, target=target)
    for name, grad in expected.items():
        got = getattr(sae, name).grad
        assert got is not None, f"compute_grads left {name}.grad empty"
        err = float((got - grad).abs().max() / grad.abs().max())
        assert err < 1e-5, f"hand-written d(loss)/d({name}) differs from autograd by {err:.2e} (relative)"
    assert torch.allclose(stats.recon_loss, out.recon_loss.detach(), rtol=1e-5)
    assert torch.allclose(stats.l1_loss, out.l1_loss.detach(), rtol=1e-5)
    assert torch.allclose(stats.l0, (out.acts > 0).float().sum(-1).mean(-1))
    assert torch.equal(stats.fired, (out.acts > 0).any(1)), "fired: latent active on any example"


def test_one_training_step_equals_an_autograd_adam_step():
    x = GroundTruthData(GroundTruthConfig(n_features=32, d=16), device="cpu").sample(64)
    ours, ref = (_random_sae(decoder_bias=True, batch_size=64) for _ in range(2))
    # Reference: the textbook step (autograd, torch's plain Adam); ours: one step of train_sae.
    with torch.no_grad():
        ref.b_dec.copy_(x.mean(0).expand_as(ref.b_dec))  # train_sae starts b_dec at the data mean
    opt = torch.optim.Adam([p for p in ref.parameters() if p.requires_grad], lr=ref.cfg.lr, foreach=False)
    ref(x).loss.backward()
    opt.step()
    train_sae(ours, lambda n: x[:n], steps=1, progress=False, prefetch=1)
    for name, p in ref.named_parameters():
        diff = float((getattr(ours, name) - p).abs().max())
        assert diff < 1e-6, f"after one step {name} differs from the autograd + Adam reference by {diff:.2e}"


def test_a_stacked_instance_trains_exactly_like_the_same_sae_alone():
    cfg = GroundTruthConfig(n_features=64, d=32)
    stack = SAE(SAEConfig(d_in=32, d_sae=64, l1_coeffs=(0.03, 0.1, 0.3), batch_size=128, seed=5), device="cpu")
    alone = SAE(SAEConfig(d_in=32, d_sae=64, l1_coeffs=(0.1,), batch_size=128, seed=6), device="cpu")
    assert torch.equal(stack.W_dec[1], alone.W_dec[0]), "instance i of a stack must start like seed + i alone"
    log_stack = train_sae(stack, GroundTruthData(cfg, device="cpu").sample, steps=300, progress=False)
    log_alone = train_sae(alone, GroundTruthData(cfg, device="cpu").sample, steps=300, progress=False)
    one = stack.select(1)
    for name in ("W_enc", "b_enc", "W_dec"):
        diff = float((getattr(one, name) - getattr(alone, name)).abs().max())
        assert diff < 1e-4, f"{name} of stacked instance 1 differs from the same SAE trained alone by {diff:.2e}"
    assert abs(log_stack.recon_loss[-1, 1] - log_alone.recon_loss[-1, 0]) < 1e-5 * max(1.0, log_alone.recon_loss[-1, 0])


def test_training_log_has_one_row_per_window_and_counts_dead_latents():
    data = GroundTruthData(GroundTruthConfig(n_features=32, d=16), device="cpu")
    sae = SAE(SAEConfig(d_in=16, d_sae=64, l1_coeffs=(0.01, 100.0), lr=1e-2, log_every=20, dead_window=30), device="cpu")
    log = train_sae(sae, data.sample, steps=100, progress=False)
    assert log.steps.tolist() == [20, 40, 60, 80, 100], f"log rows at the end of each window, got {log.steps}"
    assert log.recon_loss.shape == log.l1_loss.shape == log.l0.shape == log.dead.shape == (5, 2)
    assert log.steps_since_fired.shape == (2, 64) and log.examples == 100 * 256
    final = log.final()
    assert final["dead"][1] > final["dead"][0], "a huge L1 penalty (100) should kill more latents than 0.01"
    assert final["l0"][1] < final["l0"][0], "a huge L1 penalty should leave fewer active latents"


def test_decoder_bias_starts_at_the_data_mean_and_bad_sample_fn_is_caught():
    x = torch.randn(512, 8) + 3.0
    sae = SAE(SAEConfig(d_in=8, d_sae=16, decoder_bias=True), device="cpu")
    train_sae(sae, lambda n: x[:n], steps=0, progress=False)
    train_sae(sae, lambda n: x[:n], steps=1, progress=False, prefetch=2)
    assert (sae.b_dec - x.mean(0)).abs().max() < 0.05, "b_dec should start at the mean of the first batches"
    with pytest.raises(ValueError, match="sample_fn must return"):
        train_sae(SAE(SAEConfig(d_in=8, d_sae=16), device="cpu"), lambda n: torch.randn(n, 9), steps=1, progress=False)


@pytest.mark.parametrize("kwargs", [dict(d_sae=0), dict(l1_coeffs=()), dict(l1_coeffs=(-0.1,)), dict(lr=0.0)])
def test_bad_sae_configs_are_clear_errors(kwargs):
    with pytest.raises(ValueError):
        SAEConfig(**{"d_in": 8, "d_sae": 16, **kwargs})


# --- saving and loading ---------------------------------------------------------------
@pytest.mark.parametrize("decoder_bias", [False, True])
def test_save_load_round_trip_gives_identical_outputs(tmp_path, decoder_bias):
    sae = _random_sae(decoder_bias=decoder_bias, l1=(0.1, 0.3))
    paths = save_sae(sae, tmp_path / "stack")
    assert [p.name for p in paths] == ["instance_00_l1_0.1", "instance_01_l1_0.3"], f"got {[p.name for p in paths]}"
    x = torch.randn(20, 16)
    for i, path in enumerate(paths):
        loaded = load_sae(path, device="cpu")
        assert loaded.cfg.l1_coeffs == (sae.cfg.l1_coeffs[i],) and loaded.cfg.decoder_bias == decoder_bias
        want, got = sae.select(i)(x), loaded(x)
        assert torch.allclose(got.acts, want.acts, atol=1e-6), f"instance {i}: latents change after save/load"
        assert torch.allclose(got.x_hat, want.x_hat, atol=1e-6), f"instance {i}: reconstruction changes after save/load"
    one = sae.select(0)
    save_sae(one, tmp_path / "one")
    assert (tmp_path / "one" / "cfg.json").is_file(), "a one-instance SAE saves into the folder itself"


def test_cfg_json_is_what_saelens_expects(tmp_path):
    for decoder_bias in (False, True):
        sae = SAE(SAEConfig(d_in=16, d_sae=32, decoder_bias=decoder_bias), device="cpu")
        cfg = json.loads((save_sae(sae, tmp_path / str(decoder_bias))[0] / "cfg.json").read_text())
        assert cfg["architecture"] == "standard" and cfg["d_in"] == 16 and cfg["d_sae"] == 32
        assert cfg["dtype"] == "float32" and cfg["normalize_activations"] == "none"
        assert cfg["apply_b_dec_to_input"] is decoder_bias, (
            "apply_b_dec_to_input must say whether our encoder subtracts b_dec (decoder_bias)"
        )
        assert cfg["metadata"]["sae_lens_version"] == SAE_LENS_VERSION


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No saved SAE"):
        load_sae(tmp_path / "nowhere")
    save_sae(_random_sae(l1=(0.1, 0.3)), tmp_path / "stack")
    with pytest.raises(FileNotFoundError, match="instance folders"):
        load_sae(tmp_path / "stack")
    folder = save_sae(_random_sae(l1=(0.1,)), tmp_path / "one")[0]
    cfg = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(json.dumps({**cfg, "d_sae": 33}))
    with pytest.raises(ValueError, match="should have shape"):
        load_sae(folder)
    (folder / "cfg.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_sae(folder)
    (folder / "cfg.json").write_text(json.dumps({**cfg, "architecture": "topk"}))
    with pytest.raises(ValueError, match="not a standard"):
        load_sae(folder)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    (folder / "sae_weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="safetensors"):
        load_sae(folder)


def test_loading_a_file_with_non_unit_decoder_rows_keeps_the_reconstruction(tmp_path):
    # Most SAELens SAEs do not keep unit decoder rows; we fold the norms into the latents.
    from safetensors.torch import load_file, save_file

    sae = _random_sae(l1=(0.1,), decoder_bias=True)
    folder = save_sae(sae, tmp_path / "sae")[0]
    t = load_file(str(folder / "sae_weights.safetensors"))
    scale = torch.rand(32) + 0.5
    t["W_dec"] = t["W_dec"] * scale[:, None]
    t["W_enc"], t["b_enc"] = t["W_enc"] / scale, t["b_enc"] / scale  # the same SAE, another parametrisation
    save_file(t, str(folder / "sae_weights.safetensors"))
    x = torch.randn(20, 16)
    assert torch.allclose(load_sae(folder)(x).x_hat, sae(x).x_hat, atol=1e-5), "reconstruction must not change"


def test_saelens_reads_our_files(tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    for decoder_bias in (False, True):
        sae = _random_sae(l1=(0.1,), decoder_bias=decoder_bias)
        folder = save_sae(sae, tmp_path / str(decoder_bias))[0]
        theirs = sae_lens.SAE.load_from_disk(str(folder), device="cpu")
        x = torch.randn(50, 16)
        ours = sae(x)
        with torch.no_grad():
            acts = theirs.encode(x)
            recon = theirs.decode(acts)
        assert torch.allclose(acts, ours.acts[0], atol=1e-5), f"SAELens latents differ (decoder_bias={decoder_bias})"
        assert torch.allclose(recon, ours.x_hat[0], atol=1e-5), f"SAELens reconstruction differs (decoder_bias={decoder_bias})"


# --- the report's result: the L1 Goldilocks zone -----------------------------------------
def test_l1_goldilocks_zone_recovers_the_ground_truth():
    """J = G at ci scale (G=128, h=64): MMCS >= 0.95 inside the zone, clearly lower far outside.

    Measured at this size (3000 steps, lr 1e-3): about 0.39 at alpha 1e-3, 0.52 at 0.01,
    0.72 at 0.1, 0.98 at 0.3, 0.94 at 1, 0.38 at 10. 0.1 needs ~10k steps to pass 0.95.
    """
    s = sizes("ci")
    data = GroundTruthData(GroundTruthConfig(n_features=s.gt_features, d=s.gt_dim), device="cpu")
    l1 = (0.001, 0.3, 10.0)
    sae = SAE(SAEConfig(d_in=s.gt_dim, d_sae=s.gt_features, l1_coeffs=l1, batch_size=s.sae_batch,
                        steps=s.sae_steps), device="cpu")
    train_sae(sae, data.sample, progress=False)
    low, good, high = mmcs(sae.decoder_directions().detach(), data.features).tolist()
    assert good >= 0.95, f"MMCS at alpha=0.3 (inside the Goldilocks zone) is {good:.3f}, the report gets >= 0.95"
    assert low < good - 0.3, f"alpha=1e-3 (too little sparsity) should recover far less: MMCS {low:.3f} vs {good:.3f}"
    assert high < good - 0.3, f"alpha=10 (too much sparsity) should recover far less: MMCS {high:.3f} vs {good:.3f}"
