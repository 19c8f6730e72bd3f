"""Computation in superposition: |x| for sparse inputs through a hidden ReLU layer.

Small and optional, so it is plain code: its own parameters, autograd and the shared Adam.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from helpers.device import stream_seed
from helpers.optim import adam, check_finite, scheduler
from helpers.toy.cache import cached
from helpers.toy.config import ToyConfig, resolve_device
from helpers.toy.experiments import check_base, decay_importance, pick_best
from helpers.toy.train import cpu_threads


class AbsResult(NamedTuple):
    """Models computing y = |x| for n sparse inputs in [-1, 1] with m < n hidden ReLU neurons."""

    densities: np.ndarray
    """(n_densities,) density of every input."""
    W1: torch.Tensor
    """(n_densities, m, n) input -> neuron weights of the best seed."""
    W2: torch.Tensor
    """(n_densities, n, m) neuron -> output weights."""
    explained: np.ndarray
    """(n_densities, n) per feature 1 - E[(y_i - |x_i|)^2] / Var(|x_i|) on fresh samples: 1 computed
    exactly, about 0.5 only one sign (one ReLU), 0 not at all (a constant output)."""
    loss: np.ndarray
    """(n_densities,) importance-weighted loss of the best seed."""


def abs_sweep(base: ToyConfig, densities: Sequence[float], decay: float = 0.9, n_seeds: int = 3,
              progress: bool = True, cache: bool = True) -> AbsResult:
    """The paper's absolute-value model ``y = ReLU(W2 ReLU(W1 x + b1) + b2)``, target ``|x|``.

    Inputs are uniform in [-1, 1] when on (so ``|x|`` needs two ReLUs per feature: ReLU(x) +
    ReLU(-x)); importance ``decay ** i``. ``base`` gives n = ``n_features`` inputs, m =
    ``d_hidden`` neurons and the training settings (steps, batch_size, lr, lr_schedule, seed,
    device). One stack over (density, seed), trained with autograd and the course's Adam.
    Cached on disk like ``phase_diagram`` (``cache=False`` always trains).
    """
    check_base(base)
    dens = np.asarray(densities, dtype=np.float64).reshape(-1)
    settings = dict(densities=dens, decay=float(decay), n_seeds=n_seeds)
    return cached("abs", base, settings, AbsResult, enabled=cache,
                  compute=lambda: _abs_sweep(base, dens, decay, n_seeds, progress))


def _abs_sweep(base: ToyConfig, dens: np.ndarray, decay: float, n_seeds: int, progress: bool) -> AbsResult:
    dev = resolve_device(base.device)
    n, m, seed, batch_size = base.n_features, base.d_hidden, base.seed, base.batch_size
    I = len(dens) * n_seeds
    p = torch.as_tensor(np.repeat(dens, n_seeds), dtype=torch.float32, device=dev)[:, None, None]  # (I, 1, 1)
    imp = decay_importance(n, decay).to(dev)  # (n,)
    gen = torch.Generator().manual_seed(stream_seed(seed, "toy:abs-init"))
    W1 = (torch.randn(I, m, n, generator=gen) * math.sqrt(2.0 / (m + n))).to(dev).requires_grad_()
    W2 = (torch.randn(I, n, m, generator=gen) * math.sqrt(2.0 / (m + n))).to(dev).requires_grad_()
    b1 = torch.zeros(I, m, 1, device=dev, requires_grad=True)
    b2 = torch.zeros(I, n, 1, device=dev, requires_grad=True)
    opt = adam([W1, W2, b1, b2], base.lr)
    sched = scheduler(opt, base.lr_schedule, base.steps)
    data_gen = torch.Generator(device=dev).manual_seed(stream_seed(seed, "toy:abs-data"))

    def sample(B: int, g: torch.Generator) -> torch.Tensor:  # (I, n, B); draws shared by all instances
        on = torch.rand(n, B, device=dev, generator=g) < p  # (I, n, B)
        return on * (2 * torch.rand(n, B, device=dev, generator=g) - 1)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.relu(W2 @ torch.relu(W1 @ x + b1) + b2)  # (I, n, B)

    with cpu_threads(dev, I * max(n, m) * batch_size):
        for step in tqdm(range(base.steps), desc="|x| models", disable=not progress, mininterval=0.5):
            x = sample(batch_size, data_gen)
            loss = (imp[:, None] * (forward(x) - x.abs()) ** 2).sum(1).mean(-1)  # (I,)
            loss.sum().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            if step % 100 == 0 or step == base.steps - 1:
                check_finite(loss, step, "|x| models")
    with torch.no_grad():
        eval_gen = torch.Generator(device=dev).manual_seed(stream_seed(seed, "toy:abs-eval"))
        x = sample(8 * batch_size, eval_gen)
        err = (forward(x) - x.abs()).square().mean(-1)  # (I, n)
        final = (imp * err).sum(-1).cpu().numpy().reshape(len(dens), n_seeds)
        # relative to the best constant output (the mean of |x|), which the bias gives for free
        explained = (1 - err / x.abs().var(-1).clamp_min(1e-12)).cpu().numpy().reshape(len(dens), n_seeds, n)
    best, pick = pick_best(final)
    return AbsResult(dens, W1.detach().cpu()[pick], W2.detach().cpu()[pick],
                     explained[np.arange(len(dens)), best], final[np.arange(len(dens)), best])

