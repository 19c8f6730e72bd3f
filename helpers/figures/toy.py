"""Figures for notebook 01: toy models of superposition (the columns of W, W^T W and the bias,
the readouts compared, feature dimensionality) and the sliders over a precomputed sweep. Pairs,
polytopes and phase diagrams: ``helpers.figures.toy_geometry``; the models with a row of neurons
(privileged basis, computing |x|): ``helpers.figures.toy_neurons``.

Every function draws one figure (or into the axes it is given) and returns the figure, so a
notebook cell is one call plus ``plt.show()``. Inputs are the results ``helpers.toy``
returns; nothing here trains anything. The interactive 3-D view is
``helpers.figures.interactive.tegum_polytope``.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch

from helpers import toy
from helpers.figures.style import DPI, to_numpy


def feature_colors(n: int) -> np.ndarray:
    """One colour per feature, dark (most important, feature 0) to light (least)."""
    return plt.cm.viridis(np.linspace(0.0, 0.85, n))


def density_label(d: float) -> str:
    return f"density {d:.2g}"


# --------------------------------------------------------------------------------------
# The columns of W as arrows
# --------------------------------------------------------------------------------------
def draw_arrows(ax, W, title: str | None = None, colors=None, scale: float | None = None) -> None:
    """The n columns of one 2-D ``W`` (2, n) as arrows from the origin, with the unit circle.

    ``scale``: axis half-width (default: 1.35 x the longest column, at least 1.35), so models
    with large weights (the softmax readout) still fit.
    """
    W = to_numpy(W)
    if W.ndim != 2 or W.shape[0] != 2:
        raise ValueError(f"draw_arrows draws a 2-D model, W of shape (2, n); got {W.shape}")
    n = W.shape[1]
    colors = feature_colors(n) if colors is None else colors
    lim = scale if scale is not None else 1.35 * max(1.0, float(np.linalg.norm(W, axis=0).max()))
    ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, ls=":", lw=0.8, color="0.6"))
    for i in range(n):
        ax.annotate("", xy=(W[0, i], W[1, i]), xytext=(0, 0),
                    arrowprops=dict(arrowstyle="-|>", color=colors[i], lw=2, shrinkA=0, shrinkB=0))
        ax.plot(W[0, i], W[1, i], "o", ms=4, color=colors[i])
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xticks=[], yticks=[])
    if title:
        ax.set_title(title, fontsize=9)


def plot_arrow_grid(W_grid, row_labels: Sequence[str], col_labels: Sequence[str], title: str,
                    importance=None, cell: float = 1.9):
    """A grid of arrow plots: ``W_grid`` (rows, cols, 2, n), one small plot per model."""
    W_grid = to_numpy(W_grid)
    R, C, _, n = W_grid.shape
    fig, axes = plt.subplots(R, C, figsize=(cell * C + 1.6, cell * R + 0.9), dpi=DPI, squeeze=False)
    colors = feature_colors(n)
    for r in range(R):
        for c in range(C):
            draw_arrows(axes[r, c], W_grid[r, c], colors=colors)
            if r == 0:
                axes[r, c].set_title(col_labels[c], fontsize=9)
        axes[r, 0].set_ylabel(row_labels[r], fontsize=9)
    imp = to_numpy(importance) if importance is not None else None
    handles = [Patch(color=colors[i], label=f"feature {i}" + (f" (I={imp[i]:.2f})" if imp is not None else ""))
               for i in range(n)]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1 - 1.5 / (cell * C + 1.6), 1))
    return fig


# --------------------------------------------------------------------------------------
# W^T W and the bias
# --------------------------------------------------------------------------------------
def draw_wtw_bias(ax_wtw, ax_b, W, b, title: str | None = None, b_lim: float | None = None):
    """W^T W (n, n) as a heatmap (red: +, blue: -, limits +-1) and the bias (n,) beside it, on its
    own colour scale (``b_lim``, default its largest |b|): a bias of -0.2 would be pale next to the +-1
    of W^T W. Each bias value is written in its cell. Returns both images, for the caller's colour bars."""
    W, b = to_numpy(W), to_numpy(b)
    n = W.shape[1]
    G = W.T @ W
    lim = max(1.0, float(np.abs(G).max()))
    im = ax_wtw.imshow(G, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax_wtw.set(xticks=range(n), yticks=range(n), xlabel="feature j", ylabel="feature i")
    ax_wtw.tick_params(labelsize=7)
    if title:
        ax_wtw.set_title(title, fontsize=9)
    b_lim = b_lim or max(float(np.abs(b).max()), 1e-3)
    im_b = ax_b.imshow(b[:, None], cmap="PuOr_r", vmin=-b_lim, vmax=b_lim)
    for i, v in enumerate(b):  # white on the darkest cells, so every value stays readable
        ax_b.text(0, i, f"{v:+.2f}", ha="center", va="center", fontsize=6,
                  color="white" if abs(v) > 0.6 * b_lim else "black")
    ax_b.set(xticks=[0], xticklabels=["b"], yticks=[])
    return im, im_b


def plot_wtw_grid(W, b, labels: Sequence[str], title: str):
    """W^T W and bias for a row of models: ``W`` (k, m, n), ``b`` (k, n); the biases share their own scale."""
    W, b = to_numpy(W), to_numpy(b)
    k = W.shape[0]
    fig, axes = plt.subplots(1, 2 * k, figsize=(2.6 * k + 2.4, 2.9), dpi=DPI,
                             gridspec_kw={"width_ratios": [6, 1.3] * k})
    b_lim = max(float(np.abs(b).max()), 1e-3)
    for j in range(k):
        im, im_b = draw_wtw_bias(axes[2 * j], axes[2 * j + 1], W[j], b[j], labels[j], b_lim=b_lim)
        if j:
            axes[2 * j].set_ylabel("")
    fig.subplots_adjust(left=0.04, right=0.88, wspace=0.35)
    fig.colorbar(im, cax=fig.add_axes([0.895, 0.15, 0.008, 0.68]), label="W^T W entry")
    fig.colorbar(im_b, cax=fig.add_axes([0.95, 0.15, 0.008, 0.68]), label="bias b")
    fig.suptitle(title)
    return fig


def plot_loss_split(densities, split, title: str):
    """The parts of the loss (``toy.loss_parts.loss_parts``, each (n_densities,)) against density. Interference
    can be negative (other features pushing an off feature's output back to 0), so the y axis is symmetric-log."""
    fig, ax = plt.subplots(figsize=(10, 4.0), dpi=DPI)
    names = {"own": "feature on: its own error", "bias": "feature off: its bias alone, ReLU(b_i)^2",
             "one_other": "feature off, ONE other on: what it adds", "several_others": "feature off, 2+ others on: what they add"}
    for (field, label), marker in zip(names.items(), "osv^"):
        ax.plot(densities, to_numpy(getattr(split, field)), marker=marker, label=label)
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1e-5)
    ax.set(xlabel="feature density 1 - S (log)",
           ylabel="importance-weighted squared error\nper sample (symmetric log; < 0: helps)", title=title)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    return fig


def plot_hidden_scatter(W, x, title: str, n_points: int = 600):
    """The hidden vectors h = W x of a batch x (batch, n) of one 2-D model W (2, n), coloured by the one
    active feature (grey: two or more on), with the columns W_i as arrows."""
    W, x = to_numpy(W), to_numpy(x)[:n_points]
    h = x @ W.T  # (batch, 2)
    on = x > 0
    k = on.sum(1)
    colors = feature_colors(W.shape[1])
    fig, ax = plt.subplots(figsize=(6.0, 4.6), dpi=DPI)
    ax.scatter(*h[k >= 2].T, s=8, color="0.6", alpha=0.6, label="2+ features on")
    for i in range(W.shape[1]):
        sel = (k == 1) & on[:, i]
        ax.scatter(*h[sel].T, s=8, color=colors[i], label=f"only feature {i} on")
    draw_arrows(ax, W, colors=colors, scale=1.35 * max(1.0, float(np.abs(h).max())))
    ax.set(title=title, xlabel="hidden dimension 1", ylabel="hidden dimension 2", xticks=[-1, 0, 1], yticks=[-1, 0, 1])
    # Outside the axes: every colour named, and no point hidden behind the legend.
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False, markerscale=1.5)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------
# Readouts compared
# --------------------------------------------------------------------------------------
def plot_represented_vs_density(sweeps: dict, d_hidden: int = 2):
    """Features represented (norm > half the largest) vs density, one line per readout.

    ``sweeps``: readout name -> ``toy.Sweep`` with one decay.
    """
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=DPI)
    for (name, sw), marker in zip(sweeps.items(), "osv^"):
        counts = to_numpy(toy.n_represented(sw.W[0], relative=True))
        ax.semilogx(sw.densities, counts, marker=marker, label=f"{name} readout")
    n = sweeps[next(iter(sweeps))].W.shape[-1]
    ax.axhline(d_hidden, ls="--", color="0.5", lw=1)
    ax.text(ax.get_xlim()[0], d_hidden + 0.08, f" {d_hidden} = hidden dimensions", color="0.4", fontsize=8)
    ax.set(xlabel="feature density 1 - S (log)", ylabel="features represented",
           title=f"How many of the {n} features get a direction", ylim=(0, n + 0.5))
    ax.legend()
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------
# Feature dimensionality
# --------------------------------------------------------------------------------------
SHAPE_COLORS = {"digon": "tab:blue", "triangle": "tab:green", "tetrahedron": "tab:purple", "pentagon": "tab:orange",
                "square antiprism": "tab:red", "own dimension": "black", "other": "0.65"}


def plot_dimensionality(dim: "toy.Dimensionality", n_features: int, d_hidden: int, shapes=None):
    """Dimensions per feature (line) and every feature's dimensionality (dots) vs 1 / density. ``shapes``
    (per density, per feature: the polytope of its tegum factor, ``toy.shapes.feature_shapes``) colours the dots."""
    x = 1.0 / dim.densities
    fig, ax = plt.subplots(figsize=(9.5, 4.6), dpi=DPI)
    nudge = {2 / 5: 0.015, 3 / 8: -0.015}  # these two labels would overlap
    for value in toy.STICKY_FRACTIONS:
        name = {1.0: "1", 3 / 4: "3/4", 2 / 3: "2/3", 1 / 2: "1/2", 2 / 5: "2/5", 3 / 8: "3/8"}[value]
        ax.axhline(value, color="0.75", lw=0.8, ls="--", zorder=0)
        ax.text(x.max() * 1.05, value + nudge.get(value, 0.0), name, va="center", fontsize=8, color="0.35")
    fd = dim.feature_dim
    xs = np.repeat(x[:, None], fd.shape[1], 1)
    # Only features the model represents (norm > 0.5): dropped ones have D near 0, and in the
    # dense regime the leftovers of a rotated principal subspace would smear the plot.
    keep = to_numpy(toy.feature_norms(dim.W)) > 0.5
    jitter = np.exp(np.random.default_rng(0).normal(0, 0.02, xs.shape))
    if shapes is None:
        ax.scatter((xs * jitter)[keep], fd[keep], s=6, alpha=0.35, color="tab:blue", label="one feature's D_i")
    else:
        names = np.array([[s or "" for s in row] for row in shapes])
        for name, color in SHAPE_COLORS.items():
            sel = keep & (names == name)
            if sel.any():
                ax.scatter((xs * jitter)[sel], fd[sel], s=8, alpha=0.5, color=color,
                           label=f"D_i of a feature in a {name}" if name not in ("other", "own dimension")
                           else ("D_i, no polytope" if name == "other" else "D_i, a dimension of its own"))
    ax.semilogx(x, dim.dims_per_feature, "k-", lw=2, label="m / ||W||_F^2 (dimensions per feature)")
    ax.set(xlabel="1 / density = 1 / (1 - S)  (log)", ylabel="dimensions per feature",
           title=f"Feature dimensionality: {n_features} features in {d_hidden} dimensions", ylim=(0, 1.12),
           xlim=(x.min() / 1.1, x.max() * 1.6))
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False, markerscale=2)
    fig.tight_layout()
    return fig


def draw_sweep_cell(sw: "toy.Sweep", i_decay: int, j_density: int, note: str = ""):
    """Arrows, W^T W (with its colour bar) and the bias (with its own colour bar) of one (decay, density)
    cell of a 2-D sweep, each panel in its own column so no label covers another."""
    fig = plt.figure(figsize=(9.6, 3.4), dpi=DPI)
    gs = fig.add_gridspec(1, 5, width_ratios=[3.2, 3.2, 0.18, 0.7, 0.18], wspace=0.45)
    ax0, ax1, cax1, ax2, cax2 = (fig.add_subplot(gs[k]) for k in range(5))
    W, b = sw.W[i_decay, j_density], sw.b[i_decay, j_density]
    draw_arrows(ax0, W, title="columns of W (arrows)")
    im, im_b = draw_wtw_bias(ax1, ax2, W, b, title="W^T W (interference)")
    fig.colorbar(im, cax=cax1, label="W^T W entry")
    fig.colorbar(im_b, cax=cax2, label="bias b (orange +, purple -)")
    ax2.set_title("bias b", fontsize=9)
    k = int(toy.n_represented(sw.W[i_decay, j_density], relative=True))
    fig.suptitle(f"{note}density {sw.densities[j_density]:.3g}, importance {sw.decays[i_decay]:.2f}^i "
                 f"({sw.readout}): {k} features represented", fontsize=10)
    fig.subplots_adjust(left=0.03, right=0.93, top=0.82, bottom=0.14)
    return fig


# --------------------------------------------------------------------------------------
# Sliders over a precomputed sweep
# --------------------------------------------------------------------------------------
def sweep_explorer(sw: "toy.Sweep", density: float | None = None, decay: float | None = None):
    """Sliders for density and importance decay over a precomputed ``toy.Sweep``.

    Moving a slider only picks a trained model and redraws it, so it feels live. Returns the
    ``interact`` handle (call ``handle.draw(i, j)`` to draw without widgets).
    """
    import ipywidgets as widgets

    j0 = int(np.abs(np.log(sw.densities) - np.log(density)).argmin()) if density else len(sw.densities) // 2
    i0 = int(np.abs(sw.decays - decay).argmin()) if decay else len(sw.decays) // 2
    dens_w = widgets.SelectionSlider(options=[(f"{d:.3g}", j) for j, d in enumerate(sw.densities)], value=j0,
                                     description="density", continuous_update=True)
    dec_w = widgets.SelectionSlider(options=[(f"{k:.2f}", i) for i, k in enumerate(sw.decays)], value=i0,
                                    description="decay", continuous_update=True)

    def draw(i: int, j: int):
        draw_sweep_cell(sw, i, j)
        plt.show()

    # A static picture of the starting setting first: viewers that cannot run widgets (a stored notebook,
    # GitHub) show this one; the live sliders below redraw their own copy.
    draw_sweep_cell(sw, i0, j0, note="starting setting (static copy): ")
    plt.show()
    handle = widgets.interact(draw, i=dec_w, j=dens_w)
    handle.draw = draw
    return handle
