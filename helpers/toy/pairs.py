"""Correlated and anticorrelated feature pairs: mutually exclusive features share a subspace
(antipodal partners), features that are always on together merge or go orthogonal."""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch

from helpers.toy.config import ToyConfig
from helpers.toy.experiments import best_of_seeds
from helpers.toy.geometry import n_represented, partner_angles


PAIR_KINDS = ("independent", "correlated", "anticorrelated")
"""How the two features of a pair co-occur: independently, always together, never together."""


class PairResult(NamedTuple):
    """Toy models whose features come in pairs, for several densities and kinds of pairing."""

    densities: np.ndarray
    """(n_densities,) density of every feature."""
    kinds: tuple[str, ...]
    """Entries of ``PAIR_KINDS``, one per row of the arrays below."""
    W: torch.Tensor
    """(kinds, n_densities, m, n) winning weights."""
    partner_angle: np.ndarray
    """(kinds, n_densities, n_pairs) angle in degrees between the two features of each pair."""
    n_represented: np.ndarray
    """(kinds, n_densities) features with norm above half the largest."""
    seed_antipodal: np.ndarray
    """(kinds, n_densities, seeds) bool: in this seed every pair's partners are antipodal (> 170 degrees)."""
    seed_loss: np.ndarray
    """(kinds, n_densities, seeds) final loss of every seed."""


def pair_experiment(
    densities: Sequence[float] = (0.1, 0.3),
    n_pairs: int = 2,
    d_hidden: int = 2,
    kinds: Sequence[str] = PAIR_KINDS,
    n_seeds: int = 6,
    steps: int = 3000,
    batch_size: int = 1024,
    lr: float = 3e-2,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
) -> PairResult:
    """2 * n_pairs equally important features whose pairs (0, 1), (2, 3), ... are independent,
    correlated (always on together) or anticorrelated (never on together); one stack per kind,
    all densities in it. Every feature is on with the same density (at most 0.5, so that an
    anticorrelated pair's two probabilities add up to at most 1)."""
    dens = np.asarray(densities, dtype=np.float64).reshape(-1)
    bad = [k for k in kinds if k not in PAIR_KINDS]
    if bad:
        raise ValueError(f"Unknown pair kinds {bad}: use entries of {PAIR_KINDS}.")
    if dens.max() > 0.5:
        raise ValueError(f"densities must be at most 0.5 (anticorrelated partners share one draw), got {dens.max()}")
    Ws, antipodal, losses = [], [], []
    for kind in kinds:
        cfg = ToyConfig(n_features=2 * n_pairs, d_hidden=d_hidden, n_instances=len(dens),
                        feature_probability=torch.as_tensor(dens, dtype=torch.float32)[:, None], importance=1.0,
                        n_correlated_pairs=n_pairs if kind == "correlated" else 0,
                        n_anticorrelated_pairs=n_pairs if kind == "anticorrelated" else 0,
                        steps=steps, batch_size=batch_size, lr=lr, seed=seed, device=device,
                        log_every=max(steps // 20, 1))
        best = best_of_seeds(cfg, n_seeds, progress=progress, desc=f"{kind} pairs")
        Ws.append(best.W)
        antipodal.append((partner_angles(best.seed_W, n_pairs) > 170).all(-1).numpy())  # (densities, seeds)
        losses.append(best.seed_loss)
    W = torch.stack(Ws)  # (kinds, densities, m, n)
    return PairResult(dens, tuple(kinds), W, partner_angles(W, n_pairs).numpy(),
                      n_represented(W, relative=True).numpy(), np.stack(antipodal), np.stack(losses))

