"""Stacked SAEs: shapes, the unit-norm decoder, each variant's loss against a naive reference,
training in a stack vs alone, NaN detection, SAELens-layout save/load (and SAELens reading our
files), and the report's L1 Goldilocks zone."""
import json
from dataclasses import asdict, replace
import math
import tempfile

import numpy as np
import pytest
import torch

from helpers.data import GroundTruthConfig, GroundTruthData
from helpers.course.sizes import sizes
from helpers.metrics import mmcs
from helpers.sae import (SAE, AuxKConfig, BatchTopKSAE, JumpReLUConfig, JumpReLUSAE, NonFiniteLossError, SAEConfig,
                         TopKSAE, load_sae, save_sae, train_sae)

VARIANTS = {"standard": {}, "topk": dict(k=4), "batchtopk": dict(k=4.0),
            "jumprelu": dict(variant=JumpReLUConfig(init_threshold=0.05))}


def _random_sae(decoder_bias=False, divide=True, l1=(0.1, 1.0, 3.0), seed=0, batch_size=256,
                architecture="standard", matmul_dtype="float32", cls=SAE) -> SAE:
    """A 16 -> 32 SAE with non-trivial weights: decoder rows off unit norm, non-zero biases
    (and, for the variants, thresholds that differ per latent). float32 products unless asked."""
    sae = cls(SAEConfig(d_in=16, d_sae=32, l1_coeffs=l1, decoder_bias=decoder_bias, l1_divide_by_d_sae=divide,
                        seed=seed, batch_size=batch_size, architecture=architecture, matmul_dtype=matmul_dtype,
                        **VARIANTS[architecture]), device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(sae.W_dec.shape[:2] + (1,), generator=g) + 0.5)
        sae.b_enc.normal_(0, 0.1, generator=g)
        if decoder_bias:
            sae.b_dec.normal_(0, 1, generator=g)
        if architecture == "jumprelu":
            sae.log_threshold.copy_(torch.empty_like(sae.log_threshold).uniform_(-4, -0.5, generator=g))
        if architecture == "batchtopk":
            sae.topk_threshold.copy_(torch.rand(sae.cfg.n_instances, generator=g) * 0.3)
    return sae


def _naive_loss(sae: SAE, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(inst,) the loss written out one instance and one formula at a time, no batching tricks."""
    cfg, losses = sae.cfg, []
    for i, alpha in enumerate(cfg.l1_coeffs):
        W_enc, b_enc, W_dec, b_dec = (getattr(sae, n)[i].detach() for n in ("W_enc", "b_enc", "W_dec", "b_dec"))
        pre = (x - b_dec if cfg.decoder_bias else x) @ W_enc + b_enc                 # (B, J)
        if cfg.architecture == "standard":
            acts = torch.clamp(pre, min=0)
        elif cfg.architecture == "topk":                                           # k largest of each row
            keep = torch.zeros_like(pre, dtype=torch.bool)
            for b in range(pre.shape[0]):
                keep[b, torch.argsort(pre[b], descending=True)[: int(cfg.k)]] = True
            acts = torch.where(keep, torch.clamp(pre, min=0), 0.0)
        elif cfg.architecture == "batchtopk":                                      # k * B largest of the batch
            flat = torch.clamp(pre, min=0).flatten()
            keep = torch.zeros_like(flat, dtype=torch.bool)
            keep[torch.argsort(flat, descending=True)[: int(cfg.k * pre.shape[0])]] = True
            acts = torch.where(keep, flat, 0.0).reshape(pre.shape)
        else:                                                                       # jumprelu
            theta = sae.log_threshold[i].detach().exp()
            acts = torch.where(pre > theta, pre, 0.0)
        D = W_dec / torch.linalg.vector_norm(W_dec, dim=1, keepdim=True)
        x_hat = acts @ D + b_dec
        recon = ((x_hat - target) ** 2).sum(1).mean() / cfg.d_in
        weight = alpha / cfg.d_sae if cfg.l1_divide_by_d_sae else alpha
        if cfg.architecture == "standard":
            sparsity = weight * acts.abs().sum(1).mean()
        elif cfg.architecture == "jumprelu":
            sparsity = weight * (acts != 0).float().sum(1).mean()
        else:
            sparsity = torch.tensor(0.0)
        losses.append(recon + sparsity)
    return torch.stack(losses)


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


@pytest.mark.parametrize("architecture", list(VARIANTS))
@pytest.mark.parametrize("decoder_bias", [False, True])
def test_each_variants_loss_equals_a_naive_per_instance_reference(architecture, decoder_bias):
    sae = _random_sae(decoder_bias=decoder_bias, architecture=architecture)
    assert type(sae).__name__ == {"standard": "SAE", "topk": "TopKSAE", "batchtopk": "BatchTopKSAE",
                                  "jumprelu": "JumpReLUSAE"}[architecture], "SAE(cfg) must build the class cfg names"
    x = torch.rand(40, 16)
    target = x + 0.1 * torch.randn(40, 16)  # a denoising target, so input and target differ
    got = sae.loss(x, target=target)
    want = _naive_loss(sae, x, target)
    assert got.shape == (3,), f"loss must be one number per instance, got shape {tuple(got.shape)}"
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-7), (
        f"{architecture} (decoder_bias={decoder_bias}): loss {got.tolist()} differs from the naive "
        f"per-instance reference {want.tolist()}"
    )


def test_topk_trains_keeps_exactly_k_latents_and_round_trips(tmp_path):
    data = GroundTruthData(GroundTruthConfig(n_features=32, d=16), device="cpu")
    sae = SAE(SAEConfig(d_in=16, d_sae=32, l1_coeffs=(0.0, 0.0), architecture="topk", k=3, lr=3e-3,
                        log_every=50), device="cpu")
    log = train_sae(sae, data.sample, steps=300, progress=False)
    first, last = log.recon_loss[0], log.recon_loss[-1]
    assert (last < 0.7 * first).all(), f"TopK reconstruction loss should fall in training: {first} -> {last}"
    acts = sae.encode(data.sample(500))
    per_example = (acts > 0).sum(-1)
    assert (per_example <= 3).all() and per_example.float().mean() > 2.9, (
        f"a TopK SAE with k=3 must keep at most 3 latents per example (and almost always 3), "
        f"got L0 from {int(per_example.min())} to {int(per_example.max())}"
    )
    assert abs(float(log.l0[-1].mean()) - 3) < 0.1, f"the log's L0 should be k=3, got {log.l0[-1]}"
    path = save_sae(sae, tmp_path / "topk")[1]
    loaded = load_sae(path, device="cpu")
    x = data.sample(64)
    assert isinstance(loaded, TopKSAE) and loaded.cfg.k == 3, "a saved TopK SAE must load as TopKSAE with k=3"
    assert torch.allclose(loaded(x).x_hat, sae.select(1)(x).x_hat, atol=1e-6), "TopK reconstruction changes after save/load"


def test_jumprelu_threshold_learns_through_the_straight_through_estimator():
    sae = _random_sae(architecture="jumprelu", l1=(0.0, 1.0, 10.0))
    x = torch.rand(128, 16)
    sae.loss(x).sum().backward()
    grad = sae.log_threshold.grad
    assert grad is not None and torch.isfinite(grad).all(), "log_threshold must receive a finite gradient"
    pre = sae.pre_acts(x).detach()                                                   # (I, B, J)
    theta = sae.threshold.detach()[:, None, :]
    near = ((pre - theta).abs() < sae.cfg.variant.bandwidth / 2).any(1)              # (I, J)
    assert (grad[near] != 0).any(), "latents with pre-activations near their threshold must get threshold gradient"
    assert (grad[~near] == 0).all(), "the estimator passes gradient only within bandwidth/2 of the threshold"
    # More L0 penalty pushes thresholds up: the L0 term's gradient on log theta is negative.
    assert grad[2][near[2]].mean() < grad[0][near[0]].mean(), (
        "with alpha=10 the threshold gradient should point further towards raising theta than with alpha=0"
    )


def test_batchtopk_learns_a_threshold_and_encodes_with_it_in_eval_mode():
    data = GroundTruthData(GroundTruthConfig(n_features=32, d=16), device="cpu")
    sae = SAE(SAEConfig(d_in=16, d_sae=32, architecture="batchtopk", k=3.0), device="cpu")
    assert isinstance(sae, BatchTopKSAE), f"SAE(cfg) with architecture='batchtopk' built {type(sae).__name__}"
    train_sae(sae, data.sample, steps=400, progress=False)
    theta = float(sae.topk_threshold[0])
    assert theta > 0, "training should move the BatchTopK threshold above 0"
    x = data.sample(2000)
    in_batch = float((sae.train().encode(x) > 0).sum(-1).float().mean())
    per_example = float((sae.eval().encode(x) > 0).sum(-1).float().mean())
    assert abs(in_batch - 3) < 1e-3, f"in training mode the batch keeps k=3 latents per example on average, got {in_batch}"
    assert 1.5 < per_example < 6, f"the learned threshold should give an L0 near k=3 one example at a time, got {per_example:.2f}"


def test_nan_in_one_batch_stops_training_naming_instance_and_step():
    data = GroundTruthData(GroundTruthConfig(n_features=32, d=16), device="cpu")
    calls = []

    def sample(n):
        calls.append(n)
        x = data.sample(n)
        if len(calls) == 15:  # the 15th batch (prefetch=1: one batch per call)
            x[3, 2] = float("nan")
        return x

    sae = SAE(SAEConfig(d_in=16, d_sae=32, l1_coeffs=(0.1, 0.3), log_every=10), device="cpu")
    with pytest.raises(NonFiniteLossError) as err:
        train_sae(sae, sample, steps=100, progress=False, prefetch=1)
    msg = str(err.value)
    assert "step 20" in msg, f"the NaN at step 15 should be reported at the next logging step (20): {msg}"
    assert "0 (alpha=0.1)" in msg and "1 (alpha=0.3)" in msg, f"the message must name each instance and its alpha: {msg}"


@pytest.mark.parametrize("d_sae", [1, 2, 16])
def test_the_encoder_starts_as_a_copy_of_the_decoder_never_the_same_memory(d_sae):
    """With one latent the transposed decoder is already contiguous; a view there would make W_enc and
    W_dec one tensor, so every Adam step moved it twice (found as a CPU/GPU difference at J = 1)."""
    sae = SAE(SAEConfig(d_in=8, d_sae=d_sae, l1_coeffs=(0.1, 1.0)), device="cpu")
    assert torch.equal(sae.W_enc, sae.W_dec.transpose(1, 2)), "the encoder must start as the decoder's transpose"
    assert sae.W_enc.untyped_storage().data_ptr() != sae.W_dec.untyped_storage().data_ptr(), (
        f"d_sae={d_sae}: W_enc shares W_dec's memory; build it with a copy (clone), not .contiguous()")
    assert sae.W_enc.is_contiguous()


def test_an_sae_built_on_meta_has_every_tensor_on_meta():
    for architecture, kwargs in VARIANTS.items():
        sae = SAE(SAEConfig(d_in=8, d_sae=16, l1_coeffs=(0.1, 1.0), architecture=architecture, **kwargs), device="meta")
        off = [n for n, t in [*sae.named_parameters(), *sae.named_buffers()] if t.device.type != "meta"]
        assert not off, f"{architecture}: {off} were created off the requested device (a CUDA run would fail here)"
        assert sae.encode(torch.empty(4, 8, device="meta")).shape == (2, 4, 16)


class _PlainSAE(SAE):
    """The standard SAE through autograd and its plain lines: overriding a step turns the fused one off."""

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return super().activation(pre)


@pytest.mark.parametrize("decoder_bias", [False, True])
@pytest.mark.parametrize("divide", [True, False])
@pytest.mark.parametrize("stacked_input", [False, True])
def test_the_fused_step_equals_autograd_through_the_plain_lines(decoder_bias, divide, stacked_input):
    fused = _random_sae(decoder_bias=decoder_bias, divide=divide, batch_size=64)
    plain = _random_sae(decoder_bias=decoder_bias, divide=divide, batch_size=64, cls=_PlainSAE)
    assert plain._fused_step_applies is not None and not plain._fused_step_applies(torch.zeros(1, 16), torch.zeros(1, 16))
    assert fused._fused_step_applies(torch.zeros(1, 16), torch.zeros(1, 16)), "the standard SAE must train through the fused step"
    g = torch.Generator().manual_seed(1)
    x = torch.rand(64, 16, generator=g)
    x = x.expand(3, 64, 16).clone() if stacked_input else x
    target = x + 0.1 * torch.randn(x.shape, generator=g)                 # a denoising target: x_in != target
    for sae in (fused, plain):
        out = sae(x, target)
        # every output carries gradient, as a reader's own loss on x_hat or c would
        (out.loss + 0.01 * out.x_hat.pow(2).sum() + 0.001 * out.acts.sum()).backward()
    for name in ("x_hat", "acts", "recon_loss", "l1_loss"):
        with torch.no_grad():
            a, b = getattr(fused(x, target), name), getattr(plain(x, target), name)
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), f"{name} of the fused step differs from the plain forward"
    for name, p in plain.named_parameters():
        q = getattr(fused, name)
        if p.grad is None:
            assert q.grad is None, f"{name}: the fused step gives a gradient the plain path does not"
            continue
        rel = float((q.grad - p.grad).abs().max() / p.grad.abs().max())
        assert rel < 1e-5, f"gradient of {name}: the fused backward differs from autograd by {rel:.1e} (relative to its largest entry)"


def test_bfloat16_products_change_the_gradient_little_and_only_in_training():
    from helpers.sae.fused import step_matmul_dtype

    fp32, bf16 = _random_sae(), _random_sae()
    x = torch.rand(256, 16, generator=torch.Generator().manual_seed(2))
    fp32(x).loss.backward()
    with step_matmul_dtype(torch.bfloat16):
        bf16(x).loss.backward()
    for name in ("W_enc", "b_enc", "W_dec"):
        a, b = getattr(fp32, name).grad, getattr(bf16, name).grad
        rel = float((a - b).norm() / a.norm())
        assert 1e-7 < rel < 2e-2, (f"gradient of {name} with bfloat16 products is {rel:.1e} off float32's (relative norm): "
                                   "expected a small rounding difference (bfloat16 keeps 8 bits), neither none nor large")
    # outside train_sae's block every forward pass is float32, whatever the config says
    auto = _random_sae(matmul_dtype="bfloat16")
    assert torch.equal(fp32(x).x_hat, auto(x).x_hat), "outside training the products must stay float32"


@pytest.mark.parametrize("matmul_dtype, want", [("float32", torch.float32), ("bfloat16", torch.bfloat16)])
def test_train_sae_multiplies_in_the_configured_dtype(monkeypatch, matmul_dtype, want):
    from helpers.sae import fused

    seen = []
    real = fused.StandardSAEStep.forward

    def spy(ctx, *args):
        seen.append(args[-1])
        return real(ctx, *args)

    monkeypatch.setattr(fused.StandardSAEStep, "forward", staticmethod(spy))
    train_sae(_random_sae(matmul_dtype=matmul_dtype), lambda n: torch.rand(n, 16), steps=3, progress=False)
    assert seen == [want] * 3, f"train_sae with matmul_dtype={matmul_dtype!r} multiplied in {seen}, not {want}"
    assert fused.current_step_dtype() == torch.float32, "train_sae must leave float32 products behind it"


def test_auto_matmul_dtype_is_bfloat16_only_on_a_cpu_that_has_it(monkeypatch):
    from helpers.sae import fused

    for native, want in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(fused, "cpu_has_native_bf16", lambda: native)
        assert fused.resolve_matmul_dtype("auto", torch.device("cpu")) == want
        assert fused.resolve_matmul_dtype("auto", torch.device("cuda")) == torch.float32, "GPUs keep float32"
        assert fused.resolve_matmul_dtype("float32", torch.device("cpu")) == torch.float32
    with pytest.raises(ValueError, match="matmul_dtype"):
        SAEConfig(d_in=4, d_sae=8, matmul_dtype="fp16")


@pytest.mark.parametrize("architecture", ["topk", "batchtopk", "jumprelu"])
def test_variants_train_through_autograd_not_the_fused_step(monkeypatch, architecture):
    from helpers.sae import model

    def refuse(*args):
        raise AssertionError(f"{architecture} went through the standard SAE's fused step")

    monkeypatch.setattr(model.StandardSAEStep, "apply", refuse)
    sae = _random_sae(architecture=architecture)
    sae.loss(torch.rand(8, 16)).sum().backward()
    assert sae.W_enc.grad is not None


def test_one_training_step_equals_an_autograd_adam_step():
    x = GroundTruthData(GroundTruthConfig(n_features=32, d=16), device="cpu").sample(64)
    ours, ref = _random_sae(decoder_bias=True, batch_size=64), _random_sae(decoder_bias=True, batch_size=64, cls=_PlainSAE)
    # Reference: the textbook step (autograd, torch's plain Adam); ours: one step of train_sae.
    with torch.no_grad():
        ref.b_dec.copy_(x.mean(0).expand_as(ref.b_dec))  # train_sae starts b_dec at the data mean
    opt = torch.optim.Adam([p for p in ref.parameters() if p.requires_grad], lr=ref.cfg.lr, foreach=False)
    ref(x).loss.backward()
    opt.step()
    train_sae(ours, lambda n: x[:n], steps=1, progress=False, prefetch=1)
    for name, p in ref.named_parameters():
        diff = float((getattr(ours, name) - p).detach().abs().max())
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
        diff = float((getattr(one, name) - getattr(alone, name)).detach().abs().max())
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


@pytest.mark.parametrize("kwargs, field", [
    (dict(d_sae=0), "d_sae"), (dict(l1_coeffs=()), "l1_coeffs"), (dict(l1_coeffs=(-0.1,)), "l1_coeffs"),
    (dict(l1_coeffs=(0.1, float("nan"))), "l1_coeffs"), (dict(l1_coeffs=(math.inf,)), "l1_coeffs"),
    (dict(lr=0.0), "lr"), (dict(lr=float("nan")), "lr"), (dict(input_noise_std=-1.0), "input_noise_std"),
    (dict(input_noise_std=math.inf), "input_noise_std"), (dict(dead_window=0), "dead_window"),
    (dict(log_every=0), "log_every"), (dict(architecture="gated"), "architecture"),
    (dict(architecture="topk"), "k"), (dict(architecture="topk", k=2.5), "k"), (dict(architecture="batchtopk", k=99), "k"),
    (dict(lr_schedule="exponential"), "lr_schedule"),
    (dict(architecture="jumprelu", variant={"bandwidth": 0.0}), "JumpReLUConfig.bandwidth"),
    (dict(variant=JumpReLUConfig()), "variant"), (dict(architecture="topk", k=2, resample={"every": 5}), "resample"),
])
def test_bad_sae_configs_are_clear_errors_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"\b{field}\b"):
        SAEConfig(**{"d_in": 8, "d_sae": 16, **kwargs})
    with pytest.raises(ValueError, match="TopKSAE needs cfg.architecture='topk'"):
        TopKSAE(SAEConfig(d_in=8, d_sae=16), device="cpu")


@pytest.mark.parametrize("kwargs, error, field", [
    (dict(d_in=True), TypeError, "d_in"), (dict(d_sae=16.0), TypeError, "d_sae"), (dict(d_in=-4), ValueError, "d_in"),
    (dict(batch_size=False), TypeError, "batch_size"), (dict(steps=-1), ValueError, "steps"),
    (dict(steps=10.5), TypeError, "steps"), (dict(seed=True), TypeError, "seed"),
    (dict(log_every=2.0), TypeError, "log_every"), (dict(resample={"every": -1}), ValueError, "resample.every"),
    (dict(resample={"every": 10, "dead_after": 2.5}), TypeError, "resample.dead_after"),
])
def test_sae_config_sizes_must_be_whole_numbers_not_bools(kwargs, error, field):
    """A bool is an int to Python: SAEConfig(d_in=True) built a one-dimensional SAE without a word."""
    with pytest.raises(error, match=rf"\b{field}\b"):
        SAEConfig(**{"d_in": 8, "d_sae": 16, **kwargs})
    assert SAEConfig(d_in=np.int64(8), d_sae=16).d_in == 8, "numpy integers are whole numbers too"


def test_unknown_device_names_the_argument():
    with pytest.raises(ValueError, match=r"device='gpu' is not a torch device: use 'cpu', 'cuda'.*leave it None"):
        SAE(SAEConfig(d_in=8, d_sae=16), device="gpu")
    assert SAE(SAEConfig(d_in=8, d_sae=16), device="meta").device.type == "meta", "'meta' still builds shapes only"


def test_final_of_a_log_with_no_rows_says_why():
    x = torch.randn(64, 8)
    log = train_sae(SAE(SAEConfig(d_in=8, d_sae=16), device="cpu"), lambda n: x[:n], steps=0, progress=False)
    with pytest.raises(ValueError, match=r"no rows: the run trained 0 steps.*steps >= 1"):
        log.final()


def test_empty_batches_and_prefetch_0_are_not_blamed_on_the_lr():
    """Both trained on empty batches, whose NaN loss read 'a NaN in the data or too large an lr'."""
    sae = SAE(SAEConfig(d_in=8, d_sae=16), device="cpu")
    with pytest.raises(ValueError, match=r"sample_fn\(\d+\) returned an empty batch"):
        train_sae(sae, lambda n: torch.zeros(0, 8), steps=3, progress=False)
    with pytest.raises(ValueError, match=r"prefetch must be a positive integer .*got 0"):
        train_sae(sae, lambda n: torch.randn(n, 8), steps=3, progress=False, prefetch=0)
    with pytest.raises(TypeError, match="steps"):
        train_sae(sae, lambda n: torch.randn(n, 8), steps=2.5, progress=False)


# --- saving and loading ---------------------------------------------------------------
@pytest.mark.parametrize("architecture", list(VARIANTS))
@pytest.mark.parametrize("decoder_bias", [False, True])
def test_save_load_round_trip_gives_identical_outputs(tmp_path, decoder_bias, architecture):
    sae = _random_sae(decoder_bias=decoder_bias, l1=(0.1, 0.3), architecture=architecture).eval()
    paths = save_sae(sae, tmp_path / "stack")
    assert [p.name for p in paths] == ["instance_00_l1_0.1", "instance_01_l1_0.3"], f"got {[p.name for p in paths]}"
    x = torch.rand(20, 16) * 2 - 0.5
    for i, path in enumerate(paths):
        loaded = load_sae(path, device="cpu").eval()
        kind = JumpReLUSAE if architecture == "batchtopk" else type(sae)  # BatchTopK is saved as a JumpReLU
        assert type(loaded) is kind, f"{architecture} loads as {type(loaded).__name__}, expected {kind.__name__}"
        assert loaded.cfg.l1_coeffs == (sae.cfg.l1_coeffs[i],) and loaded.cfg.decoder_bias == decoder_bias
        want, got = sae.select(i)(x), loaded(x)
        assert (want.acts > 0).any(), "the test input must switch some latents on"
        assert torch.allclose(got.acts, want.acts, atol=1e-6), f"instance {i}: latents change after save/load"
        assert torch.allclose(got.x_hat, want.x_hat, atol=1e-6), f"instance {i}: reconstruction changes after save/load"
    one = sae.select(0)
    save_sae(one, tmp_path / "one")
    assert (tmp_path / "one" / "cfg.json").is_file(), "a one-instance SAE saves into the folder itself"


def test_auxk_is_saved_with_the_config_and_loads_back(tmp_path):
    auxk = AuxKConfig(coeff=0.25, k=6, dead_window=7)
    sae = SAE(SAEConfig(d_in=16, d_sae=32, l1_coeffs=(0.0, 0.0), architecture="topk", k=4, auxk=auxk), device="cpu")
    assert SAEConfig(**asdict(sae.cfg)) == sae.cfg, "asdict(cfg) (auxk a dict) must build the same config again"
    paths = save_sae(sae, tmp_path / "topk")
    assert json.loads((paths[0] / "cfg.json").read_text())["course"]["auxk"] == asdict(auxk)
    loaded = load_sae(paths[1], device="cpu")
    assert type(loaded) is TopKSAE and loaded.cfg.auxk == auxk, f"a saved TopK's AuxK settings must load back, got {loaded.cfg.auxk}"
    assert loaded.cfg == sae.select(1).cfg
    plain = load_sae(save_sae(SAE(replace(sae.cfg, auxk=None), device="cpu").select(0), tmp_path / "plain")[0])
    assert plain.cfg.auxk is None, "a TopK without AuxK loads without it"
    btk = SAE(SAEConfig(d_in=16, d_sae=32, l1_coeffs=(0.0,), architecture="batchtopk", k=4.0, auxk=auxk), device="cpu")
    as_jumprelu = load_sae(save_sae(btk, tmp_path / "btk")[0], device="cpu")
    assert type(as_jumprelu) is JumpReLUSAE and as_jumprelu.cfg.auxk is None, \
        "a BatchTopK loads as the JumpReLU it was saved as, which has no AuxK loss"


@pytest.mark.parametrize("architecture", ["standard", "jumprelu"])
def test_auxk_is_refused_where_the_architecture_has_no_auxk_loss(architecture):
    with pytest.raises(ValueError, match=rf"auxk .*not architecture={architecture!r}: pass auxk=None"):
        SAEConfig(d_in=8, d_sae=16, architecture=architecture, auxk=AuxKConfig())
    with pytest.raises(TypeError, match=r"auxk must be an AuxKConfig or None, got 0.03.*pass e.g. auxk=AuxKConfig"):
        SAEConfig(d_in=8, d_sae=16, architecture="topk", k=2, auxk=0.03)
    with pytest.raises(TypeError, match=r"auxk has no field 'aux_k'"):
        SAEConfig(d_in=8, d_sae=16, architecture="topk", k=2, auxk={"aux_k": 3})
    with pytest.raises(ValueError, match=r"auxk.k defaults to d_in // 2, which is 0 for d_in=1"):
        SAEConfig(d_in=1, d_sae=16, architecture="topk", k=2, auxk=AuxKConfig())


# The fields SAELens 6's inference configs define (sae_lens/saes/sae.py SAEConfig, topk_sae.py
# TopKSAEConfig): SAELens drops keys it does not know without a word, so a misspelt key would
# silently fall back to SAELens' default. "course" is ours, ignored by SAELens.
SAELENS_FIELDS = {"d_in", "d_sae", "dtype", "device", "apply_b_dec_to_input", "normalize_activations",
                  "reshape_activations", "metadata", "architecture"}
SAELENS_EXTRA = {"standard": set(), "topk": {"k", "rescale_acts_by_decoder_norm"}, "jumprelu": set()}


@pytest.mark.parametrize("architecture", list(VARIANTS))
def test_cfg_json_is_what_saelens_expects(tmp_path, architecture):
    for decoder_bias in (False, True):
        sae = _random_sae(decoder_bias=decoder_bias, l1=(0.1,), architecture=architecture)
        cfg = json.loads((save_sae(sae, tmp_path / str(decoder_bias), hook_name="blocks.0.mlp.hook_post")[0]
                          / "cfg.json").read_text())
        saved_as = "jumprelu" if architecture == "batchtopk" else architecture  # as SAELens saves BatchTopK
        assert cfg["architecture"] == saved_as, f"{architecture} must be saved as {saved_as!r}, got {cfg['architecture']!r}"
        extra = set(cfg) - SAELENS_FIELDS - SAELENS_EXTRA[saved_as] - {"course"}
        assert not extra, f"cfg.json has keys SAELens 6 would ignore: {sorted(extra)}"
        assert cfg["d_in"] == 16 and cfg["d_sae"] == 32 and cfg["dtype"] == "float32"
        assert cfg["normalize_activations"] == "none" and cfg["reshape_activations"] == "none"
        assert cfg["apply_b_dec_to_input"] is decoder_bias, (
            "apply_b_dec_to_input must say whether our encoder subtracts b_dec (decoder_bias)"
        )
        assert cfg["metadata"]["hook_name"] == "blocks.0.mlp.hook_post", "save_sae(hook_name=...) goes to metadata.hook_name"
        if architecture == "topk":
            assert cfg["k"] == 4 and cfg["rescale_acts_by_decoder_norm"] is False


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
    (folder / "cfg.json").write_text(json.dumps({**cfg, "architecture": "gated"}))
    with pytest.raises(ValueError, match="architecture 'gated'"):
        load_sae(folder)
    (folder / "cfg.json").write_text(json.dumps({**cfg, "architecture": "topk"}))
    with pytest.raises(ValueError, match="should have shape|k must be set"):
        load_sae(folder)  # no k in a standard SAE's cfg
    for setting, value in (("normalize_activations", "layer_norm"), ("reshape_activations", "hook_z")):
        (folder / "cfg.json").write_text(json.dumps({**cfg, setting: value}))
        with pytest.raises(ValueError, match=setting):
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


def test_a_topk_file_whose_ranking_we_cannot_reproduce_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = save_sae(_random_sae(l1=(0.1,), architecture="topk"), tmp_path / "topk")[0]
    t = load_file(str(folder / "sae_weights.safetensors"))
    t["W_dec"] = t["W_dec"] * (torch.rand(32, 1) + 0.5)
    save_file(t, str(folder / "sae_weights.safetensors"))
    with pytest.raises(ValueError, match="rescale_acts_by_decoder_norm"):
        load_sae(folder)  # TopK on raw pre-activations, decoder rows of other norms: not our SAE
    cfg = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(json.dumps({**cfg, "rescale_acts_by_decoder_norm": True}))
    assert isinstance(load_sae(folder), TopKSAE), "TopK ranking pre x ||W_dec|| is ours once the norms are folded"


@pytest.mark.parametrize("architecture", list(VARIANTS))
def test_saelens_reads_our_files(tmp_path, architecture):
    sae_lens = pytest.importorskip("sae_lens")
    for decoder_bias in (False, True):
        sae = _random_sae(l1=(0.1,), decoder_bias=decoder_bias, architecture=architecture).eval()
        folder = save_sae(sae, tmp_path / str(decoder_bias))[0]
        theirs = sae_lens.SAE.load_from_disk(str(folder), device="cpu")
        want_class = {"standard": "StandardSAE", "topk": "TopKSAE", "batchtopk": "JumpReLUSAE", "jumprelu": "JumpReLUSAE"}
        assert type(theirs).__name__ == want_class[architecture], f"SAELens loaded {type(theirs).__name__}"
        x = torch.rand(50, 16) * 2 - 0.5
        ours = sae(x)
        with torch.no_grad():
            acts = theirs.encode(x)
            recon = theirs.decode(acts)
        assert (ours.acts > 0).any(), "the test input must switch some latents on"
        assert torch.allclose(acts, ours.acts[0], atol=1e-5), f"{architecture}: SAELens latents differ (decoder_bias={decoder_bias})"
        assert torch.allclose(recon, ours.x_hat[0], atol=1e-5), f"{architecture}: SAELens reconstruction differs (decoder_bias={decoder_bias})"
        again = load_sae(folder, device="cpu").eval()
        assert torch.allclose(again(x).x_hat, ours.x_hat, atol=1e-5), f"{architecture}: our own reload differs"


# --- the report's result: the L1 Goldilocks zone -----------------------------------------
def test_l1_goldilocks_zone_recovers_the_ground_truth():
    """J = G at ci scale (G=128, h=64): MMCS >= 0.95 inside the zone, clearly lower far outside.

    Measured at this size (3000 steps, lr 1e-3): about 0.39 at alpha 1e-3, 0.52 at 0.01,
    0.72 at 0.1, 0.98 at 0.3, 0.94 at 1, 0.38 at 10. 0.1 needs ~10k steps to pass 0.95.
    """
    s = sizes("ci")
    data = GroundTruthData(GroundTruthConfig(n_features=s.sae.gt_features, d=s.sae.gt_dim), device="cpu")
    l1 = (0.001, 0.3, 10.0)
    sae = SAE(SAEConfig(d_in=s.sae.gt_dim, d_sae=s.sae.gt_features, l1_coeffs=l1, batch_size=s.sae.batch,
                        steps=s.sae.steps), device="cpu")
    train_sae(sae, data.sample, progress=False)
    low, good, high = mmcs(sae.decoder_directions().detach(), data.features).tolist()
    assert good >= 0.95, f"MMCS at alpha=0.3 (inside the Goldilocks zone) is {good:.3f}, the report gets >= 0.95"
    assert low < good - 0.3, f"alpha=1e-3 (too little sparsity) should recover far less: MMCS {low:.3f} vs {good:.3f}"
    assert high < good - 0.3, f"alpha=10 (too much sparsity) should recover far less: MMCS {high:.3f} vs {good:.3f}"


def test_renorm_decoder_keeps_stored_rows_unit_and_changes_only_their_length():
    """With ``renorm_decoder`` the stored rows are unit length after every step; the forward
    pass (which divides by the length anyway) is the same as without the reset."""
    data = GroundTruthData(GroundTruthConfig(n_features=32, d=16, seed=0), device="cpu")
    cfg = SAEConfig(d_in=16, d_sae=32, l1_coeffs=(0.1, 1.0), lr=1e-2, steps=30, renorm_decoder=True)
    sae = SAE(cfg, device="cpu")
    train_sae(sae, data.sample, progress=False)
    norms = sae.W_dec.detach().norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5), (
        f"renorm_decoder=True should leave unit rows after training, got lengths {norms.min():.4f}-{norms.max():.4f}")
    plain = SAE(replace(cfg, renorm_decoder=False), device="cpu")
    train_sae(plain, data.sample, progress=False)
    grown = plain.W_dec.detach().norm(dim=-1)
    assert grown.mean() > 1.001, "without the reset Adam should lengthen the stored rows (this test's premise)"
    x = data.sample(64)
    before = sae(x).x_hat
    with torch.no_grad():
        sae.W_dec.mul_(3.0)  # a longer stored row is the same direction: the output must not change
    assert torch.allclose(sae(x).x_hat, before, atol=1e-5), "decoder rows are used at unit length on the forward pass"
    sae.renormalize_decoder_()
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(2, 32), atol=1e-5)


def test_toy_recipe_is_the_grid_recipe_of_each_scale():
    """The one place the toy SAE recipe comes from: at ci the constant 3e-3 recipe the stored
    outputs were made with; at laptop the faster warmup-cosine recipe with the decoder reset."""
    from helpers.diagnostics import toy_recipe

    ci = toy_recipe("ci")
    assert (ci.lr, ci.lr_schedule, ci.renorm_decoder, ci.steps, ci.d_in, ci.d_sae) == (3e-3, "constant", False, 4000, 64, 128)
    lap = toy_recipe("laptop", l1_coeffs=(0.3,))
    assert (lap.lr, lap.lr_schedule, lap.renorm_decoder, lap.d_in, lap.d_sae, lap.l1_coeffs) == (
        1e-2, "warmup_cosine", True, 256, 512, (0.3,))


def test_a_new_variant_is_one_class_its_config_and_one_registry_line():
    """A variant is a subclass, the frozen dataclass of its own settings, and register_sae_class;
    then SAEConfig checks and fills in its settings (``variant``), and SAE(cfg), save_sae and load_sae
    handle it with them; a second class under a registered name is refused instead of replacing it."""
    from dataclasses import dataclass
    from helpers.sae import SAE_CLASSES, register_sae_class

    @dataclass(frozen=True)
    class LeakyConfig:  # the variant's own settings
        slope: float = 0.01
        """How much of a negative pre-activation leaks through."""

    class LeakyReLUSAE(SAE):  # a toy variant: negative pre-activations leak through
        architecture = saved_as = "leaky-test"
        variant_config = LeakyConfig

        def activation(self, pre):
            return torch.nn.functional.leaky_relu(pre, self.cfg.variant.slope)

    try:
        register_sae_class(LeakyReLUSAE)
        assert SAEConfig(d_in=8, d_sae=16, architecture="leaky-test").variant == LeakyConfig(), \
            "variant=None must become the variant's defaults"
        cfg = SAEConfig(d_in=8, d_sae=16, architecture="leaky-test", variant=LeakyConfig(slope=0.2))
        assert SAEConfig(**asdict(cfg)) == cfg, "asdict(cfg) (the variant a dict) must build the same config again"
        sae = SAE(cfg, device="cpu")
        assert type(sae) is LeakyReLUSAE, "SAE(cfg) must build the registered class"
        x = torch.randn(5, 8)
        pre = sae.pre_acts(x)
        assert torch.equal(sae.encode(x), torch.where(pre > 0, pre, 0.2 * pre)), "the variant's own setting must be used"
        with tempfile.TemporaryDirectory() as d:
            saved = save_sae(sae, d)[0]
            assert json.loads((saved / "cfg.json").read_text())["course"]["variant"] == {"slope": 0.2}
            back = load_sae(d, device="cpu")
        assert type(back) is LeakyReLUSAE and back.cfg == cfg and back.cfg.variant == LeakyConfig(slope=0.2), \
            f"the variant's settings must load back, got {back.cfg.variant}"
        assert torch.equal(back.encode(x), sae.encode(x))
        with pytest.raises(TypeError, match=r"variant must be a LeakyConfig or None, got JumpReLUConfig.*variant=LeakyConfig\(\)"):
            SAEConfig(d_in=8, d_sae=16, architecture="leaky-test", variant=JumpReLUConfig())
        with pytest.raises(TypeError, match=r"variant has no field 'slop': its fields are slope"):
            SAEConfig(d_in=8, d_sae=16, architecture="leaky-test", variant={"slop": 0.2})
        with pytest.raises(ValueError, match=r"architecture='standard' has none.*pass variant=None"):
            SAEConfig(d_in=8, d_sae=16, variant=LeakyConfig())

        class OtherTopK(TopKSAE):  # defined for an experiment: must not change what SAE(cfg) builds
            pass
        with pytest.raises(ValueError, match="already registered"):
            register_sae_class(OtherTopK)
        assert type(SAE(SAEConfig(d_in=8, d_sae=16, architecture="topk", k=2), device="cpu")) is TopKSAE
    finally:
        SAE_CLASSES.pop("leaky-test", None)
    with pytest.raises(ValueError, match="architecture must be one of"):
        SAEConfig(d_in=8, d_sae=16, architecture="leaky-test")


def test_jumprelu_settings_are_its_variant_config_and_a_batchtopk_file_loads_with_the_defaults(tmp_path):
    jump = JumpReLUConfig(init_threshold=0.03, bandwidth=0.1)
    sae = SAE(SAEConfig(d_in=16, d_sae=32, architecture="jumprelu", variant=jump), device="cpu")
    assert torch.allclose(sae.threshold, torch.full_like(sae.threshold, 0.03)), "init_threshold starts every theta"
    assert load_sae(save_sae(sae, tmp_path / "jump")[0], device="cpu").cfg.variant == jump
    btk = SAE(SAEConfig(d_in=16, d_sae=32, architecture="batchtopk", k=4.0), device="cpu")
    assert btk.cfg.variant is None, "an architecture without settings of its own has variant None"
    assert load_sae(save_sae(btk, tmp_path / "btk")[0], device="cpu").cfg.variant == JumpReLUConfig(), \
        "a BatchTopK saved as a JumpReLU loads with JumpReLU's defaults"


def test_a_run_that_diverges_without_nan_is_stopped_with_a_message():
    from helpers.diagnostics import run_grid
    from helpers.sae.train import DivergedError

    gen = torch.Generator().manual_seed(0)
    data = lambda n: torch.randn(n, 16, generator=gen).relu()  # noqa: E731
    cfg = SAEConfig(d_in=16, d_sae=32, steps=100, dead_window=50, lr=30.0, log_every=50)
    with pytest.raises(DivergedError, match="diverged.*smaller lr"):
        train_sae(SAE(cfg), data, progress=False)
    ok = train_sae(SAE(replace(cfg, lr=1e-3)), data, progress=False)
    assert ok.recon_loss.size and (ok.recon_loss == ok.recon_loss).all(), "a sane learning rate must train without a divergence error"
    with pytest.warns(RuntimeWarning, match="grew from .* training diverged"):
        grid = run_grid(data, replace(cfg, d_sae=16), (32,), (0.1, 1.0), progress=False)
    assert grid.diverged.all() and (grid.recon_loss != grid.recon_loss).all(), "a diverged column's cells must be NaN, not numbers"


def test_on_log_sees_the_sae_at_every_logged_step():
    cfg = SAEConfig(d_in=8, d_sae=16, steps=100, log_every=25, dead_window=10)
    gen = torch.Generator().manual_seed(0)
    seen = []
    log = train_sae(SAE(cfg), lambda n: torch.randn(n, 8, generator=gen), progress=False,
                    on_log=lambda step, sae: seen.append((step, float(sae.W_dec.detach().norm()))))
    assert [s for s, _ in seen] == list(log.steps) == [25, 50, 75, 100], f"on_log called at {seen}"
    assert len({w for _, w in seen}) == 4, "on_log must see the SAE as it trains, not a copy made once"
