"""Figures for notebook 01's models with a row of neurons: each neuron's weights against feature
density (neurons as a privileged basis, beside a control without one) and computing |x| in
superposition. The other toy-model figures: ``helpers.figures.toy``.

Every function draws one figure and returns it; inputs are the results ``helpers.toy`` returns.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from helpers import toy
from helpers.figures.style import DPI, to_numpy
from helpers.figures.toy import feature_colors


def plot_abs(res: "toy.AbsResult"):
    """W1 of the densest and sparsest |x| models, and what each density computes with its neurons."""
    W1 = to_numpy(res.W1)
    D, m, n = W1.shape
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.0), dpi=DPI, layout="constrained",
                             gridspec_kw={"width_ratios": [1, 1.2, 1.2]})
    lim = float(np.abs(W1[[0, -1]]).max())
    for ax, k in zip(axes[:2], (-1, 0)):
        im = ax.imshow(W1[k], cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
        ax.set(title=f"W1 at density {res.densities[k]:.2g}", xlabel="input feature (importance falls ->)",
               ylabel="hidden neuron", xticks=range(0, n, max(1, n // 10)), yticks=range(0, m, max(1, m // 10)))
    fig.colorbar(im, ax=axes[1], label="weight from feature to neuron")
    ax = axes[2]
    worth = np.clip(res.explained, 0, 1).sum(1)
    ax.semilogx(res.densities, worth, "o-", label="features' worth computed (sum of R^2)")
    ax.semilogx(res.densities, to_numpy(toy.polysemantic_neurons(res.W1)), "s:",
                label="polysemantic neurons (between the ends: varies by run)")
    ax.axhline(m / 2, ls="--", color="0.5", lw=1)
    ax.text(res.densities[0], m / 2 + 0.15, f" {m // 2} = neurons / 2 (two ReLUs per |x|)", fontsize=8, color="0.4")
    ax.set(xlabel="feature density (log)", ylabel="count", title=f"|x| of {n} features with {m} neurons",
           ylim=(0, max(worth.max(), m) + 1))
    ax.legend(fontsize=8, loc="lower left")
    return fig


def plot_neurons(models: dict, best: dict, densities, unit_names: dict | None = None) -> plt.Figure:
    """The paper's neuron stack plot: for each model (a row) and density (a column), every neuron's
    input weights stacked as bars coloured by feature (positive up, negative down), best seed.

    ``models`` maps a row label to a ``toy.NeuronResult``; ``best`` maps it to the (n_densities,)
    index of the seed shown; ``unit_names`` maps a row label to what its count is called in the
    panel titles ("polysemantic" by default). Neurons are sorted by the feature they read most. A
    row's y axis stops at -4: a bar reaching below is marked with its value.
    """
    rows = list(models)
    D = len(densities)
    fig, axes = plt.subplots(len(rows), D, figsize=(2.6 * D, 2.8 * len(rows)), dpi=DPI, layout="constrained",
                             sharey="row", squeeze=False)
    n = models[rows[0]].W.shape[-1]
    colors = feature_colors(n)
    for r, label in enumerate(rows):
        W = to_numpy(models[label].W)  # (D, S, m, n)
        poly = to_numpy(toy.polysemantic_neurons(models[label].W))  # (D, S)
        name = (unit_names or {}).get(label, "polysemantic")
        floor = -4.0
        for j in range(D):
            ax = axes[r, j]
            w = W[j, best[label][j]]  # (m, n)
            order = np.argsort(np.abs(w).argmax(1) + 0.01 * np.arange(len(w)))
            for k, neuron in enumerate(order):
                up = down = 0.0
                for i in range(n):
                    v = w[neuron, i]
                    ax.bar(k, v, bottom=up if v >= 0 else down, color=colors[i], width=0.8,
                           edgecolor="white", linewidth=0.3)
                    if v >= 0:
                        up += v
                    else:
                        down += v
                if down < floor:
                    ax.annotate(f"{down:.1f}", (k, floor), xytext=(0, 3), textcoords="offset points", ha="center",
                                fontsize=7, color="0.1", bbox=dict(fc="white", ec="none", alpha=0.85, pad=0.6))
            ax.axhline(0, color="0.3", lw=0.6)
            ax.set_xticks(range(len(w)))
            ax.set_title(f"density {densities[j]:.2g}: {int(poly[j, best[label][j]])} {name}", fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{label}\ninput weight (stacked by feature)", fontsize=9)
            if r == len(rows) - 1:
                ax.set_xlabel("unit, by its top feature", fontsize=9)
        lo, hi = axes[r, 0].get_ylim()
        axes[r, 0].set_ylim(max(lo, floor), hi)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[i]) for i in range(n)]
    fig.legend(handles, [f"feature {i}" for i in range(n)], loc="outside right center", fontsize=8,
               title="most important\nfirst", title_fontsize=8)
    fig.suptitle(f"{n} features on {W.shape[-2]} hidden units: who reads what (lowest-loss seed per density)")
    return fig
