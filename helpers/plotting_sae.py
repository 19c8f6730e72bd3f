"""Figures for notebook 02: the ground-truth data, SAE training, and how well SAEs recover it.

Every function draws one figure (or into the axes it is given) and returns the figure, so a
notebook cell is one call plus ``plt.show()``. Inputs are plain tensors/arrays and the logs
the helpers return; nothing here trains anything.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import LogNorm

from helpers.metrics import best_matches
from helpers.sae import TrainLog

DPI = 80
"""Figures are stored in the notebooks: modest resolution keeps them small."""


def _np(t) -> np.ndarray:
    return t.detach().float().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


# --------------------------------------------------------------------------------------
# 1. The data
# --------------------------------------------------------------------------------------
def plot_data_overview(frequency, expected, active_counts, latent_corr, cooccurrence, n_show: int = 24):
    """Feature frequency by index, the histogram of active features per sample, and the
    latent vs measured co-occurrence correlations of the ``n_show`` commonest features."""
    frequency, expected, counts = _np(frequency), _np(expected), _np(active_counts)
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6), dpi=DPI, gridspec_kw={"width_ratios": [1.3, 1, 1, 1]})
    ax = axes[0]
    ax.semilogy(frequency, ".", ms=3, label="measured")
    ax.semilogy(expected, "-", lw=1.5, label="configured")
    ax.set(title="How often each feature fires", xlabel="feature index g", ylabel="P(feature active)")
    ax.legend()
    ax = axes[1]
    bins = np.arange(counts.max() + 2) - 0.5
    ax.hist(counts, bins=bins, color="tab:gray", edgecolor="white")
    ax.axvline(counts.mean(), color="tab:red", label=f"mean {counts.mean():.2f}")
    ax.set(title="Active features per sample", xlabel="number of active features", ylabel="samples")
    ax.legend()
    lim = float(np.abs(_np(cooccurrence)[:n_show, :n_show] - np.eye(n_show)).max())
    for ax, m, title, vmax in (
        (axes[2], latent_corr, "Latent correlation (the Gaussian z)", 0.5),
        (axes[3], cooccurrence, "Measured co-occurrence correlation", lim),
    ):
        m = _np(m)[:n_show, :n_show].copy()
        np.fill_diagonal(m, np.nan)  # the diagonal is 1 and would wash out the colour scale
        im = ax.imshow(m, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set(title=title, xlabel="feature", ylabel="feature")
        fig.colorbar(im, ax=ax, fraction=0.046, label="correlation")
    fig.tight_layout()
    return fig


def plot_sample_decomposition(x, coeffs, features, max_bars: int = 12):
    """One sample: its active features' coefficients, and x next to sum_g c_g F_g."""
    x, c, F = _np(x), _np(coeffs), _np(features)
    active = np.flatnonzero(c)
    recon = c @ F
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.4), dpi=DPI, gridspec_kw={"width_ratios": [1, 2]})
    ax = axes[0]
    shown = active[np.argsort(-c[active])][:max_bars]
    ax.bar([str(g) for g in shown], c[shown], color="tab:blue")
    ax.set(title=f"Its {len(active)} active features", xlabel="feature index g", ylabel="coefficient c_g", ylim=(0, 1))
    ax = axes[1]
    ax.plot(x, lw=2.5, color="tab:gray", label="sample x")
    ax.plot(recon, "--", lw=1.2, color="tab:red", label=r"$\sum_g c_g F_g$")
    ax.set(title=f"x is exactly the sum of its features (max |difference| {np.abs(x - recon).max():.1e})",
           xlabel="dimension", ylabel="value")
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------
# 2. One SAE
# --------------------------------------------------------------------------------------
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


def matched_cosines(learned, truth) -> tuple[np.ndarray, np.ndarray]:
    """(G, G) cosines between the true features (rows) and, in column g, the learned feature
    that best matches true feature g; and the (G,) best cosines (the matrix's diagonal)."""
    learned, truth = torch.as_tensor(learned).float(), torch.as_tensor(truth).float()
    m = best_matches(learned, truth)
    L = learned / learned.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    T = truth / truth.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return _np(T @ L[m.index].T), _np(m.cosine)


def plot_matched_cosines(learned, truth, ax=None, title: str | None = None, colorbar: bool = True):
    """Heatmap of ``matched_cosines``: a bright diagonal means every true feature was found."""
    cos, best = matched_cosines(learned, truth)
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.6, 4), dpi=DPI)
    im = ax.imshow(cos, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    ax.set(xlabel="learned feature (ordered by the true feature it matches best)", ylabel="true feature g",
           title=title if title is not None else f"Learned vs true features (MMCS {best.mean():.3f})")
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, label="cosine similarity")
    return fig or ax.figure


def plot_max_cosine_histogram(learned, truth, ax=None, title: str | None = None):
    """How well each true feature is matched: histogram of its best cosine with a learned one."""
    _, best = matched_cosines(learned, truth)
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.6, 3.4), dpi=DPI)
    ax.hist(best, bins=np.linspace(0, 1, 41), color="tab:blue", edgecolor="white")
    ax.axvline(best.mean(), color="tab:red", label=f"MMCS {best.mean():.3f}")
    ax.set(xlim=(0, 1), xlabel="best cosine with any learned feature", ylabel="true features",
           title=title if title is not None else "Max cosine per true feature")
    ax.legend(loc="upper left")
    return fig or ax.figure


# --------------------------------------------------------------------------------------
# 3-4. Sweeps
# --------------------------------------------------------------------------------------
def plot_mmcs_vs_l1(l1_values, mmcs_values, random_baseline: float, zone: tuple[float, float] = (0.03, 0.3),
                    threshold: float = 0.95, l0=None, title: str = "MMCS with the ground truth vs L1 coefficient"):
    """MMCS against alpha on a log axis; shades where MMCS > threshold; marks the report's zone."""
    a, m = np.asarray(l1_values, float), _np(mmcs_values)
    fig, ax = plt.subplots(figsize=(8, 4), dpi=DPI)
    ax.axvspan(*zone, color="gold", alpha=0.25, label=f"report's Goldilocks zone ({zone[0]:g}-{zone[1]:g})")
    good = m > threshold
    if good.any():  # shade the span of alphas whose MMCS clears the threshold, between grid points
        lo, hi = a[good].min(), a[good].max()
        step = np.sqrt(a[1] / a[0]) if len(a) > 1 else 1.5
        ax.axvspan(lo / step, hi * step, color="tab:green", alpha=0.12, label=f"here: MMCS > {threshold}")
    ax.semilogx(a, m, "o-", color="tab:blue", label="MMCS, J = G")
    ax.axhline(random_baseline, color="tab:gray", ls="--", label=f"random dictionary ({random_baseline:.2f})")
    ax.axhline(threshold, color="tab:green", ls=":", lw=1)
    ax.set(xlabel="L1 coefficient alpha (log scale)", ylabel="MMCS", ylim=(0, 1.02), title=title)
    if l0 is not None:
        ax2 = ax.twinx()
        ax2.semilogx(a, _np(l0), "s:", color="tab:orange", ms=4, label="L0 (right axis)")
        ax2.set_yscale("log")
        ax2.set_ylabel("L0: active latents per example", color="tab:orange")
        ax2.legend(loc="lower right")
    ax.legend(loc="lower left", fontsize=9)
    fig.tight_layout()
    return fig


def plot_mmcs_grid(mmcs_grid, size_labels: Sequence[str], l1_values, title: str = "MMCS with the ground truth",
                   mark_best: bool = True):
    """Heatmap (dictionary size x alpha) of MMCS, the best alpha of each size outlined."""
    m = _np(mmcs_grid)
    fig, ax = plt.subplots(figsize=(1.0 * len(l1_values) + 2.5, 0.55 * len(size_labels) + 1.8), dpi=DPI)
    im = ax.imshow(m, cmap="viridis", vmin=0, vmax=1, aspect="auto", origin="lower")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="black" if m[i, j] > 0.6 else "white")
        if mark_best:
            j = int(np.nanargmax(m[i]))
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=2))
    ax.set_xticks(range(len(l1_values)), [f"{a:.2g}" for a in l1_values])
    ax.set_yticks(range(len(size_labels)), list(size_labels))
    ax.set(xlabel="L1 coefficient alpha", ylabel="dictionary size J / G", title=title)
    fig.colorbar(im, ax=ax, label="MMCS")
    fig.tight_layout()
    return fig


def plot_best_l1_by_size(size_ratios, l1_values, mmcs_grid, d_sae_values):
    """Where the best alpha lies for each size, and the per-latent weight alpha/J it means."""
    m, a = _np(mmcs_grid), np.asarray(l1_values, float)
    best = a[np.nanargmax(m, axis=1)]
    J = np.asarray(d_sae_values, float)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), dpi=DPI)
    axes[0].loglog(size_ratios, best, "o-")
    axes[0].set(xlabel="dictionary size J / G", ylabel="best alpha", title="The best alpha grows with J")
    axes[1].loglog(size_ratios, best / J, "o-", color="tab:orange")
    axes[1].set(xlabel="dictionary size J / G", ylabel="alpha / J at the best alpha",
                title="...so the penalty per latent, alpha/J, shrinks less")
    for ax in axes:
        ax.set_xticks(size_ratios, [f"{r:g}" for r in size_ratios])
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def plot_mmcs_vs_noise(noise_stds, mmcs_values, clean_mmcs: float, random_baseline: float, alpha: float):
    """Appendix: MMCS of a denoising SAE against the input noise's standard deviation."""
    s, m = np.asarray(noise_stds, float), _np(mmcs_values)
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=DPI)
    ax.plot(s, m, "o-", label=f"denoising SAE, alpha = {alpha:g}")
    ax.axhline(clean_mmcs, color="tab:green", ls=":", label=f"no noise ({clean_mmcs:.3f})")
    ax.axhline(random_baseline, color="tab:gray", ls="--", label="random dictionary")
    ax.set(xlabel="input noise standard deviation (per dimension)", ylabel="MMCS", ylim=(0, 1.02),
           title="Denoising SAEs also recover the features, in a narrow noise range")
    ax.legend(loc="lower left")
    fig.tight_layout()
    return fig
