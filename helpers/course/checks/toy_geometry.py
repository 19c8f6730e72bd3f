"""Checks for notebook 01's exercises that read a trained W: the phase of an extra feature,
feature dimensionality and the tegum factors (``helpers.course.checks.toy`` re-exports them).

Each check runs the reader's function on small cases whose answers are known (or computed by
the reference) and returns the function the notebook goes on with (see
``helpers.course.exercises.check``).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from helpers.course.exercises import check, expect
# The package's own functions are the references: the answer a learner's code is compared with
# is the code the course runs.
from helpers.toy.geometry import classify_extra_feature as classify_phase_reference
from helpers.toy.geometry import feature_dimensionality as feature_dimensionality_reference
from helpers.toy.shapes import tegum_factors as tegum_factors_reference


# --------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------
def _pentagon() -> torch.Tensor:
    a = torch.arange(5) * 2 * math.pi / 5
    return torch.stack([a.cos(), a.sin()])  # (2, 5)


def feature_dimensionality(learner: Callable) -> Callable:
    """Check ``feature_dimensionality(W) -> (..., n)`` on a pentagon, an antipodal pair and random W."""

    def test(fn):
        pent = fn(_pentagon())
        expect(isinstance(pent, torch.Tensor) and pent.shape == (5,),
               f"return one value per feature, shape (n,) = (5,) for W of shape (2, 5); got "
               f"{tuple(pent.shape) if isinstance(pent, torch.Tensor) else type(pent).__name__}")
        pair = fn(torch.tensor([[1.0, -1.0, 0.0], [0.0, 0.0, 1.0]]))
        expect(not torch.allclose(pair[:2], torch.ones(2), atol=1e-3),
               "the sum in the denominator runs over every feature j, the feature itself included: an antipodal "
               "pair must give 1/2, not 1")
        expect(torch.allclose(pent, torch.full((5,), 0.4), atol=1e-3) and torch.allclose(pair, torch.tensor([0.5, 0.5, 1.0]), atol=1e-3),
               f"a regular pentagon's vertex has D = 2/5 and an antipodal pair 1/2 (with a third, orthogonal "
               f"feature at 1); got {[round(v, 3) for v in pent.tolist()]} and {[round(v, 3) for v in pair.tolist()]}")
        g = torch.Generator().manual_seed(0)
        W = torch.randn(3, 4, 10, generator=g) * torch.rand(3, 1, 10, generator=g)
        W[..., 0] = 0  # a dropped feature
        got, want = fn(W), feature_dimensionality_reference(W)
        expect(got.shape == want.shape, f"keep the leading (batch) dimensions: W {tuple(W.shape)} -> {tuple(want.shape)}")
        expect(bool(torch.isfinite(got).all()) and torch.allclose(got[..., 0], torch.zeros(3), atol=1e-4),
               "a feature with zero norm must get D = 0 (guard the division, e.g. clamp_min the norm)")
        expect(torch.allclose(got, want, atol=1e-4),
               "project the others on feature i's unit direction W_i / ||W_i|| (not on W_i itself): "
               "the answer must not change when all of W is scaled")

    return check("feature_dimensionality", learner, feature_dimensionality_reference, test,
                 "a feature's dimensionality is its squared length divided by how much of its direction it shares: the "
                 "sum over all features of their squared projections on it (itself included)",
                 how="for each feature take the squared length of its column; turn the column into a unit vector; project "
                     "every feature's column on that unit vector, square, and sum over features; divide the first by "
                     "the second. Do it for every instance at once")


def _phase_cases() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Known 1-D (2 features) and 2-D (3 features) models with their phases (ints of toy.PHASES)."""
    one_d = torch.tensor([[[1.0, -1.0]],   # antipodal pair: superposition
                          [[1.0, 0.0]],    # extra dropped: not represented
                          [[0.0, 1.0]],    # other dropped, extra owns the dimension: dedicated
                          [[1.0, 0.3]],    # extra too short: not represented
                          [[0.4, -1.0]],   # a short other sharing 0.16 (< 0.2) of the extra's direction: dedicated
                          [[0.6, -0.6]]])  # a short pair (norm 0.6): superposition
    s = math.sqrt(0.3)
    two_d = torch.tensor([[[1.0, -1.0, 0.0], [0.0, 0.0, 1.0]],    # a pair on one axis, extra on the other: dedicated
                          [[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]],    # extra in the pair: superposition
                          [[s, 0.0, 0.6], [0.0, 1.0, 0.0]],       # extra of norm 0.6 sharing 0.3 with feature 0
                          [[1.0, 0.0, -0.45], [0.0, 1.0, 0.0]],   # extra of norm 0.45 opposite feature 0
                          [[1.0, -0.5, -0.5], [0.0, 0.866, -0.866]],  # a triangle: superposition
                          [[1.0, -1.0, 0.3], [0.0, 0.0, 0.95]],   # tilted off the pair's axis, 2 x 0.09: dedicated
                          [[0.387, -0.387, 1.0], [0.9, 0.9, 0.0]]])  # two others sharing 0.15 each: 0.3 in all
    return one_d, torch.tensor([2, 0, 1, 0, 1, 2]), two_d, classify_phase_reference(two_d)


def classify_phase(learner: Callable) -> Callable:
    """Check ``classify_phase(W) -> (...) ints`` on hand-made 1-D and 2-D models and random stacks."""

    def test(fn):
        one_d, want1, two_d, want2 = _phase_cases()
        got1 = fn(one_d)
        expect(isinstance(got1, torch.Tensor) and got1.shape == (len(one_d),),
               f"return one phase per model, an int tensor of shape W.shape[:-2] = ({len(one_d)},); got "
               f"{tuple(got1.shape) if isinstance(got1, torch.Tensor) else type(got1).__name__}")
        expect(not got1.is_floating_point() and not got1.is_complex() and got1.dtype != torch.bool,
               f"return integers indexing toy.PHASES (0, 1, 2), not {got1.dtype}")
        got2 = fn(two_d)
        if torch.equal(got1.long(), want1) and torch.equal(got2.long(), want2):
            g = torch.Generator().manual_seed(0)
            W = torch.randn(4, 5, 2, 3, generator=g) * torch.rand(4, 5, 1, 3, generator=g)
            got = fn(W)
            expect(isinstance(got, torch.Tensor) and got.shape == (4, 5),
                   "keep the leading dimensions: W of shape (4, 5, m, n) gives phases of shape (4, 5)")
            expect(torch.equal(got.long(), classify_phase_reference(W)),
                   "on random stacks of models your phases differ from the rule: norm < 0.5 first, then the "
                   "others' squared projections on the extra feature's unit direction > 0.2")
            return
        expect(not torch.equal(got1.long(), torch.tensor([2, 1, 0, 1, 0, 2])),
               "read the extra feature, the last column W[..., -1], not the first")
        expect(not torch.equal(got1.long(), torch.tensor([2, 0, 2, 0, 2, 2])),
               "leave the extra feature out of its own sum: its projection on itself is ||W_extra||^2, which "
               "would call every represented feature superposition")
        expect(int(got1[3]) == 0 and int(got2[3]) == 0,
               "check the norm first: a feature with ||W_extra|| < 0.5 is not represented, whatever it overlaps")
        expect(int(got2[2]) == 2,
               "project on the extra feature's unit direction W_extra / ||W_extra||, not on W_extra itself: "
               "a short extra feature that shares 0.3 of its direction is in superposition")
        expect(int(got1[4]) == 1 and int(got2[5]) == 1,
               "superposition needs the others' squared projections to add up to more than 0.2 (the notebook's "
               "threshold): a sum of 0.16 or 0.18 is still a dedicated dimension")
        expect(int(got2[6]) == 2,
               "add up the squared projections of all the other features, not only the largest: two features that "
               "each share 0.15 of the extra feature's direction share 0.3 together, which is superposition")
        expect(False, f"the phases should be {want1.tolist()} (1-D cases) and {want2.tolist()} (2-D cases); got "
               f"{got1.tolist()} and {got2.tolist()}")

    return check("classify_phase", learner, classify_phase_reference, test,
                 "look at the extra (last) feature: too short and it is not represented (0); long but sharing its "
                 "direction with the other features, it is in superposition (2); otherwise it owns a dimension (1)",
                 how="take the last column's length and unit direction; project the other features on that direction "
                     "and add up the squared projections (all of them: the total, not the largest). A length below 0.5 "
                     "gives 0; otherwise a shared total above 0.2 gives 2, anything else 1")


def _tegum_example() -> torch.Tensor:
    """10-D: a pentagon (features 0-4) in dims 0-1, an antipodal pair (5, 6) on dim 2, a chain
    7-8-9 in dims 3-4 where 7 and 9 are orthogonal, one dropped feature (10), one alone (11) on dim 5,
    two short features (12, 13: norm 0.6, cosine 0.2, dot 0.072) in dims 6-7 that do not interfere,
    and two orthogonal features (14, 15) in dims 8-9 that a dropped feature (16, norm 0.45) overlaps."""
    W = torch.zeros(10, 17)
    W[6, 12], W[6, 13], W[7, 13] = 0.6, 0.6 * 0.2, 0.6 * math.sqrt(1 - 0.2**2)
    W[8, 14], W[9, 15], W[8, 16], W[9, 16] = 1.0, 1.0, 0.45 * math.sqrt(0.5), 0.45 * math.sqrt(0.5)
    W[:2, :5] = _pentagon()
    W[2, 5], W[2, 6] = 1.0, -1.0
    s = math.sqrt(0.5)
    W[3, 7], W[3, 8], W[4, 8], W[4, 9] = 1.0, s, s, 1.0
    W[0, 10] = 0.05
    W[5, 11] = 1.0
    return W


def tegum_factors(learner: Callable) -> Callable:
    """Check ``tegum_factors(W, threshold=0.1) -> list of lists`` on a W of known factors and a random one."""

    def test(fn):
        W = _tegum_example()
        got = fn(W, 0.1)
        expect(isinstance(got, (list, tuple)), f"return a list of groups (lists of feature indices); got {type(got).__name__}")
        got = sorted((sorted(int(i) for i in g) for g in got), key=lambda g: (-len(g), g[0]))
        want = tegum_factors_reference(W, 0.1)
        if got == want:
            g = torch.Generator().manual_seed(1)
            Wr = torch.randn(8, 30, generator=g) * (torch.rand(30, generator=g) > 0.2) * 0.4
            r = sorted((sorted(int(i) for i in grp) for grp in fn(Wr, 0.3)), key=lambda g: (-len(g), g[0]))
            expect(r == tegum_factors_reference(Wr, 0.3),
                   "on a random W the groups differ from the reference: use the threshold you are given, "
                   "and ||W_i|| > 0.5 for 'represented'")
            return
        flat = [i for g in got for i in g]
        expect(10 not in flat, "leave out features that are not represented (||W_i|| <= 0.5): feature 10 has norm 0.05")
        expect([5] not in got, "use |W_i . W_j|: an antipodal pair has W_i . W_j = -1 and belongs together")
        expect([7, 8] not in got and [8, 9] not in got and [7, 8, 9] in got,
               "a factor is a connected component: 7 and 9 are orthogonal but both linked to 8, so 7, 8, 9 is one factor")
        expect(sorted(flat) == sorted(set(flat)), "each feature belongs to exactly one factor")
        expect(not any(12 in g and 13 in g for g in got),
               "link on the raw dot product |W_i . W_j|, not the cosine: features 12 and 13 (norm 0.6, cosine 0.2) "
               "interfere by only 0.072, below the threshold")
        expect(not any(14 in g and 15 in g for g in got),
               "leave out unrepresented features before linking: feature 16 (norm 0.45, dropped) overlaps both 14 "
               "and 15, which do not interfere with each other, and must not join them")
        expect(False, f"the factors should be {want}; got {got}")

    return check("tegum_factors", learner, tegum_factors_reference, test,
                 "features that interfere belong to one factor: link two represented features when the size of their "
                 "raw dot product exceeds the threshold; the factors are the connected groups of links",
                 how="leave out unrepresented features before linking (a short one must not bridge two groups); use the "
                     "raw dot products of the columns, not cosines; then collect the connected groups by a search from "
                     "each feature not yet visited")
