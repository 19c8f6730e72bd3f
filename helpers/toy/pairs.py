"""Correlated and anticorrelated feature pairs: mutually exclusive features share a subspace
(antipodal partners), features that are always on together merge or go orthogonal."""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch

from helpers.toy.config import ToyConfig
from helpers.toy.experiments import best_of_seeds, check_base, stacked
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
    b: torch.Tensor
    """(kinds, n_densities, n) their biases."""
    partner_angle: np.ndarray
    """(kinds, n_densities, n_pairs) angle in degrees between the two features of each pair."""
    n_represented: np.ndarray
    """(kinds, n_densities) features with norm above half the largest."""
    seed_antipodal: np.ndarray
    """(kinds, n_densities, seeds) bool: in this seed every pair's partners are antipodal (> 170 degrees)."""
    seed_loss: np.ndarray
    """(kinds, n_densities, seeds) final loss of every seed."""


def pair_experiment(base: ToyConfig, densities: Sequence[float] = (0.1, 0.3), kinds: Sequence[str] = PAIR_KINDS,
                    n_seeds: int = 6, progress: bool = True) -> PairResult:
    """``base.n_features`` (even) equally important features in ``base.d_hidden`` dimensions,
    whose pairs (0, 1), (2, 3), ... are independent, correlated (always on together) or
    anticorrelated (never on together); one stack per kind, all densities in it. Every feature
    is on with the same density (at most 0.5, so that an anticorrelated pair's two
    probabilities add up to at most 1)."""
    check_base(base)
    dens = np.asarray(densities, dtype=np.float64).reshape(-1)
    bad = [k for k in kinds if k not in PAIR_KINDS]
    if bad:
        raise ValueError(f"Unknown pair kinds {bad}: use entries of {PAIR_KINDS}.")
    if dens.max() > 0.5:
        raise ValueError(f"densities must be at most 0.5 (anticorrelated partners share one draw), got {dens.max()}")
    if base.n_features % 2:
        raise ValueError(f"features come in pairs: base.n_features must be even, got {base.n_features}")
    n_pairs = base.n_features // 2
    Ws, bs, antipodal, losses = [], [], [], []
    for kind in kinds:
        cfg = stacked(base, dens[:, None], 1.0, log_every=max(base.steps // 20, 1),
                      n_correlated_pairs=n_pairs if kind == "correlated" else 0,
                      n_anticorrelated_pairs=n_pairs if kind == "anticorrelated" else 0)
        best = best_of_seeds(cfg, n_seeds, progress=progress, desc=f"{kind} pairs")
        Ws.append(best.W)
        bs.append(best.b)
        antipodal.append((partner_angles(best.seed_W, n_pairs) > 170).all(-1).numpy())  # (densities, seeds)
        losses.append(best.seed_loss)
    W = torch.stack(Ws)  # (kinds, densities, m, n)
    return PairResult(dens, tuple(kinds), W, torch.stack(bs), partner_angles(W, n_pairs).numpy(),
                      n_represented(W, relative=True).numpy(), np.stack(antipodal), np.stack(losses))
