"""Figures for notebook 02 about training: the loss curves of one run, MMCS during training,
and which planted features a trained SAE holds, by how often they fire.

Same conventions as ``helpers.plotting_sae``: one figure per call, returned; nothing trains here.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from helpers.metrics import best_matches
from helpers.plotting_toy import DPI, to_numpy
from helpers.sae import TrainLog


def plot_training_curves(log: TrainLog, instance: int = 0, title: str = ""):
    """Reconstruction loss, L1 term and L0 against the training step for one instance."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.2), dpi=DPI)
    for ax, values, name, log_y in (
        (axes[0], log.recon_loss, "reconstruction loss (1/h)||x - x_hat||^2", True),
        (axes[1], log.l1_loss, "L1 term (alpha/J)||c||_1", True),
        (axes[2], log.l0, "L0: active latents per example", False),
    ):
        ax.plot(log.steps, values[:, instance], color="tab:blue")
        ax.set(xlabel="training step", ylabel=name.split(":")[0].split(" (")[0], title=name)
        if log_y:
            ax.set_yscale("log")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_mmcs_vs_samples(curves: dict, threshold: float = 0.95, title: str = "MMCS during training"):
    """MMCS against training samples, one line per ``{label: (samples, mmcs)}``."""
    fig, ax = plt.subplots(figsize=(7, 3.8), dpi=DPI)
    styles = ("-", "--", "-.", ":")
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
    for k, (name, (n, m)) in enumerate(curves.items()):
        ax.plot(np.asarray(n) / 1e3, to_numpy(m), styles[k % 2], color=colors[k % len(colors)], label=name)
    ax.axhline(threshold, color="tab:gray", ls=":", lw=1)
    ax.set(xlabel="training samples (thousands)", ylabel="MMCS with the planted features", ylim=(0, 1.02),
           title=title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def plot_recovery_by_frequency(dictionaries: dict, truth, probabilities, threshold: float = 0.9,
                               title: str = "Which planted features each SAE holds"):
    """Best cosine of every planted feature with any latent, against how often the feature fires.

    ``dictionaries``: {label: (J, h) learned rows}; ``truth``: (G, h); ``probabilities``: (G,).
    """
    p, T = to_numpy(probabilities), torch.as_tensor(truth).detach().cpu().float()
    fig, ax = plt.subplots(figsize=(7.5, 3.8), dpi=DPI)
    for (name, D), (col, mark) in zip(dictionaries.items(), (("tab:orange", "o"), ("tab:blue", "s"), ("tab:green", "^"))):
        best = to_numpy(best_matches(torch.as_tensor(D).detach().cpu().float(), T).cosine)   # (G,)
        ax.scatter(p, best, s=9, marker=mark, color=col, alpha=0.6,
                   label=f"{name}: {(best < threshold).sum()} below {threshold:g}")
    ax.axhline(threshold, color="tab:gray", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set(xlabel="probability that the feature is on in a sample (log scale)",
           ylabel="best cosine with any latent", ylim=(0, 1.03), title=title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def plot_recipe_ladder(rows: dict, title: str = "One change at a time"):
    """Final MMCS per recipe as dots, ``{label: (mmcs, dead latents)}``, top row first."""
    labels = list(rows)[::-1]
    m = np.array([rows[k][0] for k in labels])
    y = np.arange(len(rows))
    lo = max(0.0, np.floor((m.min() - 0.03) * 50) / 50)      # the axis starts near the lowest value, not at 0
    fig, ax = plt.subplots(figsize=(8.5, 0.45 * len(rows) + 1.2), dpi=DPI)
    ax.hlines(y, lo, m, color="tab:gray", lw=1)
    ax.plot(m, y, "o", color="tab:blue")
    for i, k in enumerate(labels):
        ax.text(m[i] + 0.002, i, f"{rows[k][0]:.3f}  ({rows[k][1]} dead)", va="center", fontsize=8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set(xlim=(lo, 1.0), xlabel="MMCS with the planted features at the end", title=title)
    fig.tight_layout()
    return fig
