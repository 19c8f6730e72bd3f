"""What a stack of SAEs is and how it trains: one frozen dataclass, one field per choice.

A config object travels whole (``dataclasses.replace(cfg, d_sae=1024)`` makes the next cell of a
sweep), and every field is checked here, so a bad value fails at construction with its name
rather than as a NaN a thousand steps into training. Settings that belong to one idea sit in a
small config of their own, nested in ``SAEConfig`` so that they are saved, cached and gridded
like every other field: ``AuxKConfig`` (``auxk``), ``ResampleConfig`` (``resample``), and a
variant's own settings (``variant``; JumpReLU's ``JumpReLUConfig``, or a reader's variant's).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

from helpers.device import check_int
from helpers.optim import LR_SCHEDULES
from helpers.sae.fused import MATMUL_DTYPES
from helpers.sae.registry import sae_class
from helpers.sae.resample import RESAMPLE_TARGETS


AUXK_COEFF = 1 / 32
"""The AuxK coefficient of Gao et al. 2024 (on the residual-normalised error)."""
AUXK_DEAD_WINDOW = 20
"""Batches without firing after which AuxK treats a latent as dead. Much shorter than the course's
``dead_window`` (which reports dead latents): with 256 examples a batch, a latent that fired for
even the rarest feature of the toy data (about 2% of examples) would have fired ~100 times in 20
batches, and a latent revived late has too few steps left to learn its feature."""


def number(name: str, value, example: str) -> float:
    """``value`` as a float, or a TypeError naming ``name`` and what to pass (``example``): a bool,
    a string or None is not a number (numpy's numbers are)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__}): pass e.g. {example}")
    return float(value)


@dataclass(frozen=True)
class AuxKConfig:
    """The AuxK loss of Gao et al. 2024 (``SAEConfig.auxk``), which revives dead TopK latents:
    the ``k`` largest pre-activations among the dead latents alone must reconstruct what the live
    ones left over (``helpers.sae.variants.TopKSAE.aux_loss``)."""

    coeff: float = AUXK_COEFF
    """Weight of the AuxK term in the loss (the paper's 1/32)."""
    k: int | None = None
    """Dead latents that take part per example; None: ``d_in // 2``, the paper's k_aux."""
    dead_window: int = AUXK_DEAD_WINDOW
    """Training batches without firing after which a latent counts as dead for AuxK."""

    def __post_init__(self) -> None:
        coeff = number("auxk.coeff", self.coeff, f"AuxKConfig(coeff={AUXK_COEFF})")
        if not (math.isfinite(coeff) and coeff > 0):
            raise ValueError(f"auxk.coeff must be a positive finite number, got {self.coeff!r}: pass e.g. "
                             f"AuxKConfig(coeff={AUXK_COEFF}), or auxk=None for no AuxK loss")
        object.__setattr__(self, "coeff", coeff)
        for name, example, or_else in (("k", 16, " (or k=None: d_in // 2)"), ("dead_window", AUXK_DEAD_WINDOW, "")):
            value = getattr(self, name)
            if value is None and name == "k":
                continue
            message = f"auxk.{name} must be a whole number >= 1, got {value!r}: pass e.g. AuxKConfig({name}={example}){or_else}"
            if isinstance(value, bool) or not isinstance(value, Integral):
                raise TypeError(message)
            if value < 1:
                raise ValueError(message)
            object.__setattr__(self, name, int(value))


@dataclass(frozen=True)
class ResampleConfig:
    """When and how ``train_sae`` revives the latents that do nothing useful (``SAEConfig.resample``,
    for the standard SAE): every ``every`` steps, those silent for ``dead_after`` steps and the
    rarer of each near-duplicate pair, pointed at what the SAE cannot express (``helpers.sae.resample``;
    notebook 02, section 6). The diagnostic grids never resample, since they read the dead latents."""

    every: int
    """Steps between two resamplings (the first comes once ``dead_after`` steps have passed)."""
    dead_after: int = 60
    """Steps without firing after which resampling counts a latent dead (60 x 256 ~ 15k samples)."""
    duplicate_cos: float = 0.8
    """Also revive the rarer latent of any pair whose decoder rows have a cosine above this (0: none)."""
    to: str = "refit"
    """Where a revived latent points: ``input``, ``residual`` or ``refit`` (see ``helpers.sae.resample``)."""
    until: float = 1.0
    """No resampling after this fraction of the run (below 1: latents that die late stay dead)."""

    def __post_init__(self) -> None:
        for name in ("every", "dead_after"):
            check_int(f"resample.{name}", getattr(self, name), 1)
        for name in ("duplicate_cos", "until"):
            example = f"ResampleConfig(every=40, {name}={ResampleConfig.__dataclass_fields__[name].default})"
            object.__setattr__(self, name, number(f"resample.{name}", getattr(self, name), example))
        if not 0 <= self.duplicate_cos <= 1:
            raise ValueError(f"resample.duplicate_cos must be a cosine in [0, 1] (0: no duplicate check), "
                             f"got {self.duplicate_cos!r}")
        if not 0 < self.until <= 1:
            raise ValueError(f"resample.until must be a fraction of the run in (0, 1], got {self.until!r}")
        if self.to not in RESAMPLE_TARGETS:
            raise ValueError(f"resample.to must be one of {RESAMPLE_TARGETS}, got {self.to!r}")


def nested(name: str, value, cls: type, example: str):
    """``value`` (a ``cls``, a dict of its fields as ``asdict`` and a saved cfg.json hold it, or
    None) as a ``cls`` or None; anything else is a TypeError naming ``name``."""
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(cls.__dataclass_fields__))
        if unknown:
            raise TypeError(f"{name} has no field {unknown[0]!r}: its fields are {', '.join(cls.__dataclass_fields__)}")
        value = cls(**value)
    if value is not None and not isinstance(value, cls):
        article = "an" if cls.__name__[0] in "AEIOU" else "a"
        raise TypeError(f"{name} must be {article} {cls.__name__} or None, got {value!r} ({type(value).__name__}): "
                        f"pass e.g. {name}={example}")
    return value


@dataclass(frozen=True)
class SAEConfig:
    """Shape and training settings of a stack of SAEs (one instance per L1 coefficient)."""

    d_in: int
    """h: dimension of the activations the SAE reads."""
    d_sae: int
    """J: number of dictionary elements (latents)."""
    l1_coeffs: tuple[float, ...] = (0.1,)
    """alpha per instance (repeat a value to train several seeds of it). The sparsity penalty:
    on ||c||_1 for ``standard``, on the L0 for ``jumprelu``; ``topk``/``batchtopk`` ignore it."""
    lr: float = 1e-3
    """Adam learning rate (the report's 1e-3)."""
    batch_size: int = 256
    """Examples per step, shared by all instances (the report's 256)."""
    steps: int = 10_000
    """Adam steps."""
    decoder_bias: bool = False
    """Learn b_dec (subtracted before encoding, added after decoding). Off for toy data."""
    l1_divide_by_d_sae: bool = True
    """The report's (alpha / J) ||c||_1; False gives alpha ||c||_1."""
    dead_window: int = 500
    """T: a latent that fired in none of the last T batches counts as dead."""
    input_noise_std: float = 0.0
    """Gaussian noise added to the input only (a denoising SAE); the target stays clean."""
    seed: int = 0
    """Seed for the initialisation (instance i uses seed + i)."""
    log_every: int = 50
    """Steps per row of the training log (each row averages its window)."""
    architecture: str = "standard"
    """Which activation: ``standard`` (ReLU + L1), ``topk``, ``batchtopk``, ``jumprelu``, or the name of a
    class registered with ``helpers.sae.register_sae_class``."""
    lr_schedule: str = "constant"
    """Learning-rate schedule over ``steps`` (see ``helpers.optim.lr_factor``)."""
    renorm_decoder: bool = False
    """Also reset the decoder rows to unit length after every Adam step (ARENA does). The forward
    pass uses unit rows either way; without the reset Adam lengthens the stored rows step by step,
    so the same lr turns them less and less (at G = 512: MMCS 0.83 instead of 0.89 after 512k samples)."""
    resample: ResampleConfig | None = None
    """Revive the latents that do nothing useful as training goes (``ResampleConfig``; the standard
    SAE only); None: never. A dict of its fields is taken too (what ``asdict`` and a saved cfg.json hold)."""
    compile: bool = False
    """Train through ``torch.compile(sae.loss)``: faster per step on a GPU, seconds to compile."""
    matmul_dtype: str = "auto"
    """Inputs of the matrix products in ``train_sae``'s steps: ``float32``, ``bfloat16`` (float32
    accumulation; weights and Adam stay float32), or ``auto``: bfloat16 on a CPU that has it in
    hardware, else float32 (``helpers.sae.fused``). Only the standard SAE uses it, and only in
    training: evaluations multiply in float32."""
    k: float | None = None
    """Active latents per example: an integer for ``topk``, a batch average for ``batchtopk``."""
    auxk: AuxKConfig | None = None
    """The AuxK loss (``AuxKConfig``) for the architectures that have one (``topk``, ``batchtopk``);
    None: none. A dict of its fields is taken too (what ``asdict`` and a saved cfg.json hold)."""
    variant: object | None = None
    """The settings of the architecture's own class: an instance of the frozen dataclass its class
    names as ``variant_config`` (``jumprelu``: ``JumpReLUConfig``), or a dict of its fields; None:
    that dataclass's defaults (filled in here, so a saved config records them). An architecture
    whose class names none takes None only."""

    def __post_init__(self) -> None:
        try:
            coeffs = tuple(float(a) for a in np.atleast_1d(np.asarray(self.l1_coeffs, dtype=float)))
        except (TypeError, ValueError):
            raise TypeError(f"l1_coeffs must be a number or a sequence of numbers, got {self.l1_coeffs!r}: "
                            "pass e.g. l1_coeffs=(0.1, 1.0)") from None
        object.__setattr__(self, "l1_coeffs", coeffs)
        for name, lo in (("d_in", 1), ("d_sae", 1), ("batch_size", 1), ("steps", 0), ("dead_window", 1), ("seed", None),
                         ("log_every", 1)):
            check_int(name, getattr(self, name), lo)  # a bool is an int to Python: refused here
        for name in ("lr", "input_noise_std", *(("k",) if self.k is not None else ())):
            number(name, getattr(self, name), f"{name}={32 if name == 'k' else SAEConfig.__dataclass_fields__[name].default}")
        for name in ("decoder_bias", "l1_divide_by_d_sae", "renorm_decoder", "compile"):
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):  # a string such as "no" would count as True
                raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__}): pass {name}=True or {name}=False")
        if not coeffs or not all(math.isfinite(a) and a >= 0 for a in coeffs):
            raise ValueError(f"l1_coeffs must be one or more finite, non-negative numbers, got {coeffs}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive finite number, got {self.lr!r}")
        if not (math.isfinite(self.input_noise_std) and self.input_noise_std >= 0):
            raise ValueError(f"input_noise_std must be a finite number >= 0, got {self.input_noise_std!r}")
        if self.matmul_dtype not in MATMUL_DTYPES:
            raise ValueError(f"matmul_dtype must be one of {MATMUL_DTYPES}, got {self.matmul_dtype!r}")
        sae_class(self.architecture)  # the registry (a new variant registers there)
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.architecture in ("topk", "batchtopk"):
            if self.k is None or not (0 < self.k <= self.d_sae):
                raise ValueError(f"k must be set to a number in (0, d_sae={self.d_sae}] for "
                                 f"architecture={self.architecture!r}, got k={self.k!r}")
            if self.architecture == "topk" and self.k != int(self.k):
                raise ValueError(f"k must be a whole number of latents for architecture='topk', got {self.k!r}")
        resample = nested("resample", self.resample, ResampleConfig, "ResampleConfig(every=40)")
        object.__setattr__(self, "resample", resample)
        if resample is not None and self.architecture != "standard":
            raise ValueError(f"resample (resampling dead latents) works for architecture='standard' only, "
                             f"got {self.architecture!r}: pass resample=None")
        self._check_auxk()
        self._check_variant()

    def _check_auxk(self) -> None:
        auxk = nested("auxk", self.auxk, AuxKConfig, f"AuxKConfig(coeff={AUXK_COEFF})")
        object.__setattr__(self, "auxk", auxk)
        if auxk is None:
            return
        if not getattr(sae_class(self.architecture), "takes_auxk", False):
            raise ValueError(f"auxk (the AuxK loss) is for the TopK family (topk, batchtopk), not "
                             f"architecture={self.architecture!r}: pass auxk=None")
        if auxk.k is None and self.d_in // 2 < 1:
            raise ValueError(f"auxk.k defaults to d_in // 2, which is 0 for d_in={self.d_in}: pass e.g. "
                             "auxk=AuxKConfig(k=1)")

    def _check_variant(self) -> None:
        own = getattr(sae_class(self.architecture), "variant_config", None)  # the dataclass its class names
        if own is None:
            if self.variant is not None:
                raise ValueError(f"variant holds the settings of an architecture's own class, and "
                                 f"architecture={self.architecture!r} has none, got {self.variant!r}: pass variant=None")
            return
        variant = nested("variant", self.variant, own, f"{own.__name__}()")
        object.__setattr__(self, "variant", own() if variant is None else variant)

    @property
    def n_instances(self) -> int:
        return len(self.l1_coeffs)
