"""From the three diagnostics to a choice of dictionary size and L1 coefficient.

``suggest_hyperparameters`` applies each diagnostic's rule (see ``rules``) to a grid and
combines the three picks. None of the rules reads the ground truth, so the same call works on
a language model's activations, where the answer is unknown.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from helpers.diagnostics.result import GridResult
from helpers.diagnostics.rules import dead_free_run, loss_steepness

_NEEDED = ("recon_loss", "l1_loss", "l0", "dead")
"""Metrics every rule reads; they must be finite wherever a cell did not diverge."""


class Suggestion(NamedTuple):
    """One method's choice of hyperparameters."""

    method: str
    d_sae: int
    l1: float
    reason: str

    def describe(self, reference_size: int | None = None) -> str:
        size = f"{self.d_sae / reference_size:g}x" if reference_size else f"J={self.d_sae}"
        return f"{self.method:<22} size {size:>5}, L1 {self.l1:<7.3g} {self.reason}"


class Suggestions(NamedTuple):
    """What each diagnostic suggests, and the choice that combines them (``agreed``)."""

    dead: Suggestion
    stickiness: Suggestion
    mmcs_larger: Suggestion
    agreed: Suggestion

    def describe(self, reference_size: int | None = None) -> str:
        return "\n".join(s.describe(reference_size) for s in self)


def _check_finite(grid: GridResult) -> str:
    """'' or a note naming the diverged cells the rules leave out; ValueError if a number is
    missing anywhere else, or nothing is left."""
    for name in _NEEDED:
        bad = ~np.isfinite(np.asarray(getattr(grid, name), dtype=float)) & ~grid.diverged
        if bad.any():
            cells = [grid.cell_label(i, j) for i, j in zip(*np.nonzero(bad))]
            raise ValueError(
                f"{name} is NaN or infinite at {'; '.join(cells[:5])}{' ...' if len(cells) > 5 else ''}, where the "
                "grid does not record a divergence: the grid is damaged. Rerun run_grid (or mark the cells in "
                "grid.diverged) before asking for suggestions"
            )
    if grid.diverged.all():
        raise ValueError("every cell of the grid diverged: there is nothing to suggest from. "
                         "Check the data for NaN/inf and try a smaller learning rate")
    cells = grid.diverged_cells()
    return f" [left out {len(cells)} diverged cell(s): {'; '.join(cells)}]" if cells else ""


def _extreme_cell(values: np.ndarray, arg, found: str, empty: str, diverged: np.ndarray) -> tuple[int, int, str]:
    """The (size, L1) cell that ``arg`` (np.nanargmin or np.nanargmax) picks in ``values`` and
    the reason ``found`` with its value filled in; if every value is NaN, the first cell that did
    not diverge (the corner (0, 0) of a grid without divergences) and ``empty``."""
    if not np.isfinite(values).any():
        i, j = np.argwhere(~diverged)[0]  # _check_finite made sure one exists
        return int(i), int(j), empty
    i, j = np.unravel_index(arg(values), values.shape)
    return int(i), int(j), found.format(values[i, j])


def suggest_hyperparameters(grid: GridResult) -> Suggestions:
    """Apply the report's three diagnostics to ``grid``; none of them reads the ground truth.

    * dead latents: the largest dictionary, with the largest L1 coefficient, that has no
      dead latent (every smaller L1 at that size must be dead-free too);
    * loss stickiness: the cell where the reconstruction loss is flattest along the L1 axis
      while the L1 loss is still in its basin (``loss_steepness``): more sparsity, for free;
    * MMCS with larger dictionaries: the cell where it peaks (among cells with L0 >= 1).

    The combined choice (``agreed``) gives each diagnostic the question it answers: the size
    from MMCS with larger dictionaries (the only argument of the three about size), and the
    L1 coefficient from stickiness at that size (the report: the sticky region is "where the
    L1 penalty coefficient is optimal for that dictionary size"), among the L1 values where
    that size has no dead latent yet. Without a sticky cell there, it keeps the MMCS pick's L1.
    A vote of the three on the size, used before, chose 8x on notebook 03's grid: an
    undertrained 8x dictionary has no dead latent yet and the flattest loss of the grid.

    Cells that diverged (``grid.diverged``) take part in no rule, and every reason says so;
    a NaN anywhere else is a ValueError (a damaged grid must not quietly steer a choice).
    """
    left_out = _check_finite(grid)
    S, L = grid.shape
    Js, alphas = grid.d_sae_values, grid.l1_values

    # 1. dead latents (a diverged cell ends a dead-free run: nothing says it was dead-free)
    runs = np.array([dead_free_run(grid.dead[i]) for i in range(S)])
    if runs.max() < 0:  # the first cell that trained: the corner (0, 0) where nothing diverged
        i1, j1 = (int(v) for v in np.argwhere(~grid.diverged)[0])
        why1 = ("(every size has dead latents or diverged at its smallest L1: fell back to the first cell that trained)"
                if grid.diverged.any() else
                "(every cell has dead latents: the grid starts too large; fell back to its corner)")
    else:
        i1 = int(max(range(S), key=lambda i: (runs[i], i)))  # largest alpha first, then the larger size
        j1 = int(runs[i1])
        why1 = f"largest dead-free L1 of any size ({int(grid.dead[i1, j1])} dead over the last window)"
    dead = Suggestion("dead latents", int(Js[i1]), float(alphas[j1]), why1 + left_out)

    # 2. loss stickiness (diverged cells are NaN, so are their neighbours' slopes)
    steep = loss_steepness(grid)
    i2, j2, why2 = _extreme_cell(steep, np.nanargmin, "flattest reconstruction loss along L1 ({:.2f} std per decade)",
                                 "(grid too small to measure stickiness: need 3 L1 values in a row)" if L < 3 else
                                 "(no size has 3 trained L1 values in a row whose L1 loss is still rising: "
                                 "stickiness not measured)", grid.diverged)
    sticky = Suggestion("loss stickiness", int(Js[i2]), float(alphas[j2]), why2 + left_out)

    # 3. MMCS with larger dictionaries
    # Only dictionaries that still encode something (on average at least one active latent
    # per input): where the L1 penalty silenced everything, two dictionaries can "agree" on
    # leftover directions that no input uses.
    ml = np.where((grid.l0 >= 1.0) & ~grid.diverged, grid.mmcs_larger, np.nan)
    i3, j3, why3 = _extreme_cell(ml, np.nanargmax, "highest agreement with larger dictionaries (MMCS {:.3f})",
                                 "(one size only: nothing larger to compare with)" if S == 1 else
                                 "(nothing to compare: at every L1, each cell diverged, encodes nothing "
                                 "(L0 < 1) or has no larger dictionary that trained)", grid.diverged)
    larger = Suggestion("MMCS with larger", int(Js[i3]), float(alphas[j3]), why3 + left_out)

    # 4. combined: size from MMCS with larger, L1 from stickiness at that size while dead-free
    picked = np.isfinite(ml).any()
    size = "size from MMCS with larger" if picked else f"size {grid.size_label(i3)}: MMCS with larger picked none {why3}"
    row = steep[i3].copy()
    row[np.arange(L) > dead_free_run(grid.dead[i3])] = np.nan
    if np.isfinite(row).any():
        j4 = int(np.nanargmin(row))
        why4 = f"{size}, L1 where that size's loss is stickiest ({row[j4]:.2f} std per decade)"
    else:
        j4 = int(j3)
        why4 = ("size and L1 from MMCS with larger (no sticky, dead-free cell at that size)" if picked
                else f"{size}; no sticky, dead-free L1 at that size: its first that trained")
    agreed = Suggestion("combined", int(Js[i3]), float(alphas[j4]), why4 + left_out)
    return Suggestions(dead, sticky, larger, agreed)
