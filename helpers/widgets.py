"""Sliders over precomputed results, so exploring feels live without training anything.

``ipywidgets.interact`` redraws a figure whenever a control moves. Every function here takes
results that already exist (a trained grid, a sweep) and only slices and plots them.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from typing import TYPE_CHECKING

from helpers.plotting_sae import plot_matched_cosines, plot_max_cosine_histogram
from helpers.plotting_toy import DPI

if TYPE_CHECKING:
    from helpers import toy


def grid_match_explorer(grid, truth: torch.Tensor, size: float | None = None, l1: float | None = None):
    """Pick (dictionary size, alpha) of a trained grid and see how its dictionary matches ``truth``.

    ``grid``: a ``GridResult`` (``helpers.diagnostics``) trained with ``keep_dictionaries=True``;
    ``truth``: (G, d) ground-truth features. ``size``/``l1`` choose the starting cell.
    Shows the histogram of each true feature's best cosine and the matched cosine matrix.
    Returns the ``interact`` handle (call ``draw(i, j)`` on it to redraw without widgets).
    """
    import ipywidgets as widgets

    labels = [grid.size_label(i) for i in range(grid.shape[0])]
    alphas = [float(a) for a in grid.l1_values]
    i0 = labels.index(f"{size:g}x") if size is not None and f"{size:g}x" in labels else 0
    j0 = min(range(len(alphas)), key=lambda j: abs(alphas[j] - l1)) if l1 is not None else len(alphas) // 2
    size_w = widgets.SelectionSlider(options=[(lab, i) for i, lab in enumerate(labels)], value=i0,
                                     description="size J/G", continuous_update=False)
    l1_w = widgets.SelectionSlider(options=[(f"{a:.3g}", j) for j, a in enumerate(alphas)], value=j0,
                                   description="L1 alpha", continuous_update=False)

    def draw(i: int, j: int):
        learned = grid.dictionary(i, j)
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=DPI, gridspec_kw={"width_ratios": [1, 1.1]})
        plot_max_cosine_histogram(learned, truth, ax=axes[0])
        plot_matched_cosines(learned, truth, ax=axes[1], title="Matched cosine matrix")
        fig.suptitle(f"J = {labels[i]} G = {int(grid.d_sae_values[i])} latents, alpha = {alphas[j]:.3g}: "
                     f"MMCS {grid.mmcs_ground_truth[i, j]:.3f}, L0 {grid.l0[i, j]:.1f}, dead {int(grid.dead[i, j])}")
        fig.tight_layout()
        plt.show()

    handle = widgets.interact(draw, i=size_w, j=l1_w)
    handle.draw = draw
    return handle


def cell_explorer(grid, truth: torch.Tensor | None = None):
    """Pick a (size, L1) cell of a trained grid with two dropdowns; see its training curves
    and, given ``truth`` (G, d), how well its dictionary matches the ground truth.

    Returns the ``interact`` handle (call ``draw(i, j)`` on it to redraw without widgets).
    """
    import ipywidgets as widgets

    from helpers.metrics import best_matches

    def draw(size_index: int, l1_index: int) -> None:
        i, j = size_index, l1_index
        log = grid.logs[i]
        fig, axes = plt.subplots(1, 3 if truth is not None else 2, figsize=(12, 3.2), constrained_layout=True)
        axes[0].semilogy(log.steps, log.recon_loss[:, j], label="reconstruction")
        axes[0].semilogy(log.steps, np.maximum(log.l1_loss[:, j], 1e-12), label="L1 term")
        axes[0].set(xlabel="training step", ylabel="loss (log scale)", title="losses during training")
        axes[0].legend(fontsize=8)
        axes[1].plot(log.steps, log.l0[:, j], label="L0 (active latents)")
        axes[1].plot(log.steps, log.dead[:, j], label="dead latents")
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


def sweep_explorer(sw: "toy.Sweep", density: float | None = None, decay: float | None = None):
    """Sliders for density and importance decay over a precomputed ``toy.Sweep``.

    Moving a slider only picks a trained model and redraws it, so it feels live. Returns the
    ``interact`` handle (call ``handle.draw(i, j)`` to draw without widgets).
    """
    import ipywidgets as widgets

    from helpers.plotting_toy import draw_sweep_cell

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
