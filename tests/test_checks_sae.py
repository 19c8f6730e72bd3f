"""The checks of notebook 02's exercises: each plausible wrong solution is caught with its own
message (tests/test_checks_common.py checks the reference and the stub)."""
from __future__ import annotations

import pytest
import torch

from helpers.course.checks import sae as checks
from helpers.data import GroundTruthConfig, GroundTruthData
from helpers.course.exercises import ExerciseError


# --- the generator's Bernoulli step ------------------------------------------------------
def _profile(G, decay, k, dtype=torch.float32):
    profile = decay ** torch.arange(G, dtype=dtype)
    return profile, k / (0.5 * profile.sum())


def test_active_features_catches_a_missing_cdf():
    def no_cdf(z, u, decay, k):
        profile, s = _profile(z.shape[1], decay, k)
        return u < s * profile * z
    with pytest.raises(ExerciseError, match="normal CDF"):
        checks.active_features(no_cdf)


def test_active_features_catches_a_missing_decay():
    with pytest.raises(ExerciseError, match="decay"):
        checks.active_features(lambda z, u, decay, k: u < (k / (0.5 * z.shape[1])) * torch.special.ndtr(z))


def test_active_features_catches_a_wrong_rescaling():
    def no_half(z, u, decay, k):  # forgets E[Phi(z)] = 1/2: twice too few features on
        profile = decay ** torch.arange(z.shape[1], dtype=z.dtype)
        return u < k / profile.sum() * profile * torch.special.ndtr(z)
    with pytest.raises(ExerciseError, match="on average"):
        checks.active_features(no_half)


def _rescaled_by_the_drawn_mean(per_sample):
    def fn(z, u, decay, k):
        drawn = decay ** torch.arange(z.shape[1], dtype=z.dtype) * torch.special.ndtr(z)   # (n, G)
        mean = drawn.mean(-1, keepdim=True) if per_sample else drawn.mean()
        return u < (k / z.shape[1]) * drawn / mean
    return fn


def test_active_features_names_the_reports_rescaling():
    """The report's text rescales each draw by its own mean probability: the check names that variant."""
    with pytest.raises(ExerciseError, match="report's text"):
        checks.active_features(_rescaled_by_the_drawn_mean(per_sample=True))


def test_active_features_accepts_a_batch_mean_for_the_constant():
    """The mean over a whole batch estimates the course's constant: that passes."""
    assert checks.active_features(_rescaled_by_the_drawn_mean(per_sample=False)) is not checks.active_features_reference


def test_active_features_reference_matches_the_generator_rates():
    """The reference's per-feature rates are the generator's: same profile, same mean."""
    data = GroundTruthData(GroundTruthConfig(n_features=64, d=16, seed=0), device="cpu")
    g = torch.Generator().manual_seed(0)
    z, u = torch.randn(40_000, 64, generator=g), torch.rand(40_000, 64, generator=g)
    rate = checks.active_features_reference(z, u, 0.99, 5.0).float().mean(0)
    err = (rate - data.feature_probabilities).abs().max()
    assert err < 0.01, f"the exercise's feature rates differ from GroundTruthData's by up to {err:.3f}"


# --- the SAE forward pass and loss --------------------------------------------------------
def _wrong_forward(unit_rows=True, divide_by_J=True, mean_over_h=True):
    def fn(sae, x, target):
        J = sae.W_dec.shape[1]
        c = torch.relu(torch.einsum("bh,ihj->ibj", x, sae.W_enc) + sae.b_enc[:, None, :])
        D = sae.W_dec / sae.W_dec.norm(dim=-1, keepdim=True) if unit_rows else sae.W_dec
        x_hat = torch.einsum("ibj,ijh->ibh", c, D)
        err = (x_hat - target).pow(2)
        recon = (err.mean(-1) if mean_over_h else err.sum(-1)).mean(-1)
        l1 = sae.l1_coeffs / (J if divide_by_J else 1) * c.sum(-1).mean(-1)
        return x_hat, c, recon, l1
    return fn


@pytest.mark.parametrize("kwargs, message", [
    ({"unit_rows": False}, "decoder rows must be unit norm on the forward pass"),
    ({"divide_by_J": False}, "the L1 term must be divided by J as in the report"),
    ({"mean_over_h": False}, "average over the h dimensions"),
])
def test_sae_forward_catches_each_mistake(kwargs, message):
    with pytest.raises(ExerciseError, match=message):
        checks.sae_forward(_wrong_forward(**kwargs))


def test_sae_forward_catches_a_detached_loss():
    def detached(sae, x, target):
        return tuple(t.detach() for t in checks.sae_forward_reference(sae, x, target))
    with pytest.raises(ExerciseError, match="autograd"):
        checks.sae_forward(detached)


# --- MMCS ---------------------------------------------------------------------------------
def test_mmcs_catches_max_over_the_wrong_axis():
    def wrong_axis(learned, truth):
        L = learned / learned.norm(dim=-1, keepdim=True)
        T = truth / truth.norm(dim=-1, keepdim=True)
        return (T @ L.T).max(dim=0).values.mean()
    with pytest.raises(ExerciseError, match="max over learned features for each true feature"):
        checks.mmcs(wrong_axis)


def test_mmcs_catches_missing_normalisation():
    with pytest.raises(ExerciseError, match="normalise"):
        checks.mmcs(lambda learned, truth: (truth @ learned.T).max(dim=1).values.mean())


def test_sae_forward_catches_a_detached_normalisation():
    """Right values, wrong training: with the norm detached the gradient no longer knows that a
    row's length does not change the reconstruction, and the SAE trains towards other directions."""
    def detached(sae, x, target):
        J = sae.W_dec.shape[1]
        c = torch.relu(torch.einsum("bh,ihj->ibj", x, sae.W_enc) + sae.b_enc[:, None, :])
        D = sae.W_dec / sae.W_dec.norm(dim=-1, keepdim=True).detach()
        x_hat = torch.einsum("ibj,ijh->ibh", c, D)
        return x_hat, c, (x_hat - target).pow(2).mean(-1).mean(-1), sae.l1_coeffs / J * c.abs().sum(-1).mean(-1)
    with pytest.raises(ExerciseError, match="normalisation must stay in the graph"):
        checks.sae_forward(detached)
