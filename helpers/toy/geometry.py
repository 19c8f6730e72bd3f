"""Reading the geometry of trained weights W (..., d_hidden, n_features): which features got a
direction, how much they share it, the polygon they form, and the phase of an extra feature."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


def feature_norms(W: torch.Tensor) -> torch.Tensor:
    """||W_i|| per feature: (..., m, n) -> (..., n). Near 1: represented; near 0: dropped."""
    return W.norm(dim=-2)


def interference(W: torch.Tensor) -> torch.Tensor:
    """(W_i_hat . W_j)^2 for every pair: (..., m, n) -> (..., n, n), zero diagonal."""
    W_hat = W / W.norm(dim=-2, keepdim=True).clamp_min(1e-8)
    sq = (W_hat.transpose(-1, -2) @ W) ** 2
    return sq * (1 - torch.eye(W.shape[-1], device=W.device))


def superposition(W: torch.Tensor) -> torch.Tensor:
    """sum_{j != i} (W_i_hat . W_j)^2 per feature, (..., n): how much others share feature i's direction."""
    return interference(W).sum(-1)


def feature_dimensionality(W: torch.Tensor) -> torch.Tensor:
    """D_i = ||W_i||^2 / sum_j (W_i_hat . W_j)^2 (j including i), (..., n); 0 for a dropped feature.

    1: the feature has a dimension to itself; 1/2: it shares one with an antipodal partner;
    2/5: a pentagon's vertex; and so on.
    """
    norms2 = W.norm(dim=-2) ** 2
    return torch.where(norms2 > 1e-6, norms2 / (norms2 + superposition(W)).clamp_min(1e-12), torch.zeros_like(norms2))


def n_represented(W: torch.Tensor, threshold: float = 0.5, relative: bool = False) -> torch.Tensor:
    """Features with ||W_i|| > threshold (relative=True: > threshold * the largest norm), (...)."""
    norms = feature_norms(W)
    if relative:
        norms = norms / norms.amax(-1, keepdim=True).clamp_min(1e-12)
    return (norms > threshold).sum(-1)


class Polygon(NamedTuple):
    """The shape that the represented columns of a 2-D W make."""

    n_vertices: int
    """Number of represented features (norm above the threshold)."""
    gaps_deg: np.ndarray
    """Angles between neighbouring represented features going round the circle (sum 360)."""
    regular: bool
    """Every gap within ``tol_deg`` of 360 / n_vertices (e.g. 72 for a pentagon)."""


def polygon(W: torch.Tensor, threshold: float = 0.5, tol_deg: float = 10.0, relative: bool = False) -> Polygon:
    """Which regular polygon, if any, the columns of one 2-D W (2, n) form."""
    if W.dim() != 2 or W.shape[0] != 2:
        raise ValueError(f"polygon() reads one instance with 2 hidden dimensions, W of shape (2, n); got {tuple(W.shape)}")
    W = W.detach().cpu().double()
    norms = feature_norms(W)
    keep = norms > threshold * (norms.max() if relative else 1.0)
    k = int(keep.sum())
    if k < 2:
        return Polygon(k, np.array([360.0]) if k else np.zeros(0), False)
    angles = np.sort(np.degrees(np.arctan2(W[1, keep].numpy(), W[0, keep].numpy())) % 360)
    gaps = np.diff(np.append(angles, angles[0] + 360))
    return Polygon(k, gaps, bool(np.all(np.abs(gaps - 360 / k) < tol_deg)))


# --------------------------------------------------------------------------------------
# The phase diagram for one extra feature
# --------------------------------------------------------------------------------------
PHASES = ("not represented", "dedicated dimension", "superposition")
"""Phase labels, indexed by the integers ``classify_extra_feature`` returns."""


def classify_extra_feature(W: torch.Tensor, norm_threshold: float = 0.5, sup_threshold: float = 0.2) -> torch.Tensor:
    """Phase of the last feature of each W (..., m, n): 0, 1 or 2 (see ``PHASES``).

    Not represented: ||W_extra|| below ``norm_threshold``. Otherwise superposition when the
    other features' squared projections on its direction add up to more than
    ``sup_threshold`` (an antipodal partner gives 1, a triangle's neighbours 0.5), else it has
    a dedicated dimension (orthogonal to everything else the model keeps).
    """
    norm = feature_norms(W)[..., -1]
    sup = superposition(W)[..., -1]
    return torch.where(norm < norm_threshold, 0, torch.where(sup > sup_threshold, 2, 1))


STICKY_FRACTIONS = {1.0: "1 (own dim)", 3 / 4: "3/4 (tetrahedron)", 2 / 3: "2/3 (triangle)",
                    1 / 2: "1/2 (digon)", 2 / 5: "2/5 (pentagon)", 3 / 8: "3/8 (square antiprism)"}
"""Feature dimensionalities of the uniform polytopes the paper finds, with their names."""


def partner_angles(W: torch.Tensor, n_pairs: int, first: int = 0) -> torch.Tensor:
    """Angle in degrees between the features of each pair (2k + first, 2k + first + 1): (..., n_pairs)."""
    a = W[..., first : first + 2 * n_pairs : 2]
    b = W[..., first + 1 : first + 2 * n_pairs : 2]
    cos = (a * b).sum(-2) / (a.norm(dim=-2) * b.norm(dim=-2)).clamp_min(1e-12)
    return torch.rad2deg(torch.arccos(cos.clamp(-1, 1)))


def polysemantic_neurons(W1: torch.Tensor, rel: float = 0.3, floor: float = 0.3) -> torch.Tensor:
    """Neurons (rows of W1 (..., m, n)) with a weight above ``floor`` that also read at least one more
    feature with a weight above ``rel`` x their largest: (...,) counts."""
    w = W1.abs()
    top = w.amax(-1, keepdim=True)
    used = top.squeeze(-1) > floor
    return (((w > rel * top).sum(-1) > 1) & used).sum(-1)


# --------------------------------------------------------------------------------------
# Where the loss comes from
# --------------------------------------------------------------------------------------
class LossSplit(NamedTuple):
    """The importance-weighted squared error of a ReLU toy model, split by what causes it (each (inst,);
    the four add up to the loss)."""

    own: torch.Tensor
    """Feature i is on: its own reconstruction error (wrong length, plus interference while it is on)."""
    one_neighbour: torch.Tensor
    """Feature i is off and exactly one other feature is on: that feature's leak into output i."""
    coactive: torch.Tensor
    """Feature i is off and two or more others are on: their leaks add up."""
    bias_only: torch.Tensor
    """Nothing is on: ReLU(b_i) alone."""


@torch.no_grad()
def loss_split(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor, importance: torch.Tensor) -> LossSplit:
    """Split the ReLU model's loss on x (inst, batch, n) by cause; W (inst, m, n), b and importance (inst, n)."""
    x_hat = torch.relu(torch.einsum("imn,imk,ibk->ibn", W, W, x) + b[:, None])  # (inst, batch, n)
    err = importance[:, None] * (x - x_hat) ** 2  # (inst, batch, n)
    on = x > 0
    others = on.sum(-1, keepdim=True) - on.int()  # (inst, batch, n): active features other than i
    parts = (on, ~on & (others == 1), ~on & (others >= 2), ~on & (others == 0))
    return LossSplit(*((err * p).sum(-1).mean(-1) for p in parts))
