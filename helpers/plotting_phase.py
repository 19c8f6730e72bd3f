"""Notebook 01's phase diagrams: which of three phases the extra feature lands in, over
importance x density, with the cost estimate that explains the boundary's shape."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from helpers import toy
from helpers.plotting_toy import DPI, draw_arrows, feature_colors

PHASE_COLORS = ("#d9d9d9", "#2b8cbe", "#e6550d")
"""Not represented (grey), dedicated dimension (blue), superposition (orange)."""


# --------------------------------------------------------------------------------------
# Phase diagram
# --------------------------------------------------------------------------------------
def _label_cell(phase: np.ndarray, k: int, half_width: int, avoid: Sequence[tuple[int, int]] = ()) -> tuple[int, int] | None:
    """Where to write phase ``k``'s name: the cell (i, j) whose neighbourhood (one row up and down,
    ``half_width`` columns either side, about the label's size) holds the most cells of phase ``k``,
    so the label covers no other phase; ties go to the cell nearest the middle of the phase's cells.
    Cells within two rows and ``half_width + 1`` columns of an ``avoid`` cell are not used."""
    mine = np.pad(phase == k, ((1, 1), (half_width, half_width)))  # outside the diagram counts as another phase
    ii, jj = np.nonzero(phase == k)
    if len(ii) < 4:
        return None
    mid_i, mid_j = np.median(ii), np.median(jj)
    best, best_key = None, None
    for i, j in zip(ii, jj):
        if any(abs(i - a) <= 2 and abs(j - b) <= half_width + 1 for a, b in avoid):
            continue
        covered = int(mine[i:i + 3, j:j + 2 * half_width + 1].sum())
        key = (covered, -((i - mid_i) ** 2 + (j - mid_j) ** 2))
        if best_key is None or key > best_key:
            best, best_key = (int(i), int(j)), key
    return best


def draw_phase_diagram(ax, pd: "toy.PhaseDiagram", title: str | None = None,
                       avoid: Sequence[tuple[int, int]] = ()) -> None:
    """One phase diagram: relative importance of the extra feature (y) vs density (x), log axes.

    ``avoid``: (i_importance, j_density) cells to keep the phase names away from (marked cells)."""
    d, r = pd.densities, pd.rel_importance
    # cell edges halfway between the log-spaced centres
    def edges(v):
        lv = np.log10(v)
        mid = (lv[1:] + lv[:-1]) / 2
        return 10 ** np.concatenate([[2 * lv[0] - mid[0]], mid, [2 * lv[-1] - mid[-1]]])

    ax.pcolormesh(edges(d), edges(r), pd.phase, cmap=ListedColormap(PHASE_COLORS), vmin=-0.5, vmax=2.5)
    ax.set(xscale="log", yscale="log", xlabel="feature density 1 - S (log)",
           ylabel="importance of the extra feature / others (log)",
           title=title or f"{pd.d_hidden + 1} features in {pd.d_hidden}-D")
    ax.axhline(1.0, color="k", lw=0.6, ls=":")
    # Name each phase inside a block of its own cells, so the label hides no cell of another phase.
    # A name of 8-point text spans about 0.3 x its length in cells of a 20-cell row of this width.
    for k, name in enumerate(toy.PHASES):
        half_width = max(1, int(np.ceil(0.3 * len(name) * len(d) / 20 / 2)))
        cell = _label_cell(pd.phase, k, half_width, avoid)
        if cell is not None:
            ax.text(d[cell[1]], r[cell[0]], name, ha="center", va="center", fontsize=8,
                    bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none", alpha=0.75))


def phase_cost_boundary(rel_importance) -> np.ndarray:
    """The density where superposition stops paying, from the three costs per sample of the 1-D model
    (p: density, r: relative importance, E[x^2] = 1/3, E[min(x, y)^2] = 1/6). A dropped feature
    still has its bias: it outputs its mean p/2 and costs its variance, p/3 - p^2/4.

    * drop the extra feature: r (p/3 - p^2/4);
    * give it the dimension and drop the other feature: p/3 - p^2/4;
    * share the dimension as an antipodal pair: (1 + r) p^2 / 6 (both on: each loses the smaller value).

    Superposition wins below p = 4r / (5r + 2) for r <= 1 and p = 4 / (5 + 2r) for r >= 1: rising
    with r up to r = 1 (p = 4/7), falling after.
    """
    r = np.asarray(rel_importance, dtype=float)
    return np.where(r <= 1, 4 * r / (5 * r + 2), 4 / (5 + 2 * r))


def plot_phase_diagrams(diagrams: Sequence["toy.PhaseDiagram"], marks: Sequence[tuple[int, int]] = (),
                        cost_line: bool = True):
    """Phase diagrams side by side with a shared legend of the phases; ``marks`` (i_importance, j_density)
    cells are labelled A, B, ... on the last diagram; ``cost_line`` draws ``phase_cost_boundary``."""
    fig, axes = plt.subplots(1, len(diagrams), figsize=(5.2 * len(diagrams) + 0.6, 4.6), dpi=DPI, squeeze=False)
    for n, (ax, pd) in enumerate(zip(axes[0], diagrams)):
        g = pd.phase.shape[0]
        draw_phase_diagram(ax, pd, f"{pd.d_hidden + 1} features in {pd.d_hidden}-D ({g}x{g} cells)",
                           avoid=marks if n == len(diagrams) - 1 else ())
        if cost_line:
            r = np.geomspace(pd.rel_importance[0], pd.rel_importance[-1], 200)
            if pd.d_hidden >= 2:  # above r = 1 a dedicated dimension beats sharing at every density
                r = r[r <= 1.0]
            ax.plot(phase_cost_boundary(r), r, "k--", lw=1.5)
            ax.set_xlim(right=pd.densities[-1] * 1.15)
    for k, (i, j) in enumerate(marks):
        pd = diagrams[-1]
        axes[0, -1].text(pd.densities[j], pd.rel_importance[i], "ABCDEFGH"[k], ha="center", va="center",
                         fontsize=10, weight="bold", bbox=dict(boxstyle="circle,pad=0.15", fc="white", ec="k"))
    # One legend below the diagrams, so no cell is hidden behind it.
    handles = [Patch(color=c, label=f"extra feature: {p}") for c, p in zip(PHASE_COLORS, toy.PHASES)]
    if cost_line:
        handles.append(Line2D([], [], color="k", ls="--", lw=1.5, label="cost estimate: superposition pays left of this"))
    fig.legend(handles=handles, loc="lower center", ncol=2 if cost_line else 3, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.13 if cost_line else 0.07, 1, 1))
    return fig


def plot_phase_examples(pd: "toy.PhaseDiagram", cells: Sequence[tuple[int, int]]):
    """The arrows of a few cells (i_importance, j_density) of a 2-D phase diagram."""
    if pd.d_hidden != 2:
        raise ValueError("plot_phase_examples draws 2-D models: pass the d_hidden=2 diagram")
    cells = [tuple(c) for c in cells]
    fig, axes = plt.subplots(1, len(cells), figsize=(2.4 * len(cells), 2.7), dpi=DPI, squeeze=False)
    colors = feature_colors(pd.W.shape[-1])
    colors[-1] = plt.cm.autumn(0.1)
    for ax, (i, j) in zip(axes[0], cells):
        k = cells.index((i, j))
        draw_arrows(ax, pd.W[i, j], colors=colors,
                    title=f"{'ABCDEFGH'[k]}: density {pd.densities[j]:.2g}, imp {pd.rel_importance[i]:.2g}\n"
                          f"{toy.PHASES[pd.phase[i, j]]}")
    fig.suptitle("Example cells (red: the extra feature)", fontsize=10)
    fig.tight_layout()
    return fig
