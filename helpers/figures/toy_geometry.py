"""Figures for notebook 01's geometry: correlated and anticorrelated pairs, feature directions
in 3 dimensions (the polytopes) and the phase diagrams of one extra feature.

Every function draws one figure and returns it; inputs are the results ``helpers.toy``
returns. The interactive 3-D view is ``helpers.figures.interactive.tegum_polytope``; the models'
own figures (arrows, W^T W, sweeps) are in ``helpers.figures.toy``.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from helpers import toy
from helpers.figures.style import DPI, to_numpy
from helpers.figures.toy import density_label, draw_arrows, feature_colors

# --------------------------------------------------------------------------------------
# Correlated / anticorrelated pairs
# --------------------------------------------------------------------------------------
def pair_colors(n_pairs: int) -> list:
    """Partners share a hue (dark and light)."""
    return list(plt.cm.tab20(np.arange(2 * n_pairs) % 20))


def plot_pairs(pr: "toy.PairResult"):
    """Arrows of 2-D pair models: one row per kind of pairing, one column per density."""
    W = to_numpy(pr.W)
    K, Dn, m, n = W.shape
    if m != 2:
        raise ValueError("plot_pairs draws 2-D models; use pair_experiment with a base ToyConfig of d_hidden=2")
    colors = pair_colors(n // 2)
    fig, axes = plt.subplots(K, Dn, figsize=(2.4 * Dn + 1.8, 2.4 * K + 0.5), dpi=DPI, squeeze=False)
    for k in range(K):
        for j in range(Dn):
            ang = ", ".join(f"{a:.0f}" for a in pr.partner_angle[k, j])
            draw_arrows(axes[k, j], W[k, j], colors=colors, title=f"{density_label(pr.densities[j])}\npartners at {ang} deg")
        axes[k, 0].set_ylabel(f"{pr.kinds[k]} pairs", fontsize=9)
    handles = [Patch(color=colors[i], label=f"pair {i // 2}, feature {i}") for i in range(n)]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    fig.suptitle("Features in pairs: dark and light of one hue are partners")
    fig.tight_layout(rect=(0, 0, 1 - 1.7 / (2.4 * Dn + 1.8), 1))
    return fig


def plot_gram_rows(pr: "toy.PairResult", density_index: int):
    """W^T W of every kind of pairing at one density (works for any d_hidden)."""
    W = to_numpy(pr.W[:, density_index])
    K, m, n = W.shape
    fig, axes = plt.subplots(1, K, figsize=(3.1 * K + 1, 3.1), dpi=DPI, squeeze=False)
    for k in range(K):
        im = axes[0, k].imshow(W[k].T @ W[k], cmap="RdBu_r", vmin=-1.1, vmax=1.1)
        axes[0, k].set(title=f"{pr.kinds[k]} pairs", xticks=range(n), yticks=range(n), xlabel="feature j",
                       ylabel="feature i")
    fig.colorbar(im, ax=list(axes[0]), fraction=0.03, label="W^T W entry (cosine for unit columns)")
    fig.suptitle(f"{n} features in {m}-D, {density_label(pr.densities[density_index])}: pairs are (0,1), (2,3), ...")
    return fig


# --------------------------------------------------------------------------------------
# Feature directions in 3 dimensions (the static twin of interactive.tegum_polytope)
# --------------------------------------------------------------------------------------
def _hull_edges(P: np.ndarray) -> tuple[list, list]:
    """Faces (triangles) and edges of the convex hull of the points P (k, 3); an edge between two
    triangles of one flat face is left out. Empty when the points span fewer than 3 dimensions."""
    from scipy.spatial import ConvexHull

    try:
        hull = ConvexHull(P)
    except Exception:  # scipy's QhullError: points on a plane or a line have no 3-D hull
        return [], []
    edges = set()
    for f, (simplex, nbrs) in enumerate(zip(hull.simplices, hull.neighbors)):
        for k, g in enumerate(nbrs):  # neighbour g lies across the edge opposite vertex k
            if g > f and hull.equations[f, :3] @ hull.equations[g, :3] < 0.999:
                edges.add(tuple(sorted(np.delete(simplex, k))))
    return [P[s] for s in hull.simplices], [P[list(e)] for e in edges]


def directions_3d(W) -> np.ndarray:
    """(n, 3) feature directions of a 3-D model, from ``W`` (3, n) as a toy model stores it, or (n, 3)."""
    P = to_numpy(W).astype(float)
    if P.ndim != 2 or 3 not in P.shape:
        raise ValueError(f"W must have shape (3, n_features) or (n_features, 3), got {tuple(P.shape)}")
    return P if P.shape[1] == 3 else P.T


def plot_polytopes_3d(shapes: dict, title: str = "Feature directions in 3 dimensions", min_norm: float = 0.5,
                      elev: float = 18, azim: float = 30):
    """One 3-D panel per ``{name: W}``: each feature's direction as a spoke from the origin and a
    numbered point, and the edges of the convex hull of the represented ones (norm >= ``min_norm``;
    the others are drawn grey). ``W`` is (3, n) as a toy model stores it, or (n, 3)."""
    from mpl_toolkits.mplot3d.art3d import Line3DCollection, Poly3DCollection

    k = len(shapes)
    fig = plt.figure(figsize=(3.0 * k, 3.4), dpi=DPI)
    for n, (name, W) in enumerate(shapes.items()):
        P = directions_3d(W)
        norms = np.linalg.norm(P, axis=1)
        rep = norms >= min_norm
        ax = fig.add_subplot(1, k, n + 1, projection="3d")
        faces, edges = _hull_edges(P[rep]) if rep.sum() >= 4 else ([], [])
        if faces:
            ax.add_collection3d(Poly3DCollection(faces, facecolor="#7f7fff", alpha=0.12, edgecolor="none"))
            ax.add_collection3d(Line3DCollection(edges, colors="#5555cc", linewidths=1))
        for i, p in enumerate(P):
            color = "crimson" if rep[i] else "0.7"
            ax.plot([0, p[0]], [0, p[1]], [0, p[2]], color="0.5", lw=1.5)
            ax.scatter(*p, color=color, s=25, depthshade=False)
            ax.text(*(p * 1.18), str(i), fontsize=8, ha="center", va="center")
        r = 1.15 * max(float(norms.max()), 1e-9)
        ax.set(xlim=(-r, r), ylim=(-r, r), zlim=(-r, r), xticklabels=[], yticklabels=[], zticklabels=[])
        ax.set_box_aspect((1, 1, 1))
        ax.view_init(elev=elev, azim=azim)
        ax.set_title(name, fontsize=9)
    fig.suptitle(title)
    fig.subplots_adjust(left=0.0, right=1.0, bottom=0.02, top=0.85, wspace=0.05)
    return fig


# --------------------------------------------------------------------------------------
# Phase diagrams: which of three phases the extra feature lands in, over importance x density,
# with the cost estimate that explains the boundary's shape
# --------------------------------------------------------------------------------------
PHASE_COLORS = ("#d9d9d9", "#2b8cbe", "#e6550d")
"""Not represented (grey), dedicated dimension (blue), superposition (orange)."""


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
