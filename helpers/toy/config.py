"""The settings of one stack of toy models, checked once so a bad value fails here, by name.

Per-feature settings (density, importance) are kept as given (a number, one value per feature,
one per instance, or the full table), checked at construction, and read through
``probabilities`` / ``importances``, which broadcast them to (n_instances, n_features): so
everything downstream reads one shape, and ``dataclasses.replace(cfg, n_features=7)`` works
whenever the given values still fit the new size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from numbers import Real
from typing import Sequence

import numpy as np
import torch

from helpers.device import check_int, parse_device
from helpers.optim import LR_SCHEDULES

READOUTS = ("relu", "linear", "softmax")


def as_float_tensor(value, name: str) -> torch.Tensor:
    """``value`` as a finite float32 CPU tensor of its own shape, or an error naming ``name``."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.asarray(value, dtype=np.float32))
    try:
        t = torch.as_tensor(value, dtype=torch.float32).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a number, a sequence of numbers or a tensor, "
                        f"got {type(value).__name__}") from None
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf ({t.flatten()[~torch.isfinite(t.flatten())][:3].tolist()}); "
                         "pass finite numbers.")
    return t


def per_instance(t: torch.Tensor, name: str, n_instances: int, n_features: int) -> torch.Tensor:
    """``t`` broadcast to a fresh (inst, n_features) tensor, or an error naming ``name``."""
    try:
        return t.broadcast_to((n_instances, n_features)).clone()
    except RuntimeError:
        raise ValueError(
            f"{name} has shape {tuple(t.shape)}, which does not broadcast to (n_instances, n_features) "
            f"= ({n_instances}, {n_features}). Pass a number, a ({n_features},) tensor (one value per "
            f"feature), an ({n_instances}, 1) tensor (one value per instance) or the full shape."
        ) from None


@dataclass
class ToyConfig:
    """A stack of toy models and how to train them (per-feature values read as (inst, n_features))."""

    n_features: int = 5
    """n: input features."""
    d_hidden: int = 2
    """m: hidden dimensions (the bottleneck)."""
    n_instances: int = 1
    """Models trained side by side."""
    feature_probability: float | Sequence | torch.Tensor = 0.05
    """Density 1 - S: chance that a feature is on; kept as given, read as ``probabilities``."""
    importance: float | Sequence | torch.Tensor = 1.0
    """Weight of each feature in the loss; kept as given, read as ``importances``."""
    readout: str = "relu"
    """relu (the paper's), linear (no filtering) or softmax (cross-entropy on x / sum(x))."""
    n_correlated_pairs: int = 0
    """The first 2k features form k pairs that are always on together (values independent)."""
    n_anticorrelated_pairs: int = 0
    """The next 2k features form k pairs that are never on together."""
    steps: int = 3000
    """Adam steps."""
    batch_size: int = 1024
    """Samples per step (every instance sees its own thresholding of the same draws)."""
    lr: float = 3e-2
    """Peak Adam learning rate (3e-2: at 1e-2 the dense 5-in-2 models are still turning
    their third feature off after a few thousand steps)."""
    lr_schedule: str = "cosine"
    """A schedule of ``helpers.optim.lr_factor``: cosine (decay to 0, converges reliably), linear, constant."""
    seed: int = 0
    """Seeds the initialisation and the data stream."""
    device: str | None = None
    """Where to train (None: ``get_device()``)."""
    log_every: int = 50
    """Steps between rows of the loss log (and NaN checks)."""
    eval_samples: int = 32_768
    """Fresh samples for the final per-instance loss."""
    compile: bool = False
    """Wrap the loss in ``torch.compile`` (a GPU with a compiler toolchain; costs seconds up front)."""

    def __post_init__(self) -> None:
        for name, lo in (("n_features", 1), ("d_hidden", 1), ("n_instances", 1), ("steps", 1), ("batch_size", 1),
                         ("log_every", 1), ("eval_samples", 1), ("n_correlated_pairs", 0),
                         ("n_anticorrelated_pairs", 0), ("seed", 0)):
            check_int(name, getattr(self, name), lo)
        if self.device is not None:
            parse_device(self.device)
        if self.readout not in READOUTS:
            raise ValueError(f"Unknown readout {self.readout!r}: use one of {', '.join(READOUTS)}.")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"Unknown lr_schedule {self.lr_schedule!r}: use one of {', '.join(LR_SCHEDULES)}.")
        if isinstance(self.lr, bool) or not isinstance(self.lr, Real) or not math.isfinite(self.lr) or self.lr <= 0:
            raise ValueError(f"lr must be a positive finite number, got {self.lr!r}")
        n = self.n_features
        n_paired = 2 * (self.n_correlated_pairs + self.n_anticorrelated_pairs)
        if n_paired > n:
            raise ValueError(f"{n_paired} features in pairs, but only n_features={n}")
        # Kept in the shape given (as float tensors), not broadcast to this size, so that a copy with
        # another n_features or n_instances (dataclasses.replace) broadcasts them anew.
        self.feature_probability = as_float_tensor(self.feature_probability, "feature_probability")
        p = self.probabilities
        if p.min() < 0 or p.max() > 1:
            raise ValueError(f"feature_probability must lie in [0, 1], got values from {p.min():.3g} to {p.max():.3g}")
        a0 = 2 * self.n_correlated_pairs
        if self.n_anticorrelated_pairs and (p[:, a0:n_paired:2] + p[:, a0 + 1 : n_paired : 2]).max() > 1:
            raise ValueError("feature_probability: an anticorrelated pair's two probabilities must add up to at most 1")
        self.importance = as_float_tensor(self.importance, "importance")
        if self.importances.min() < 0:
            raise ValueError(f"importance must be non-negative, got a minimum of {self.importances.min():.3g}")

    @property
    def probabilities(self) -> torch.Tensor:
        """(inst, n_features) density of every feature of every instance (a fresh CPU tensor)."""
        return per_instance(self.feature_probability, "feature_probability", self.n_instances, self.n_features)

    @property
    def importances(self) -> torch.Tensor:
        """(inst, n_features) importance of every feature of every instance (a fresh CPU tensor)."""
        return per_instance(self.importance, "importance", self.n_instances, self.n_features)

    def select(self, idx) -> "ToyConfig":
        """The config of the instances ``idx`` (an int, slice, list or index tensor)."""
        idx = torch.arange(self.n_instances)[idx].reshape(-1)
        return replace(self, n_instances=len(idx), feature_probability=self.probabilities[idx],
                       importance=self.importances[idx])

    def as_dict(self) -> dict:
        """JSON-able settings (for cache keys): the per-feature values broadcast, so equal settings
        given in different shapes have one key."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "device"}
        out["feature_probability"] = self.probabilities.tolist()
        out["importance"] = self.importances.tolist()
        return out
