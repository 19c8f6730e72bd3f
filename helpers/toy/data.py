"""Sparse toy data: shared uniform draws, thresholded per instance.

The uniforms that make a batch are drawn once, shape (n_features, batch), and shared by every
instance; each instance thresholds them with its own probabilities. torch's CPU random
generator costs more than the whole rest of a toy training step, and each instance still sees
correctly distributed data. Instances with the same probabilities therefore see the same
batches, which is what "several seeds per setting" wants: the seeds differ only in their
initialisation and are compared on the same data.
"""
from __future__ import annotations

import torch


class FeatureSampler:
    """Draws batches x (inst, batch, n) for one stack of toy models, on the device of ``p``.

    u lies in (0, 1]; feature i is on when u_i <= p_i. Independent features take the value
    1 - u_i / p_i, which is uniform(0, 1] given that the feature is on, so one draw decides
    both whether and how much. Features in pairs need a second draw v for their values,
    since partners share u.
    """

    def __init__(self, p: torch.Tensor, n_correlated_pairs: int = 0, n_anticorrelated_pairs: int = 0):
        self.n_features = p.shape[1]
        self.n_corr, self.n_anti = n_correlated_pairs, n_anticorrelated_pairs
        self.paired = 2 * (n_correlated_pairs + n_anticorrelated_pairs)
        self.device = p.device
        if not self.paired:
            self.q = (1.0 / p)[..., None]  # (I, n, 1); p = 0 gives inf, and 1 - u * inf < 0: never on
        else:  # feature i is on when lo_i < u_i <= hi_i
            a0, a1 = 2 * n_correlated_pairs, self.paired
            lo, hi = torch.zeros_like(p), p.clone()
            # An anticorrelated pair (j, j+1) reads one u: j is on for u <= p_j, j+1 for p_j < u <= p_j + p_j+1.
            lo[:, a0 + 1 : a1 : 2] = p[:, a0:a1:2]
            hi[:, a0 + 1 : a1 : 2] += p[:, a0:a1:2]
            self.lo, self.hi = lo[..., None], hi[..., None]  # (I, n, 1)

    def __call__(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """x (inst, batch, n): a transposed view of an (inst, n, batch) tensor (the batch dimension
        is the long one, which the batched products of the model like)."""
        n, dev = self.n_features, self.device
        u = torch.rand(n, batch, device=dev, generator=generator)
        u.neg_().add_(1.0)  # (n, B) in (0, 1]
        if not self.paired:
            x = torch.addcmul(torch.ones((), device=dev), u, self.q, value=-1.0)  # (I, n, B): 1 - u / p
            return x.clamp_min_(0.0).transpose(1, 2)
        v = torch.rand(n, batch, device=dev, generator=generator)
        u[1 : self.paired : 2] = u[0 : self.paired : 2]  # partners share the draw that switches them on
        mask = u <= self.hi  # (I, n, B)
        if self.n_anti:
            mask &= u > self.lo
        return (mask * v).transpose(1, 2)
