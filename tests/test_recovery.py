"""One-to-one recovery metrics against constructed dictionaries whose answers are known."""
import pytest
import torch

from helpers.metrics import mmcs
from helpers.recovery import duplicates, firing_scores, one_to_one, refit_on_support

import scipy  # noqa: F401  (a hard dependency: requirements.txt)


def _truth(G=16, h=32, seed=0):
    return torch.linalg.qr(torch.randn(h, G, generator=torch.Generator().manual_seed(seed)))[0].T  # (G, h) orthonormal


def test_permutation_matches_mmcs_exactly():
    truth = _truth()
    learned = truth[torch.randperm(16, generator=torch.Generator().manual_seed(1))]
    m = one_to_one(learned, truth)
    assert abs(m.mean_cosine - float(mmcs(learned, truth))) < 1e-6, (
        "a shuffled copy of the truth is a permutation: one-to-one and MMCS must both be 1")
    assert m.recovered == 16 and int(duplicates(learned, truth)) == 0


def test_duplicates_lower_one_to_one_but_not_mmcs():
    truth = _truth()
    # A 2x dictionary: every feature found once, plus a second, slightly perturbed copy of each.
    learned = torch.cat([truth, truth + 0.01 * torch.randn(16, 32, generator=torch.Generator().manual_seed(2))])
    m_one, m_max = one_to_one(learned, truth), float(mmcs(learned, truth))
    assert m_max > 0.999, f"every feature has an exact copy, so MMCS must be 1, got {m_max:.3f}"
    assert abs(m_one.mean_cosine - 0.5) < 0.01, (
        f"one-to-one must count each copy once: 16 of 32 latents matched, mean 0.5, got {m_one.mean_cosine:.3f}")
    assert int(duplicates(learned, truth)) == 16
    assert m_one.recovered == 16


def test_firing_precision_and_recall():
    truth = _truth(G=4, h=8)
    match = one_to_one(truth, truth)
    coeffs = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]])
    acts = torch.tensor([[1.0, 0, 0, 0], [1.0, 1, 0, 0], [0, 0, 0, 1]])  # latent 0 also fires on sample 1
    s = firing_scores(acts, coeffs, match)
    order = match.feature.argsort()
    assert s.precision[order][0] == pytest.approx(0.5), "latent 0 fired twice, once with its feature"
    assert s.recall[order][0] == pytest.approx(1.0)
    assert s.l0 == pytest.approx(4 / 3) and s.true_l0 == pytest.approx(2 / 3)


def test_refit_on_support_undoes_shrinkage_and_keeps_the_support():
    g = torch.Generator().manual_seed(0)
    D = torch.nn.functional.normalize(torch.randn(3, 96, 48, generator=g), dim=-1)   # (inst, J, h)
    coeffs = torch.zeros(3, 20, 96)
    for i in range(3):
        for n in range(20):
            coeffs[i, n, torch.randperm(96, generator=g)[:5]] = torch.rand(5, generator=g) + 0.2
    bias = torch.randn(3, 1, 48, generator=g)
    x = coeffs @ D + bias                                     # exactly expressible on each support
    shrunk = (coeffs - 0.15).clamp_min(0.01) * (coeffs > 0)   # what an L1 penalty does: same support, smaller
    refit = refit_on_support(x, D, shrunk, bias, iters=60)
    assert torch.allclose(refit, coeffs, atol=1e-4), (
        f"refitting on the true support should recover the coefficients; worst error {(refit - coeffs).abs().max():.2e}")
    assert (refit[coeffs == 0] == 0).all(), "latents inactive in acts must stay at zero"
    plain = (x - bias - shrunk @ D).norm(dim=-1).mean()
    left = (x - bias - refit @ D).norm(dim=-1).mean()
    assert left < 1e-3 * plain, f"the refit should leave almost none of the shrinkage residual ({left:.2e} of {plain:.2e})"


def test_refit_on_support_rejects_zero_iterations():
    with pytest.raises(ValueError, match="iters"):
        refit_on_support(torch.zeros(2, 4), torch.eye(4), torch.zeros(2, 4), iters=0)


@pytest.mark.parametrize("shape", ["single", "stacked"])
def test_refit_on_support_gathered_path_equals_the_dense_loop(shape, monkeypatch):
    """The fast path (each sample's own active block of the Gram matrix) takes the same steps as
    the readable loop over the whole dictionary: equal up to float rounding, support included."""
    import helpers.recovery as rec

    gen = torch.Generator().manual_seed(0)
    lead = () if shape == "single" else (3,)
    J, h, n = 256, 128, 200
    D = torch.nn.functional.normalize(torch.randn(*lead, J, h, generator=gen), dim=-1)
    x = torch.randn(n, h, generator=gen)
    on = torch.rand(*lead, n, J, generator=gen) < 0.02                       # ~5 active latents per sample
    on[..., :64] &= torch.arange(n)[:, None] % 2 == 0                          # supports of different sizes
    acts = torch.rand(*lead, n, J, generator=gen) * on
    bias = None if shape == "single" else 0.1 * torch.randn(3, 1, h, generator=gen)
    k = int(on.sum(-1).max())
    assert 128 * k * k <= J * h, f"the test should exercise the gathered path (largest support {k})"
    fast = rec.refit_on_support(x, D, acts, bias)
    monkeypatch.setattr(rec, "_GATHER_LIMIT", -1)                              # force the dense loop
    dense = rec.refit_on_support(x, D, acts, bias)
    assert fast.shape == dense.shape, f"shapes differ: {tuple(fast.shape)} vs {tuple(dense.shape)}"
    assert (fast[~on.expand_as(fast)] == 0).all(), "the gathered refit put weight on a latent outside the support"
    assert torch.allclose(fast, dense, atol=1e-5, rtol=1e-4), (
        f"the gathered refit differs from the dense loop by up to {(fast - dense).abs().max():.2e}: "
        "check the gather of each sample's Gram block and its bound")
