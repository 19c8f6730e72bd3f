"""Argument checks shared by the language-model functions, run before any work starts.

Each error names the argument and says what was expected, so a typo fails in the cell that
made it, not halfway through a harvest or deep inside a hook.
"""
from __future__ import annotations

import numbers
from typing import Sequence

import numpy as np
import torch

from helpers.device import check_int as check_at_least

KINDS = ("post", "out")
"""Activation kinds a harvest can record: MLP neurons after the nonlinearity, the MLP's output."""


def check_int(name: str, value, lo: int, hi: int | None = None) -> int:
    """``value`` as an int in ``[lo, hi]``: ``helpers.device.check_int`` (bools and floats are
    refused), with an upper bound."""
    check_at_least(name, value, lo)
    if hi is not None and value > hi:
        raise ValueError(f"{name} must be between {lo} and {hi}, got {value}")
    return int(value)


def check_fraction(name: str, value, allow_zero: bool = False) -> float:
    """``value`` as a float in (0, 1) (or [0, 1) with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number between 0 and 1, got {type(value).__name__} {value!r}")
    if not ((0 <= value if allow_zero else 0 < value) and value < 1):
        raise ValueError(f"{name} must be {'in [0, 1)' if allow_zero else 'strictly between 0 and 1'}, got {value}")
    return float(value)


def check_kinds(kinds: str | Sequence[str]) -> tuple[str, ...]:
    """Activation kinds as a tuple; a single string is one kind."""
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    if not kinds:
        raise ValueError(f"kinds must name at least one activation kind: {KINDS}")
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"kinds: unknown activation kind {k!r}: use 'post' (MLP neurons) or 'out' (MLP output)")
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"kinds lists a kind twice: {kinds}")
    return kinds


def check_model(model) -> None:
    if not hasattr(model, "cfg") or not hasattr(model, "run_with_hooks"):
        raise TypeError(f"model must be a TransformerBridge from lm.load_model, got {type(model).__name__}")


def check_layer(layer, model) -> int:
    return check_int("layer", layer, 0, model.cfg.n_layers - 1)


def check_tokens(tokens, model, name: str = "tokens") -> torch.Tensor:
    """(n_seq, seq_len) token ids, numpy or torch, as a CPU long tensor."""
    if isinstance(tokens, np.ndarray):
        if not np.issubdtype(tokens.dtype, np.integer):
            raise TypeError(f"{name} must hold integer token ids, got dtype {tokens.dtype}")
        tokens = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
    elif isinstance(tokens, torch.Tensor):
        if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer token ids, got dtype {tokens.dtype}")
        tokens = tokens.detach().to("cpu", torch.long)
    else:
        raise TypeError(f"{name} must be a numpy array or torch tensor of token ids, got {type(tokens).__name__}")
    if tokens.dim() != 2 or tokens.shape[0] < 1 or tokens.shape[1] < 2:
        raise ValueError(f"{name} must have shape (n_seq >= 1, seq_len >= 2), got {tuple(tokens.shape)}")
    if tokens.shape[1] > model.cfg.n_ctx:
        raise ValueError(f"{name}: sequences of {tokens.shape[1]} tokens exceed the model's context ({model.cfg.n_ctx})")
    if int(tokens.min()) < 0 or int(tokens.max()) >= model.cfg.d_vocab:
        raise ValueError(f"{name} must be ids in [0, {model.cfg.d_vocab}), got {int(tokens.min())}..{int(tokens.max())}")
    return tokens


def check_sae(sae, d_in: int, name: str = "sae") -> None:
    """An SAE (``helpers.sae.SAE`` or alike) that reads ``d_in``-dimensional activations."""
    for attr in ("cfg", "encode", "decode", "device"):
        if not hasattr(sae, attr):
            raise TypeError(f"{name} must be an SAE (helpers.sae.SAE), got {type(sae).__name__} without .{attr}")
    if sae.cfg.d_in != d_in:
        raise ValueError(f"{name} reads {sae.cfg.d_in}-dimensional activations, but this MLP has width {d_in}: "
                         "train it on this model's 'post' activations")


def check_instance(instance, sae) -> int:
    return check_int("instance", instance, 0, sae.cfg.n_instances - 1)


def check_rows(name: str, arr, width: int | None = None) -> None:
    """A 2-D (rows, width) array of floats, numpy or memory-mapped (as a harvest returns)."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name} must be a numpy array (e.g. acts.acts['post']), got {type(arr).__name__}")
    if arr.ndim != 2 or (width is not None and arr.shape[1] != width):
        raise ValueError(f"{name} must have shape (rows, {width or 'd'}), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{name} must hold floats, got dtype {arr.dtype}")
