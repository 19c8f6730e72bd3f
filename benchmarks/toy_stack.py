"""Stacked toy models vs a plain per-model loop, on notebook 01's phase-diagram sweep.

The sweep is both phase diagrams of notebook 01 (2 features in 1-D and 3 features in 2-D),
``toy.phase_grid**2`` cells x ``toy.phase_seeds`` seeds each, ``toy.phase_steps`` Adam steps (``sizes()``), batch 256:
exactly what ``helpers.toy.phase_diagram`` trains, timed as it runs. Both sides use the
trainer's CPU thread policy (one thread for small stacks; see ``toy.cpu_threads``).

The plain loop is what one would write first: per model, one ``nn.Parameter`` W and b,
autograd, ``torch.optim.Adam`` with the same cosine schedule, same steps and batch size, fresh
data every step. Looping over every model would take an hour or more, so it times
``--loop-models`` models spread over the grid (half per diagram) and extrapolates linearly
(each model costs the same whatever its settings); the JSON says so (``loop_models_timed``,
``loop_extrapolated``). Both are measured in the same run, side by side.

Prints one JSON object as its last line. Run: ``python benchmarks/toy_stack.py [--scale laptop]``
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import time

import numpy as np
import torch

from helpers import toy
from helpers.course.sizes import sizes
from helpers.device import get_device

BATCH = 256  # the batch size of notebook 01's phase diagrams


def plain_loop_one(n: int, m: int, p: float, importance: torch.Tensor, steps: int, lr: float, seed: int,
                   device: torch.device) -> float:
    """Train one toy model the straightforward way; return its last batch loss."""
    gen = torch.Generator(device=device).manual_seed(seed)
    W = torch.nn.Parameter(torch.randn(m, n, generator=gen, device=device) * math.sqrt(2.0 / (m + n)))
    b = torch.nn.Parameter(torch.zeros(n, device=device))
    opt = torch.optim.Adam([W, b], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    importance = importance.to(device)
    for _ in range(steps):
        u = torch.rand(BATCH, n, generator=gen, device=device)
        x = torch.where(torch.rand(BATCH, n, generator=gen, device=device) < p, u, torch.zeros_like(u))
        out = torch.relu(x @ W.T @ W + b)
        loss = (importance * (out - x) ** 2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return float(loss)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", default=None, help="ci, laptop or full (default: TUTORIAL_SCALE, else laptop on CPU)")
    ap.add_argument("--loop-models", type=int, default=8, help="models the plain loop actually trains")
    args = ap.parse_args()
    s = sizes(args.scale)
    dev = get_device()
    lr = 3e-2

    stacked, n_models, per_diagram = 0.0, 0, {}
    for m in (1, 2):
        t0 = time.perf_counter()
        base = toy.ToyConfig(n_features=m + 1, d_hidden=m, steps=s.toy.phase_steps, batch_size=BATCH, lr=lr)
        pd = toy.phase_diagram(base, grid=s.toy.phase_grid, n_seeds=s.toy.phase_seeds, progress=True, cache=False)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        sec = time.perf_counter() - t0
        stacked += sec
        n_models += pd.n_models
        per_diagram[m] = (pd, sec)

    # The plain loop: a few models per diagram, spread over the grid, extrapolated.
    rng = np.random.default_rng(0)
    loop_est, timed = 0.0, 0
    for m, (pd, _) in per_diagram.items():
        k = max(1, args.loop_models // 2)
        cells = rng.choice(s.toy.phase_grid**2, size=k, replace=False)
        t0 = time.perf_counter()
        # the same thread policy as the stacked trainer (one CPU thread for small tensors)
        with toy.cpu_threads(dev, BATCH * (m + 1)):
            for c in cells:
                i, j = divmod(int(c), s.toy.phase_grid)
                imp = torch.ones(m + 1)
                imp[-1] = float(pd.rel_importance[i])
                plain_loop_one(m + 1, m, float(pd.densities[j]), imp, s.toy.phase_steps, lr, seed=int(c), device=dev)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        per_model = (time.perf_counter() - t0) / k
        loop_est += per_model * pd.n_models
        timed += k

    out = {
        "benchmark": "toy_stack", "scale": s.scale, "device": str(dev),
        "cpu": platform.processor() or platform.machine(), "threads_available": torch.get_num_threads(),
        "n_models": n_models, "grid": s.toy.phase_grid, "seeds": s.toy.phase_seeds, "steps": s.toy.phase_steps,
        "batch": BATCH,
        "diagram_seconds": {f"{m + 1}_in_{m}d": round(sec, 2) for m, (_, sec) in per_diagram.items()},
        "stacked_seconds": round(stacked, 2),
        "loop_seconds": round(loop_est, 1), "loop_models_timed": timed,
        "loop_extrapolated": timed < n_models,
        "speedup": round(loop_est / stacked, 1),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
