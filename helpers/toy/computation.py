"""Models with a hidden layer of neurons: superposition in a privileged basis, and |x| computed in it.

* the neuron model ``x' = ReLU(W^T f(W x) + b)`` with ``f`` a ReLU (neurons: a privileged basis) or
  the identity (the section-1 model, no privileged basis: the control);
* the absolute-value model ``y = ReLU(W2 ReLU(W1 x + b1) + b2)``, target ``|x|``.

Small and optional, so it is plain code: its own parameters, autograd and the shared Adam, one loop
for both.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from helpers.device import resolve_device, stream_seed
from helpers.optim import adam, check_finite, scheduler
from helpers.toy.cache import cached
from helpers.toy.config import ToyConfig
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


class NeuronResult(NamedTuple):
    """Neuron models ``x' = ReLU(W^T f(W x) + b)`` of n features on m neurons, every seed kept."""

    densities: np.ndarray
    """(n_densities,) density of every feature."""
    W: torch.Tensor
    """(n_densities, n_seeds, m, n) feature -> neuron weights of every seed."""
    b: torch.Tensor
    """(n_densities, n_seeds, n) output biases."""
    loss: np.ndarray
    """(n_densities, n_seeds) importance-weighted loss of every seed on one held-out sample per density."""


def neuron_sweep(base: ToyConfig, densities: Sequence[float], decay: float = 0.75, n_seeds: int = 16,
                 hidden: str = "relu", progress: bool = True, cache: bool = True) -> NeuronResult:
    """The paper's ReLU-hidden-layer model ``h = f(W x)``, ``x' = ReLU(W^T h + b)``, target ``x``.

    ``hidden="relu"`` puts a ReLU on the m neurons (a privileged basis: the loss changes when W is
    rotated); ``hidden="linear"`` leaves them linear, which is the section-1 model read through m
    hidden units (any rotation of W gives the same loss), the control. Inputs uniform in [0, 1] when
    on, importance ``decay ** i``, no bias on the neurons (as in the paper). ``base`` gives
    n = ``n_features``, m = ``d_hidden`` and the training settings; one stack over (density, seed),
    cached on disk like ``abs_sweep``.
    """
    check_base(base)
    if hidden not in ("relu", "linear"):
        raise ValueError(f"hidden must be 'relu' (neurons) or 'linear' (the control without a privileged basis), "
                         f"got {hidden!r}")
    dens = np.asarray(densities, dtype=np.float64).reshape(-1)
    settings = dict(densities=dens, decay=float(decay), n_seeds=n_seeds, hidden=hidden)
    return cached("neuron", base, settings, NeuronResult, enabled=cache,
                  compute=lambda: _neuron_sweep(base, dens, decay, n_seeds, hidden, progress))


def _neuron_sweep(base, dens, decay, n_seeds, hidden, progress) -> NeuronResult:
    W, b, loss = _train_hidden(base, dens, decay, n_seeds, progress, kind="neuron" if hidden == "relu" else "linear")
    m, n = base.d_hidden, base.n_features
    return NeuronResult(dens, W.reshape(len(dens), n_seeds, m, n), b.reshape(len(dens), n_seeds, n),
                        loss[0].reshape(len(dens), n_seeds))


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
    (W1, W2), _, (final, explained) = _train_hidden(base, dens, decay, n_seeds, progress, kind="abs")
    explained = explained.reshape(len(dens), n_seeds, -1)
    final = final.reshape(len(dens), n_seeds)
    best, pick = pick_best(final)
    return AbsResult(dens, W1[pick], W2[pick], explained[np.arange(len(dens)), best], final[np.arange(len(dens)), best])


def _train_hidden(base: ToyConfig, dens: np.ndarray, decay: float, n_seeds: int, progress: bool, kind: str):
    """Train one stack of (density, seed) hidden-layer models; ``kind`` is "abs" (untied W1, W2, a
    neuron bias, inputs in [-1, 1], target |x|), "neuron" or "linear" (tied W, no neuron bias,
    inputs in [0, 1], target x; ReLU or identity on the neurons)."""
    dev = resolve_device(base.device)
    n, m, seed, batch_size = base.n_features, base.d_hidden, base.seed, base.batch_size
    I = len(dens) * n_seeds
    p = torch.as_tensor(np.repeat(dens, n_seeds), dtype=torch.float32, device=dev)[:, None, None]  # (I, 1, 1)
    imp = decay_importance(n, decay).to(dev)  # (n,)
    signed = kind == "abs"
    gen = torch.Generator().manual_seed(stream_seed(seed, f"toy:{kind}-init"))
    W1 = (torch.randn(I, m, n, generator=gen) * math.sqrt(2.0 / (m + n))).to(dev).requires_grad_()
    b2 = torch.zeros(I, n, 1, device=dev, requires_grad=True)
    if signed:
        W2 = (torch.randn(I, n, m, generator=gen) * math.sqrt(2.0 / (m + n))).to(dev).requires_grad_()
        b1 = torch.zeros(I, m, 1, device=dev, requires_grad=True)
        params = [W1, W2, b1, b2]
    else:
        params = [W1, b2]
    act = (lambda z: z) if kind == "linear" else torch.relu
    opt = adam(params, base.lr)
    sched = scheduler(opt, base.lr_schedule, base.steps)
    data_gen = torch.Generator(device=dev).manual_seed(stream_seed(seed, f"toy:{kind}-data"))

    def sample(B: int, g: torch.Generator) -> torch.Tensor:  # (I, n, B); draws shared by all instances
        on = torch.rand(n, B, device=dev, generator=g) < p  # (I, n, B)
        u = torch.rand(n, B, device=dev, generator=g)
        return on * (2 * u - 1 if signed else u)

    def forward(x: torch.Tensor) -> torch.Tensor:
        if signed:
            return torch.relu(W2 @ torch.relu(W1 @ x + b1) + b2)  # (I, n, B)
        return torch.relu(W1.mT @ act(W1 @ x) + b2)

    def error(x: torch.Tensor) -> torch.Tensor:  # (I, n, B) squared error against the target
        return (forward(x) - (x.abs() if signed else x)) ** 2

    what = {"abs": "|x| models", "neuron": "neuron models", "linear": "models without neurons"}[kind]
    with cpu_threads(dev, I * max(n, m) * batch_size):
        for step in tqdm(range(base.steps), desc=what, disable=not progress, mininterval=0.5):
            loss = (imp[:, None] * error(sample(batch_size, data_gen))).sum(1).mean(-1)  # (I,)
            loss.sum().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            if step % 100 == 0 or step == base.steps - 1:
                check_finite(loss, step, what)
    with torch.no_grad():
        eval_gen = torch.Generator(device=dev).manual_seed(stream_seed(seed, f"toy:{kind}-eval"))
        if signed:
            x = sample(8 * batch_size, eval_gen)
            err = error(x).mean(-1)  # (I, n)
            final = (imp * err).sum(-1).cpu().numpy()
            # relative to the best constant output (the mean of |x|), which the bias gives for free
            explained = (1 - err / x.abs().var(-1).clamp_min(1e-12)).cpu().numpy()
            return (W1.detach().cpu(), W2.detach().cpu()), None, (final, explained)
        # the seed is chosen on this loss: enough samples that the sparsest density sees each pair of
        # features on together about 6 times (64 batches of 1024 at density 0.01 and 10 features)
        chunks = max(8, int(math.ceil(6 / max(float(dens.min()) ** 2, 1e-6) / 1024)))
        chunks = min(chunks, 64)
        err = sum((imp[:, None] * error(sample(1024, eval_gen))).sum(1).mean(-1) for _ in range(chunks)) / chunks
        return W1.detach().cpu(), b2.detach().cpu()[..., 0], (err.cpu().numpy(),)
