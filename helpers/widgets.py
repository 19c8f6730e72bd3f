"""Sliders over precomputed results, so exploring feels live without training anything.

``ipywidgets.interact`` redraws a figure whenever a control moves. Every function here takes
results that already exist (a trained grid, a sweep) and only slices and plots them.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from helpers.plotting_sae import DPI, plot_matched_cosines, plot_max_cosine_histogram


def grid_match_explorer(grid, truth: torch.Tensor, size: float | None = None, l1: float | None = None):
    """Pick (dictionary size, alpha) of a trained grid and see how its dictionary matches ``truth``.

    ``grid``: a ``helpers.diagnostics.GridResult`` trained with ``keep_dictionaries=True``;
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
