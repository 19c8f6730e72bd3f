"""BatchTopK with its own k per instance, and the Matryoshka loss (notebook 06).

``PerInstanceBatchTopK``: a whole k sweep trains as one stack, the way an L1 sweep does; with
``prefixes`` it is a **Matryoshka** BatchTopK (Bussmann et al. 2025): every nested prefix of the
dictionary (the first J/8, J/4, ... latents) must reconstruct the input on its own, which pushes
general features into the early latents. Trained stacks are cached by the source of this module
(``helpers.beyond.train_cached``), so it holds the training code and nothing else.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

import torch

from helpers.sae import SAEConfig
from helpers.sae.variants import TOPK_THRESHOLD_LR, BatchTopKSAE


class PerInstanceBatchTopK(BatchTopKSAE):
    """BatchTopK where instance i keeps ``ks[i]`` latents per example on average over the batch;
    with ``prefixes`` (fractions of J, ascending, below 1) also the Matryoshka loss."""

    def __init__(self, cfg: SAEConfig, ks: Sequence[int] | None = None, device=None,
                 prefixes: Sequence[float] = ()):
        ks = [int(cfg.k)] * cfg.n_instances if ks is None else [int(k) for k in ks]
        if len(ks) != cfg.n_instances or min(ks) < 1 or max(ks) > cfg.d_sae:
            raise ValueError(f"ks must give one k in [1, d_sae={cfg.d_sae}] per instance "
                             f"({cfg.n_instances}), got {ks}")
        prefixes = tuple(float(p) for p in prefixes)
        if any(not 0 < p < 1 for p in prefixes) or list(prefixes) != sorted(set(prefixes)):
            raise ValueError(f"prefixes must be distinct ascending fractions of d_sae in (0, 1), got {prefixes}")
        super().__init__(replace(cfg, k=max(ks)), device)
        self.register_buffer("ks", torch.tensor(ks, device=self.device))            # (I,)
        self.widths = sorted({max(1, round(p * cfg.d_sae)) for p in prefixes})       # nested prefix sizes

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        if not self.training:                      # the learned threshold, as every BatchTopK
            return super().activation(pre)
        I, B, J = pre.shape
        flat = pre.relu().reshape(I, B * J)
        kept = flat.topk(int(self.ks.max()) * B, dim=-1, sorted=True).values         # (I, kmax B), descending
        cut = kept.gather(1, self.ks[:, None] * B - 1)                               # (I, 1) k_i B-th largest
        acts = (flat * ((flat >= cut) & (flat > 0))).reshape(I, B, J)
        with torch.no_grad():                      # the smallest kept activation, averaged over batches
            smallest = acts.masked_fill(acts <= 0, math.inf).amin(dim=(1, 2))
            seen = torch.isfinite(smallest)
            moved = torch.lerp(self.topk_threshold, torch.where(seen, smallest, 0.0), TOPK_THRESHOLD_LR)
            self.topk_threshold.copy_(torch.where(seen, moved, self.topk_threshold))
        return acts

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None,
                steps_since_fired: torch.Tensor | None = None):
        """As BatchTopK's; in training with prefixes the sparsity slot carries the prefix losses."""
        out = super().forward(x, target, steps_since_fired)
        if not self.training or not self.widths:
            return out
        inner = matryoshka_loss(out.acts, self.decoder_directions(), self.b_dec, x if target is None else target,
                                self.widths)
        return out._replace(l1_loss=out.l1_loss + inner, loss=out.loss + inner.sum())


def matryoshka_loss(acts: torch.Tensor, D: torch.Tensor, b_dec: torch.Tensor, target: torch.Tensor,
                    widths: Sequence[int]) -> torch.Tensor:
    """(inst,) the Matryoshka terms: for each prefix width m, the (1/h) squared error of rebuilding
    ``target`` (batch, h) from the first m latents alone, averaged over the batch, summed over m.

    acts (inst, batch, J), D (inst, J, h) unit decoder rows, b_dec (inst, h); the full width's
    error is the usual reconstruction loss and is not part of this sum unless J is in ``widths``.
    """
    x_hat, start, total = b_dec[:, None, :], 0, acts.new_zeros(acts.shape[0])
    for m in widths:
        x_hat = x_hat + torch.bmm(acts[..., start:m], D[:, start:m])    # add this block of latents
        total = total + (x_hat - target).pow(2).mean(-1).mean(-1)
        start = m
    return total
