"""A trained (dictionary size x L1) grid as one tidy table: ``GridResult``.

Every per-cell number is an (S, L) array: S dictionary sizes (rows), L L1 coefficients
(columns). Each size's column keeps the ``helpers.sae.TrainLog`` its training returned.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from helpers.diagnostics.rules import standardized_log
from helpers.sae import TrainLog

DEAD_CAP = 100
"""The report caps dead-latent counts at 100 in its heatmaps, to resolve small counts."""

METRICS = ("recon_loss", "l1_loss", "l0", "dead", "mmcs_ground_truth", "mmcs_larger")
"""Per-cell numbers a grid stores, each an (n_sizes, n_l1) array."""

DERIVED = ("std_log_recon", "std_log_l1", "ssll")
"""Per-cell numbers computed from the stored ones."""

LOG_ARRAYS = ("steps", "recon_loss", "l1_loss", "l0", "dead", "steps_since_fired")
"""The arrays of a training log (``helpers.sae.TrainLog``) that the cache stores."""


@dataclass
class GridResult:
    """A trained (dictionary size x L1) grid: final numbers per cell, logs, dictionaries."""

    d_sae_values: np.ndarray
    """(S,) dictionary sizes J, ascending."""
    l1_values: np.ndarray
    """(L,) L1 coefficients alpha, ascending."""
    recon_loss: np.ndarray
    """(S, L) final (1/h)||x - x_hat||^2 (mean over the last logged window); NaN if diverged."""
    l1_loss: np.ndarray
    """(S, L) final L1 term, with its coefficient (0 when no latent fires)."""
    l0: np.ndarray
    """(S, L) final mean number of active latents per example."""
    dead: np.ndarray
    """(S, L) latents that fired in none of the last ``dead_window`` batches."""
    mmcs_ground_truth: np.ndarray
    """(S, L) MMCS of the true features against the dictionary (NaN without ground truth)."""
    mmcs_larger: np.ndarray
    """(S, L) MMCS with each larger dictionary at the same alpha, averaged (NaN for the largest)."""
    reference_size: int | None = None
    """Size the ratios refer to (G for toy data, the MLP width for a language model)."""
    diverged: np.ndarray | None = None
    """(S, L) True where training produced a NaN or infinite loss; every metric there is NaN."""
    logs: list[TrainLog] = field(default_factory=list)
    """One training log per size (its instances are the L1 values); a diverged column's has no rows."""
    dictionaries: list[np.ndarray] | None = None
    """Per size, the (L, J, d_in) unit-norm decoder rows as float16; None if not kept."""
    config: dict = field(default_factory=dict)
    """Everything the grid was trained with, as JSON (the cache key is made from it)."""
    seconds: float = 0.0
    """Training time (of the run that produced the cache, if loaded)."""
    from_cache: bool = False
    """True when this result was loaded from disk instead of trained."""
    saes: list | None = None
    """Per size, the trained stacked SAE (instances = L1 values), with ``keep_saes=True``;
    never cached (None when loaded from disk)."""

    def __post_init__(self) -> None:
        if self.diverged is None:
            self.diverged = np.zeros(self.shape, dtype=bool)

    # ---- shapes and labels -----------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return len(self.d_sae_values), len(self.l1_values)

    @property
    def size_ratios(self) -> np.ndarray | None:
        """(S,) J / reference_size, or None when there is no reference size."""
        return None if self.reference_size is None else self.d_sae_values / self.reference_size

    def size_label(self, i: int) -> str:
        """'2x' (with a reference size) or 'J=1024'."""
        r = self.size_ratios
        return f"{r[i]:g}x" if r is not None else f"J={int(self.d_sae_values[i])}"

    def cell_label(self, i: int, j: int) -> str:
        """'2x, alpha 0.3': one cell, as warnings and reasons name it."""
        return f"{self.size_label(i)}, alpha {self.l1_values[j]:.3g}"

    def diverged_cells(self) -> list[str]:
        """Labels of the cells whose training diverged (empty if none)."""
        return [self.cell_label(i, j) for i, j in zip(*np.nonzero(self.diverged))]

    # ---- derived diagnostics ---------------------------------------------------------
    @property
    def std_log_recon(self) -> np.ndarray:
        """(S, L) log reconstruction loss, standardized over the grid."""
        return standardized_log(self.recon_loss)

    @property
    def std_log_l1(self) -> np.ndarray:
        """(S, L) log L1 loss, standardized over the grid (NaN where the L1 loss is 0)."""
        return standardized_log(self.l1_loss)

    @property
    def ssll(self) -> np.ndarray:
        """(S, L) summed standardized log losses (NaN where the L1 loss is 0)."""
        return self.std_log_recon + self.std_log_l1

    def metric(self, name: str) -> np.ndarray:
        """One (S, L) grid by name: any of METRICS or DERIVED."""
        if name in METRICS or name in DERIVED:
            return np.asarray(getattr(self, name))
        raise ValueError(f"unknown metric {name!r}: use one of {METRICS + DERIVED}")

    def index(self, d_sae: int, l1: float) -> tuple[int, int]:
        """Grid position of the cell with size ``d_sae`` and L1 ``l1`` (nearest in log alpha)."""
        hits = np.flatnonzero(self.d_sae_values == d_sae)
        if hits.size == 0:
            raise ValueError(f"size {d_sae} is not in the grid; sizes are {self.d_sae_values.tolist()}")
        try:
            alpha = math.nan if isinstance(l1, (bool, str)) else float(l1)
        except (TypeError, ValueError):
            alpha = math.nan
        if not (math.isfinite(alpha) and alpha > 0):  # the nearest alpha is found in log alpha
            raise ValueError(f"l1 (the alpha to look up) must be a positive finite number, got {l1!r}: "
                             f"pass one of the grid's alphas {self.l1_values.tolist()}")
        j = int(np.argmin(np.abs(np.log(self.l1_values) - math.log(l1))))
        return int(hits[0]), j

    def dictionary(self, i: int, j: int) -> torch.Tensor:
        """The (J, d_in) learned dictionary of cell (size index i, L1 index j), float32."""
        if self.dictionaries is None:
            raise ValueError("this grid was run with keep_dictionaries=False: rerun it with True")
        return torch.from_numpy(self.dictionaries[i][j].astype(np.float32))

    # ---- tables ----------------------------------------------------------------------
    def format_table(self, columns: Sequence[str] = METRICS + ("ssll",)) -> str:
        """A plain-text table of the grid, one line per cell."""
        head = f"{'size':>8} {'alpha':>8} " + " ".join(f"{c[:12]:>12}" for c in columns)
        lines = [head, "-" * len(head)]
        for i in range(self.shape[0]):
            for j, alpha in enumerate(self.l1_values):
                vals = " ".join(f"{_fmt(self.metric(c)[i, j]):>12}" for c in columns)
                lines.append(f"{self.size_label(i):>8} {alpha:>8.3g} {vals}" + ("  diverged" if self.diverged[i, j] else ""))
        return "\n".join(lines)

    def __repr__(self) -> str:
        S, L = self.shape
        n_div = int(self.diverged.sum())
        return (f"GridResult({S} sizes {self.d_sae_values.tolist()} x {L} L1 values "
                f"{[float(f'{a:.3g}') for a in self.l1_values]}, from_cache={self.from_cache}"
                + (f", {n_div} diverged cells" if n_div else "") + ")")


def _fmt(v: float) -> str:
    if not np.isfinite(v):
        return "nan"
    return f"{int(v)}" if float(v).is_integer() and abs(v) < 1e9 else f"{v:.4g}"
