"""The course's CUDA path, run on a CPU-only machine through a virtual CUDA device
(tests/virtual_cuda.py): every tensor a helper puts "on cuda" is tagged, and an op that meets a
CPU tensor where real CUDA would refuse (a CPU batch into a CUDA SAE, CPU token ids into the
model's embedding, ``.numpy()`` of a CUDA tensor, a generator on the other device) raises.

First the tool itself (it must refuse what CUDA refuses and allow what CUDA allows), then each
helper a GPU reader runs: toy and SAE training (every variant), the grids, harvest, the CE
evaluations with their floors, latent statistics, dashboards, ablation and steering. Where a
helper's results are deterministic, they are compared with the same call on the CPU, so a path
that silently went elsewhere would show too. (The virtual device computes with the CPU's kernels
and random streams, so such a comparison shows that both paths do the same work, not that a
real GPU gives the same numbers.)"""
from dataclasses import replace

import numpy as np
import pytest
import torch

from helpers import lm, toy
from helpers.data import GroundTruthConfig, GroundTruthData
from helpers.diagnostics import run_grid
from helpers.sae import SAE, ResampleConfig, SAEConfig, train_sae
from helpers.sae import SAE_CLASSES

from virtual_cuda import VirtualDeviceMismatch, virtual_cuda  # tests/virtual_cuda.py

SMALL = GroundTruthConfig(n_features=24, d=12, seed=0)


@pytest.fixture(autouse=True)
def float32_products_on_the_cpu_too(monkeypatch):
    """A GPU trains with float32 products, a CPU with bfloat16 ones where it has them
    (``SAEConfig.matmul_dtype="auto"``): compared runs use float32 on both sides."""
    from helpers.sae import fused

    monkeypatch.setattr(fused, "cpu_has_native_bf16", lambda: False)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    return tmp_path


def _rows(seed: int = 0):
    """A sample_fn of CPU rows that replays the same batches on every call with the same seed.

    (GroundTruthData draws its bytes differently on a CPU and a GPU, so the CPU/GPU comparisons
    feed both paths the same CPU rows; train_sae moves them to the SAE's device.)"""
    x = GroundTruthData(SMALL, device="cpu").sample(4096)
    g = torch.Generator().manual_seed(seed)
    return lambda n: x[torch.randint(0, len(x), (n,), generator=g)]


def _on_cuda(module) -> list[str]:
    """Names of the module's tensors that are not on the (virtual) GPU."""
    return [n for n, t in [*module.named_parameters(), *module.named_buffers()] if not t.is_cuda]


# --- the tool ------------------------------------------------------------------------------------

@pytest.mark.parametrize("mistake", [
    lambda: torch.zeros(3, device="cuda") + torch.ones(3),                                  # two devices
    lambda: torch.nn.Embedding(10, 4).cuda()(torch.tensor([1, 2])),                          # CPU token ids
    lambda: torch.nn.Linear(3, 2).to("cuda")(torch.ones(5, 3)),                              # CPU batch
    lambda: torch.zeros(3, device="cuda").numpy(),                                           # numpy of CUDA
    lambda: torch.randn(3, device="cuda", generator=torch.Generator().manual_seed(0)),       # CPU generator
    lambda: torch.randn(3, generator=torch.Generator(device="cuda").manual_seed(0)),         # CUDA generator
    lambda: torch.ones(4)[torch.tensor([0, 1], device="cuda")],                              # CUDA index, CPU tensor
    lambda: torch.zeros(4, device="cuda").__setitem__(torch.tensor([0, 2]), torch.ones(2)),    # CPU values, tensor index
    lambda: torch.stack([torch.tensor(1.0, device="cuda"), torch.tensor(2.0)]),              # no scalar exemption
    lambda: torch.tensor(0.0).add_(torch.tensor(1.0, device="cuda")),                         # a CPU in-place target
])
def test_the_tool_refuses_what_cuda_refuses(mistake):
    with virtual_cuda(), pytest.raises((VirtualDeviceMismatch, TypeError), match="cuda"):
        mistake()


def test_the_tool_allows_what_cuda_allows_and_keeps_the_numbers():
    real = (torch.cuda.is_available, torch.Generator, torch.load)
    torch.manual_seed(0)
    lin_cpu = torch.nn.Linear(3, 2)
    x = torch.randn(5, 3)
    with virtual_cuda():
        lin = torch.nn.Linear(3, 2)
        lin.load_state_dict(lin_cpu.state_dict())
        lin.cuda()
        opt = torch.optim.Adam(lin.parameters(), lr=0.1, fused=True)
        xc = x.to("cuda")
        loss = (lin(xc) * torch.tensor(2.0)).pow(2).sum()                   # a 0-dim CPU tensor is fine
        loss.backward()
        opt.step()
        assert lin.weight.is_cuda and lin.weight.grad.is_cuda and xc.device.type == "cuda"
        assert xc[torch.tensor([0, 2])].is_cuda                              # CPU indices into CUDA are fine
        xc[0] = torch.ones(3)                                                # so is copying in
        xc[torch.tensor([1, 2])] = 0.5                                       # and a number by tensor index
        assert float(torch.arange(5.0)[xc.sum(1).argmax()]) >= 0             # a 0-dim CUDA index reads as a number
        buf = torch.empty(5, 3)
        assert buf.copy_(xc) is buf and not buf.is_cuda, "copy_ into a CPU buffer returns that CPU buffer"
        assert not torch.tensor([xc.sum(), xc.max()]).is_cuda, "torch.tensor of numbers is a CPU tensor"
        assert not x.is_cuda and x[0, 0] != 1, "moving to the GPU must copy, not tag the CPU original"
        got = lin.weight.detach().cpu().numpy()
    opt_cpu = torch.optim.Adam(lin_cpu.parameters(), lr=0.1)
    (lin_cpu(x) * 2).pow(2).sum().backward()
    opt_cpu.step()
    np.testing.assert_allclose(got, lin_cpu.weight.detach().numpy(), rtol=1e-6)
    assert (torch.cuda.is_available, torch.Generator, torch.load) == real, "the block must undo its patches"


# --- toy models and SAEs ----------------------------------------------------------------------------

def test_toy_training_and_a_sweep_run_on_the_gpu_path(cache):
    cfg = toy.ToyConfig(n_features=5, d_hidden=2, n_instances=3, steps=30, batch_size=64, device="cuda")
    with virtual_cuda():
        model = toy.ToyModel(cfg)
        assert not _on_cuda(model), f"tensors left on the CPU: {_on_cuda(model)}"
        toy.train(model, progress=False)
        gpu_loss = toy.evaluate(model, n_samples=512, seed=1)
        best = toy.best_of_seeds(cfg, 2, progress=False)
        sweep = toy.sweep(replace(cfg, n_instances=1), (0.1, 1.0), (0.9,), n_seeds=2, progress=False)
        neurons = toy.neuron_sweep(replace(cfg, n_features=6, d_hidden=3), (1.0,), n_seeds=2, progress=False, cache=False)
        pairs = toy.pair_experiment(replace(cfg, n_instances=1, n_features=4), (0.3,), n_seeds=2, progress=False)
    cpu = toy.ToyModel(replace(cfg, device="cpu"))
    toy.train(cpu, progress=False)
    np.testing.assert_allclose(gpu_loss, toy.evaluate(cpu, n_samples=512, seed=1), rtol=1e-5,
                               err_msg="the GPU path must train the same toy models as the CPU path")
    assert np.isfinite(best.loss).all() and sweep is not None and neurons is not None and pairs is not None


@pytest.mark.parametrize("architecture", sorted(SAE_CLASSES))
def test_every_sae_variant_trains_on_the_gpu_path(architecture):
    kw = {"k": 3} if architecture in ("topk", "batchtopk") else {}
    cfg = SAEConfig(d_in=12, d_sae=24, l1_coeffs=(0.1, 1.0), architecture=architecture, steps=40, batch_size=64,
                    log_every=10, dead_window=10, seed=1, decoder_bias=True, **kw)
    if architecture == "standard":
        cfg = replace(cfg, resample=ResampleConfig(every=20))
    with virtual_cuda():
        sae = SAE(cfg)
        assert sae.device.type == "cuda" and not _on_cuda(sae), f"{architecture}: on the CPU: {_on_cuda(sae)}"
        log = train_sae(sae, _rows(), progress=False)
        assert not _on_cuda(sae), f"{architecture}: training left {_on_cuda(sae)} on the CPU"
        gpu = {k: v.detach().cpu().numpy() for k, v in sae.state_dict().items()}
        final = log.final()
    cpu_sae = SAE(cfg, device="cpu")
    train_sae(cpu_sae, _rows(), progress=False)
    for k, v in cpu_sae.state_dict().items():
        np.testing.assert_allclose(gpu[k], v.numpy(), rtol=1e-4, atol=1e-6,
                                   err_msg=f"{architecture}: {k} differs between the GPU and CPU paths")
    assert all(np.isfinite(v).all() for v in final.values())


def test_the_diagnostic_grid_runs_on_the_gpu_path(cache):
    base = SAEConfig(d_in=12, d_sae=12, steps=40, batch_size=64, log_every=10, dead_window=10)
    with virtual_cuda():
        data = GroundTruthData(SMALL, device="cuda")                   # sampled on the GPU
        assert data.sample(8).is_cuda and data.features.is_cuda
        grid = run_grid(data.sample, base, (1, 2), (0.1, 1.0), ground_truth=data.features, keep_saes=True,
                        progress=False)
        assert all(not _on_cuda(s) for s in grid.saes)
        same = run_grid(_rows(), base, (1, 2), (0.1, 1.0), ground_truth=data.features, progress=False)
    truth = GroundTruthData(SMALL, device="cpu").features
    ref = run_grid(_rows(), base, (1, 2), (0.1, 1.0), ground_truth=truth, device="cpu", progress=False)
    for field in ("recon_loss", "l0", "dead", "mmcs_ground_truth", "mmcs_larger"):
        np.testing.assert_allclose(getattr(same, field), getattr(ref, field), rtol=1e-4, atol=1e-6, equal_nan=True,
                                   err_msg=f"the grid's {field} differs between the GPU and CPU paths")


def test_notebook_05_and_06_stacks_train_and_reload_on_the_gpu_path(cache):
    from helpers.beyond import score_sae, train_cached
    from helpers.beyond.choice_grid import choice_grid
    from helpers.beyond.choosing import synthetic_eval
    from helpers.beyond.matryoshka import PerInstanceBatchTopK

    cfg = SAEConfig(d_in=12, d_sae=24, l1_coeffs=(0.0, 0.0), architecture="topk", k=3, steps=40, batch_size=64,
                    log_every=10, dead_window=10)
    with virtual_cuda():
        data = GroundTruthData(SMALL, device="cuda")
        first = train_cached(cfg, data, "virtual-topk", ks=(2, 3))
        again = train_cached(cfg, data, "virtual-topk", ks=(2, 3))          # torch.load onto the GPU
        assert not _on_cuda(again.sae) and again.sae.device.type == "cuda"
        mat = train_cached(replace(cfg, architecture="batchtopk"), data, "virtual-mat", ks=(2, 3),
                           cls=PerInstanceBatchTopK, prefixes=(0.5,))
        scores = score_sae(first.sae, data, n=1024)
        synth = synthetic_eval(mat.sae, data, n=1024)
        grid = choice_grid(data, replace(cfg, architecture="batchtopk", l1_coeffs=(0.0,)), (16, 24), (2, 3),
                           "batchtopk", seeds=1, name="virtual-choice", nth=2, n_eval=1024)
    assert len(scores) == 2 and len(synth) == 2 and np.isfinite(grid.scores["mcc"]).all()
    np.testing.assert_allclose(first.final["l0"], again.final["l0"])


# --- the language model -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gpu_lm(tmp_path_factory):
    """The offline model, a harvest and a two-size grid, all made on the virtual GPU."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COURSE_CACHE", str(tmp_path_factory.mktemp("virtual-lm")))
        with virtual_cuda():
            model = lm.load_model(lm.OFFLINE_MODEL, device="cuda")
            acts = lm.harvest(model, 4096, seq_len=64)
            base = SAEConfig(d_in=model.cfg.d_mlp, d_sae=32, steps=30, batch_size=64, log_every=10, dead_window=10,
                             decoder_bias=True)
            grid = lm.sae_grid(acts, base, (0.5, 1), (0.1, 1.0), reference_size=32, progress=False)
        yield model, acts, grid


def test_the_model_harvest_and_grid_live_on_the_gpu(gpu_lm):
    model, acts, grid = gpu_lm
    with virtual_cuda():
        assert lm.model_device(model).type == "cuda" and not _on_cuda(model), _on_cuda(model)[:3]
        assert all(not _on_cuda(s) for s in grid.saes)
    assert acts.acts["post"].shape == (4096, model.cfg.d_mlp)


def test_a_batch_of_cpu_tokens_into_the_gpu_model_is_caught(gpu_lm):
    """What notebook 04 once did (CPU windows into model.run_with_hooks): the bridge does not move
    token ids, so on a GPU the embedding meets CPU indices. The virtual device must catch it."""
    model, acts, _ = gpu_lm
    held = torch.as_tensor(acts.held_out_tokens(0.1)[:2])
    with virtual_cuda(), pytest.raises(VirtualDeviceMismatch, match="embedding"):
        model.run_with_hooks(held, return_type="loss")


def test_evaluations_with_their_floors_run_on_the_gpu_path(gpu_lm):
    model, acts, grid = gpu_lm
    sae, tokens = grid.saes[0], acts.held_out_tokens(0.1)[:4]
    with virtual_cuda():
        splice = lm.ce_with_sae(model, tokens, sae)
        evals = lm.evaluate_saes(model, sae, acts, n_rows=1024, n_seq=4, holdout=0.1)
        floors = lm.context_free_baselines(model, acts, tokens)
        kl = lm.kl_with_sae(model, tokens, sae)
        hooks = lm.context_free_hooks(model, acts)
        looked_up = lm.hooked_loss(model, torch.as_tensor(tokens), hooks["mean"])
    assert splice.clean < splice.zero_ablated and np.isfinite(splice.with_sae) and kl > 0
    assert len(evals) == 2 and np.isfinite([e.fvu for e in evals]).all()
    assert np.isfinite([floors.mean_ablated, floors.token_lookup, looked_up]).all()


def test_features_dashboards_ablation_and_steering_run_on_the_gpu_path(gpu_lm):
    model, acts, grid = gpu_lm
    sae, post, tokens = grid.saes[1], acts.acts["post"], acts.tokens
    with virtual_cuda():
        lat = lm.latent_activations(sae, post)
        stats = lm.latent_stats(lat)
        effects = lm.logit_effects(model, lm.residual_effects(model, sae.W_dec[0][:3]))
        geo = lm.pair_geometry(model, sae, lat, n_latents=16)
        table = lm.latent_table(model, sae, lat, tokens)
        units = lm.latent_units(sae, [0, 1, 2])
        boards = lm.dashboards(units, post, tokens, model=model)
        neuron_boards = lm.dashboards(lm.neuron_units([0, 1], model.cfg.d_mlp), post, tokens, model=model)
        firing = lm.prompt_latents(model, units, "def f(x): return x")
        ablated = lm.next_token_change(model, ["import os"], lm.ablate_hook(units, 0))
        steered = lm.next_token_change(model, ["import os"], lm.steer_hook(units, 1, 5.0))
    assert len(effects) == 3 and len(boards) == 3 and len(neuron_boards) == 2 and firing and table is not None
    assert stats is not None and geo is not None
    assert steered[0].loss_after != steered[0].loss_before and len(ablated) == 1, "steering by 5 must change the loss"


def test_the_grid_plan_fits_the_card_and_matches_the_memory_the_grid_takes(gpu_lm):
    """lm.plan_grid reads the card's memory, drops the sizes that would not fit, and its estimate is
    what the grid then holds on the device (the virtual device counts every tensor made through torch;
    autograd's buffers inside backward are not seen, so this checks the parts the estimate lists)."""
    from helpers.lm.memory import HEADROOM, grid_memory

    model, acts, _ = gpu_lm
    d, alphas = model.cfg.d_mlp, (0.1, 0.3, 1.0)
    params = sum(p.numel() for p in model.parameters())
    fits_2x = grid_memory(d, [d // 2, d, 2 * d], len(alphas), len(acts.rows(0.0)), 128, params).total
    card = int(fits_2x / HEADROOM * 1.05)                      # room for 0.5x-2x, not for 4x
    base = SAEConfig(d_in=d, d_sae=64, steps=40, batch_size=128, log_every=20, dead_window=20, decoder_bias=True)
    with virtual_cuda(total_memory=card):
        kept, plan, text = lm.plan_grid(acts, model, (0.5, 1, 2, 4), len(alphas), base.steps, batch_size=128)
        assert kept == (0.5, 1.0, 2.0) and "dropped 4x" in text, text
        torch.cuda.reset_peak_memory_stats()
        held_before = torch.cuda.memory_allocated()             # the model's weights, among others
        grid = lm.sae_grid(acts, base, kept, alphas, reference_size=d, progress=False)
        peak = torch.cuda.max_memory_allocated()
    assert len(grid.saes) == 3
    measured = peak - held_before + plan.model
    assert measured <= card * HEADROOM, f"the grid took {measured / 2**20:.1f} MiB, over the plan's budget"
    assert abs(measured - plan.total) <= 0.1 * plan.total, (
        f"the plan estimated {plan.total / 2**20:.1f} MiB at the peak, the grid held {measured / 2**20:.1f} MiB: "
        "update lm.grid_memory's parts")
