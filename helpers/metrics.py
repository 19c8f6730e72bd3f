"""Measures of how good a dictionary is, vectorised over a leading instance dimension.

* Mean max cosine similarity (MMCS): for every feature of a reference dictionary, the
  best cosine with any learned feature, averaged. With the ground truth as reference it
  measures recovery; between two learned dictionaries the smaller one is the reference.
* L0, fraction of variance unexplained (FVU) and cross-entropy loss recovered.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from helpers.device import stream_seed

def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class Matches(NamedTuple):
    cosine: torch.Tensor
    """(..., G) best cosine of each reference feature with any learned feature."""
    index: torch.Tensor
    """(..., G) index of that learned feature."""


def best_matches(learned: torch.Tensor, reference: torch.Tensor) -> Matches:
    """For each reference feature (rows of ``reference``), the most similar learned feature.

    learned: (..., J, h); reference: (..., G, h). Leading dimensions broadcast.
    """
    for name, t in (("learned", learned), ("reference", reference)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            got = f"a {t.dtype} tensor" if isinstance(t, torch.Tensor) else f"an object of type {type(t).__name__}"
            raise TypeError(f"{name} must be a floating-point tensor of feature rows, shape (..., n_features, d), got {got}: "
                            "convert it with torch.as_tensor(x, dtype=torch.float32)")
        if t.dim() < 2:
            raise ValueError(f"{name} must hold one feature per row, shape (..., n_features, d), got shape {tuple(t.shape)}: "
                             "pass a single feature as x[None]")
    if learned.dtype != reference.dtype:
        raise TypeError(f"learned is {learned.dtype} but reference is {reference.dtype}: convert both to one dtype, "
                        "e.g. with .float()")
    if learned.shape[-1] != reference.shape[-1]:
        raise ValueError(
            f"feature dimensions differ: learned has {learned.shape[-1]}, reference {reference.shape[-1]} "
            "(both dictionaries must hold one feature per row, shape (..., n_features, d))"
        )
    cos = _unit(reference) @ _unit(learned).transpose(-1, -2)  # (..., G, J)
    best = cos.max(dim=-1)
    return Matches(best.values, best.indices)


def mmcs(learned: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean max cosine similarity of ``reference`` (…, G, h) against ``learned`` (…, J, h)."""
    return best_matches(learned, reference).cosine.mean(-1)


def mmcs_between(dict_a: torch.Tensor, dict_b: torch.Tensor) -> torch.Tensor:
    """MMCS between two learned dictionaries; the smaller one plays the ground truth."""
    small, large = (dict_a, dict_b) if dict_a.shape[-2] <= dict_b.shape[-2] else (dict_b, dict_a)
    return mmcs(large, small)


def random_mmcs_baseline(n_reference: int, n_learned: int, d: int, seed: int = 0) -> float:
    """MMCS of random unit vectors: what 'no recovery at all' scores in d dimensions."""
    g = torch.Generator().manual_seed(stream_seed(seed, "random-baseline"))
    return float(mmcs(torch.randn(n_learned, d, generator=g), torch.randn(n_reference, d, generator=g)))


def l0(acts: torch.Tensor) -> torch.Tensor:
    """Mean number of non-zero latents per example: acts (..., batch, J) -> (...)."""
    return (acts > 0).float().sum(-1).mean(-1)


def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Fraction of variance unexplained: ||x - x_hat||^2 / ||x - mean(x)||^2 over the batch.

    x, x_hat: (..., batch, d) -> (...). 0 is a perfect reconstruction, 1 is no better than the mean.
    Data that are constant over the batch have no variance to explain: a ValueError.
    """
    if x.device.type != "meta" and bool((x == x[..., :1, :]).all((-1, -2)).any()):
        raise ValueError(f"fvu: the data x (shape {tuple(x.shape)}) are constant over the batch (or it has no rows), "
                         "so their variance is zero and FVU is undefined: pass a batch of at least two different activation rows")
    resid = (x - x_hat).pow(2).sum((-1, -2))
    total = (x - x.mean(-2, keepdim=True)).pow(2).sum((-1, -2))
    return resid / total.clamp_min(1e-12)


def ce_loss_recovered(clean: float | torch.Tensor, with_sae: float | torch.Tensor,
                      zero_ablated: float | torch.Tensor) -> float | torch.Tensor:
    """Share of the loss gap closed by the SAE: (CE_zero - CE_sae) / (CE_zero - CE_clean).

    1 means splicing in the reconstruction costs nothing; 0 means it is as bad as deleting
    the layer's output altogether.
    """
    gap = zero_ablated - clean
    if bool((torch.as_tensor(gap).abs() < 1e-12).any()):
        raise ValueError("zero-ablation does not change the loss: CE recovered is undefined")
    return (zero_ablated - with_sae) / gap
