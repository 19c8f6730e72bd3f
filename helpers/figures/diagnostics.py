"""Figures for notebook 03: a diagnostic grid as heatmaps, its loss basins, MMCS with larger
dictionaries as curves, and a slider explorer of its cells (training curves and, on toy data,
the match with the ground truth). The interactive heatmaps are
``helpers.figures.interactive.grid_heatmaps``; both read ``style.METRIC_STYLE``.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from helpers.diagnostics.result import DEAD_CAP, GridResult
from helpers.figures.style import L1_AXIS, METRIC_STYLE, SIZE_AXIS, check_metrics
from helpers.metrics import best_matches


def plot_diagnostics(grid: GridResult, metrics: Sequence[str] = ("mmcs_ground_truth", "dead", "ssll", "mmcs_larger"),
                     title: str = "", marks: dict[str, tuple[int, float]] | None = None, annotate: bool = True):
    """Heatmaps of ``metrics`` side by side, sharing axes: L1 coefficient (x) by size (y).

    ``marks`` maps a label to a (d_sae, l1) cell to circle in every panel (e.g. the
    suggestions of ``suggest_hyperparameters``). Missing values (log 0, no larger
    dictionary, no ground truth) are drawn grey; diverged cells are marked with an x.
    Returns the figure.
    """
    check_metrics(metrics)
    S, L = grid.shape
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics) + 0.6, 0.45 * S + 2.2),
                             sharex=True, sharey=True, squeeze=False, constrained_layout=True)
    xlabels = [f"{a:.2g}" for a in grid.l1_values]
    ylabels = [grid.size_label(i) for i in range(S)]
    for ax, m in zip(axes[0], metrics):
        style = METRIC_STYLE[m]
        vals = np.asarray(grid.metric(m), dtype=float)
        if m == "dead":
            vals = np.minimum(vals, DEAD_CAP)
        cm = plt.get_cmap(style.cmap).copy()
        cm.set_bad("lightgrey")
        finite = np.isfinite(vals).any()
        vmin, vmax = style.limits if style.limits else (np.nanmin(vals) if finite else 0, np.nanmax(vals) if finite else 1)
        im = ax.imshow(np.ma.masked_invalid(vals), origin="lower", aspect="auto", cmap=cm, vmin=vmin, vmax=vmax)
        fig.colorbar(im, ax=ax, shrink=0.85)
        if annotate and S * L <= 80:
            for i in range(S):
                for j in range(L):
                    v = vals[i, j]
                    txt = "x" if grid.diverged[i, j] else "" if not np.isfinite(v) else (f"{int(v)}" if m == "dead" else f"{v:.2f}")
                    r, g, b, _ = cm(im.norm(v)) if np.isfinite(v) else (1, 1, 1, 1)
                    ax.text(j, i, txt, ha="center", va="center", fontsize=6.5,  # readable on any cell colour
                            color="black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white")
        for label, (J, a) in (marks or {}).items():
            i, j = grid.index(J, a)
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2.2, ec="red"))
        ax.set_title(style.label, fontsize=9)
        ax.set_xticks(range(L), xlabels, rotation=90, fontsize=7)
        ax.set_xlabel(L1_AXIS)
    axes[0][0].set_yticks(range(S), ylabels, fontsize=8)
    axes[0][0].set_ylabel(SIZE_AXIS + (" (x reference)" if grid.reference_size else ""))
    if title:
        fig.suptitle(title)
    return fig


def plot_loss_basins(grid: GridResult, d_sae: int | None = None):
    """Reconstruction loss, L1 loss and ground-truth MMCS against alpha at one size (log axes).

    The report's figures 5 and 6: the 'sticky' basin is where both losses stay flat while
    alpha grows. Default size: the reference size (1x) if it is in the grid.
    """
    if d_sae is None:
        d_sae = grid.reference_size if grid.reference_size in grid.d_sae_values else int(grid.d_sae_values[0])
    i, _ = grid.index(d_sae, float(grid.l1_values[0]))
    fig, ax = plt.subplots(figsize=(6.5, 3.6), constrained_layout=True)
    ax.loglog(grid.l1_values, grid.recon_loss[i], "o-", label="reconstruction loss")
    l1 = np.where(grid.l1_loss[i] > 0, grid.l1_loss[i], np.nan)
    ax.loglog(grid.l1_values, l1, "s-", label="L1 loss (0: not drawn)")
    ax.set_xlabel(L1_AXIS)
    ax.set_ylabel("final loss (log scale)")
    ax.set_title(f"Losses at size {grid.size_label(i)}: look for flat basins")
    if np.isfinite(grid.mmcs_ground_truth[i]).any():
        ax2 = ax.twinx()
        ax2.plot(grid.l1_values, grid.mmcs_ground_truth[i], "k--", alpha=0.6, label="MMCS with ground truth")
        ax2.set_ylabel(METRIC_STYLE["mmcs_ground_truth"].label)
        ax2.set_ylim(0, 1.05)
    # One legend for both axes, in the lower left, which the curves leave empty.
    handles = [h for a in fig.axes for h in a.get_legend_handles_labels()[0]]
    ax.legend(handles=handles, loc="lower left", fontsize=8)
    return fig


def plot_mmcs_larger_by_size(grid: GridResult, baseline: Sequence[float] | None = None):
    """MMCS with larger dictionaries against size, one line per alpha (method 3 as curves).

    ``baseline``: optional (S,) MMCS that unrelated random dictionaries of these sizes score
    (``random_baseline_with_larger``), drawn dashed: agreement above it is what training found.
    """
    S, L = grid.shape
    fig, ax = plt.subplots(figsize=(8, 3.6), constrained_layout=True)
    colors = plt.get_cmap("plasma")(np.linspace(0, 0.9, L))
    for j in range(L):
        ax.plot(range(S - 1), grid.mmcs_larger[:-1, j], "o-", color=colors[j], label=f"alpha={grid.l1_values[j]:.2g}")
    if baseline is not None:
        ax.plot(range(S - 1), np.asarray(baseline)[: S - 1], "k--", lw=1, label="random dictionaries")
    ax.set_xticks(range(S - 1), [grid.size_label(i) for i in range(S - 1)])
    ax.set_xlabel(f"{SIZE_AXIS} (compared with every larger one)")
    ax.set_ylabel(f"mean {METRIC_STYLE['mmcs_larger'].label}")
    ax.set_ylim(0, 1.02)
    ax.set_title("Agreement with every larger dictionary (the report's figure 10, as curves)")
    # Outside the axes, on the right: inside, it covers the low curves and the random baseline.
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return fig


def cell_explorer(grid, truth: torch.Tensor | None = None):
    """Pick a (size, L1) cell of a trained grid with two dropdowns; see its training curves
    and, given ``truth`` (G, d), how well its dictionary matches the ground truth.

    Returns the ``interact`` handle (call ``draw(i, j)`` on it to redraw without widgets).
    """
    import ipywidgets as widgets

    def draw(size_index: int, l1_index: int) -> None:
        i, j = size_index, l1_index
        log = grid.logs[i]
        fig, axes = plt.subplots(1, 3 if truth is not None else 2, figsize=(12, 3.2), constrained_layout=True)
        axes[0].semilogy(log.steps, log.recon_loss[:, j], label="reconstruction")
        axes[0].semilogy(log.steps, np.maximum(log.l1_loss[:, j], 1e-12), label="L1 term")
        axes[0].set(xlabel="training step", ylabel="loss (log scale)", title="losses during training")
        axes[0].legend(fontsize=8)
        axes[1].plot(log.steps, log.l0[:, j], label=METRIC_STYLE["l0"].short)
        axes[1].plot(log.steps, log.dead[:, j], label=METRIC_STYLE["dead"].short)
        axes[1].set(xlabel="training step", ylabel="count", title="sparsity and dead latents")
        axes[1].legend(fontsize=8)
        if truth is not None and grid.dictionaries is not None and not grid.diverged[i, j]:
            m = best_matches(grid.dictionary(i, j), truth.detach().cpu().float())
            axes[2].hist(m.cosine.numpy(), bins=np.linspace(0, 1, 41), color="tab:green")
            axes[2].set(xlabel="best cosine with a learned feature", ylabel="true features",
                        title=f"ground truth recovery: MMCS {float(m.cosine.mean()):.3f}")
        state = "diverged (NaN loss)" if grid.diverged[i, j] else f"L0 {grid.l0[i, j]:.1f}, dead {int(grid.dead[i, j])}"
        fig.suptitle(f"size {grid.size_label(i)}, alpha {grid.l1_values[j]:.3g}: {state}")
        plt.show()

    size_dd = widgets.Dropdown(options=[(grid.size_label(i), i) for i in range(grid.shape[0])], description="size")
    l1_dd = widgets.Dropdown(options=[(f"{a:.3g}", j) for j, a in enumerate(grid.l1_values)], description="alpha")
    handle = widgets.interact(draw, size_index=size_dd, l1_index=l1_dd)
    handle.draw = draw
    return handle
