"""How big every run of the course is, at each ``TUTORIAL_SCALE``.

``sizes()`` is the frozen ``RunSizes`` of a scale (``ci``, ``laptop`` or ``full``), by default
``current_scale()``: ``TUTORIAL_SCALE``, else ``full`` on CUDA and ``laptop`` elsewhere. Notebooks
read their sizes from it instead of hard-coding a second code path. ``RunSizes`` holds one block
per notebook, each a frozen dataclass of its own: ``S.toy`` (01), ``S.sae`` (02), ``S.grid`` (03),
``S.lm`` (04), ``S.beyond`` (05) and ``S.choose`` (06), so notebook 01's steps are ``S.toy.steps``.
``laptop`` is written out in full; ``ci`` and ``full`` replace fields of its blocks.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

import numpy as np
import torch

SCALES = ("ci", "laptop", "full")


@dataclass(frozen=True)
class ToySizes:
    """Notebook 01: toy models of superposition."""

    steps: int
    """Adam steps of notebook 01's toy models (the phase diagrams train for ``phase_steps``, the
    neuron sweep for at least 3000)."""
    batch: int
    """Samples per step (per instance) for toy models."""
    seeds: int
    """Seeds per setting; the lowest-loss seed is kept (toy models have local minima)."""
    densities: int
    """Number of feature densities in the 5-features-in-2-D sweeps."""
    phase_grid: int
    """Cells per axis of the one-extra-feature phase diagram (grid is phase_grid**2)."""
    dim_features: int
    """Features in the feature-dimensionality experiment."""
    dim_hidden: int
    """Hidden dimensions in the feature-dimensionality experiment."""
    dim_densities: int
    """Densities (one model each) in the feature-dimensionality experiment."""
    phase_seeds: int
    """Seeds per phase-diagram cell (isolated wrong cells are local minima; more seeds remove them)."""
    phase_steps: int
    """Adam steps of the phase-diagram models (tiny models: their phases no longer change after 1500)."""
    slider_densities: int
    """Densities in the precomputed sweep behind the density / importance sliders."""
    slider_decays: int
    """Importance decays in that sweep."""
    abs_features: int
    """Inputs of the computation-in-superposition (|x|) models."""
    abs_hidden: int
    """Hidden ReLU neurons of those models."""
    abs_dense_seeds: int
    """Seeds of the dense |x| model (few seeds land in a local minimum that skips important features)."""
    abs_densities: int
    """Densities of the |x| sweep (its own count: the |x| models cost far more than the 5-in-2-D ones)."""
    softmax_features: int
    """Features in 2-D for the ReLU-vs-softmax geometry comparison."""


@dataclass(frozen=True)
class SAESizes:
    """Notebook 02: SAEs on ground-truth data (the data that notebooks 03 and 05 reuse)."""

    gt_features: int
    """G: ground-truth features (the report uses 512)."""
    gt_dim: int
    """h: dimension of the toy activations (the report uses 256)."""
    steps: int
    """Adam steps of the tests' L1 Goldilocks-zone check (no notebook reads it: notebook 02's SAEs
    train for ``grid.steps``)."""
    batch: int
    """Batch size for SAE training (the report uses 256)."""
    dict_ratios: tuple[float, ...]
    """Dictionary sizes J as multiples of G: the rows of the (size x L1) grid of notebooks 02 and 03."""
    l1_values: tuple[float, ...]
    """L1 coefficients (alpha) that only the tests' GPU-memory plan reads (its "02 L1 grid"); the
    columns of notebook 02's grid are ``grid.l1_values``."""
    alpha: float
    """alpha of notebook 02's single SAE, the grid cell it studies and its later runs at J = G:
    inside the Goldilocks zone at this scale."""
    noise_levels: tuple[float, ...]
    """Input noise std for the denoising appendix, in units of the data's per-dimension RMS."""
    noise_l1_values: tuple[float, ...]
    """alpha values (one stacked SAE per noise level) of the denoising appendix."""
    noise_steps: int
    """Adam steps per denoising SAE (otherwise the grid's recipe, ``toy_recipe()``)."""
    tuned_steps: int
    """Adam steps of notebook 02's whole recipe, resampling included (section 6)."""


@dataclass(frozen=True)
class GridSizes:
    """Notebook 03: hyperparameter diagnostics, the (size x L1) grid and its recipe."""

    steps: int
    """Adam steps per SAE in the (size x L1) diagnostic grid."""
    l1_values: tuple[float, ...]
    """L1 coefficients of the diagnostic grid."""
    dead_window: int
    """T: a latent that fired in none of the last T batches counts as dead (toy data)."""
    lr: float
    """Adam (peak) learning rate of the diagnostic grid (the report uses 1e-3)."""
    schedule: str
    """Learning-rate schedule of the grid's recipe (``helpers.optim.lr_factor``): ``constant``, or
    ``warmup_cosine`` at a scale whose SAEs have to get further per sample (notebook 02, section 6)."""
    renorm: bool
    """Reset decoder rows to unit length after every step in the grid's recipe (``SAEConfig.renorm_decoder``)."""
    extra_ratios: tuple[float, ...]
    """Dictionary sizes (multiples of G) of the extra grids: other seeds, independent features."""
    seed_l1_values: tuple[float, ...]
    """L1 coefficients of the two extra grids with other data and initialisation seeds."""
    plain_l1_values: tuple[float, ...]
    """L1 coefficients of the extra grid on independent, equally likely features."""


@dataclass(frozen=True)
class LMSizes:
    """Notebook 04: SAEs on a language model's MLP (notebook 06 reuses ``tokens`` and ``dead_window``)."""

    tokens: int
    """Tokens of activations harvested from the language model."""
    steps: int
    """Adam steps for SAEs on language-model activations."""
    expansions: tuple[float, ...]
    """Dictionary sizes as multiples of the MLP width (the grid's rows)."""
    l1_values: tuple[float, ...]
    """L1 coefficients (alpha, divided by J as in the report) of the language-model grid."""
    dead_window: int
    """T for dead latents on language-model activations (the report uses 3000)."""


@dataclass(frozen=True)
class BeyondSizes:
    """Notebook 05: beyond the report (modern SAEs, the report's suspects, absorption)."""

    steps: int
    """Adam steps per SAE of the modern-SAE comparison and the (size x k) grid (notebook 03's data)."""
    ks: tuple[int, ...]
    """k values of the TopK SAEs (the true L0 is 5)."""
    l1_values: tuple[float, ...]
    """alpha values of the L1 SAEs compared with TopK at matched L0."""
    jumprelu_values: tuple[float, ...]
    """L0-penalty coefficients of the JumpReLU SAEs."""
    sizes: tuple[float, ...]
    """Dictionary sizes (multiples of G) of the (size x k) TopK grid."""
    suspect_features: int
    """G of the toy data in the suspects sweep (h = G / 2 unless a suspect changes it)."""
    suspect_sizes: tuple[float, ...]
    """Dictionary sizes (multiples of G) of each suspect's grid."""
    suspect_l1_values: tuple[float, ...]
    """alpha values of each suspect's grid."""
    suspect_steps: int
    """Adam steps per SAE of the suspects' grids and the absorption runs."""


@dataclass(frozen=True)
class ChooseSizes:
    """Notebook 06: choosing L0 and width."""

    features: int
    """G of both toy data sets (h = G / 2)."""
    steps: int
    """Adam steps per SAE of the (width x L0) grids on toy data."""
    ks: tuple[int, ...]
    """k values of the BatchTopK and Matryoshka grids (both data sets have a true L0 near 5)."""
    l1_values: tuple[float, ...]
    """alpha values of the L1 grids."""
    sizes: tuple[float, ...]
    """Dictionary sizes (multiples of G) of every grid."""
    seeds: int
    """Initialisations per cell (cross-seed consistency compares the first two)."""
    control_ks: tuple[int, ...]
    """k values of the control without superposition (h = 2G, true L0 near 10)."""
    lm_ks: tuple[int, ...]
    """k values of the BatchTopK grid on the language model's MLP."""
    lm_sizes: tuple[float, ...]
    """Its dictionary sizes (multiples of the MLP width)."""
    lm_steps: int
    """Adam steps per SAE of that grid."""


@dataclass(frozen=True)
class RunSizes:
    """How big every run in the course is, for one ``TUTORIAL_SCALE``: one block per notebook.

    Later notebooks reuse earlier blocks: ``helpers.course.recipes.toy_recipe``, the SAE recipe notebooks
    02, 03, 05 and 06 start from, is notebook 02's data and batch (``sae.gt_*``, ``sae.batch``) with
    notebook 03's grid settings (``grid.*``); ``helpers.course.recipes.toy_grid``, the grid notebooks 02 to
    05 read, is ``sae.dict_ratios`` x ``grid.l1_values``; notebook 06 harvests notebook 04's
    ``lm.tokens`` and uses its ``lm.dead_window``.
    """

    scale: str
    """Name of the scale these sizes are for: ci, laptop or full."""
    toy: ToySizes
    """Notebook 01: toy models of superposition."""
    sae: SAESizes
    """Notebook 02: SAEs on ground-truth data."""
    grid: GridSizes
    """Notebook 03: hyperparameter diagnostics."""
    lm: LMSizes
    """Notebook 04: SAEs on a language model's MLP."""
    beyond: BeyondSizes
    """Notebook 05: beyond the report."""
    choose: ChooseSizes
    """Notebook 06: choosing L0 and width."""


def _quarter_decades(lo: float, hi: float) -> tuple[float, ...]:
    n = int(round(4 * np.log10(hi / lo)))
    return tuple(float(f"{v:.4g}") for v in np.logspace(np.log10(lo), np.log10(hi), n + 1))


def _between(values: tuple[float, ...], lo: float, hi: float) -> tuple[float, ...]:
    return tuple(v for v in values if lo <= v <= hi)


# ci: half decades, plus quarter decades around the report's Goldilocks zone (0.03-0.3) and
# its dead-latent boundary (0.177), and large values where oversized dictionaries die.
_GRID_CI_L1 = (0.01, 0.03162, 0.1, 0.1778, 0.3162, 0.5623, 1.0, 3.162, 10.0, 31.62)

# alpha/J on the tiny model's MLP: 0.1 gives L0 ~100-450 (dense), 10 kills most latents.
_LM_L1 = (0.1, 0.3, 1.0, 3.0, 10.0)

_LAPTOP = RunSizes(
    scale="laptop",
    # phase diagrams 20 x 20, as at ci: less than 24 x 24, to keep the whole course under 45 min (the
    # dimensionality sweep keeps 32 densities: at 24, notebook 01 failed its claim on the plateaus' order)
    toy=ToySizes(
        steps=3_000, batch=1024, seeds=4, densities=11, phase_grid=20,
        dim_features=100, dim_hidden=10, dim_densities=32, phase_seeds=6, phase_steps=1_500, slider_densities=13,
        slider_decays=5,
        abs_features=20, abs_hidden=10, abs_dense_seeds=32, abs_densities=6, softmax_features=16),
    # The report's G = 512 in h = 256 costs 16x a ci step, so laptop trains 0.5x-4x (no 8x: it alone
    # was half of the grid's cost) at the warmup-cosine recipe, which gets further per sample.
    sae=SAESizes(
        gt_features=512, gt_dim=256, steps=8_000, batch=256,
        dict_ratios=(0.5, 1.0, 2.0, 4.0), l1_values=_quarter_decades(1e-3, 10.0)[::2],
        alpha=0.1, noise_levels=(0.0, 1.0, 2.0, 4.0),  # 0.5 only at ci and full: it keeps laptop under 45 min
        noise_l1_values=(0.03, 0.1, 0.3, 1.0), noise_steps=1_000, tuned_steps=7_812),
    grid=GridSizes(
        steps=2_000, l1_values=_quarter_decades(1e-2, 10.0)[::2][1:], dead_window=500, lr=1e-2,
        schedule="warmup_cosine", renorm=True,
        extra_ratios=(0.5, 1.0, 2.0), seed_l1_values=(0.1, 0.3162, 1.0, 3.162),
        plain_l1_values=_between(_quarter_decades(1e-2, 10.0)[::2], 0.03, 10.0)),
    lm=LMSizes(tokens=300_000, steps=1_500, expansions=(0.5, 1, 2, 4), dead_window=500, l1_values=_LM_L1),
    beyond=BeyondSizes(
        steps=2_000, ks=(3, 5, 8), l1_values=(0.1, 0.3, 1.0, 3.0),
        jumprelu_values=(0.03, 0.1, 0.3), sizes=(0.5, 1.0, 2.0, 4.0),
        suspect_features=128, suspect_sizes=(0.5, 1.0, 2.0), suspect_l1_values=(0.1, 0.3, 1.0, 3.0),
        suspect_steps=1_500),
    choose=ChooseSizes(
        features=128, steps=3_000, ks=(1, 2, 3, 5, 8, 12, 18), l1_values=(0.03, 0.1, 0.3, 1.0, 3.0),
        sizes=(0.5, 1.0, 2.0), seeds=2, control_ks=(2, 4, 6, 8, 10, 12, 16, 20), lm_ks=(8, 16, 32, 64, 128),
        lm_sizes=(1.0,), lm_steps=1_500),
)

_SIZES = {
    "laptop": _LAPTOP,
    "ci": replace(
        _LAPTOP, scale="ci",
        toy=replace(
            _LAPTOP.toy, steps=1_500, batch=512, seeds=3, densities=6, phase_grid=20,
            dim_features=100, dim_hidden=10, dim_densities=24, phase_seeds=6, slider_densities=10, slider_decays=5,
            abs_features=20, abs_hidden=10, abs_dense_seeds=24, abs_densities=6, softmax_features=12),
        sae=replace(
            _LAPTOP.sae, gt_features=128, gt_dim=64, steps=8_000,
            l1_values=_quarter_decades(1e-3, 10.0)[::2], alpha=0.1, noise_steps=2_000,
            dict_ratios=(0.5, 1.0, 2.0, 4.0, 8.0), noise_levels=(0.0, 0.25, 0.5, 1.0, 2.0, 4.0),
            noise_l1_values=(0.01, 0.03, 0.1, 0.3, 1.0, 3.0), tuned_steps=4_000),
        grid=replace(
            _LAPTOP.grid, steps=4_000, l1_values=_GRID_CI_L1, dead_window=500, lr=3e-3, schedule="constant",
            renorm=False,
            # the extra grids stop at 2x and 0.1-3.16: a third of the work of 0.5x-4x over 0.03-3.16 (or all 10 values)
            extra_ratios=(0.5, 1.0, 2.0), seed_l1_values=_between(_GRID_CI_L1, 0.1, 3.2),
            plain_l1_values=_between(_GRID_CI_L1, 0.1, 3.2)),
        lm=replace(_LAPTOP.lm, tokens=100_000, steps=1_000, expansions=(0.5, 1, 2), dead_window=300,
                   l1_values=(0.3, 1.0, 3.0)),
        beyond=replace(
            _LAPTOP.beyond, steps=2_000, ks=(3, 5, 8), l1_values=(0.3, 1.0, 3.0),
            jumprelu_values=(0.03, 0.1, 0.3), sizes=(0.5, 1.0, 2.0, 4.0),
            suspect_features=64, suspect_sizes=(0.5, 1.0, 2.0), suspect_l1_values=(0.1, 0.3, 1.0, 3.0),
            suspect_steps=1_000),
        choose=replace(_LAPTOP.choose, features=64, steps=2_000, ks=(1, 2, 3, 5, 8, 12), lm_sizes=(1.0,),
                       lm_steps=500),
    ),
    "full": replace(
        _LAPTOP, scale="full",
        toy=replace(
            _LAPTOP.toy, steps=10_000, batch=1024, seeds=8, densities=16, phase_grid=40,
            dim_features=400, dim_hidden=30, dim_densities=48, phase_seeds=12, phase_steps=10_000, slider_densities=24,
            slider_decays=9,
            abs_features=100, abs_hidden=40, abs_dense_seeds=48, abs_densities=12, softmax_features=20),
        sae=replace(
            _LAPTOP.sae, dict_ratios=(0.5, 1.0, 2.0, 4.0, 8.0), l1_values=_quarter_decades(1e-3, 10.0), steps=20_000,
            noise_levels=(0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0), noise_l1_values=(0.03, 0.1, 0.3, 1.0),
            noise_steps=20_000),
        grid=replace(
            _LAPTOP.grid, steps=20_000, l1_values=_quarter_decades(1e-3, 10.0), lr=1e-3, schedule="constant",
            renorm=False,
            extra_ratios=(0.5, 1.0, 2.0, 4.0), seed_l1_values=_between(_quarter_decades(1e-3, 10.0), 0.03, 3.2),
            plain_l1_values=_quarter_decades(1e-3, 10.0)),
        lm=replace(_LAPTOP.lm, tokens=450_000, steps=30_000, expansions=(0.5, 1, 2, 4, 8, 16), dead_window=3000,
                   l1_values=(0.03, 0.1, 0.3, 1.0, 3.0, 10.0)),
        beyond=replace(
            _LAPTOP.beyond, steps=20_000, ks=(2, 3, 5, 8, 13), sizes=(0.5, 1.0, 2.0, 4.0, 8.0),
            suspect_features=512, suspect_sizes=(0.5, 1.0, 2.0, 4.0, 8.0), suspect_l1_values=(0.03, 0.1, 0.3, 1.0, 3.0),
            suspect_steps=10_000),
        choose=replace(
            _LAPTOP.choose, features=512, steps=20_000, ks=(1, 2, 3, 4, 5, 6, 8, 12, 18), seeds=3,
            sizes=(0.5, 1.0, 2.0, 4.0), lm_ks=(8, 16, 32, 64, 128, 256), lm_sizes=(1.0, 2.0, 4.0), lm_steps=10_000),
    ),
}


def current_scale() -> str:
    """``$TUTORIAL_SCALE`` if set, else ``full`` on CUDA and ``laptop`` elsewhere."""
    scale = os.environ.get("TUTORIAL_SCALE", "").strip().lower()
    if not scale:
        return "full" if torch.cuda.is_available() else "laptop"
    if scale not in SCALES:
        raise ValueError(f"TUTORIAL_SCALE={scale!r} is not a scale: use one of {', '.join(SCALES)}.")
    return scale


def sizes(scale: str | None = None) -> RunSizes:
    """The run sizes for ``scale`` (default: ``current_scale()``)."""
    scale = current_scale() if scale is None else scale
    if scale not in _SIZES:
        raise ValueError(f"Unknown scale {scale!r}: use one of {', '.join(SCALES)}.")
    return _SIZES[scale]
