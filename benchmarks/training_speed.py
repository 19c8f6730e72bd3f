"""How fast the toy-model trainer is, against the simple ways to write it and against ARENA's code.

The work (ARENA's own sweep size): 1024 toy models, 5 features -> 2 hidden dimensions, batch
1024, ``--steps`` (300) Adam steps, densities 50^-linspace(0, 1) over the models, importance
0.9^i. Timed on the same machine, alternating, ``--repeats`` times (medians reported):

1. ``toy_loop``: a plain per-model loop, the first thing one would write: one model at a time,
   ``nn.Parameter``s, autograd, ``torch.optim.Adam`` defaults. ``--loop-models`` models are
   timed and the total extrapolated linearly to 1024 (``toy_loop_extrapolated`` says so).
2. ``toy_ours``: ``toy.train`` (stacked autograd + fused Adam), logging and NaN checks included.
3. ``toy_compiled``: the same with ``ToyConfig(compile=True)``; compile seconds reported apart
   (first run minus a second run on the same model); skipped with the reason if it fails here.
4. ``toy_fast``: the same trainer with the loss's backward written by hand (``HandToyLoss``
   below, a ``torch.autograd.Function`` behind ``ToyModel.loss``). It was the package's fast
   path; it is kept here only as a reference, and ``toy_fast_over_autograd`` and
   ``phase_fast_over_autograd`` (below 1.5x) are why the package trains through autograd alone.
5. ``toy_arena``: ARENA's toy-model solution (``benchmarks/peers/arena_toy.py``), ``optimize``.

Every contender runs under the trainer's CPU thread policy (``toy.cpu_threads``). Ratios are
examples/s ratios: ``toy_ours_over_arena`` = arena seconds / ours, ``toy_fast_over_autograd``
= ours / fast. ``phase_*``: the fast-path decision on notebook 01's laptop phase diagrams
(2 features in 1-D and 3 in 2-D, 28^2 cells x 4 seeds each, batch 256), ``--phase-steps``
steps of each, autograd vs hand-written backward.

If ``benchmarks/_speed_sae.py`` defines ``bench_sae()``, its results join the same JSON line.
Run: ``python benchmarks/training_speed.py [--quick] [--skip-sae]``; prints one JSON line last.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/peers, run from anywhere
try:  # ARENA's code is not redistributed here (no licence): see benchmarks/peers/README.md
    from peers.arena_toy import ToyModel as ArenaToyModel, ToyModelConfig as ArenaConfig  # noqa: E402
    ARENA_MISSING = None
except ImportError as err:
    ARENA_MISSING = f"benchmarks/peers/arena_toy.py not found ({err}); see benchmarks/peers/README.md"

from helpers import toy  # noqa: E402
from helpers.device import get_device  # noqa: E402

N_MODELS, N_FEATURES, D_HIDDEN, BATCH, LR = 1024, 5, 2, 1024, 1e-3


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _density() -> torch.Tensor:
    return 50 ** -torch.linspace(0, 1, N_MODELS)  # (models,), as ARENA's sweep


def _importance() -> torch.Tensor:
    return 0.9 ** torch.arange(N_FEATURES, dtype=torch.float32)  # (features,)


def _cfg(steps: int, dev: torch.device, **kw) -> toy.ToyConfig:
    return toy.ToyConfig(n_features=N_FEATURES, d_hidden=D_HIDDEN, n_instances=N_MODELS,
                         feature_probability=_density()[:, None], importance=_importance(), steps=steps,
                         batch_size=BATCH, lr=LR, device=str(dev), eval_samples=BATCH, **kw)


# ---- the former fast path, for reference: same loss, backward written by hand -----------------
def _mm(A: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """A (I, k, l) @ X (I, l, B) -> (I, k, B); one-row A as a multiply-and-sum."""
    if A.shape[1] == 1:
        return (A.transpose(1, 2) * X).sum(1, keepdim=True)
    return torch.bmm(A, X)


def _mm_t(H: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """H (I, k, B) @ X (I, l, B)^T -> (I, k, l): a sum over the batch."""
    if H.shape[1] == 1:
        return (H * X).sum(-1)[:, None, :]
    return torch.bmm(H, X.transpose(1, 2))


class HandToyLoss(torch.autograd.Function):
    """Per-instance toy loss (inst,) of W (inst, m, n), b (inst, n), x (inst, batch, n)."""

    @staticmethod
    def forward(ctx, W, b, x, importance, readout: str):
        xt = x.transpose(1, 2)  # (I, n, B): the sampler's own layout, batch last
        h = _mm(W, xt)  # (I, m, B)
        if W.shape[1] == 1:  # an outer product
            z = torch.addcmul(b[..., None], W.transpose(1, 2), h)
        else:
            z = torch.baddbmm(b[..., None], W.transpose(1, 2), h)  # (I, n, B)
        if readout == "softmax":
            t = xt / xt.sum(1, keepdim=True).clamp_min(1e-12)
            loss = -(importance * (t * torch.log_softmax(z, 1)).mean(-1)).sum(1)
            e = None
        else:
            e = (z.clamp_min(0) if readout == "relu" else z) - xt  # (I, n, B): the error, reused by backward
            loss = (importance * e.square().mean(-1)).sum(1)
        ctx.readout = readout
        ctx.save_for_backward(W, xt, h, z, e, importance)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        W, xt, h, z, e, imp = ctx.saved_tensors
        B = xt.shape[-1]
        if ctx.readout == "softmax":
            # d/dz of -sum_i I_i t_i log p_i is p * sum_i(I_i t_i) - I t, all divided by B.
            ct = xt / xt.sum(1, keepdim=True).clamp_min(1e-12) * imp[..., None]
            d = torch.softmax(z, 1).mul_(ct.sum(1, keepdim=True)).sub_(ct)  # (I, n, B)
            scale = grad_loss[:, None] / B * torch.ones_like(imp)  # (I, n)
        else:
            # relu: no gradient where the ReLU is off (there e = -x, so the mask must be applied)
            d = torch.ops.aten.threshold_backward(e, z, 0.0) if ctx.readout == "relu" else e
            scale = imp * (2.0 / B) * grad_loss[:, None]
        scale3 = scale[:, None, :]  # (I, 1, n)
        # z = W^T h + b with h = W x, so dL/dW = h d^T + (W d) x^T (d scaled per feature).
        g = _mm(W * scale3, d)  # (I, m, B)
        gW = _mm_t(h, d).mul_(scale3).add_(_mm_t(g, xt))
        gb = d.sum(-1).mul_(scale)
        return gW, gb, None, None, None


class HandToyModel(toy.ToyModel):
    """``toy.ToyModel`` whose loss backpropagates through ``HandToyLoss``."""

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return HandToyLoss.apply(self.W, self.b, x, self.importance, self.cfg.readout)


def check_hand_loss() -> None:
    """The reference must be right before it is timed: loss and gradients equal autograd's."""
    model = toy.ToyModel(toy.ToyConfig(n_features=5, d_hidden=2, n_instances=3, feature_probability=0.3, seed=1))
    x = model.sample(64, torch.Generator().manual_seed(0))
    W, b = model.W.detach().clone().requires_grad_(), model.b.detach().clone().requires_grad_()
    ref, fast = toy.toy_loss(W, b, x, model.importance, "relu"), HandToyLoss.apply(W, b, x, model.importance, "relu")
    g_ref = torch.autograd.grad(ref.sum(), (W, b))
    g_fast = torch.autograd.grad(fast.sum(), (W, b))
    assert torch.allclose(ref, fast, atol=1e-6) and all(torch.allclose(a, c, atol=1e-5) for a, c in zip(g_ref, g_fast))


def timed(fn, *args, **kw) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call. On a CPU shared with other jobs the
    wall time swings with their load; the CPU time of a one-thread run barely does, so ratios use it
    there (``toy_clock``). On a GPU the wall time is what counts."""
    _sync(get_device())
    w0, c0 = time.perf_counter(), time.process_time()
    fn(*args, **kw)
    _sync(get_device())
    return time.perf_counter() - w0, time.process_time() - c0


def time_ours(steps: int, dev: torch.device, hand: bool = False) -> None:
    toy.train((HandToyModel if hand else toy.ToyModel)(_cfg(steps, dev)), progress=False)


def time_compiled(steps: int, dev: torch.device, clock: int) -> tuple[float | None, float | None, str | None]:
    """(steady seconds, compile seconds, why it failed)."""
    try:
        model = toy.ToyModel(_cfg(steps, dev, compile=True))
        first = timed(toy.train, model, progress=False)
        again = timed(toy.train, model, progress=False)  # same model: the compiled graph is reused
        # compile seconds as wall time: the compiler works in subprocesses this process's clock misses.
        # Inductor caches compiled kernels on disk (TORCHINDUCTOR_CACHE_DIR), so a second run of this
        # benchmark compiles almost nothing; point it at an empty folder to time a cold compile.
        return again[clock], max(0.0, first[0] - again[0]), None
    except Exception as err:  # noqa: BLE001 - any compiler failure is reported, not raised
        return None, None, f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"


def time_arena(steps: int, dev: torch.device) -> None:
    model = ArenaToyModel(ArenaConfig(n_inst=N_MODELS, n_features=N_FEATURES, d_hidden=D_HIDDEN),
                          feature_probability=_density()[:, None], importance=_importance()[None, :], device=dev)
    with toy.cpu_threads(dev, N_MODELS * N_FEATURES * BATCH):
        model.optimize(batch_size=BATCH, steps=steps, lr=LR)


def time_loop(steps: int, dev: torch.device, n_timed: int) -> None:
    """``n_timed`` models trained one after another, the plain way."""
    p, imp = _density(), _importance().to(dev)
    picks = torch.linspace(0, N_MODELS - 1, n_timed).long().tolist()  # spread over the densities
    with toy.cpu_threads(dev, N_FEATURES * BATCH):
        for i in picks:
            std = math.sqrt(2 / (N_FEATURES + D_HIDDEN))
            W = torch.nn.Parameter(torch.randn(D_HIDDEN, N_FEATURES, device=dev) * std)
            b = torch.nn.Parameter(torch.zeros(N_FEATURES, device=dev))
            opt = torch.optim.Adam([W, b], lr=LR)
            for _ in range(steps):
                x = torch.rand(BATCH, N_FEATURES, device=dev)
                x = torch.where(torch.rand(BATCH, N_FEATURES, device=dev) < float(p[i]), x, torch.zeros_like(x))
                loss = (imp * (torch.relu(x @ W.T @ W + b) - x) ** 2).sum(-1).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()


def time_phase(steps: int, dev: torch.device, hand: bool) -> None:
    """Both laptop phase diagrams (28^2 cells x 4 seeds each), ``steps`` steps."""
    for m in (1, 2):
        n, grid, seeds = m + 1, 28, 4
        I = grid * grid * seeds
        p = torch.geomspace(0.01, 1.0, grid) if hasattr(torch, "geomspace") else 10 ** torch.linspace(-2, 0, grid)
        imp = torch.ones(I, n)
        imp[:, -1] = (10 ** torch.linspace(-1, 1, grid)).repeat_interleave(grid * seeds)
        cfg = toy.ToyConfig(n_features=n, d_hidden=m, n_instances=I, feature_probability=p.repeat(grid * seeds)[:, None],
                            importance=imp, steps=steps, batch_size=256, lr=3e-2, device=str(dev),
                            log_every=max(steps, 1), eval_samples=256)
        toy.train((HandToyModel if hand else toy.ToyModel)(cfg), progress=False)


def bench_toy(steps: int = 300, repeats: int = 3, loop_models: int = 4, phase_steps: int = 200) -> dict:
    dev = get_device()
    check_hand_loss()
    clock = 1 if dev.type == "cpu" else 0  # index into timed(): CPU seconds on a CPU, else wall
    runs: dict[str, list[float]] = {k: [] for k in ("loop", "ours", "fast", "arena", "phase_autograd", "phase_fast")}
    walls: dict[str, list[float]] = {k: [] for k in runs}

    def record(name, seconds, scale=1.0):
        walls[name].append(seconds[0] * scale)
        runs[name].append(seconds[clock] * scale)

    for _ in range(repeats):  # alternate, so a busy spell on the machine hits every contender
        record("ours", timed(time_ours, steps, dev))
        record("fast", timed(time_ours, steps, dev, hand=True))
        if not ARENA_MISSING:
            record("arena", timed(time_arena, steps, dev))
        record("loop", timed(time_loop, steps, dev, loop_models), N_MODELS / loop_models)
        if phase_steps:
            record("phase_autograd", timed(time_phase, phase_steps, dev, False))
            record("phase_fast", timed(time_phase, phase_steps, dev, True))
    compiled, compile_s, compile_error = time_compiled(steps, dev, clock)
    med = {k: statistics.median(v) for k, v in runs.items() if v}
    examples = N_MODELS * BATCH * steps
    out = {
        "toy_work": f"{N_MODELS} models {N_FEATURES}->{D_HIDDEN}, batch {BATCH}, {steps} steps",
        "toy_repeats": repeats, "toy_clock": "cpu (process time)" if clock else "wall",
        "toy_loop_seconds": round(med["loop"], 2), "toy_loop_extrapolated": True,
        "toy_loop_models_timed": loop_models,
        "toy_ours_seconds": round(med["ours"], 2),
        "toy_compiled_seconds": None if compiled is None else round(compiled, 2),
        "toy_compile_seconds": None if compile_s is None else round(compile_s, 1),
        "toy_fast_seconds": round(med["fast"], 2),
        "toy_arena_seconds": round(med["arena"], 2) if "arena" in med else None,
        "toy_ours_examples_per_s": round(examples / med["ours"]),
        "toy_ours_over_arena": round(med["arena"] / med["ours"], 2) if "arena" in med else None,
        "toy_arena_skipped": ARENA_MISSING,
        "toy_ours_over_loop": round(med["loop"] / med["ours"], 1),
        "toy_fast_over_autograd": round(med["ours"] / med["fast"], 2),
        "toy_ranges": {k: [round(min(v), 2), round(max(v), 2)] for k, v in runs.items() if v},
        "toy_wall_medians": {k: round(statistics.median(v), 2) for k, v in walls.items() if v},
    }
    if compile_error:
        out["toy_compile_skipped"] = compile_error
    if phase_steps:
        out.update({"phase_steps": phase_steps, "phase_autograd_seconds": round(med["phase_autograd"], 2),
                    "phase_fast_seconds": round(med["phase_fast"], 2),
                    "phase_fast_over_autograd": round(med["phase_autograd"] / med["phase_fast"], 2)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--loop-models", type=int, default=4, help="models the plain loop actually trains")
    ap.add_argument("--phase-steps", type=int, default=200, help="0 skips the phase-diagram comparison")
    ap.add_argument("--quick", action="store_true", help="60 steps, 1 repeat (a smoke test)")
    ap.add_argument("--skip-sae", action="store_true", help="leave out the SAE part even if present")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.repeats, args.loop_models, args.phase_steps = 60, 1, 2, 40
    dev = get_device()
    out = {"benchmark": "training_speed", "device": str(dev), "cpu": platform.processor() or platform.machine(),
           "torch": torch.__version__, "threads_available": torch.get_num_threads()}
    out.update(bench_toy(args.steps, args.repeats, args.loop_models, args.phase_steps))
    sae_file = Path(__file__).resolve().parent / "_speed_sae.py"
    if sae_file.exists() and not args.skip_sae:
        from _speed_sae import bench_sae  # noqa: E402 - optional part, written separately

        out.update(bench_sae(steps=100, repeats=1, arena_steps=300) if args.quick else bench_sae())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
