"""Figures of notebook 01's section on correlated and anticorrelated feature pairs, and the
feature directions in 3 dimensions (tegum products and other polytopes)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch

from helpers.plotting_toy import DPI, density_label, draw_arrows, to_numpy

if TYPE_CHECKING:
    from helpers import toy


# --------------------------------------------------------------------------------------
# Correlated / anticorrelated pairs
# --------------------------------------------------------------------------------------
def pair_colors(n_pairs: int) -> list:
    """Partners share a hue (dark and light)."""
    base = plt.cm.tab20(np.arange(2 * n_pairs) % 20)
    return [base[i] for i in range(2 * n_pairs)]


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
# Feature directions in 3 dimensions (the static version of plotly_figures.tegum_polytope)
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


def plot_polytopes_3d(shapes: dict, title: str = "Feature directions in 3 dimensions", min_norm: float = 0.5,
                      elev: float = 18, azim: float = 30):
    """One 3-D panel per ``{name: W}``: each feature's direction as a spoke from the origin and a
    numbered point, and the edges of the convex hull of the represented ones (norm >= ``min_norm``;
    the others are drawn grey). ``W`` is (3, n) as a toy model stores it, or (n, 3)."""
    from mpl_toolkits.mplot3d.art3d import Line3DCollection, Poly3DCollection

    k = len(shapes)
    fig = plt.figure(figsize=(3.0 * k, 3.4), dpi=DPI)
    for n, (name, W) in enumerate(shapes.items()):
        P = to_numpy(W).astype(float)
        P = P if P.shape[1] == 3 else P.T  # (features, 3)
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
