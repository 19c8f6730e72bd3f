"""Checks for notebook 01's exercises: the toy model's forward pass and importance-weighted loss,
the sparse feature sampler and the anticorrelated-pair sampler. The checks that read a trained W
(the phase of an extra feature, feature dimensionality, tegum factors) live in
``helpers.course.checks.toy_geometry`` and are re-exported here, so ``checks.toy.<name>`` finds them all.

Each check runs the reader's function on small cases whose answers are known (or computed by
the reference) and returns the function the notebook goes on with (see
``helpers.course.exercises.check``).
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch

from helpers.course.checks.toy_geometry import (classify_phase, classify_phase_reference, feature_dimensionality,
                                         feature_dimensionality_reference, tegum_factors, tegum_factors_reference)
from helpers.course.checks.common import expect_reproducible, expect_same_gradients, reject, same, shape_of
from helpers.course.exercises import check, expect
from helpers.toy.data import FeatureSampler
from helpers.toy.model import toy_loss as package_toy_loss

__all__ = ["toy_loss", "toy_loss_reference", "neuron_loss", "neuron_loss_reference", "sample_features", "sample_features_reference",
           "sample_anticorrelated_pairs", "sample_anticorrelated_pairs_reference",
           "feature_dimensionality", "feature_dimensionality_reference", "classify_phase", "classify_phase_reference",
           "tegum_factors", "tegum_factors_reference"]


# --------------------------------------------------------------------------------------
# References: the package's loss and sampler where it has them
# --------------------------------------------------------------------------------------
def toy_loss_reference(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor, importance: torch.Tensor) -> torch.Tensor:
    """Per-instance loss (inst,) of the ReLU toy model: ``helpers.toy.model.toy_loss``, what
    ``ToyModel.loss`` trains. W (inst, m, n), b (inst, n), x (inst, batch, n), importance (inst, n)."""
    return package_toy_loss(W, b, x, importance, "relu")


def neuron_loss_reference(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor, importance: torch.Tensor) -> torch.Tensor:
    """Per-instance loss (inst,) of the neuron model: h = ReLU(W x), x' = ReLU(W^T h + b), then
    sum_i I_i (x_i - x'_i)^2, averaged over the batch. Shapes as in ``toy_loss_reference``. (The
    package has no function for it: ``helpers.toy.neuron_sweep`` trains the model inline.)"""
    h = torch.relu(torch.einsum("imn,ibn->ibm", W, x))  # (inst, batch, m): the neurons
    x_hat = torch.relu(torch.einsum("imn,ibm->ibn", W, h) + b[:, None, :])  # (inst, batch, n)
    return (importance[:, None, :] * (x - x_hat) ** 2).sum(-1).mean(-1)


def sample_features_reference(p: torch.Tensor, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """x (inst, batch, n) from the course's sampler, ``helpers.toy.FeatureSampler``."""
    return FeatureSampler(p)(batch, generator)


def sample_anticorrelated_pairs_reference(p: torch.Tensor, batch: int,
                                          generator: torch.Generator | None = None) -> torch.Tensor:
    """x (inst, batch, n) from ``helpers.toy.FeatureSampler`` with the features in anticorrelated
    pairs (0, 1), (2, 3), ...: one uniform per pair switches on at most one partner."""
    return FeatureSampler(p, n_anticorrelated_pairs=p.shape[1] // 2)(batch, generator)


# --------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------
_close = partial(same, tol=1e-4)
"""The loss checks' comparison: the losses sum many squared errors, so a looser tolerance."""


def _draw(fn: Callable, p: torch.Tensor, batch: int = 40_000) -> torch.Tensor:
    """The learner's sampler on ``p`` (inst, n) with a seeded generator: x (inst, batch, n) as floats,
    after checking its shape and range."""
    x = fn(p, batch, torch.Generator().manual_seed(0))
    want = (p.shape[0], batch, p.shape[1])
    expect(isinstance(x, torch.Tensor) and x.shape == want,
           f"return x of shape (inst, batch, n) = {want}; got {shape_of(x)}")
    x = x.float()
    expect(bool((x >= 0).all() and (x <= 1).all()), "feature values must lie in [0, 1]")
    return x


def _expect_sampler(fn: Callable, p: torch.Tensor, x: torch.Tensor, inst: int, i: int, j: int, both: float,
                    independent: str) -> None:
    """What every sampler must do beyond its rates (``x``: its draw on ``p``): active features take
    uniform values; features i and j of instance ``inst`` are on together at the rate ``both`` of
    independent features (else fail with ``independent``); active features of one sample take
    their own values, not one value shared by the sample; and every draw goes through
    ``generator`` (same seed, same batch; another seed, another; the global generator untouched)."""
    _expect_uniform_values(x[x > 0])
    a, c = (x[inst, :, i] > 0).float(), (x[inst, :, j] > 0).float()
    expect(abs(float((a * c).mean()) - both) < 0.01, independent)
    several = (x > 0).sum(-1) >= 2                                         # (inst, batch)
    top = x.max(-1).values
    low = torch.where(x > 0, x, torch.full_like(x, 2.0)).min(-1).values
    shared = float(((top - low).abs() < 1e-7)[several].float().mean())
    expect(shared < 0.01, f"in {shared:.0%} of the samples with several active features they all have the same value: "
           "draw one value per feature (a uniform tensor of shape (inst, batch, n)), not one per sample")
    one = expect_reproducible(lambda: fn(p, 64, torch.Generator().manual_seed(7)),
                              "use the generator you are given for every draw (pass generator=generator to each "
                              "torch.rand): two calls with the same seed gave different samples, or the global random "
                              "state moved")
    other = fn(p, 64, torch.Generator().manual_seed(8))
    expect(not torch.equal(one, other), "another seed must give another batch: draw from the generator, not a constant")


def _expect_uniform_values(active: torch.Tensor) -> None:
    """The values of active features must be uniform in [0, 1]."""
    expect(not bool((active > 0.999).all()), "an active feature's value is uniform in [0, 1], not always 1")
    expect(abs(float(active.mean()) - 0.5) < 0.02 and abs(float(active.var()) - 1 / 12) < 0.01,
           f"an active feature's value must be uniform in [0, 1] (mean 1/2, variance 1/12); got mean "
           f"{float(active.mean()):.3f}, variance {float(active.var()):.4f}")


def _weighted(x: torch.Tensor, x_hat: torch.Tensor, importance: torch.Tensor) -> torch.Tensor:
    """The toy models' loss of a reconstruction: sum_i I_i (x_i - x_hat_i)^2, averaged over the batch."""
    return (importance[:, None] * (x - x_hat) ** 2).sum(-1).mean(-1)


def _expect_loss(fn: Callable, reference: Callable, seed: int, m: int, n: int, density: float, decay: float,
                 mistakes: Callable[..., list], otherwise: str) -> None:
    """Run a learner's toy-model loss on a small case with three instances of different importance:
    it passes with the reference's values and gradients; otherwise it fails with the first mistake
    it matches, the sums over the wrong axis (every such loss can make them) and then the model's own
    ``mistakes(W, b, x, importance)``, or else with ``otherwise``."""
    g = torch.Generator().manual_seed(seed)
    I, B = 3, 64
    W, b = torch.randn(I, m, n, generator=g), 0.3 * torch.randn(I, n, generator=g)  # mixed signs
    x = torch.rand(I, B, n, generator=g) * (torch.rand(I, B, n, generator=g) < density)
    imp = decay ** torch.arange(n, dtype=torch.float32).expand(I, n) * torch.tensor([[1.0], [2.0], [0.5]])
    W, b = W.requires_grad_(), b.requires_grad_()
    got = fn(W, b, x, imp)
    want = reference(W, b, x, imp)
    expect(isinstance(got, torch.Tensor) and got.shape == (I,),
           f"return one loss per instance, shape ({I},); got {shape_of(got)}")
    if same(got, want, 1e-4):
        expect_same_gradients(got, want, {"W": W, "b": b}, "your loss has the right values but no gradient: it must be "
                              "computed from W and b with torch operations (no torch.tensor(...) of numbers, no "
                              ".item()/.tolist(), no torch.no_grad())", lambda name: (
                                  f"your loss has the right values but the wrong gradient with respect to {name}: part "
                                  f"of the computation is cut from the graph ({name}.detach(), {name}.data or a copy "
                                  "made with numbers), so training would follow the wrong direction"), rtol=1e-4, atol=1e-6)
        return
    W, b = W.detach(), b.detach()
    reject(got, [(reference(W, b, x, torch.ones_like(imp)), "your loss is not weighted by importance: multiply "
                  "feature i's squared error by importance[:, i]"),
                 (want / n, "average over the batch, but sum over the features (not .mean() over both)"),
                 (want * B, "average over the batch rather than summing over it")] + mistakes(W, b, x, imp),
           _close, otherwise)


def _toy_mistakes(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor, imp: torch.Tensor) -> list:
    z = torch.einsum("imn,ibm->ibn", W, torch.einsum("imn,ibn->ibm", W, x))  # W^T W x
    return [(_weighted(x, z + b[:, None], imp), "apply the ReLU to W^T W x + b: without it the model is linear and "
                                                "cannot filter interference"),
            (_weighted(x, torch.relu(z), imp), "add the bias b inside the ReLU: x' = ReLU(W^T W x + b)")]


def toy_loss(learner: Callable) -> Callable:
    """Check ``toy_loss(W, b, x, importance) -> (inst,)`` against the reference."""
    return check("toy_loss", learner, toy_loss_reference, lambda fn: _expect_loss(
                     fn, toy_loss_reference, 0, 2, 5, 0.4, 0.7, _toy_mistakes, "the loss differs from sum_i I_i (x_i - "
                     "ReLU(W^T W x + b)_i)^2 averaged over the batch; check h = W x (shape (inst, batch, m)) and "
                     "x' = W^T h + b"),
                 "the loss is the importance-weighted squared error of the reconstruction ReLU(W^T W x + b), summed over "
                 "features and averaged over the batch, for each instance separately",
                 how="map each sample into the hidden space with W and back with W's transpose, add the bias, apply the "
                     "ReLU; square the difference with the input, weight each feature by its importance, sum over "
                     "features, average over the batch. Keep the instance axis first throughout, and keep every step "
                     "differentiable: no detaching and no conversion to Python numbers, or training sees no gradient")


def _neuron_mistakes(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor, imp: torch.Tensor) -> list:
    pre = torch.einsum("imn,ibn->ibm", W, x)  # (inst, batch, m) before the neurons' ReLU
    back = lambda h: torch.einsum("imn,ibm->ibn", W, h)  # noqa: E731  (inst, batch, n): W^T h
    return [(_weighted(x, torch.relu(back(pre) + b[:, None]), imp), "put a ReLU on the neurons, h = ReLU(W x): "
             "without it this is exercise 1's model, whose hidden space has no privileged directions"),
            (_weighted(x, back(torch.relu(pre)) + b[:, None], imp), "keep the ReLU on the output too: "
             "x' = ReLU(W^T h + b)"),
            (_weighted(x, torch.relu(back(torch.relu(pre))) + b[:, None], imp), "add the bias inside the output ReLU: "
             "x' = ReLU(W^T h + b), not ReLU(W^T h) + b"),
            (_weighted(x, torch.relu(back(torch.relu(torch.einsum("imn,ibn->ibm", W, x + b[:, None])))), imp),
             "the bias b belongs to the output, after W^T h: the neurons have no bias in this model")]


def neuron_loss(learner: Callable) -> Callable:
    """Check ``neuron_loss(W, b, x, importance) -> (inst,)`` against the reference, values and gradients."""
    return check("neuron_loss", learner, neuron_loss_reference, lambda fn: _expect_loss(
                     fn, neuron_loss_reference, 1, 3, 6, 0.5, 0.75, _neuron_mistakes, "the loss differs from sum_i "
                     "I_i (x_i - ReLU(W^T ReLU(W x) + b)_i)^2 averaged over the batch; check h = ReLU(W x) (shape "
                     "(inst, batch, m)) and x' = ReLU(W^T h + b) (shape (inst, batch, n))"),
                 "the same importance-weighted squared error as exercise 1, for a model whose hidden layer is a row of "
                 "neurons: a ReLU acts on each hidden value before the way back",
                 how="map each sample into the hidden space with W and apply the ReLU there (the neurons); map back "
                     "with W's transpose, add the bias, apply the output ReLU; weight each feature's squared error by "
                     "its importance, sum over features, average over the batch, one loss per instance. Keep every "
                     "step differentiable")


def sample_features(learner: Callable) -> Callable:
    """Check ``sample_features(p, batch, generator) -> (inst, batch, n)`` by its statistics."""

    def test(fn):
        p = torch.tensor([[0.05, 0.2, 0.5, 0.9], [0.01, 0.3, 0.3, 1.0]])
        x = _draw(fn, p)
        on = (x > 0).float().mean(1)  # (inst, n): how often each feature is on
        expect(not torch.allclose(on, 1 - p, atol=0.02) or torch.allclose(on, p, atol=0.02),
               "features must be on with probability p, not 1-p (compare the uniform draw with u < p)")
        expect(torch.allclose(on, p, atol=0.015),
               f"feature i must be on with probability p[inst, i]: wanted {p.tolist()}, got "
               f"{[[round(v, 3) for v in r] for r in on.tolist()]}")
        _expect_sampler(fn, p, x, 0, 1, 2, 0.2 * 0.5, "features must switch on independently of each other: draw "
                                                        "one uniform per feature and sample")

    return check("sample_features", learner, sample_features_reference, test,
                 "each feature is on with its own probability p and, when on, takes a uniform value in [0, 1); every "
                 "random draw comes from the generator you are given, so a seed gives the same batch every time",
                 how="draw one uniform number per instance, sample and feature and compare it with p (broadcast over "
                     "the batch) to decide which features are on; draw a second, independent uniform tensor of the same "
                     "shape for the values; multiply. Both draws take the generator")


def sample_anticorrelated_pairs(learner: Callable) -> Callable:
    """Check ``sample_anticorrelated_pairs(p, batch, generator) -> (inst, batch, n)`` by its statistics."""

    def test(fn):
        p = torch.tensor([[0.1, 0.3, 0.4, 0.2, 0.05, 0.05], [0.5, 0.5, 0.2, 0.2, 0.3, 0.1]])
        x = _draw(fn, p)
        on = x > 0  # (inst, B, n)
        both = (on[..., 0::2] & on[..., 1::2]).float().mean(1)  # (inst, pairs): partners on together
        if bool((both > 0.005).any()):
            apart = (on[..., :3] & on[..., 3:]).float().mean(1)  # (i, i + n/2)
            expect(not bool((apart < 1e-4).all()), "partners are neighbours, (0, 1), (2, 3), ...: "
                   "feature 2k and feature 2k+1 must never be on together, not k and k + n/2")
            expect(False, "partners must never be on together: one uniform draw per pair decides which of the "
                   "two (if either) is on")
        rate = on.float().mean(1)
        expect(torch.allclose(rate, p, atol=0.015),
               f"feature i must be on with probability p[inst, i]: give the first partner u < p_a and the second "
               f"p_a <= u < p_a + p_b of the same draw; wanted {p.tolist()}, got "
               f"{[[round(v, 3) for v in r] for r in rate.tolist()]}")
        _expect_sampler(fn, p, x, 1, 0, 2, 0.5 * 0.2,  # features 0 and 2 belong to two different pairs
                        "different pairs must switch on independently of each other: draw one uniform per pair, not "
                        "one per sample")

    return check("sample_anticorrelated_pairs", learner, sample_anticorrelated_pairs_reference, test,
                 "features come in pairs (0, 1), (2, 3), ...; in a sample at most one feature of a pair is on: the "
                 "first with its probability, the second with its own, never both",
                 how="use one uniform number per pair and sample: below the first feature's probability turns the first "
                     "on, between that and the sum of both probabilities turns the second on. Put the two on/off masks "
                     "back in feature order (each pair's two members side by side), then multiply by uniform values; "
                     "every draw takes the generator")


