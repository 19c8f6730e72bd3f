"""What a stack of SAEs is and how it trains: one frozen dataclass, one field per choice.

A config object travels whole (``dataclasses.replace(cfg, d_sae=1024)`` makes the next cell of a
sweep), and every field is checked here, so a bad value fails at construction with its name
rather than as a NaN a thousand steps into training.
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
        if isinstance(self.coeff, bool) or not isinstance(self.coeff, Real):
            raise TypeError(f"auxk.coeff must be a number, got {self.coeff!r} ({type(self.coeff).__name__}): "
                            f"pass e.g. AuxKConfig(coeff={AUXK_COEFF})")
        if not (math.isfinite(self.coeff) and self.coeff > 0):
            raise ValueError(f"auxk.coeff must be a positive finite number, got {self.coeff!r}: pass e.g. "
                             f"AuxKConfig(coeff={AUXK_COEFF}), or auxk=None for no AuxK loss")
        object.__setattr__(self, "coeff", float(self.coeff))
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
    resample_every: int = 0
    """Every this many steps, revive the latents that do nothing useful (0: never; the diagnostic
    grids never do, since they read the dead latents): those silent for ``resample_dead_after``
    steps and the rarer of each near-duplicate pair, pointed at what the SAE cannot express
    (``helpers.sae.resample``; notebook 02, section 6)."""
    resample_dead_after: int = 60
    """Steps without firing after which resampling counts a latent dead (60 x 256 ~ 15k samples)."""
    resample_duplicate_cos: float = 0.8
    """Resampling also revives the rarer latent of any pair whose decoder rows have a cosine above this (0: none)."""
    resample_to: str = "refit"
    """Where a revived latent points: ``input``, ``residual`` or ``refit`` (see ``helpers.sae.resample``)."""
    resample_until: float = 1.0
    """No resampling after this fraction of the run (below 1: latents that die late stay dead)."""
    compile: bool = False
    """Train through ``torch.compile(sae.loss)``: faster per step on a GPU, seconds to compile."""
    matmul_dtype: str = "auto"
    """Inputs of the matrix products in ``train_sae``'s steps: ``float32``, ``bfloat16`` (float32
    accumulation; weights and Adam stay float32), or ``auto``: bfloat16 on a CPU that has it in
    hardware, else float32 (``helpers.sae.fused``). Only the standard SAE uses it, and only in
    training: evaluations multiply in float32."""
    k: float | None = None
    """Active latents per example: an integer for ``topk``, a batch average for ``batchtopk``."""
    jumprelu_init_threshold: float = 0.01
    """Starting threshold of every JumpReLU latent (SAELens' default)."""
    jumprelu_bandwidth: float = 0.05
    """Width of the window in which the straight-through estimator passes threshold gradient."""
    auxk: AuxKConfig | None = None
    """The AuxK loss (``AuxKConfig``) for the architectures that have one (``topk``, ``batchtopk``);
    None: none. A dict of its fields is taken too (what ``asdict`` and a saved cfg.json hold)."""

    def __post_init__(self) -> None:
        try:
            coeffs = tuple(float(a) for a in np.atleast_1d(np.asarray(self.l1_coeffs, dtype=float)))
        except (TypeError, ValueError):
            raise TypeError(f"l1_coeffs must be a number or a sequence of numbers, got {self.l1_coeffs!r}: "
                            "pass e.g. l1_coeffs=(0.1, 1.0)") from None
        object.__setattr__(self, "l1_coeffs", coeffs)
        for name, lo in (("d_in", 1), ("d_sae", 1), ("batch_size", 1), ("steps", 0), ("dead_window", 1), ("seed", None),
                         ("log_every", 1), ("resample_every", 0), ("resample_dead_after", 1)):
            check_int(name, getattr(self, name), lo)  # a bool is an int to Python: refused here
        for name in ("lr", "input_noise_std", "resample_duplicate_cos", "resample_until", "jumprelu_init_threshold",
                     "jumprelu_bandwidth", *(("k",) if self.k is not None else ())):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Real):
                example = 32 if name == "k" else SAEConfig.__dataclass_fields__[name].default
                raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__}): pass e.g. {name}={example}")
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
        if not 0 <= self.resample_duplicate_cos <= 1:
            raise ValueError(f"resample_duplicate_cos must be a cosine in [0, 1] (0: no duplicate check), "
                             f"got {self.resample_duplicate_cos!r}")
        if not 0 < self.resample_until <= 1:
            raise ValueError(f"resample_until must be a fraction of the run in (0, 1], got {self.resample_until!r}")
        if self.resample_to not in RESAMPLE_TARGETS:
            raise ValueError(f"resample_to must be one of {RESAMPLE_TARGETS}, got {self.resample_to!r}")
        if self.resample_every and self.architecture != "standard":
            raise ValueError(f"resample_every works for architecture='standard' only, got {self.architecture!r}: "
                             "set resample_every=0")
        for name in ("jumprelu_init_threshold", "jumprelu_bandwidth"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        self._check_auxk()

    def _check_auxk(self) -> None:
        auxk = self.auxk
        if isinstance(auxk, Mapping):  # asdict(cfg) or a saved cfg.json: the round trip
            unknown = sorted(set(auxk) - set(AuxKConfig.__dataclass_fields__))
            if unknown:
                raise TypeError(f"auxk has no field {unknown[0]!r}: its fields are "
                                f"{', '.join(AuxKConfig.__dataclass_fields__)}")
            auxk = AuxKConfig(**auxk)
            object.__setattr__(self, "auxk", auxk)
        if auxk is None:
            return
        if not isinstance(auxk, AuxKConfig):
            raise TypeError(f"auxk must be an AuxKConfig or None, got {auxk!r} ({type(auxk).__name__}): "
                            f"pass e.g. auxk=AuxKConfig(coeff={AUXK_COEFF})")
        if not getattr(sae_class(self.architecture), "takes_auxk", False):
            raise ValueError(f"auxk (the AuxK loss) is for the TopK family (topk, batchtopk), not "
                             f"architecture={self.architecture!r}: pass auxk=None")
        if auxk.k is None and self.d_in // 2 < 1:
            raise ValueError(f"auxk.k defaults to d_in // 2, which is 0 for d_in={self.d_in}: pass e.g. "
                             "auxk=AuxKConfig(k=1)")

    @property
    def n_instances(self) -> int:
        return len(self.l1_coeffs)
