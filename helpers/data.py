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

The report closes by listing ways real activations might differ from this data. Each is one
field of ``GroundTruthConfig`` (all off by default, which is the report's recipe):
``jitter`` (each occurrence of a feature points a little off its direction),
``noise_std`` (dense Gaussian background noise), ``nonnegative`` (feature directions in the
positive orthant, like post-activation MLP outputs), ``frequency="zipf"`` (a power-law
spread of feature frequencies instead of the 0.99 decay), ``corr_strength`` (how strongly the
Gaussian z couples features), and ``n_parents``/``children_per_parent`` (a hierarchy: a
parent feature fires with exactly one of its mutually exclusive children, the setting in
which SAEs show feature absorption). The superposition ratio is ``n_features / d``.

Everything is generated on the chosen device, seeded, in whatever batch size is asked.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from numbers import Real

import torch
from torch import nn

from helpers.device import check_int, get_device, reseeded, stream_seed


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
    corr_strength: float = 1.0
    """Scale of the random correlation factor: 0 gives independent z, larger couples more."""
    frequency: str = "exponential"
    """How feature probability falls with index: "exponential" (decay**g) or "zipf" ((g+1)**-zipf_exponent)."""
    zipf_exponent: float = 1.0
    """Exponent of the Zipf profile (used when frequency="zipf")."""
    jitter: float = 0.0
    """Each occurrence of a feature uses its direction plus Gaussian noise of expected norm ``jitter``, renormalised."""
    noise_std: float = 0.0
    """Std per dimension of dense Gaussian background noise added to every sample."""
    nonnegative: bool = False
    """Draw feature directions in the positive orthant (every coordinate >= 0)."""
    n_parents: int = 0
    """Hierarchy: the first n_parents * (1 + children_per_parent) features form parent-children groups."""
    children_per_parent: int = 4
    """Children per parent; exactly one child fires whenever its parent fires, never without it
    (so children add to ``mean_active``, which counts parents and free features only)."""
    seed: int = 0
    """Seed for the features and the correlation matrix (sampling has its own generator)."""

    def __post_init__(self) -> None:
        for name, lo in (("n_features", 1), ("d", 1), ("corr_rank", 1), ("n_parents", 0), ("children_per_parent", 1),
                         ("seed", None)):
            check_int(name, getattr(self, name), lo)
        for name in ("correlated", "nonnegative"):
            if not isinstance(getattr(self, name), bool):  # a string such as "no" would count as True
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}: pass {name}=True or {name}=False")
        for name in ("mean_active", "decay"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), Real):
                raise TypeError(f"{name} must be a number, got {getattr(self, name)!r}: pass e.g. "
                                f"{name}={getattr(GroundTruthConfig, name)}")
        if not 0 < self.mean_active < self.n_features:
            raise ValueError(f"mean_active must lie in (0, G={self.n_features}), got {self.mean_active}")
        if not 0 < self.decay <= 1:
            raise ValueError(f"decay must lie in (0, 1], got {self.decay}")
        if self.frequency not in ("exponential", "zipf"):
            raise ValueError(f"frequency must be 'exponential' or 'zipf', got {self.frequency!r}")
        for name in ("corr_strength", "zipf_exponent", "jitter", "noise_std"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf") and v >= 0):
                raise ValueError(f"{name} must be a finite non-negative number, got {v!r}")
        if self.n_parents * (1 + self.children_per_parent) > self.n_features:
            raise ValueError(f"a hierarchy of {self.n_parents} parents with {self.children_per_parent} children "
                             f"needs {self.n_parents * (1 + self.children_per_parent)} features; n_features is "
                             f"{self.n_features}: lower n_parents or raise n_features")


class GroundTruthData:
    """A seeded generator of toy activations that keeps its ground truth."""

    def __init__(self, cfg: GroundTruthConfig = GroundTruthConfig(), device: str | torch.device | None = None):
        self.cfg = cfg
        self.device = get_device(device)
        gen = torch.Generator(device="cpu").manual_seed(stream_seed(cfg.seed, "ground-truth"))
        G, h = cfg.n_features, cfg.d
        # Uniform on the sphere: normalised Gaussian vectors.
        feats = torch.randn(G, h, generator=gen)
        if cfg.nonnegative:
            feats = feats.abs()
        self.features = (feats / feats.norm(dim=1, keepdim=True)).to(self.device)  # (G, h)
        # A random correlation matrix C = normalise(A A^T / r + I). Low rank plus diagonal
        # keeps sampling at O(G r) per sample instead of O(G^2), and is still a full-rank,
        # valid correlation matrix with correlations of typical size ~ 1/sqrt(r).
        r = cfg.corr_rank
        factor = torch.randn(G, r, generator=gen) * (cfg.corr_strength / r**0.5)  # (G, r)
        scale = 1.0 / (1.0 + factor.pow(2).sum(1)).sqrt()  # (G,) makes the diagonal 1
        self._corr_factor_t = (factor * scale[:, None]).T.contiguous().to(self.device)  # (r, G)
        self._corr_scale = scale.to(self.device)
        idx = torch.arange(G, dtype=torch.float32)
        decay = cfg.decay**idx if cfg.frequency == "exponential" else (idx + 1) ** -cfg.zipf_exponent
        if cfg.n_parents:  # children share their parent's occurrences: they get no draw of their own
            decay = decay.masked_fill(self._child_mask(), 0.0)
        # E[Phi(z)] = 1/2, so this constant makes the expected number of active features mean_active.
        self._prob_scale = (decay * (cfg.mean_active / (0.5 * decay.sum()))).to(self.device)  # (G,)
        if float(self._prob_scale.max()) > 1.0:
            raise ValueError("mean_active is too large for this frequency profile: the commonest feature's probability "
                             "would exceed 1. Lower mean_active, raise decay, or lower zipf_exponent (e.g. 0.7).")
        # Byte b of a two-part uniform u = (b + v) / 256 can only give u < s_g if b <= 256 s_g.
        self._byte_threshold = (self._prob_scale * 256).floor().clamp(max=255).to(torch.uint8)  # (G,)
        self._sample_gen = torch.Generator(device=self.device).manual_seed(stream_seed(cfg.seed, "sampling"))

    @contextlib.contextmanager
    def fixed_stream(self, name: str):
        """Inside the block, samples come from a generator seeded by ``name`` and the data's seed;
        the training stream is left where it was. An evaluation drawn this way gives the same
        samples however much was drawn before (for instance whether an SAE was trained just now
        or reopened from a cache)."""
        with reseeded(self._sample_gen, stream_seed(self.cfg.seed, name)):
            yield self

    def _child_mask(self) -> torch.Tensor:
        """(G,) True for the child features of the hierarchy (none without one)."""
        group, n_grouped = 1 + self.cfg.children_per_parent, self.cfg.n_parents * (1 + self.cfg.children_per_parent)
        return (torch.arange(self.cfg.n_features) % group != 0) & (torch.arange(self.cfg.n_features) < n_grouped)

    @property
    def parents(self) -> torch.Tensor:
        """(n_parents,) feature index of each parent; its children are the next children_per_parent."""
        return torch.arange(self.cfg.n_parents) * (1 + self.cfg.children_per_parent)

    # ------------------------------------------------------------------------------------
    @property
    def feature_probabilities(self) -> torch.Tensor:
        """(G,) probability that each feature is active in a sample (s_g * E[Phi(z)] = s_g / 2)."""
        return 0.5 * self._prob_scale

    @property
    def expected_active(self) -> float:
        """Expected number of active features per sample (the configured mean_active)."""
        return float(0.5 * self._prob_scale.sum())

    def _active(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Which features are on in n samples, and their coefficients.

        Returns (sample index, feature index, coefficient), one entry per active feature,
        sorted by sample. Exact and cheap: feature g is on iff a uniform u falls below its
        probability p = Phi(z_g) * s_g <= s_g, where s_g is its largest possible probability
        (a few percent). We draw u in two parts, u = (b + v) / 256 with a uniform byte b and
        v ~ U(0, 1): u < s_g needs b <= floor(256 s_g), so only those few (sample, feature)
        pairs get a v, a correlated Gaussian z and a CDF. Given that it is on, u / p is U(0, 1).
        """
        check_int("n", n, 0)  # the number of samples every public sampler passes on
        g, s = self._sample_gen, self._prob_scale  # s: (G,) the probability when Phi(z_g) = 1
        b = self._random_bytes(n)  # (n, G)
        rows, cols = (b <= self._byte_threshold).nonzero(as_tuple=True)  # ~2% of (n, G), row-major
        u = (b[rows, cols].float() + torch.rand(rows.shape, device=self.device, generator=g)) / 256
        if self.cfg.correlated:
            eps_r = torch.randn(n, self._corr_factor_t.shape[0], device=self.device, generator=g)  # (n, r)
            eps_g = torch.randn(rows.shape, device=self.device, generator=g)
            # One small (n, r) @ (r, G) GEMM is cheaper than gathering r factors per candidate.
            z = (eps_r @ self._corr_factor_t)[rows, cols] + eps_g * self._corr_scale[cols]
            p = torch.special.ndtr(z) * s[cols]  # ndtr: the standard normal CDF
        else:
            p = 0.5 * s[cols]
        on = u < p
        rows, cols, vals = rows[on], cols[on], u[on] / p[on]
        if self.cfg.n_parents:
            rows, cols, vals = self._add_children(rows, cols, vals)
        return rows, cols, vals

    def _add_children(self, rows, cols, vals):
        """Each active parent switches on one of its children, chosen uniformly, with its own coefficient."""
        k = self.cfg.children_per_parent
        is_parent = (cols < self.cfg.n_parents * (1 + k)) & (cols % (1 + k) == 0)
        pr, pc = rows[is_parent], cols[is_parent]
        g = self._sample_gen
        child = pc + 1 + torch.randint(0, k, pc.shape, device=self.device, generator=g)
        cval = torch.rand(pc.shape, device=self.device, generator=g)
        rows, cols, vals = torch.cat([rows, pr]), torch.cat([cols, child]), torch.cat([vals, cval])
        order = torch.argsort(rows * self.cfg.n_features + cols)  # back to sorted by sample
        return rows[order], cols[order], vals[order]

    def _random_bytes(self, n: int) -> torch.Tensor:
        """(n, G) independent uniform bytes (0..255) from the sampling generator."""
        G, g = self.cfg.n_features, self._sample_gen
        if self.device.type == "cpu":
            # One 64-bit draw gives eight bytes: 8x fewer calls into the serial CPU generator
            # than one float per (sample, feature), which used to dominate sampling on a CPU.
            words = torch.empty((n * G + 7) // 8, dtype=torch.int64).random_(-(2**63), None, generator=g)
            return words.view(torch.uint8)[: n * G].view(n, G)
        return torch.randint(0, 256, (n, G), dtype=torch.uint8, device=self.device, generator=g)

    def sample_coefficients(self, n: int) -> torch.Tensor:
        """Sparse ground-truth coefficients c, shape (n, G): Bernoulli(p) * uniform(0, 1)."""
        rows, cols, vals = self._active(n)
        return torch.zeros(n, self.cfg.n_features, device=self.device).index_put_((rows, cols), vals)

    def sample(self, n: int) -> torch.Tensor:
        """n toy activations x = c @ F, shape (n, h) (summed sparsely: ~5 features per row)."""
        rows, cols, vals = self._active(n)
        if self.cfg.jitter or self.cfg.noise_std:
            return self._sample_perturbed(n, rows, cols, vals)
        if self.device.type in ("cpu", "cuda"):
            # A weighted sum of feature rows per sample is exactly an embedding bag; it never
            # materialises the (n_active, h) gathered rows that index_add_ would need.
            counts = torch.bincount(rows, minlength=n)
            offsets = counts.cumsum(0) - counts  # rows are sorted, so sample i's features are contiguous
            return nn.functional.embedding_bag(cols, self.features, offsets, mode="sum", per_sample_weights=vals)
        x = torch.zeros(n, self.cfg.d, device=self.device)
        return x.index_add_(0, rows, self.features[cols] * vals[:, None])

    def _sample_perturbed(self, n, rows, cols, vals) -> torch.Tensor:
        """Samples with jittered directions and/or background noise (the slower, general path)."""
        g, h = self._sample_gen, self.cfg.d
        dirs = self.features[cols]  # (n_active, h)
        if self.cfg.jitter:
            # jitter is the std of the perturbation's length relative to the unit direction.
            eps = torch.randn(dirs.shape, device=self.device, generator=g) * (self.cfg.jitter / h**0.5)
            dirs = dirs + eps
            dirs = dirs / dirs.norm(dim=-1, keepdim=True)
        x = torch.zeros(n, h, device=self.device).index_add_(0, rows, dirs * vals[:, None])
        if self.cfg.noise_std:
            x += self.cfg.noise_std * torch.randn(x.shape, device=self.device, generator=g)
        return x

    def sample_with_coefficients(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, c) so a sample can be decomposed into its ground-truth features.

        With jitter or noise, x also carries those perturbations (c is what was planted).
        """
        rows, cols, vals = self._active(n)
        c = torch.zeros(n, self.cfg.n_features, device=self.device).index_put_((rows, cols), vals)
        if self.cfg.jitter or self.cfg.noise_std:
            return self._sample_perturbed(n, rows, cols, vals), c
        return c @ self.features, c

    def latent_correlation(self) -> torch.Tensor:
        """(G, G) correlation matrix of the Gaussian z that decides which features fire together.

        Identity when ``correlated=False``. The Bernoulli draw on top dilutes it: whether two
        rare features fire together correlates only about sqrt(s_a s_b) / 6 times as strongly
        (s: a feature's largest probability, ~0.1 for the commonest).
        """
        G = self.cfg.n_features
        if not self.cfg.correlated:
            return torch.eye(G, device=self.device)
        corr = self._corr_factor_t.T @ self._corr_factor_t  # (G, G) off-diagonal covariances
        return corr.fill_diagonal_(1.0)

    def measured_mean_active(self, n: int = 50_000) -> float:
        """Mean number of active features per sample over n fresh samples."""
        return float((self.sample_coefficients(n) > 0).sum(1).float().mean())

    def cooccurrence(self, n: int = 50_000, chunk: int = 16_384) -> torch.Tensor:
        """Correlation matrix of which features are active, estimated from n samples, (G, G).

        Drawn ``chunk`` samples at a time, so memory stays O(chunk * G) for any n.
        """
        G = self.cfg.n_features
        counts = torch.zeros(G, dtype=torch.float64, device=self.device)
        pairs = torch.zeros(G, G, dtype=torch.float64, device=self.device)
        for start in range(0, n, chunk):
            on = (self.sample_coefficients(min(chunk, n - start)) > 0).float()  # (chunk, G)
            counts += on.sum(0).double()
            pairs += (on.T @ on).double()  # exact: sums of 0/1 products stay small integers
        mean = counts / n
        cov = pairs / n - mean[:, None] * mean[None, :]
        std = cov.diagonal().clamp_min(1e-12).sqrt()
        return (cov / std[:, None] / std[None, :]).float()
