"""MMCS, L0, FVU and CE loss recovered on cases whose answer is known by hand."""
import pytest
import torch

from helpers.metrics import best_matches, ce_loss_recovered, fvu, l0, mmcs, mmcs_between, random_mmcs_baseline


def _unit_rows(n: int, d: int, seed: int = 0) -> torch.Tensor:
    v = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return v / v.norm(dim=1, keepdim=True)


def test_mmcs_of_a_dictionary_with_itself_or_a_permuted_rescaled_copy_is_one():
    truth = _unit_rows(64, 32)
    assert abs(float(mmcs(truth, truth)) - 1) < 1e-5, "a dictionary matches itself perfectly"
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(1))
    learned = truth[perm] * 3.0  # order and length of the learned vectors must not matter
    assert abs(float(mmcs(learned, truth)) - 1) < 1e-5, "MMCS must ignore the order and norm of learned features"
    matches = best_matches(learned, truth)
    assert torch.equal(perm[matches.index], torch.arange(64)), "best_matches should find each feature's copy"


def test_mmcs_of_a_random_dictionary_is_near_the_random_baseline():
    truth, learned = _unit_rows(128, 64, seed=2), _unit_rows(128, 64, seed=3)
    got, baseline = float(mmcs(learned, truth)), random_mmcs_baseline(128, 128, 64)
    assert abs(got - baseline) < 0.03, f"random dictionaries score {got:.3f}, baseline says {baseline:.3f}"
    assert 0.2 < baseline < 0.5, f"128 random vectors in 64-D should have a best cosine ~0.35, got {baseline:.3f}"


def test_mmcs_is_vectorised_over_instances_and_redundant_copies_do_not_lower_it():
    truth = _unit_rows(16, 8)
    stack = torch.stack([truth, _unit_rows(16, 8, seed=5)])  # (inst=2, 16, 8)
    scores = mmcs(stack, truth)
    assert scores.shape == (2,) and abs(float(scores[0]) - 1) < 1e-5 and float(scores[1]) < 0.9
    bigger = torch.cat([truth, _unit_rows(48, 8, seed=6)])  # the truth plus 48 extra features
    assert abs(float(mmcs(bigger, truth)) - 1) < 1e-5, "extra learned features must not lower MMCS"


def test_mmcs_between_uses_the_smaller_dictionary_as_reference():
    small, big = _unit_rows(16, 8), torch.cat([_unit_rows(16, 8), _unit_rows(32, 8, seed=9)])
    assert abs(float(mmcs_between(small, big)) - 1) < 1e-5 and abs(float(mmcs_between(big, small)) - 1) < 1e-5
    with pytest.raises(ValueError, match="feature dimensions differ"):
        mmcs(_unit_rows(4, 8), _unit_rows(4, 9))


def test_l0_counts_active_latents_per_example():
    acts = torch.tensor([[[0.0, 1.0, 2.0], [0.0, 0.0, 0.5]]])  # (inst=1, batch=2, J=3)
    assert torch.equal(l0(acts), torch.tensor([1.5])), "two examples with 2 and 1 active latents: L0 = 1.5"


def test_fvu_is_zero_for_perfect_and_one_for_mean_reconstruction():
    x = torch.randn(3, 100, 16)
    assert float(fvu(x, x).abs().max()) < 1e-6, "a perfect reconstruction leaves no variance unexplained"
    mean = x.mean(-2, keepdim=True).expand_as(x)
    assert torch.allclose(fvu(x, mean), torch.ones(3)), "predicting the batch mean explains nothing: FVU = 1"
    assert torch.allclose(fvu(x, x + 0.5 * (mean - x)), torch.full((3,), 0.25)), "halving the error leaves 1/4"


def test_fvu_of_constant_data_is_an_error_not_a_huge_number():
    """The variance was clamped at 1e-12, so any error on constant data read as FVU ~ 1e13."""
    with pytest.raises(ValueError, match=r"constant over the batch.*variance is zero and FVU is undefined"):
        fvu(torch.full((100, 4), 0.1), torch.zeros(100, 4))
    with pytest.raises(ValueError, match="constant"):  # one constant instance among several
        fvu(torch.stack([torch.randn(50, 4), torch.ones(50, 4)]), torch.zeros(2, 50, 4))


def test_ce_loss_recovered_by_hand():
    # clean 2.0, zero-ablated 4.0, with the SAE 2.5: the SAE closes 1.5 of the 2.0 gap.
    assert ce_loss_recovered(2.0, 2.5, 4.0) == pytest.approx(0.75)
    assert ce_loss_recovered(2.0, 2.0, 4.0) == pytest.approx(1.0) and ce_loss_recovered(2.0, 4.0, 4.0) == pytest.approx(0.0)
    got = ce_loss_recovered(torch.tensor([2.0, 3.0]), torch.tensor([2.5, 3.0]), torch.tensor([4.0, 5.0]))
    assert torch.allclose(got, torch.tensor([0.75, 1.0])), "works elementwise on tensors"
    with pytest.raises(ValueError, match="undefined"):
        ce_loss_recovered(2.0, 2.5, 2.0)
