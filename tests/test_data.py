"""The ground-truth toy data behaves like the interim report's: ~5 active features per sample,
probabilities decaying with the index, correlated activity, unit-norm features, seeded."""
import math

import pytest
import torch

from helpers.data import GroundTruthConfig, GroundTruthData
from helpers.device import stream_seed

SMALL = GroundTruthConfig(n_features=128, d=64)


@pytest.fixture(scope="module")
def coeffs() -> torch.Tensor:
    """(100k, 128) coefficients of the correlated small generator, shared by several tests."""
    return GroundTruthData(SMALL, device="cpu").sample_coefficients(100_000)


@pytest.mark.parametrize("correlated", [True, False])
def test_mean_active_features_is_the_configured_five(correlated):
    data = GroundTruthData(GroundTruthConfig(correlated=correlated), device="cpu")
    measured = data.measured_mean_active(50_000)
    assert abs(data.expected_active - 5.0) < 1e-4, f"expected_active is {data.expected_active}, not 5"
    assert abs(measured - 5.0) < 0.1, (
        f"samples hold {measured:.2f} active features on average, the report's data has 5: "
        "check the probability rescaling (E[Phi(z)] = 1/2)"
    )


def test_coefficients_are_uniform_on_0_1(coeffs):
    on = coeffs[coeffs > 0]
    assert on.max() <= 1.0 and on.min() > 0, "active coefficients must lie in (0, 1]"
    assert abs(float(on.mean()) - 0.5) < 0.01, f"uniform(0,1) coefficients average 0.5, got {float(on.mean()):.3f}"
    assert abs(float(on.var()) - 1 / 12) < 0.005, f"uniform(0,1) has variance 1/12, got {float(on.var()):.4f}"


def test_feature_probability_decays_with_index(coeffs):
    freq = (coeffs > 0).float().mean(0)  # (G,)
    idx = torch.arange(freq.numel(), dtype=torch.float64)
    logf = freq.double().log()
    slope = float(((idx - idx.mean()) * (logf - logf.mean())).sum() / ((idx - idx.mean()) ** 2).sum())
    assert abs(slope - math.log(0.99)) < 0.2 * abs(math.log(0.99)), (
        f"log frequency should fall by log(0.99) = {math.log(0.99):.4f} per index, fitted slope {slope:.4f}"
    )
    flat = GroundTruthData(GroundTruthConfig(n_features=128, d=64, decay=1.0), device="cpu")
    flat_freq = (flat.sample_coefficients(100_000) > 0).float().mean(0)
    ratio = float(flat_freq[:32].mean() / flat_freq[-32:].mean())
    assert abs(ratio - 1) < 0.1, f"with decay=1 all features should be equally common, first/last ratio {ratio:.2f}"


def _off_diagonal(m: torch.Tensor) -> torch.Tensor:
    return m[~torch.eye(m.shape[0], dtype=torch.bool)]


def test_correlated_features_co_occur_more_than_independent_ones():
    # Strong correlations (one shared factor, common features) make co-occurrence visible at a glance.
    def spread(correlated: bool) -> float:
        cfg = GroundTruthConfig(n_features=64, d=32, mean_active=16, decay=1.0, corr_rank=1, correlated=correlated)
        return float(_off_diagonal(GroundTruthData(cfg, device="cpu").cooccurrence(50_000)).std())

    corr, indep = spread(True), spread(False)
    assert corr > 4 * indep, (
        f"co-occurrence correlations spread {corr:.4f} with correlated=True vs {indep:.4f} without: "
        "the multivariate normal should make some features fire together"
    )


@pytest.mark.parametrize("correlated", [True, False])
def test_cooccurrence_follows_the_latent_correlation(correlated):
    # At the report's settings the effect is weak (Bernoulli thinning), but its pattern is there.
    data = GroundTruthData(GroundTruthConfig(n_features=64, d=32, correlated=correlated), device="cpu")
    measured, latent = _off_diagonal(data.cooccurrence(100_000)), _off_diagonal(data.latent_correlation())
    if correlated:
        agreement = float(torch.corrcoef(torch.stack([measured, latent]))[0, 1])
        assert agreement > 0.5, (
            f"feature pairs with a high latent correlation should co-occur more: pattern correlation {agreement:.2f}"
        )
    else:
        assert latent.abs().max() == 0, "uncorrelated data has an identity latent correlation"
        assert measured.abs().max() < 0.03, "independent features should not co-occur beyond sampling noise"


def test_features_are_unit_vectors_spread_over_the_sphere():
    data = GroundTruthData(GroundTruthConfig(), device="cpu")
    assert data.features.shape == (512, 256), f"features should be (G, h) = (512, 256), got {tuple(data.features.shape)}"
    norms = data.features.norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5), "every ground-truth feature must have unit norm"
    cos = data.features @ data.features.T - torch.eye(512)
    assert cos.abs().max() < 0.4, "random directions in 256-D should be nearly orthogonal (|cos| < 0.4)"


def test_sample_is_the_sum_of_its_active_features():
    data = GroundTruthData(SMALL, device="cpu")
    x, c = data.sample_with_coefficients(1000)
    assert torch.allclose(x, c @ data.features, atol=1e-5), "x must equal c @ F"
    # `sample` (embedding-bag path) and `sample_coefficients` draw identically from the same state.
    a, b = GroundTruthData(SMALL, device="cpu"), GroundTruthData(SMALL, device="cpu")
    assert torch.allclose(a.sample(1000), b.sample_coefficients(1000) @ b.features, atol=1e-5), (
        "sample(n) should equal sample_coefficients(n) @ features for the same generator state"
    )
    assert data.sample(7).shape == (7, 64), "sample(n) must return (n, h)"


def test_same_seed_same_data_other_seed_other_data():
    a, b = GroundTruthData(SMALL, device="cpu"), GroundTruthData(SMALL, device="cpu")
    assert torch.equal(a.features, b.features), "features must be repeatable for a fixed seed"
    assert torch.equal(a.sample(500), b.sample(500)), "samples must be repeatable for a fixed seed"
    other = GroundTruthData(GroundTruthConfig(n_features=128, d=64, seed=1), device="cpu")
    assert not torch.equal(a.features, other.features), "a different seed should give different features"


def test_named_streams_do_not_share_seeds():
    assert stream_seed(0, "ground-truth") != stream_seed(0, "sae-init"), "streams with one user seed must differ"
    assert stream_seed(0, "x") == stream_seed(0, "x") and 0 <= stream_seed(3, "x") < 2**63


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(n_features=0), "positive"),
        (dict(d=-3), "positive"),
        (dict(mean_active=0), "mean_active"),
        (dict(n_features=8, mean_active=8), "mean_active"),
        (dict(decay=0.0), "decay"),
        (dict(decay=1.5), "decay"),
    ],
)
def test_bad_configs_are_clear_errors(kwargs, words):
    with pytest.raises(ValueError, match=words):
        GroundTruthConfig(**kwargs)


@pytest.mark.parametrize("kwargs, error, name", [
    (dict(n_features=True), TypeError, "n_features"), (dict(d=64.0), TypeError, "d"),
    (dict(corr_rank=0), ValueError, "corr_rank"), (dict(corr_rank=2.5), TypeError, "corr_rank"),
    (dict(n_parents=-1), ValueError, "n_parents"), (dict(children_per_parent=0), ValueError, "children_per_parent"),
    (dict(seed=1.5), TypeError, "seed"), (dict(mean_active="5"), TypeError, "mean_active"),
    (dict(decay=None), TypeError, "decay"),
])
def test_wrong_types_and_negative_counts_name_the_field(kwargs, error, name):
    """corr_rank=0 divided by zero, mean_active="5" compared a str with an int, d=True made 1-D data."""
    with pytest.raises(error, match=rf"\b{name}\b"):
        GroundTruthConfig(**kwargs)


def test_impossible_probabilities_are_a_clear_error():
    with pytest.raises(ValueError, match="probability would exceed 1"):
        GroundTruthData(GroundTruthConfig(n_features=64, d=16, mean_active=30, decay=0.9), device="cpu")


def test_suspect_options_default_off_and_each_changes_the_data():
    base = GroundTruthData(SMALL, device="cpu")
    ref = base.sample(256)
    assert torch.equal(GroundTruthData(GroundTruthConfig(n_features=128, d=64, jitter=0.0), device="cpu").sample(256), ref), (
        "with every option at its default the generator must give the report's data exactly")
    for kw in (dict(jitter=0.5), dict(noise_std=0.1), dict(nonnegative=True), dict(corr_strength=3.0),
               dict(frequency="zipf", zipf_exponent=0.7), dict(n_parents=4, children_per_parent=3)):
        other = GroundTruthData(GroundTruthConfig(n_features=128, d=64, **kw), device="cpu").sample(256)
        assert not torch.equal(other, ref), f"option {kw} did not change the data"


def test_hierarchy_children_are_exclusive_and_need_their_parent():
    data = GroundTruthData(GroundTruthConfig(n_features=128, d=64, n_parents=6, children_per_parent=3), device="cpu")
    _, c = data.sample_with_coefficients(20_000)
    on = c > 0
    for p in data.parents.tolist():
        kids = on[:, p + 1 : p + 4].sum(1)
        assert on[:, p].any(), f"parent {p} never fired in 20k samples"
        assert (kids[on[:, p]] == 1).all(), f"when parent {p} fires exactly one child must fire"
        assert (kids[~on[:, p]] == 0).all(), f"a child of parent {p} fired without it"


def test_jitter_and_noise_move_samples_off_the_planted_span():
    data = GroundTruthData(GroundTruthConfig(n_features=128, d=64, jitter=0.3), device="cpu")
    x, c = data.sample_with_coefficients(2000)
    rel = ((x - c @ data.features).norm(dim=1) / x.norm(dim=1).clamp_min(1e-9)).mean()
    assert 0.05 < float(rel) < 0.6, f"jitter 0.3 should move samples by tens of percent, moved {float(rel):.3f}"


@pytest.mark.parametrize("kw", [dict(jitter=float("nan")), dict(noise_std=-1.0), dict(frequency="power"),
                                dict(n_parents=100, children_per_parent=4)])
def test_bad_suspect_options_are_clear_errors(kw):
    name = next(iter(kw))
    with pytest.raises(ValueError, match=name if name != "children_per_parent" else "n_parents"):
        GroundTruthConfig(n_features=128, d=64, **kw)
