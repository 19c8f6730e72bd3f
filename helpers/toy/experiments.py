"""The sweeps notebook 01 draws, each one stack of models trained at once: several seeds per
setting (``best_of_seeds``), importance decay x density (``sweep``), the one-extra-feature
``phase_diagram`` and the feature-``dimensionality_sweep``.

Every sweep takes a base ``ToyConfig`` (model size, readout, steps, batch, lr, seed, device)
and only what it sweeps; the stacked config is ``stacked(base, p, importance)``, the base with
one instance per setting. The slow ones are cached on disk (``helpers.toy.cache``).
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import NamedTuple, Sequence

import numpy as np
import torch

from helpers.toy.cache import cached
from helpers.toy.config import ToyConfig
from helpers.toy.geometry import classify_extra_feature, feature_dimensionality, feature_norms, n_represented, superposition
from helpers.toy.model import ToyModel, toy_loss
from helpers.toy.train import TrainLog, train


def check_base(base) -> ToyConfig:
    """``base`` if it is a ``ToyConfig``, else a TypeError that says what to pass."""
    if not isinstance(base, ToyConfig):
        raise TypeError(f"base must be a ToyConfig with the model and training settings, e.g. "
                        f"ToyConfig(n_features=5, d_hidden=2, steps=3000); got {type(base).__name__}")
    return base


def stacked(base: ToyConfig, feature_probability, importance, **changes) -> ToyConfig:
    """``base`` with one instance per row of ``feature_probability`` (settings, 1 or n) and
    ``importance`` (settings or 1, n), plus any other ``changes`` (pairing, logging)."""
    p = torch.as_tensor(feature_probability, dtype=torch.float32)
    return replace(base, n_instances=p.shape[0], feature_probability=p, importance=importance, **changes)


def pick_best(seed_loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For (settings, seeds) final losses: the winning seed of each setting, and its instance
    index in a stack laid out (setting, seed)."""
    best = seed_loss.argmin(1)
    return best, np.arange(len(seed_loss)) * seed_loss.shape[1] + best


class BestOfSeeds(NamedTuple):
    """Per-setting winners of a stacked (setting, seed) run."""

    W: torch.Tensor
    """(settings, m, n) weights of the lowest-loss seed of each setting."""
    b: torch.Tensor
    """(settings, n) its bias."""
    loss: np.ndarray
    """(settings,) its final loss."""
    seed_loss: np.ndarray
    """(settings, seeds) final loss of every seed."""
    best_seed: np.ndarray
    """(settings,) index of the winning seed."""
    cfg: ToyConfig
    """The per-setting config (one instance per setting)."""
    log: TrainLog
    """The log of the whole stacked run (instances laid out setting-major: (setting, seed))."""
    seed_W: torch.Tensor
    """(settings, seeds, m, n) the weights of every seed (to see how often a seed lands in a trap)."""
    seconds: float
    """Wall-clock time of building and training the stack."""
    seed_b: torch.Tensor | None = None
    """(settings, seeds, n) the bias of every seed."""


def best_of_seeds(cfg: ToyConfig, n_seeds: int, progress: bool = True, desc: str = "toy models") -> BestOfSeeds:
    """Train ``n_seeds`` copies of every setting (instance) of ``cfg`` as one stack; keep the best.

    The stack's instances are laid out (setting, seed): instance ``s * n_seeds + k`` is seed
    k of setting s. All seeds of a setting see the same batches, so their final losses are
    compared on equal terms, and the lowest wins, as the paper does.
    """
    if n_seeds < 1:
        raise ValueError(f"n_seeds must be at least 1, got {n_seeds}")
    t0 = time.perf_counter()
    S = cfg.n_instances
    model = ToyModel(cfg.select(torch.arange(S).repeat_interleave(n_seeds)))
    log = train(model, progress=progress, desc=desc)
    seed_loss = log.final_loss.reshape(S, n_seeds)
    best, pick = pick_best(seed_loss)
    W_all = model.W.detach().cpu()
    return BestOfSeeds(W_all[pick], model.b.detach().cpu()[pick], seed_loss[np.arange(S), best], seed_loss, best,
                       cfg, log, W_all.reshape(S, n_seeds, *W_all.shape[1:]), time.perf_counter() - t0,
                       model.b.detach().cpu().reshape(S, n_seeds, -1))


def decay_importance(n_features: int, decay: float) -> torch.Tensor:
    """The paper's importance profile ``decay ** i``, (n_features,)."""
    return torch.as_tensor(decay, dtype=torch.float32) ** torch.arange(n_features, dtype=torch.float32)


class Sweep(NamedTuple):
    """Best-of-seeds models on a (importance decay x density) grid."""

    densities: np.ndarray
    """(n_densities,) feature density 1 - S (the same for every feature)."""
    decays: np.ndarray
    """(n_decays,) importance of feature i is ``decay ** i``."""
    W: torch.Tensor
    """(n_decays, n_densities, m, n) winning weights (CPU)."""
    b: torch.Tensor
    """(n_decays, n_densities, n) their biases."""
    loss: np.ndarray
    """(n_decays, n_densities) their final losses."""
    readout: str
    n_models: int
    """Models trained (grid x seeds)."""
    seconds: float
    seed_loss: np.ndarray
    """(n_decays, n_densities, seeds) final loss of every seed (the best is kept)."""


def sweep(base: ToyConfig, densities: Sequence[float], decays: Sequence[float] = (0.9,), n_seeds: int = 3,
          progress: bool = True) -> Sweep:
    """Every (decay, density) pair of ``base``'s model as one stack of
    ``len(decays) * len(densities) * n_seeds`` models.

    Importance ``decay ** i`` (feature 0 most important), every feature on with the same
    density. Each setting keeps its lowest-loss seed (toy models have local minima).
    """
    check_base(base)
    dens = np.asarray(densities, dtype=np.float64).reshape(-1)
    dec = np.asarray(decays, dtype=np.float64).reshape(-1)
    if len(dens) == 0 or len(dec) == 0:
        raise ValueError("sweep() needs at least one density and one decay")
    if dec.min() <= 0:
        raise ValueError(f"importance decays must be positive, got {dec.min()}")
    n, m = base.n_features, base.d_hidden
    D, K = np.meshgrid(dens, dec)  # (n_decays, n_densities)
    cfg = stacked(base, D.reshape(-1, 1), torch.stack([decay_importance(n, k) for k in K.reshape(-1)]),
                  log_every=max(base.steps // 20, 1))
    best = best_of_seeds(cfg, n_seeds, progress=progress, desc=f"{n} features in {m}-D, {base.readout}")
    shape = (len(dec), len(dens))
    return Sweep(dens, dec, best.W.reshape(*shape, m, n), best.b.reshape(*shape, n), best.loss.reshape(shape),
                 base.readout, cfg.n_instances * n_seeds, best.seconds, best.seed_loss.reshape(*shape, n_seeds))


class PhaseDiagram(NamedTuple):
    """Best-of-seeds models on a (relative importance x density) grid."""

    densities: np.ndarray
    """(grid,) feature density 1 - S of every feature (x axis, log-spaced)."""
    rel_importance: np.ndarray
    """(grid,) importance of the extra feature relative to the others' 1 (y axis, log-spaced)."""
    phase: np.ndarray
    """(grid_importance, grid_density) ints indexing ``PHASES``."""
    extra_norm: np.ndarray
    """(grid_importance, grid_density) ||W_extra||."""
    extra_superposition: np.ndarray
    """(grid_importance, grid_density) sum_j (W_extra_hat . W_j)^2 over the other features."""
    W: torch.Tensor
    """(grid_importance, grid_density, m, n) the winning weights."""
    d_hidden: int
    n_models: int
    """Models trained (grid^2 x seeds)."""
    seconds: float
    """Training time (of the run that filled the cache, when the result comes from it)."""


def phase_diagram(base: ToyConfig, grid: int = 20, n_seeds: int = 3,
                  density_range: tuple[float, float] = (0.01, 1.0),
                  importance_range: tuple[float, float] = (0.1, 10.0),
                  progress: bool = True, cache: bool = True) -> PhaseDiagram:
    """``d_hidden + 1`` features in ``d_hidden`` dimensions (``base.n_features`` must be
    ``base.d_hidden + 1``), as one stack of grid^2 x n_seeds models.

    Every feature has the same density; the first ``d_hidden`` features have importance 1 and
    the extra (last) one a relative importance from ``importance_range``. With ``cache``, the
    result is stored on disk and a second call with the same settings and code loads it.
    """
    check_base(base)
    if grid < 2:
        raise ValueError(f"grid must be at least 2, got {grid}")
    if base.n_features != base.d_hidden + 1:
        raise ValueError(f"a phase diagram has one feature more than dimensions: base has n_features="
                         f"{base.n_features}, d_hidden={base.d_hidden}; use n_features={base.d_hidden + 1}")
    settings = dict(grid=grid, n_seeds=n_seeds, density_range=density_range, importance_range=importance_range)
    return cached("phase-diagram", base, settings, PhaseDiagram, enabled=cache,
                  compute=lambda: _phase_diagram(base, grid, n_seeds, density_range, importance_range, progress))


def expected_loss(W: torch.Tensor, b: torch.Tensor, p: torch.Tensor, importance: torch.Tensor,
                  n_values: int = 4096, chunk: int = 256) -> np.ndarray:
    """Expected loss per instance of ReLU toy models W (inst, m, n), b (inst, n) whose features are
    each on with probability p (inst,), importance (inst, n), summed over every on/off pattern of
    the n features with its exact probability. Each pattern gets the same ``n_values`` uniform
    draws, so a pattern as rare as two features on at once is measured as well as the common ones."""
    n = W.shape[-1]
    u = torch.rand(n_values, n, generator=torch.Generator().manual_seed(0))
    patterns = torch.tensor([[(k >> i) & 1 for i in range(n)] for k in range(2 ** n)], dtype=torch.float32)
    out = []
    for s in range(0, W.shape[0], chunk):
        Wc, bc, pc, Ic = W[s:s + chunk], b[s:s + chunk], p[s:s + chunk, None], importance[s:s + chunk]
        total = torch.zeros(Wc.shape[0], dtype=torch.float64)
        for mask in patterns:
            x = (u * mask).expand(Wc.shape[0], -1, -1)  # (c, values, n): every instance sees the same draws
            err = toy_loss(Wc, bc, x, Ic, "relu")      # (c,) the training loss on this pattern
            k = int(mask.sum())
            total += (pc[:, 0] ** k * (1 - pc[:, 0]) ** (n - k)).double() * err.double()
        out.append(total)
    return torch.cat(out).numpy()


def _phase_diagram(base, grid, n_seeds, density_range, importance_range, progress) -> PhaseDiagram:
    n, m = base.n_features, base.d_hidden
    dens = np.geomspace(*density_range, grid)
    rel = np.geomspace(*importance_range, grid)
    R, D = np.meshgrid(rel, dens, indexing="ij")  # (grid_imp, grid_dens)
    imp = torch.ones(grid * grid, n)
    imp[:, -1] = torch.as_tensor(R.reshape(-1), dtype=torch.float32)
    cfg = stacked(base, D.reshape(-1, 1), imp, log_every=base.steps)  # no loss log needed: check at the end
    best = best_of_seeds(cfg, n_seeds, progress=progress, desc=f"phase diagram, {n} features in {m}-D")
    # Pick each cell's seed by its expected loss, not by the last training batches: at the sparsest
    # densities a batch holds only a few samples with two features on, the rare event that decides.
    W_all = best.seed_W.reshape(-1, m, n)
    b_all = best.seed_b.reshape(-1, n)
    p_all = torch.as_tensor(D.reshape(-1), dtype=torch.float32).repeat_interleave(n_seeds)
    loss = expected_loss(W_all, b_all, p_all, imp.repeat_interleave(n_seeds, 0)).reshape(grid * grid, n_seeds)
    W = best.seed_W[torch.arange(grid * grid), torch.as_tensor(loss.argmin(1))].reshape(grid, grid, m, n)
    return PhaseDiagram(dens, rel, classify_extra_feature(W).numpy(), feature_norms(W)[..., -1].numpy(),
                        superposition(W)[..., -1].numpy(), W, m, grid * grid * n_seeds, best.seconds)


class Dimensionality(NamedTuple):
    """Many equally important features in few dimensions, one model per density."""

    densities: np.ndarray
    """(n_densities,) feature density 1 - S."""
    dims_per_feature: np.ndarray
    """(n_densities,) m / ||W||_F^2: hidden dimensions per (fully) represented feature."""
    feature_dim: np.ndarray
    """(n_densities, n_features) D_i of every feature (0: not represented)."""
    n_represented: np.ndarray
    """(n_densities,) features with ||W_i|| > 0.5."""
    W: torch.Tensor
    """(n_densities, m, n) trained weights."""


def dimensionality_sweep(base: ToyConfig, densities: Sequence[float], progress: bool = True,
                         cache: bool = True) -> Dimensionality:
    """The paper's feature-dimensionality experiment for ``base``'s model size: importance 1
    everywhere, one model per density (cached on disk like ``phase_diagram``)."""
    check_base(base)
    dens = np.asarray(densities, dtype=np.float64).reshape(-1)
    return cached("dimensionality", base, dict(densities=dens), Dimensionality, enabled=cache,
                  compute=lambda: _dimensionality_sweep(base, dens, progress))


def _dimensionality_sweep(base: ToyConfig, dens: np.ndarray, progress: bool) -> Dimensionality:
    cfg = stacked(base, dens[:, None], 1.0, log_every=max(base.steps // 20, 1), eval_samples=4096)
    model = ToyModel(cfg)
    train(model, progress=progress, desc=f"{base.n_features} features in {base.d_hidden}-D")
    W = model.W.detach().cpu()
    return Dimensionality(dens, (base.d_hidden / W.square().sum((-1, -2))).numpy(), feature_dimensionality(W).numpy(),
                          n_represented(W).numpy(), W)
