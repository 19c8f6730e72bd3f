"""SAE variants: each is one subclass that overrides only what differs from the ReLU + L1 SAE.

* ``TopKSAE`` (Gao et al. 2024): keep the k largest pre-activations of each example (then
  ReLU); sparsity is set by k, so there is no penalty term.
* ``BatchTopKSAE`` (Bussmann et al. 2024): keep the k x batch largest activations of the whole
  batch, so busy examples get more latents than quiet ones. While training it tracks a
  threshold (a moving average of the smallest kept activation); in ``.eval()`` mode it encodes
  one example at a time with that threshold, which is how SAELens saves it (as ``jumprelu``).
* ``JumpReLUSAE`` (Rajamanoharan et al. 2024): c = pre * [pre > theta] with a learned threshold
  theta per latent and an L0 penalty. The step has no useful gradient, so theta learns through
  a straight-through estimator: a rectangle kernel of width ``jumprelu_bandwidth`` around theta.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from helpers.sae.model import SAE

TOPK_THRESHOLD_LR = 0.01
"""Weight of each batch in BatchTopK's moving-average threshold (SAELens' default)."""


class TopKSAE(SAE):
    architecture = "topk"

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        values, idx = pre.topk(int(self.cfg.k), dim=-1, sorted=False)  # (I, B, k)
        return torch.zeros_like(pre).scatter(-1, idx, values.relu())

    def sparsity_loss(self, pre: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        return pre.new_zeros(pre.shape[0])  # k sets the sparsity


class BatchTopKSAE(TopKSAE):
    architecture = "batchtopk"

    def __init__(self, cfg, device=None):
        super().__init__(cfg, device)
        self.register_buffer("topk_threshold", torch.zeros(cfg.n_instances, device=self.device))  # (I,)

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        if not self.training:  # per example, with the learned threshold (a JumpReLU)
            return pre.relu() * (pre > self.topk_threshold[:, None, None])
        I, B, J = pre.shape
        flat = pre.relu().reshape(I, B * J)
        values, idx = flat.topk(min(int(self.cfg.k * B), B * J), dim=-1, sorted=False)
        acts = torch.zeros_like(flat).scatter(-1, idx, values).reshape(I, B, J)
        with torch.no_grad():  # the smallest kept activation of each instance, averaged over batches
            smallest = acts.masked_fill(acts <= 0, math.inf).amin(dim=(1, 2))  # (I,)
            seen = torch.isfinite(smallest)
            moved = torch.lerp(self.topk_threshold, torch.where(seen, smallest, 0.0), TOPK_THRESHOLD_LR)
            self.topk_threshold.copy_(torch.where(seen, moved, self.topk_threshold))
        return acts


class _JumpReLU(torch.autograd.Function):
    """c = x [x > theta]; d/dx is the step (no estimator), d/dtheta the STE of the paper."""

    @staticmethod
    def forward(ctx, x, threshold, bandwidth: float):
        ctx.save_for_backward(x, threshold)
        ctx.bandwidth = bandwidth
        return x * (x > threshold)

    @staticmethod
    def backward(ctx, grad):
        x, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        window = ((x - threshold).abs() < eps / 2).to(grad.dtype)  # rectangle kernel K((x - theta) / eps)
        g_threshold = (-(threshold / eps) * window * grad).sum_to_size(threshold.shape)
        return grad * (x > threshold), g_threshold, None


class _Step(torch.autograd.Function):
    """[x > theta], counted by the L0 penalty; only theta gets a (straight-through) gradient."""

    @staticmethod
    def forward(ctx, x, threshold, bandwidth: float):
        ctx.save_for_backward(x, threshold)
        ctx.bandwidth = bandwidth
        return (x > threshold).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        window = ((x - threshold).abs() < eps / 2).to(grad.dtype)
        return None, (-(1.0 / eps) * window * grad).sum_to_size(threshold.shape), None


class JumpReLUSAE(SAE):
    architecture = "jumprelu"

    def __init__(self, cfg, device=None):
        super().__init__(cfg, device)
        # theta = exp(log_threshold) stays positive (SAELens trains the same parametrisation)
        start = torch.full((cfg.n_instances, cfg.d_sae), math.log(cfg.jumprelu_init_threshold))
        self.log_threshold = nn.Parameter(start.to(self.device))  # (I, J)

    @property
    def threshold(self) -> torch.Tensor:
        """(inst, d_sae) theta of every latent."""
        return self.log_threshold.exp()

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return _JumpReLU.apply(pre, self.threshold[:, None, :], self.cfg.jumprelu_bandwidth)

    def sparsity_loss(self, pre: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        """(inst,) alpha x L0 (over J with ``l1_divide_by_d_sae``), the L0 through the STE."""
        l0 = _Step.apply(pre, self.threshold[:, None, :], self.cfg.jumprelu_bandwidth).sum(-1).mean(-1)
        return l0 * self._penalty()
