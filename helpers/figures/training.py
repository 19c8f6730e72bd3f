"""Figures for notebook 02's training: how often each latent fires, the loss curves of one run,
MMCS against the samples seen, which planted features a trained SAE holds (by how often they
fire), and the recipe ladder. The figures of the data and of recovery: ``helpers.figures.ground_truth``.

Every function draws one figure and returns it; inputs are plain tensors/arrays and the logs
the helpers return; nothing here trains anything.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from helpers.figures.style import DPI, to_numpy
from helpers.metrics import best_matches
from helpers.sae import TrainLog


def plot_firing_frequencies(frequencies: dict, dead: dict, n_samples: int, dead_rate: float, feature_range,
                            title: str = "How often each latent fires"):
    """Histograms of log10 firing frequency, one per ``{label: (J,) frequency}``.

    ``dead``: {label: latents counted dead}; ``dead_rate``: the frequency below which a latent is
    likely to be counted dead (1 / the samples of the dead window); ``feature_range``: (rarest,
    commonest) probability of a planted feature, shaded. Latents that never fired in the
    ``n_samples`` measured sit in the leftmost bin.
    """
    floor = np.log10(1 / n_samples) - 0.75                     # where "never fired" is drawn, apart from the rest
    fig, ax = plt.subplots(figsize=(7.5, 3.8), dpi=DPI)
    lo, hi = np.log10(feature_range[0]), np.log10(feature_range[1])
    ax.axvspan(lo, hi, color="tab:green", alpha=0.12, label="planted features' probabilities")
    ax.axvline(np.log10(dead_rate), color="tab:red", ls="--", lw=1.2, label="counted dead below about here")
    bins = np.concatenate([[floor - 0.125, floor + 0.125], np.linspace(np.log10(1 / n_samples) - 0.125, 0.125, 41)])
    for (name, f), col in zip(frequencies.items(), ("tab:blue", "tab:orange", "tab:purple")):
        f = to_numpy(f)
        x = np.where(f > 0, np.log10(np.maximum(f, 1e-12)), floor)
        ax.hist(x, bins=bins, color=col, alpha=0.6,
                label=f"{name}: {dead[name]} of {len(f)} counted dead, {(f < feature_range[0]).sum()} rarer than any feature")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.45)
    ax.text(floor, ax.get_ylim()[1] * 0.02, "never\nfired", ha="center", va="bottom", fontsize=8)
    ax.set(xlabel=f"log10 of the latent's firing frequency (share of {n_samples:,} fresh samples)",
           ylabel="latents", title=title)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


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
