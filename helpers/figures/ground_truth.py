"""Figures for notebook 02: the ground-truth data, how well SAEs recover it (one SAE, the sweeps
over alpha and dictionary size, the denoising grid), and the sliders over a trained grid. Its
training figures (firing frequencies, loss curves, MMCS during training, which planted features a
trained SAE holds, the recipe ladder): ``helpers.figures.training``.

Every function draws one figure (or into the axes it is given) and returns the figure, so a
notebook cell is one call plus ``plt.show()``. Inputs are plain tensors/arrays and the logs
the helpers return; nothing here trains anything.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from helpers.figures.style import DPI, L1_AXIS, SIZE_AXIS, to_numpy
from helpers.metrics import best_matches


# --------------------------------------------------------------------------------------
# 1. The data
# --------------------------------------------------------------------------------------
def plot_data_overview(frequency, expected, active_counts, latent_corr, cooccurrence, n_show: int = 24):
    """Feature frequency by index, the histogram of active features per sample, and the
    latent vs measured co-occurrence correlations of the ``n_show`` commonest features."""
    frequency, expected, counts = to_numpy(frequency), to_numpy(expected), to_numpy(active_counts)
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
    lim = float(np.abs(to_numpy(cooccurrence)[:n_show, :n_show] - np.eye(n_show)).max())
    for ax, m, title, vmax in (
        (axes[2], latent_corr, "Latent correlation (the Gaussian z)", 0.5),
        (axes[3], cooccurrence, "Measured co-occurrence correlation", lim),
    ):
        m = to_numpy(m)[:n_show, :n_show].copy()
        np.fill_diagonal(m, np.nan)  # the diagonal is 1 and would wash out the colour scale
        im = ax.imshow(m, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set(title=title, xlabel="feature", ylabel="feature")
        fig.colorbar(im, ax=ax, fraction=0.046, label="correlation")
    fig.tight_layout()
    return fig


def plot_sample_decomposition(x, coeffs, features, max_bars: int = 12):
    """One sample: its active features' coefficients, and x next to sum_g c_g F_g."""
    x, c, F = to_numpy(x), to_numpy(coeffs), to_numpy(features)
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
def matched_cosines(learned, truth) -> tuple[np.ndarray, np.ndarray]:
    """(G, G) cosines between the true features (rows) and, in column g, the learned feature
    that best matches true feature g; and the (G,) best cosines (the matrix's diagonal)."""
    learned, truth = torch.as_tensor(learned).float(), torch.as_tensor(truth).float()
    m = best_matches(learned, truth)
    L = learned / learned.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    T = truth / truth.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return to_numpy(T @ L[m.index].T), to_numpy(m.cosine)


def plot_matched_cosines(learned, truth, ax=None, title: str | None = None):
    """Heatmap of ``matched_cosines``: a bright diagonal means every true feature was found."""
    cos, best = matched_cosines(learned, truth)
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.6, 4), dpi=DPI)
    im = ax.imshow(cos, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    ax.set(xlabel="learned feature (ordered by the true feature it matches best)", ylabel="true feature g",
           title=title if title is not None else f"Learned vs true features (MMCS {best.mean():.3f})")
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
                    threshold: float = 0.95, l0=None, title: str = "MMCS with the ground truth vs L1 coefficient",
                    label: str = "MMCS, J = G", others: dict | None = None):
    """MMCS against alpha on a log axis; shades where MMCS > threshold; marks the report's zone.

    ``others``: more curves over the same alphas, ``{label: mmcs_values}``, drawn dashed (e.g. the
    same sweep trained with another learning rate).
    """
    a, m = np.asarray(l1_values, float), to_numpy(mmcs_values)
    fig, ax = plt.subplots(figsize=(8, 4), dpi=DPI)
    ax.axvspan(*zone, color="gold", alpha=0.25, label=f"report's Goldilocks zone ({zone[0]:g}-{zone[1]:g})")
    good = m >= threshold
    if good.any():  # shade from the first to the last measured alpha whose MMCS clears the threshold
        lo, hi = a[good].min(), a[good].max()
        if lo == hi:  # one point: a thin band around it, so it stays visible
            lo, hi = lo / 1.1, hi * 1.1
        ax.axvspan(lo, hi, color="tab:green", alpha=0.12, label=f"here: MMCS ≥ {threshold} (measured points)")
    ax.semilogx(a, m, "o-", color="tab:blue", label=label)
    for (name, values), col in zip((others or {}).items(), ("tab:purple", "tab:brown", "tab:pink")):
        ax.semilogx(a, to_numpy(values), "o--", color=col, ms=4, label=name)
    ax.axhline(random_baseline, color="tab:gray", ls="--", label=f"random dictionary ({random_baseline:.2f})")
    ax.axhline(threshold, color="tab:green", ls=":", lw=1, label=f"MMCS = {threshold:g} (the zone's threshold)")
    ax.set(xlabel=f"{L1_AXIS} (log scale)", ylabel="MMCS", ylim=(0, 1.02), title=title)
    if l0 is not None:
        ax2 = ax.twinx()
        ax2.semilogx(a, to_numpy(l0), "s:", color="tab:orange", ms=4, label="L0 (right axis)")
        ax2.set_yscale("log")
        ax2.set_ylabel("L0: active latents per example", color="tab:orange")
        ax2.legend(loc="lower right")
    ax.legend(loc="lower left", fontsize=9)
    fig.tight_layout()
    return fig


def _mmcs_heatmap(m: np.ndarray, xticks: list, yticks: list, ylabel: str, title: str, size: tuple,
                  outline: Sequence[tuple[int, int]] = ()):
    """An MMCS table (rows x alphas) as a heatmap on a fixed 0-1 colour scale, each cell labelled
    with its value and the cells ``outline`` (i, j) boxed in red."""
    fig, ax = plt.subplots(figsize=size, dpi=DPI)
    im = ax.imshow(m, cmap="viridis", vmin=0, vmax=1, aspect="auto", origin="lower")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="black" if m[i, j] > 0.6 else "white")
    for i, j in outline:
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=2))
    ax.set_xticks(range(len(xticks)), xticks)
    ax.set_yticks(range(len(yticks)), yticks)
    ax.set(xlabel=L1_AXIS, ylabel=ylabel, title=title)
    fig.colorbar(im, ax=ax, label="MMCS")
    fig.tight_layout()
    return fig


def _best_index(row: np.ndarray, tie: float) -> int:
    """Index of a row's best MMCS; where several values lie within ``tie`` of the best (differences
    that small are seed noise), the middle one of them."""
    tied = np.flatnonzero(row >= np.nanmax(row) - tie)
    return int(tied[(len(tied) - 1) // 2])


def plot_mmcs_grid(mmcs_grid, size_labels: Sequence[str], l1_values, title: str = "MMCS with the ground truth",
                   tie: float = 0.005):
    """Heatmap (dictionary size x alpha) of MMCS, the best alpha of each size outlined: where
    several alphas lie within ``tie`` of a row's best MMCS, the middle one (``l1_zone_by_size``'s rule)."""
    m = to_numpy(mmcs_grid)
    best = [(i, _best_index(m[i], tie)) for i in range(m.shape[0]) if np.isfinite(m[i]).any()]
    return _mmcs_heatmap(m, [f"{a:.2g}" for a in l1_values], list(size_labels), f"{SIZE_AXIS} J / G", title,
                         (1.0 * len(l1_values) + 2.5, 0.55 * len(size_labels) + 1.8), best)


def l1_zone_by_size(l1_values, mmcs_grid, threshold: float = 0.95,
                    tie: float = 0.005) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per dictionary size (grid row): the smallest and largest alpha whose MMCS clears
    ``threshold`` (NaN where none does), and the best alpha. Each (sizes,).

    Alphas within ``tie`` of a row's best MMCS count as tied (differences that small are
    seed noise); the best alpha is then the middle one of the tied alphas, not the first.
    """
    m, a = to_numpy(mmcs_grid), np.asarray(l1_values, float)
    ok = m >= threshold
    lo = np.array([a[row].min() if row.any() else np.nan for row in ok])
    hi = np.array([a[row].max() if row.any() else np.nan for row in ok])
    best = [a[_best_index(row, tie)] for row in m]
    return lo, hi, np.array(best)


def plot_best_l1_by_size(size_ratios, l1_values, mmcs_grid, d_sae_values, threshold: float = 0.95):
    """Where the recovering alphas lie for each dictionary size, in both L1 conventions.

    Left: alpha of the report's (alpha/J)||c||_1. Right: the same SAEs described by the
    coefficient of the undivided form alpha'||c||_1, i.e. alpha' = alpha/J. Bars span the
    alphas with MMCS >= ``threshold``; dots mark the best alpha (the middle of ties; hollow:
    no alpha clears the threshold).
    """
    from matplotlib.ticker import LogLocator, LogFormatterSciNotation, NullFormatter

    r = np.asarray(size_ratios, float)
    J = np.asarray(d_sae_values, float)
    lo, hi, best = l1_zone_by_size(l1_values, mmcs_grid, threshold)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), dpi=DPI, sharex=True)
    for ax, div, ylabel, title in (
        (axes[0], np.ones_like(J), "alpha in (alpha/J)||c||_1", "Report's form: the zone moves with J"),
        (axes[1], J, "alpha' = alpha/J in alpha'||c||_1", "Undivided form, same SAEs"),
    ):
        found = ~np.isnan(lo)
        ax.vlines(r[found], lo[found] / div[found], hi[found] / div[found], lw=8, color="tab:green", alpha=0.35,
                  label=f"MMCS >= {threshold:g}")
        ax.plot(r[found], best[found] / div[found], "o", color="tab:green", label="best alpha")
        if (~found).any():
            ax.plot(r[~found], best[~found] / div[~found], "o", mfc="none", color="tab:gray",
                    label=f"best alpha, MMCS < {threshold:g}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(r, [f"{v:g}" for v in r])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_locator(LogLocator(base=10))
        ax.yaxis.set_major_formatter(LogFormatterSciNotation(base=10))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlim(r.min() / 1.4, r.max() * 1.4)
        ax.set(xlabel=f"{SIZE_AXIS} J / G", ylabel=ylabel, title=title)
        ax.grid(alpha=0.3, which="major")
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def plot_mmcs_vs_size(size_ratios, mmcs_at_alpha, alpha: float, best_mmcs=None, threshold: float = 0.95):
    """The report's figure 2: MMCS against dictionary size at one fixed alpha (and, for
    comparison, the best MMCS any alpha of the grid reaches at each size)."""
    r = np.asarray(size_ratios, float)
    fig, ax = plt.subplots(figsize=(6.5, 3.6), dpi=DPI)
    ax.plot(r, to_numpy(mmcs_at_alpha), "o-", color="tab:blue", label=f"alpha = {alpha:g} (report's fig. 2)")
    if best_mmcs is not None:
        ax.plot(r, to_numpy(best_mmcs), "s--", color="tab:green", ms=4, label="best alpha of the grid, per size")
    ax.axhline(threshold, color="tab:gray", ls=":", lw=1)
    ax.axvline(1.0, color="tab:gray", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(r, [f"{v:g}" for v in r])
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.set(xlabel=f"{SIZE_AXIS} J / G (log scale)", ylabel="MMCS with the planted features", ylim=(0, 1.02),
           title="MMCS vs dictionary size at a fixed L1 coefficient")
    ax.legend(loc="lower right", fontsize=9)
    fig.tight_layout()
    return fig


def plot_mmcs_noise_grid(noise_levels, l1_values, mmcs_grid, title: str = "Denoising SAEs: MMCS (J = G)"):
    """The report's appendix figure: MMCS as a heatmap over (input noise, alpha)."""
    return _mmcs_heatmap(to_numpy(mmcs_grid), [f"{a:g}" for a in l1_values], [f"{v:g}" for v in noise_levels],
                         "input noise std / RMS of x", title, (0.9 * len(l1_values) + 2.8, 0.5 * len(noise_levels) + 1.8))


# --------------------------------------------------------------------------------------
# Sliders over a trained grid
# --------------------------------------------------------------------------------------
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
