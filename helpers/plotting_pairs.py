"""Figures of notebook 01's section on correlated and anticorrelated feature pairs."""
from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch

from helpers.plotting_toy import DPI, _density_label, _np, draw_arrows

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
    W = _np(pr.W)
    K, Dn, m, n = W.shape
    if m != 2:
        raise ValueError("plot_pairs draws 2-D models; use pair_experiment with a base ToyConfig of d_hidden=2")
    colors = pair_colors(n // 2)
    fig, axes = plt.subplots(K, Dn, figsize=(2.4 * Dn + 1.8, 2.4 * K + 0.5), dpi=DPI, squeeze=False)
    for k in range(K):
        for j in range(Dn):
            ang = ", ".join(f"{a:.0f}" for a in pr.partner_angle[k, j])
            draw_arrows(axes[k, j], W[k, j], colors=colors, title=f"{_density_label(pr.densities[j])}\npartners at {ang} deg")
        axes[k, 0].set_ylabel(f"{pr.kinds[k]} pairs", fontsize=9)
    handles = [Patch(color=colors[i], label=f"pair {i // 2}, feature {i}") for i in range(n)]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    fig.suptitle("Features in pairs: dark and light of one hue are partners")
    fig.tight_layout(rect=(0, 0, 1 - 1.7 / (2.4 * Dn + 1.8), 1))
    return fig


def plot_gram_rows(pr: "toy.PairResult", density_index: int):
    """W^T W of every kind of pairing at one density (works for any d_hidden)."""
    W = _np(pr.W[:, density_index])
    K, m, n = W.shape
    fig, axes = plt.subplots(1, K, figsize=(3.1 * K + 1, 3.1), dpi=DPI, squeeze=False)
    for k in range(K):
        im = axes[0, k].imshow(W[k].T @ W[k], cmap="RdBu_r", vmin=-1.1, vmax=1.1)
        axes[0, k].set(title=f"{pr.kinds[k]} pairs", xticks=range(n), yticks=range(n), xlabel="feature j",
                       ylabel="feature i")
    fig.colorbar(im, ax=list(axes[0]), fraction=0.03, label="W^T W entry (cosine for unit columns)")
    fig.suptitle(f"{n} features in {m}-D, {_density_label(pr.densities[density_index])}: pairs are (0,1), (2,3), ...")
    return fig
