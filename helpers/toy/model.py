"""The toy model of superposition, many at once: ``x' = f(W^T W x + b)`` per instance.

W is (inst, d_hidden, n_features) and b (inst, n_features), so a whole sweep (density x
importance x seed) is one module whose every tensor carries a leading instance dimension.
The readout ``f`` is one of

* ``relu``: the paper's model, trained on importance-weighted squared error;
* ``linear``: no nonlinearity (same loss): a model that cannot filter interference;
* ``softmax``: the logits go through a softmax and are trained with cross-entropy against
  the input itself, normalised to a distribution, ``t = x / sum(x)``: the reconstruction
  question ("which features are on, and in what proportion?") in the only form a softmax can
  answer. A sample with no active feature contributes nothing; feature i's term is weighted
  by its importance, as in the squared error.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from helpers.device import resolve_device, stream_seed
from helpers.toy.config import ToyConfig
from helpers.toy.data import FeatureSampler


def logits(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """W^T W x + b for x (inst, batch, n): (inst, batch, n).

    Computed as (inst, n, batch), the sampler's own memory layout: x from ``FeatureSampler`` is
    a transposed view, so ``x.mT`` is contiguous, and every product has the long batch dimension
    last (on a CPU a training step ran about 1.3x faster this way than in (inst, batch, n)).
    """
    if W.shape[1] == 1:  # one hidden dimension: a one-row product is faster as multiply-and-sum on a CPU
        h = (W.mT * x.mT).sum(1, keepdim=True)  # (inst, 1, batch)
        return torch.addcmul(b[..., None], W.mT, h).mT
    h = torch.bmm(W, x.mT)  # (inst, m, batch): the hidden representation
    return torch.baddbmm(b[..., None], W.mT, h).mT  # (inst, n, batch) -> (inst, batch, n)


def readout_fn(readout: str):
    """The readout ``f`` by name (one of ``READOUTS``, which ``ToyConfig`` checks)."""
    return {"relu": torch.relu, "linear": lambda z: z, "softmax": lambda z: torch.softmax(z, -1)}[readout]


def toy_loss(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor, importance: torch.Tensor, readout: str) -> torch.Tensor:
    """Per-instance loss (inst,) of a batch x (inst, batch, n); differentiable.

    relu / linear: sum_i I_i (x_i - x'_i)^2, averaged over the batch (the paper's loss up to a
    constant). softmax: -sum_i I_i t_i log p_i with t = x / sum(x), averaged over the batch.
    """
    z = logits(W, b, x).mT  # (inst, n, batch), contiguous
    xt = x.mT  # (inst, n, batch)
    # Averaging over the batch before weighting by importance keeps the weights off the big tensor.
    if readout == "softmax":
        t = xt / xt.sum(1, keepdim=True).clamp_min(1e-12)
        return -(importance * (t * torch.log_softmax(z, 1)).mean(-1)).sum(1)
    return (importance * ((readout_fn(readout)(z) - xt) ** 2).mean(-1)).sum(1)


class ToyModel(nn.Module):
    """``cfg.n_instances`` toy models; W (inst, d_hidden, n_features), b (inst, n_features)."""

    def __init__(self, cfg: ToyConfig, W: torch.Tensor | None = None, b: torch.Tensor | None = None):
        super().__init__()
        if not isinstance(cfg, ToyConfig):
            raise TypeError(f"cfg must be a ToyConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        dev = resolve_device(cfg.device)
        I, m, n = cfg.n_instances, cfg.d_hidden, cfg.n_features
        if W is None:  # Xavier-normal init, drawn on the CPU so every device starts the same
            gen = torch.Generator().manual_seed(stream_seed(cfg.seed, "toy:init"))
            W = torch.randn(I, m, n, generator=gen) * math.sqrt(2.0 / (m + n))
        if b is None:
            b = torch.zeros(I, n)
        for name, t, shape in (("W", W, (I, m, n)), ("b", b, (I, n))):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor of shape {shape}, got {type(t).__name__}")
            if tuple(t.shape) != shape:
                raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
        self.W = nn.Parameter(W.detach().to(dev, torch.float32).clone())  # (inst, m, n)
        self.b = nn.Parameter(b.detach().to(dev, torch.float32).clone())  # (inst, n)
        self.register_buffer("feature_probability", cfg.probabilities.to(dev))  # (inst, n)
        self.register_buffer("importance", cfg.importances.to(dev))  # (inst, n)
        self.sampler = FeatureSampler(self.feature_probability, cfg.n_correlated_pairs, cfg.n_anticorrelated_pairs)

    @property
    def device(self) -> torch.device:
        return self.W.device

    def _apply(self, fn, recurse=True):  # .to(device) moves the sampler's tables too
        out = super()._apply(fn, recurse)
        self.sampler = FeatureSampler(self.feature_probability, self.cfg.n_correlated_pairs,
                                      self.cfg.n_anticorrelated_pairs)
        return out

    def select(self, idx) -> "ToyModel":
        """A copy of the instances ``idx`` as a model of their own."""
        cfg = self.cfg.select(idx)
        idx = torch.arange(self.cfg.n_instances)[idx].reshape(-1).to(self.device)
        return ToyModel(cfg, self.W.detach()[idx], self.b.detach()[idx])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (inst, batch, n) -> output (inst, batch, n): reconstruction, or probabilities (softmax)."""
        return readout_fn(self.cfg.readout)(logits(self.W, self.b, x))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Per-instance loss (inst,) of x (inst, batch, n): what trains (see ``toy_loss``)."""
        return toy_loss(self.W, self.b, x, self.importance, self.cfg.readout)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A batch of inputs, (inst, batch, n), drawn on the model's device."""
        return self.sampler(batch_size, generator)
