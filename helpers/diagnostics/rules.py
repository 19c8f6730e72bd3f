"""The three diagnostics as plain functions of a grid's numbers; none reads the ground truth.

* dead latents: ``dead_free_run`` finds, per size, how far along the L1 axis a dictionary
  stays free of dead latents;
* loss stickiness: ``standardized_log`` and ``ssll`` (the report's summed standardized log
  losses), and ``loss_steepness``, how fast the reconstruction loss climbs with alpha;
* MMCS with larger dictionaries: ``mmcs_with_larger``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from helpers.metrics import mmcs_between, random_mmcs_baseline


def standardized_log(values: np.ndarray) -> np.ndarray:
    """log(values) minus its mean, over its standard deviation, across the whole grid.

    A loss of exactly 0 (an L1 loss when every latent is dead) has no logarithm: it is NaN
    here and left out of the mean and the standard deviation, as in the report. So are
    cells that diverged (NaN already).
    """
    values = np.asarray(values, dtype=np.float64)
    logs = np.full(values.shape, np.nan)
    ok = np.isfinite(values) & (values > 0)
    logs[ok] = np.log(values[ok])
    if ok.sum() < 2:
        return np.full(values.shape, np.nan)
    mu, sd = logs[ok].mean(), logs[ok].std()
    return (logs - mu) / (sd if sd > 0 else 1.0)


def ssll(recon_loss: np.ndarray, l1_loss: np.ndarray) -> np.ndarray:
    """Summed standardized log losses: standardized log recon + standardized log L1."""
    return standardized_log(recon_loss) + standardized_log(l1_loss)


def mmcs_with_larger(dictionaries: Sequence[torch.Tensor | np.ndarray]) -> np.ndarray:
    """(S, L) MMCS of each dictionary with every larger one at the same alpha, averaged.

    dictionaries[i]: (L, J_i, d) with J ascending. The smaller dictionary is the
    reference (each of its features looks for its best match in the larger one). The
    largest size has nothing larger: NaN. A dictionary with non-finite entries (a cell
    that diverged) takes no part: its own row is NaN, and the others average without it.

    Two dictionaries only agree because they learned the same directions if they started
    from unrelated random ones: give every size its own seed (``run_grid`` does).
    """
    dicts = [torch.as_tensor(d).float() for d in dictionaries]
    S, L = len(dicts), dicts[0].shape[0]
    out = np.full((S, L), np.nan)
    for j in range(L):  # one alpha at a time: the (J_i, J_k) cosine matrices can be large
        ok = [bool(torch.isfinite(d[j]).all()) for d in dicts]
        for i in range(S - 1):
            vals = [float(mmcs_between(dicts[i][j], dicts[k][j])) for k in range(i + 1, S) if ok[i] and ok[k]]
            if vals:
                out[i, j] = np.mean(vals)
    return out


def dead_free_run(dead_row: np.ndarray) -> int:
    """Index of the last alpha before the first cell with dead latents (-1 if the first has some).

    ``dead_row``: (L,) dead-latent counts along the L1 axis at one size. A cell with no
    count (NaN: it diverged) ends the run too: nothing says it was dead-free.
    """
    bad = np.flatnonzero(~(np.asarray(dead_row, dtype=float) == 0))
    return (len(dead_row) if bad.size == 0 else int(bad[0])) - 1


def loss_steepness(grid) -> np.ndarray:
    """(S, L) how fast the standardized log reconstruction loss climbs per decade of alpha.

    The central difference along the L1 axis, per decade of alpha (grids need not be evenly
    spaced). Small values are the report's 'sticky' basin: more L1 pressure, yet the
    reconstruction barely suffers. A cell only counts while the L1 loss is in its own basin
    (positive, and not past its peak, after which it falls as latents die): elsewhere, at
    the first and last alpha, and next to a diverged cell, the value is NaN.
    """
    r, l = grid.std_log_recon, grid.std_log_l1
    la = np.log10(np.asarray(grid.l1_values, dtype=float))
    slope = np.abs(np.diff(r, axis=1)) / np.diff(la)  # (S, L-1) between neighbours
    out = np.full(r.shape, np.nan)
    out[:, 1:-1] = (slope[:, :-1] + slope[:, 1:]) / 2
    # The L1 loss rises with alpha until latents start dying, then falls: the basin is
    # everything up to its peak (after it, reconstruction is flat only because it is lost).
    cols = np.arange(r.shape[1])[None, :]
    peak = np.array([np.nanargmax(row) if np.isfinite(row).any() else -1 for row in l])[:, None]
    out[~(np.isfinite(l) & (cols <= peak))] = np.nan
    return out


def random_baseline_with_larger(d_sae_values: Sequence[int], d_in: int, seed: int = 0) -> np.ndarray:
    """(S,) what ``mmcs_with_larger`` gives for unrelated random dictionaries of these sizes in
    d_in dimensions (NaN for the largest): agreement above it is what training found."""
    Js = [int(J) for J in d_sae_values]
    out = np.full(len(Js), np.nan)
    for i in range(len(Js) - 1):
        out[i] = np.mean([random_mmcs_baseline(Js[i], Js[k], d_in, seed=seed) for k in range(i + 1, len(Js))])
    return out
