"""Where the course runs, where its random numbers come from and how big its runs are.

* Devices: ``get_device()`` is the torch device every helper and notebook uses (the argument,
  else the ``COURSE_DEVICE`` environment variable, else cuda > mps > cpu); ``resolve_device()``
  adds ``"meta"``, and ``parse_device()`` turns a bad name into an error that says what to pass.
* Randomness: ``course_seed()`` reads ``COURSE_SEED`` (default 0); ``stream_seed()`` derives one
  seed per named stream from it, so every stream moves at once, and ``rng()`` is a generator for
  one stream. ``seed_everything()`` seeds Python's, NumPy's and torch's global generators, for a
  reader's own calls (the helpers never draw from them).
* Sizes: ``sizes()`` is the frozen ``RunSizes`` of a scale (``ci``, ``laptop`` or ``full``),
  by default ``current_scale()``: ``TUTORIAL_SCALE``, else ``full`` on CUDA and ``laptop``
  elsewhere. Notebooks read their sizes from it instead of hard-coding a second code path.
* Two checks the trainers share: ``check_int()`` (a size, step count or seed of a config is an
  int, never a bool, at least a minimum) and ``cpu_threads()`` (small CPU work on one thread).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import random
from dataclasses import dataclass, replace
from numbers import Integral

import numpy as np
import torch

SCALES = ("ci", "laptop", "full")
_DEVICE_KINDS = ("cpu", "cuda", "mps")


def parse_device(device: str | torch.device, name: str = "device") -> torch.device:
    """``torch.device(device)``, or a ValueError that names the argument ``name`` and says what to pass.

    Only the name is checked (any torch device type parses); ``get_device`` checks that the course
    runs there and that it is available.
    """
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        fix = ("or unset COURSE_DEVICE to pick the best one automatically" if name == "COURSE_DEVICE"
               else "or leave it None to pick the best one")
        raise ValueError(f"Unknown device: {name}={device!r} is not a torch device: use 'cpu', 'cuda' "
                         f"(or 'cuda:0') or 'mps', {fix}.") from err


def get_device(device: str | torch.device | None = None) -> torch.device:
    """The device to train on: the argument, else ``$COURSE_DEVICE``, else cuda > mps > cpu.

    An unknown or unavailable device is a clear error rather than a crash deep in a loop.
    """
    choice = device if device is not None else os.environ.get("COURSE_DEVICE") or None
    if choice is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = parse_device(choice, "device" if device is not None else "COURSE_DEVICE")
    if dev.type not in _DEVICE_KINDS:
        raise ValueError(f"Unsupported device {choice!r}: the course runs on {', '.join(_DEVICE_KINDS)}.")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Device {choice!r} was asked for, but torch sees no CUDA GPU here. Use 'cpu'.")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"Device {choice!r} was asked for, but MPS is not available here. Use 'cpu'.")
    return dev


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``get_device``, plus ``"meta"`` (shapes without memory: how the tests check placement).

    The one device check of the SAEs, the toy models and ``lm.load_model``.
    """
    if device is not None and parse_device(device).type == "meta":
        return torch.device("meta")
    return get_device(device)


def check_int(name: str, value, minimum: int | None = None) -> None:
    """Raise unless ``value`` is an int (numpy's too, never a bool) of at least ``minimum``:
    the check of the sizes, step counts and seeds of the course's configs."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__}): pass a whole number"
                        + ("" if minimum is None else f" >= {minimum}"))
    if minimum is not None and value < minimum:
        kind = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, "an integer")
        raise ValueError(f"{name} must be {kind} (at least {minimum}), got {value}")


def course_seed() -> int:
    """The course's one seed knob: ``$COURSE_SEED`` (a whole number, default 0).

    Every random stream of the course (data, initialisations, sampling, resampling) is derived
    from it through ``stream_seed``, so ``COURSE_SEED=1`` gives a whole new run of every
    notebook, and equal values give identical runs. The findings the notebooks state are meant
    to hold for any value: try one.
    """
    raw = os.environ.get("COURSE_SEED", "").strip()
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"COURSE_SEED={raw!r}: set it to a whole number >= 0 (e.g. COURSE_SEED=1), "
                         "or unset it for the default run (0).")
    return value


def stream_seed(seed: int, stream: str) -> int:
    """A seed for one named random stream (``"ground-truth"``, ``"sae-init"``, ...).

    Equal user seeds must not give equal random numbers in different places: with both the
    ground-truth features and an SAE's orthogonal init drawn from ``manual_seed(0)``, the
    init *is* (a linear map of) the answer, and the SAE looks far better than it is.
    A nonzero ``COURSE_SEED`` (``course_seed()``) moves every stream at once.
    """
    salt = course_seed()
    text = f"{stream}:{seed}" if salt == 0 else f"{stream}:{seed}:course-seed={salt}"
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # 63 bits: a valid torch seed


def rng(seed: int = 0, stream: str = "notebook", device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator for one named stream: ``torch.rand(..., generator=rng(1))``.

    Seeded through ``stream_seed``, so it follows ``COURSE_SEED`` like every other stream.
    """
    return torch.Generator(device=device).manual_seed(stream_seed(seed, stream))


@contextlib.contextmanager
def cpu_threads(device: torch.device, work: int, threshold: int):
    """Run small CPU work on one thread; leave GPUs and large work alone.

    A step of a small stack is many tiny ops, and with two threads each op waits for the other;
    on a busy machine that wait is a scheduler time slice (a toy sweep was measured 100x
    slower), while one thread loses little on an idle one. ``work``: elements touched per step; above ``threshold`` torch's thread pool is kept.
    """
    if torch.device(device).type != "cpu" or work > threshold:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); return a CPU generator seeded the same.

    The helpers never draw from these global generators (each stream has its own generator);
    this covers a reader's own ``torch.randn(...)`` calls. A nonzero ``COURSE_SEED`` moves it too.
    """
    if course_seed():
        seed = stream_seed(seed, "global") % 2**32  # numpy takes 32-bit seeds
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@dataclass(frozen=True)
class RunSizes:
    """How big every run in the course is, for one ``TUTORIAL_SCALE``.

    The fields come in blocks, each under the notebook that introduces it. Later
    notebooks reuse earlier blocks: ``helpers.recipes.toy_recipe``, the SAE recipe notebooks 02,
    03, 05 and 06 start from, is notebook 02's data and batch (``gt_*``, ``sae_batch``) with
    notebook 03's grid settings (``grid_*``, ``dead_window``); ``helpers.recipes.toy_grid``, the
    grid notebooks 02 to 05 read, is ``sae_dict_ratios`` x ``grid_l1_values``; notebook 06
    harvests notebook 04's ``lm_tokens`` and uses its ``lm_dead_window``.
    """

    scale: str
    """Name of the scale these sizes are for: ci, laptop or full."""

    # --- notebook 01: toy models of superposition -------------------------------------
    toy_steps: int
    """Adam steps of notebook 01's toy models (the phase diagrams train for ``phase_steps``, the
    neuron sweep for at least 3000)."""
    toy_batch: int
    """Samples per step (per instance) for toy models."""
    toy_seeds: int
    """Seeds per setting; the lowest-loss seed is kept (toy models have local minima)."""
    toy_densities: int
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

    # --- notebook 02: SAEs on ground-truth data -----------------------------------------
    gt_features: int
    """G: ground-truth features (the report uses 512)."""
    gt_dim: int
    """h: dimension of the toy activations (the report uses 256)."""
    sae_steps: int
    """Adam steps of the tests' L1 Goldilocks-zone check (no notebook reads it: notebook 02's SAEs
    train for ``grid_steps``)."""
    sae_batch: int
    """Batch size for SAE training (the report uses 256)."""
    sae_dict_ratios: tuple[float, ...]
    """Dictionary sizes J as multiples of G: the rows of the (size x L1) grid of notebooks 02 and 03."""
    sae_l1_values: tuple[float, ...]
    """L1 coefficients (alpha) that only the tests' GPU-memory plan reads (its "02 L1 grid"); the
    columns of notebook 02's grid are ``grid_l1_values``."""
    sae_alpha: float
    """alpha of notebook 02's single SAE, the grid cell it studies and its later runs at J = G:
    inside the Goldilocks zone at this scale."""
    sae_noise_levels: tuple[float, ...]
    """Input noise std for the denoising appendix, in units of the data's per-dimension RMS."""
    sae_noise_l1_values: tuple[float, ...]
    """alpha values (one stacked SAE per noise level) of the denoising appendix."""
    sae_noise_steps: int
    """Adam steps per denoising SAE (otherwise the grid's recipe, ``toy_recipe()``)."""
    sae_tuned_steps: int
    """Adam steps of notebook 02's whole recipe, resampling included (section 6)."""

    # --- notebook 03: hyperparameter diagnostics -----------------------------------------
    grid_steps: int
    """Adam steps per SAE in the (size x L1) diagnostic grid."""
    grid_l1_values: tuple[float, ...]
    """L1 coefficients of the diagnostic grid."""
    dead_window: int
    """T: a latent that fired in none of the last T batches counts as dead (toy data)."""
    grid_lr: float
    """Adam (peak) learning rate of the diagnostic grid (the report uses 1e-3)."""
    grid_schedule: str
    """Learning-rate schedule of the grid's recipe (``helpers.optim.lr_factor``): ``constant``, or
    ``warmup_cosine`` at a scale whose SAEs have to get further per sample (notebook 02, section 6)."""
    grid_renorm: bool
    """Reset decoder rows to unit length after every step in the grid's recipe (``SAEConfig.renorm_decoder``)."""
    extra_grid_ratios: tuple[float, ...]
    """Dictionary sizes (multiples of G) of the extra grids: other seeds, independent features."""
    seed_grid_l1_values: tuple[float, ...]
    """L1 coefficients of the two extra grids with other data and initialisation seeds."""
    plain_grid_l1_values: tuple[float, ...]
    """L1 coefficients of the extra grid on independent, equally likely features."""

    # --- notebook 04: SAEs on a language model's MLP --------------------------------------
    lm_tokens: int
    """Tokens of activations harvested from the language model."""
    lm_sae_steps: int
    """Adam steps for SAEs on language-model activations."""
    lm_expansions: tuple[float, ...]
    """Dictionary sizes as multiples of the MLP width (the grid's rows)."""
    lm_l1_values: tuple[float, ...]
    """L1 coefficients (alpha, divided by J as in the report) of the language-model grid."""
    lm_dead_window: int
    """T for dead latents on language-model activations (the report uses 3000)."""

    # --- notebook 05: beyond the report ----------------------------------------------------
    beyond_steps: int
    """Adam steps per SAE of the modern-SAE comparison and the (size x k) grid (notebook 03's data)."""
    beyond_ks: tuple[int, ...]
    """k values of the TopK SAEs (the true L0 is 5)."""
    beyond_l1_values: tuple[float, ...]
    """alpha values of the L1 SAEs compared with TopK at matched L0."""
    beyond_jumprelu_values: tuple[float, ...]
    """L0-penalty coefficients of the JumpReLU SAEs."""
    beyond_sizes: tuple[float, ...]
    """Dictionary sizes (multiples of G) of the (size x k) TopK grid."""
    suspect_features: int
    """G of the toy data in the suspects sweep (h = G / 2 unless a suspect changes it)."""
    suspect_sizes: tuple[float, ...]
    """Dictionary sizes (multiples of G) of each suspect's grid."""
    suspect_l1_values: tuple[float, ...]
    """alpha values of each suspect's grid."""
    suspect_steps: int
    """Adam steps per SAE of the suspects' grids and the absorption runs."""

    # --- notebook 06: choosing L0 and width ---------------------------------------------------
    choose_features: int
    """G of both toy data sets (h = G / 2)."""
    choose_steps: int
    """Adam steps per SAE of the (width x L0) grids on toy data."""
    choose_ks: tuple[int, ...]
    """k values of the BatchTopK and Matryoshka grids (both data sets have a true L0 near 5)."""
    choose_l1_values: tuple[float, ...]
    """alpha values of the L1 grids."""
    choose_sizes: tuple[float, ...]
    """Dictionary sizes (multiples of G) of every grid."""
    choose_seeds: int
    """Initialisations per cell (cross-seed consistency compares the first two)."""
    choose_control_ks: tuple[int, ...]
    """k values of the control without superposition (h = 2G, true L0 near 10)."""
    choose_lm_ks: tuple[int, ...]
    """k values of the BatchTopK grid on the language model's MLP."""
    choose_lm_sizes: tuple[float, ...]
    """Its dictionary sizes (multiples of the MLP width)."""
    choose_lm_steps: int
    """Adam steps per SAE of that grid."""


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
    toy_steps=3_000, toy_batch=1024, toy_seeds=4, toy_densities=11, phase_grid=20,
    dim_features=100, dim_hidden=10, dim_densities=32, phase_seeds=6, phase_steps=1_500, slider_densities=13,
    slider_decays=5,
    abs_features=20, abs_hidden=10, abs_dense_seeds=32, abs_densities=6, softmax_features=16,
    # The report's G = 512 in h = 256 costs 16x a ci step, so laptop trains 0.5x-4x (no 8x: it alone
    # was half of the grid's cost) at the warmup-cosine recipe, which gets further per sample.
    gt_features=512, gt_dim=256, sae_steps=8_000, sae_batch=256,
    sae_dict_ratios=(0.5, 1.0, 2.0, 4.0), sae_l1_values=_quarter_decades(1e-3, 10.0)[::2],
    sae_alpha=0.1, sae_noise_levels=(0.0, 1.0, 2.0, 4.0),  # 0.5 only at ci and full: it keeps laptop under 45 min
    sae_noise_l1_values=(0.03, 0.1, 0.3, 1.0), sae_noise_steps=1_000, sae_tuned_steps=7_812,
    grid_steps=2_000, grid_l1_values=_quarter_decades(1e-2, 10.0)[::2][1:], dead_window=500, grid_lr=1e-2,
    grid_schedule="warmup_cosine", grid_renorm=True,
    extra_grid_ratios=(0.5, 1.0, 2.0), seed_grid_l1_values=(0.1, 0.3162, 1.0, 3.162),
    plain_grid_l1_values=_between(_quarter_decades(1e-2, 10.0)[::2], 0.03, 10.0),
    lm_tokens=300_000, lm_sae_steps=1_500, lm_expansions=(0.5, 1, 2, 4), lm_dead_window=500,
    lm_l1_values=_LM_L1,
    beyond_steps=2_000, beyond_ks=(3, 5, 8), beyond_l1_values=(0.1, 0.3, 1.0, 3.0),
    beyond_jumprelu_values=(0.03, 0.1, 0.3), beyond_sizes=(0.5, 1.0, 2.0, 4.0),
    suspect_features=128, suspect_sizes=(0.5, 1.0, 2.0), suspect_l1_values=(0.1, 0.3, 1.0, 3.0),
    suspect_steps=1_500,
    choose_features=128, choose_steps=3_000, choose_ks=(1, 2, 3, 5, 8, 12, 18), choose_l1_values=(0.03, 0.1, 0.3, 1.0, 3.0),
    choose_sizes=(0.5, 1.0, 2.0), choose_seeds=2, choose_control_ks=(2, 4, 6, 8, 10, 12, 16, 20), choose_lm_ks=(8, 16, 32, 64, 128), choose_lm_sizes=(1.0,),
    choose_lm_steps=1_500,
)

_SIZES = {
    "laptop": _LAPTOP,
    "ci": replace(
        _LAPTOP, scale="ci",
        toy_steps=1_500, toy_batch=512, toy_seeds=3, toy_densities=6, phase_grid=20,
        dim_features=100, dim_hidden=10, dim_densities=24, phase_seeds=6, slider_densities=10, slider_decays=5,
        abs_features=20, abs_hidden=10, abs_dense_seeds=24, abs_densities=6, softmax_features=12,
        gt_features=128, gt_dim=64, sae_steps=8_000,
        sae_l1_values=_quarter_decades(1e-3, 10.0)[::2], sae_alpha=0.1, sae_noise_steps=2_000,
        sae_dict_ratios=(0.5, 1.0, 2.0, 4.0, 8.0), sae_noise_levels=(0.0, 0.25, 0.5, 1.0, 2.0, 4.0),
        sae_noise_l1_values=(0.01, 0.03, 0.1, 0.3, 1.0, 3.0), sae_tuned_steps=4_000,
        grid_steps=4_000, grid_l1_values=_GRID_CI_L1, dead_window=500, grid_lr=3e-3, grid_schedule="constant",
        grid_renorm=False,
        # the extra grids stop at 2x and 0.1-3.16: a third of the work of 0.5x-4x over 0.03-3.16 (or all 10 values)
        extra_grid_ratios=(0.5, 1.0, 2.0), seed_grid_l1_values=_between(_GRID_CI_L1, 0.1, 3.2),
        plain_grid_l1_values=_between(_GRID_CI_L1, 0.1, 3.2),
        lm_tokens=100_000, lm_sae_steps=1_000, lm_expansions=(0.5, 1, 2), lm_dead_window=300,
        lm_l1_values=(0.3, 1.0, 3.0),
        beyond_steps=2_000, beyond_ks=(3, 5, 8), beyond_l1_values=(0.3, 1.0, 3.0),
        beyond_jumprelu_values=(0.03, 0.1, 0.3), beyond_sizes=(0.5, 1.0, 2.0, 4.0),
        suspect_features=64, suspect_sizes=(0.5, 1.0, 2.0), suspect_l1_values=(0.1, 0.3, 1.0, 3.0),
        suspect_steps=1_000,
        choose_features=64, choose_steps=2_000, choose_ks=(1, 2, 3, 5, 8, 12), choose_lm_sizes=(1.0,),
        choose_lm_steps=500,
    ),
    "full": replace(
        _LAPTOP, scale="full",
        toy_steps=10_000, toy_batch=1024, toy_seeds=8, toy_densities=16, phase_grid=40,
        dim_features=400, dim_hidden=30, dim_densities=48, phase_seeds=12, phase_steps=10_000, slider_densities=24,
        slider_decays=9,
        abs_features=100, abs_hidden=40, abs_dense_seeds=48, abs_densities=12, softmax_features=20,
        sae_dict_ratios=(0.5, 1.0, 2.0, 4.0, 8.0), sae_l1_values=_quarter_decades(1e-3, 10.0), sae_steps=20_000,
        sae_noise_levels=(0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0), sae_noise_l1_values=(0.03, 0.1, 0.3, 1.0),
        sae_noise_steps=20_000,
        grid_steps=20_000, grid_l1_values=_quarter_decades(1e-3, 10.0), grid_lr=1e-3, grid_schedule="constant",
        grid_renorm=False,
        extra_grid_ratios=(0.5, 1.0, 2.0, 4.0), seed_grid_l1_values=_between(_quarter_decades(1e-3, 10.0), 0.03, 3.2),
        plain_grid_l1_values=_quarter_decades(1e-3, 10.0),
        lm_tokens=450_000, lm_sae_steps=30_000, lm_expansions=(0.5, 1, 2, 4, 8, 16), lm_dead_window=3000,
        lm_l1_values=(0.03, 0.1, 0.3, 1.0, 3.0, 10.0),
        beyond_steps=20_000, beyond_ks=(2, 3, 5, 8, 13), beyond_sizes=(0.5, 1.0, 2.0, 4.0, 8.0),
        suspect_features=512, suspect_sizes=(0.5, 1.0, 2.0, 4.0, 8.0), suspect_l1_values=(0.03, 0.1, 0.3, 1.0, 3.0),
        suspect_steps=10_000,
        choose_features=512, choose_steps=20_000, choose_ks=(1, 2, 3, 4, 5, 6, 8, 12, 18), choose_seeds=3,
        choose_sizes=(0.5, 1.0, 2.0, 4.0), choose_lm_ks=(8, 16, 32, 64, 128, 256), choose_lm_sizes=(1.0, 2.0, 4.0), choose_lm_steps=10_000,
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
