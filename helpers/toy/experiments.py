"""The sweeps notebook 01 draws, each one stack of models trained at once: several seeds per
setting (``best_of_seeds``), importance decay x density (``sweep``), the one-extra-feature
``phase_diagram`` and the feature-``dimensionality_sweep``."""
from __future__ import annotations

import time
from typing import NamedTuple, Sequence

import numpy as np
import torch

from helpers.toy.config import ToyConfig
from helpers.toy.geometry import classify_extra_feature, feature_dimensionality, feature_norms, n_represented, superposition
from helpers.toy.model import ToyModel
from helpers.toy.train import TrainLog, train


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


def best_of_seeds(cfg: ToyConfig, n_seeds: int, progress: bool = True, desc: str = "toy models") -> BestOfSeeds:
    """Train ``n_seeds`` copies of every setting (instance) of ``cfg`` as one stack; keep the best.

    The stack's instances are laid out (setting, seed): instance ``s * n_seeds + k`` is seed
    k of setting s. All seeds of a setting see the same batches, so their final losses are
    compared on equal terms, and the lowest wins, as the paper does.
    """
    if n_seeds < 1:
        raise ValueError(f"n_seeds must be at least 1, got {n_seeds}")
    S = cfg.n_instances
    model = ToyModel(cfg.select(torch.arange(S).repeat_interleave(n_seeds)))
    log = train(model, progress=progress, desc=desc)
    seed_loss = log.final_loss.reshape(S, n_seeds)
    best = seed_loss.argmin(1)
    pick = torch.as_tensor(np.arange(S) * n_seeds + best, device=model.device)
    W_all = model.W.detach().cpu()
    return BestOfSeeds(W_all[pick.cpu()], model.b.detach()[pick].cpu(), seed_loss[np.arange(S), best],
                       seed_loss, best, cfg, log, W_all.reshape(S, n_seeds, *W_all.shape[1:]))


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


def sweep(
    densities: Sequence[float],
    decays: Sequence[float] = (0.9,),
    n_features: int = 5,
    d_hidden: int = 2,
    readout: str = "relu",
    n_seeds: int = 3,
    steps: int = 3000,
    batch_size: int = 1024,
    lr: float = 3e-2,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
) -> Sweep:
    """Every (decay, density) pair as one stack of ``len(decays) * len(densities) * n_seeds`` models.

    Importance ``decay ** i`` (feature 0 most important), every feature on with the same
    density. Each setting keeps its lowest-loss seed (toy models have local minima).
    """
    dens = np.asarray(densities, dtype=np.float64).reshape(-1)
    dec = np.asarray(decays, dtype=np.float64).reshape(-1)
    if len(dens) == 0 or len(dec) == 0:
        raise ValueError("sweep() needs at least one density and one decay")
    if dec.min() <= 0:
        raise ValueError(f"importance decays must be positive, got {dec.min()}")
    D, K = np.meshgrid(dens, dec)  # (n_decays, n_densities)
    p = torch.as_tensor(D.reshape(-1, 1), dtype=torch.float32)
    imp = torch.stack([decay_importance(n_features, k) for k in K.reshape(-1)])
    cfg = ToyConfig(n_features=n_features, d_hidden=d_hidden, n_instances=p.shape[0], feature_probability=p,
                    importance=imp, readout=readout, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                    device=device, log_every=max(steps // 20, 1))
    t0 = time.perf_counter()
    best = best_of_seeds(cfg, n_seeds, progress=progress, desc=f"{n_features} features in {d_hidden}-D, {readout}")
    seconds = time.perf_counter() - t0
    shape = (len(dec), len(dens))
    return Sweep(dens, dec, best.W.reshape(*shape, d_hidden, n_features), best.b.reshape(*shape, n_features),
                 best.loss.reshape(shape), readout, p.shape[0] * n_seeds, seconds, best.seed_loss.reshape(*shape, n_seeds))


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


def phase_diagram(
    d_hidden: int = 1,
    grid: int = 20,
    n_seeds: int = 3,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 3e-2,
    density_range: tuple[float, float] = (0.01, 1.0),
    importance_range: tuple[float, float] = (0.1, 10.0),
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
) -> PhaseDiagram:
    """``d_hidden + 1`` features in ``d_hidden`` dimensions, as one stack of grid^2 x n_seeds models.

    Every feature has the same density; the first ``d_hidden`` features have importance 1 and
    the extra (last) one a relative importance from ``importance_range``.
    """
    if grid < 2:
        raise ValueError(f"grid must be at least 2, got {grid}")
    n = d_hidden + 1
    dens = np.geomspace(*density_range, grid)
    rel = np.geomspace(*importance_range, grid)
    R, D = np.meshgrid(rel, dens, indexing="ij")  # (grid_imp, grid_dens)
    p = torch.as_tensor(D.reshape(-1, 1), dtype=torch.float32)
    imp = torch.ones(grid * grid, n)
    imp[:, -1] = torch.as_tensor(R.reshape(-1), dtype=torch.float32)
    cfg = ToyConfig(n_features=n, d_hidden=d_hidden, n_instances=grid * grid, feature_probability=p, importance=imp,
                    steps=steps, batch_size=batch_size, lr=lr, seed=seed, device=device, log_every=max(steps, 1))
    t0 = time.perf_counter()
    best = best_of_seeds(cfg, n_seeds, progress=progress, desc=f"phase diagram, {n} features in {d_hidden}-D")
    seconds = time.perf_counter() - t0
    W = best.W.reshape(grid, grid, d_hidden, n)
    return PhaseDiagram(dens, rel, classify_extra_feature(W).numpy(), feature_norms(W)[..., -1].numpy(),
                        superposition(W)[..., -1].numpy(), W, d_hidden, grid * grid * n_seeds, seconds)


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


def dimensionality_sweep(
    densities: Sequence[float],
    n_features: int = 200,
    d_hidden: int = 20,
    steps: int = 3000,
    batch_size: int = 1024,
    lr: float = 3e-2,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
) -> Dimensionality:
    """The paper's feature-dimensionality experiment: importance 1 everywhere, one model per density."""
    dens = np.asarray(densities, dtype=np.float64).reshape(-1)
    cfg = ToyConfig(n_features=n_features, d_hidden=d_hidden, n_instances=len(dens),
                    feature_probability=torch.as_tensor(dens, dtype=torch.float32)[:, None], importance=1.0,
                    steps=steps, batch_size=batch_size, lr=lr, seed=seed, device=device,
                    log_every=max(steps // 20, 1), eval_samples=4096)
    model = ToyModel(cfg)
    train(model, progress=progress, desc=f"{n_features} features in {d_hidden}-D")
    W = model.W.detach().cpu()
    return Dimensionality(dens, (d_hidden / W.square().sum((-1, -2))).numpy(), feature_dimensionality(W).numpy(),
                          n_represented(W).numpy(), W)

