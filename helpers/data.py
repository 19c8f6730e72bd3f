"""Toy activations with known ground-truth features, as in the SAE interim report.

G feature directions are drawn uniformly on the unit sphere in h dimensions (the rows of
``features``, shape (G, h)). Each sample switches a few of them on and adds them up with
uniform(0, 1) coefficients: ``x = c @ F``. Which features switch on is not independent:

1. correlation: a multivariate normal sample z with a random correlation matrix, pushed
   through the standard normal CDF, gives u in (0, 1) with the same correlation structure;
2. frequency decay: feature g's probability is ``u_g * decay**g`` (decay 0.99), so
   low-index features are more common;
3. rescaling: all probabilities are multiplied by one constant so that on average
   ``mean_active`` (5) features are active per sample.

Everything is generated on the chosen device, seeded, in whatever batch size is asked.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from helpers.device import get_device


@dataclass(frozen=True)
class GroundTruthConfig:
    """What the toy data looks like (defaults: the report's)."""

    n_features: int = 512
    """G: number of ground-truth feature directions."""
    d: int = 256
    """h: dimension of the data (the 'activations')."""
    mean_active: float = 5.0
    """Average number of active features per sample."""
    decay: float = 0.99
    """Feature g's probability is scaled by decay**g (1.0 switches the decay off)."""
    correlated: bool = True
    """Correlate which features are active (False: independent Bernoullis)."""
    corr_rank: int = 16
    """Rank of the random part of the correlation matrix (smaller: stronger correlations)."""
    seed: int = 0
    """Seed for the features and the correlation matrix (sampling has its own generator)."""

    def __post_init__(self) -> None:
        if self.n_features < 1 or self.d < 1:
            raise ValueError(f"n_features and d must be positive, got G={self.n_features}, h={self.d}")
        if not 0 < self.mean_active < self.n_features:
            raise ValueError(f"mean_active must lie in (0, G={self.n_features}), got {self.mean_active}")
        if not 0 < self.decay <= 1:
            raise ValueError(f"decay must lie in (0, 1], got {self.decay}")


class GroundTruthData:
    """A seeded generator of toy activations that keeps its ground truth."""

    def __init__(self, cfg: GroundTruthConfig = GroundTruthConfig(), device: str | torch.device | None = None):
        self.cfg = cfg
        self.device = get_device(device)
        gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
        G, h = cfg.n_features, cfg.d
        # Uniform on the sphere: normalised Gaussian vectors.
        feats = torch.randn(G, h, generator=gen)
        self.features = (feats / feats.norm(dim=1, keepdim=True)).to(self.device)  # (G, h)
        # A random correlation matrix C = normalise(A A^T / r + I). Low rank plus diagonal
        # keeps sampling at O(G r) per sample instead of O(G^2), and is still a full-rank,
        # valid correlation matrix with correlations of typical size ~ 1/sqrt(r).
        r = cfg.corr_rank
        factor = torch.randn(G, r, generator=gen) / r**0.5  # (G, r)
        scale = 1.0 / (1.0 + factor.pow(2).sum(1)).sqrt()  # (G,) makes the diagonal 1
        self._corr_factor_t = (factor * scale[:, None]).T.contiguous().to(self.device)  # (r, G)
        self._corr_scale = scale.to(self.device)
        decay = cfg.decay ** torch.arange(G, dtype=torch.float32)
        # E[Phi(z)] = 1/2, so this constant makes the expected number of active features mean_active.
        self._prob_scale = (decay * (cfg.mean_active / (0.5 * decay.sum()))).to(self.device)  # (G,)
        if float(self._prob_scale.max()) * 1.0 > 1.0:
            raise ValueError("mean_active is too large for this decay: a probability would exceed 1")
        self._sample_gen = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)

    # ------------------------------------------------------------------------------------
    @property
    def expected_active(self) -> float:
        """Expected number of active features per sample (the configured mean_active)."""
        return float(0.5 * self._prob_scale.sum())

    def _active(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Which features are on in n samples, and their coefficients.

        Returns (sample index, feature index, coefficient), one entry per active feature.
        Exact and cheap: a feature can only be on if its uniform draw u falls below its
        largest possible probability s_g (about 2% of draws), so the correlated Gaussian is
        only evaluated there; it is on iff u < Phi(z_g) * s_g, and then u / p is uniform(0, 1).
        """
        g = self._sample_gen
        s = self._prob_scale  # (G,) the probability of feature g when Phi(z_g) = 1
        u = torch.rand(n, self.cfg.n_features, device=self.device, generator=g)  # (n, G)
        rows, cols = (u < s).nonzero(as_tuple=True)  # candidates, ~2% of (n, G)
        u = u[rows, cols]
        if self.cfg.correlated:
            eps_r = torch.randn(n, self._corr_factor_t.shape[0], device=self.device, generator=g)
            eps_g = torch.randn(rows.shape, device=self.device, generator=g)
            z = (eps_r[rows] * self._corr_factor_t[:, cols].T).sum(1) + eps_g * self._corr_scale[cols]
            p = torch.special.ndtr(z) * s[cols]  # ndtr: the standard normal CDF
        else:
            p = 0.5 * s[cols]
        on = u < p
        return rows[on], cols[on], u[on] / p[on]

    def sample_coefficients(self, n: int) -> torch.Tensor:
        """Sparse ground-truth coefficients c, shape (n, G): Bernoulli(p) * uniform(0, 1)."""
        rows, cols, vals = self._active(n)
        c = torch.zeros(n, self.cfg.n_features, device=self.device)
        c[rows, cols] = vals
        return c

    def sample(self, n: int) -> torch.Tensor:
        """n toy activations x = c @ F, shape (n, h) (summed sparsely: ~5 features per row)."""
        rows, cols, vals = self._active(n)
        x = torch.zeros(n, self.cfg.d, device=self.device)
        return x.index_add_(0, rows, self.features[cols] * vals[:, None])

    def sample_with_coefficients(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, c) so a sample can be decomposed into its ground-truth features."""
        c = self.sample_coefficients(n)
        return c @ self.features, c

    def measured_mean_active(self, n: int = 50_000) -> float:
        """Mean number of active features per sample over n fresh samples."""
        return float((self.sample_coefficients(n) > 0).sum(1).float().mean())

    def cooccurrence(self, n: int = 50_000) -> torch.Tensor:
        """Correlation matrix of which features are active, estimated from n samples, (G, G)."""
        on = (self.sample_coefficients(n) > 0).float()
        on = on - on.mean(0)
        cov = on.T @ on / n
        std = cov.diagonal().clamp_min(1e-12).sqrt()
        return cov / std[:, None] / std[None, :]
