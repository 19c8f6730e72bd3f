"""Toy models of superposition: the paper's reference results, hand-written gradients, data.

The 5-features-in-2-D checks train every density as one stack (best of 3 seeds), as the
notebook does, so each takes about a second on a CPU.
"""
import math

import numpy as np
import pytest
import torch

from helpers import toy

DENSE, SPARSE = 1.0, 0.02
DENSITIES = (0.01, SPARSE, 0.05, 0.1, 0.3, DENSE)


@pytest.fixture(scope="module")
def five_in_two():
    """readout -> Sweep of 5 features (importance 0.9^i) in 2-D over DENSITIES."""
    return {r: toy.sweep(DENSITIES, (0.9,), readout=r, n_seeds=3, steps=1500, batch_size=512, progress=False)
            for r in toy.READOUTS}


def _W(sweep, density):
    return sweep.W[0, DENSITIES.index(density)]


# --------------------------------------------------------------------------------------
# Reference results
# --------------------------------------------------------------------------------------
def test_dense_keeps_exactly_the_two_most_important_features(five_in_two):
    W = _W(five_in_two["relu"], DENSE)
    norms = toy.feature_norms(W)
    assert torch.allclose(norms[:2], torch.ones(2), atol=0.1), (
        f"dense ReLU model: features 0 and 1 (the most important) should have norm ~1, got {norms.tolist()}")
    assert norms[2:].max() < 0.2, (
        f"dense ReLU model: features 2-4 should be dropped (norm ~0), got {norms.tolist()}; "
        "if the third is half-way, training has not converged (raise lr or steps)")
    cos = (W[:, 0] @ W[:, 1]) / (norms[0] * norms[1])
    assert abs(cos) < 0.1, f"the two kept features should be orthogonal, cosine {cos:.3f}"


@pytest.mark.parametrize("density", [0.01, SPARSE, 0.05])
def test_sparse_features_form_a_pentagon(five_in_two, density):
    W = _W(five_in_two["relu"], density)
    norms = toy.feature_norms(W)
    assert norms.min() > 0.8 and norms.max() < 1.3, (
        f"density {density}: all 5 features should be represented with norm ~1, got {norms.tolist()}")
    poly = toy.polygon(W)
    assert poly.n_vertices == 5 and poly.regular, (
        f"density {density}: expected a regular pentagon (neighbouring angles ~72 deg), got gaps "
        f"{np.round(poly.gaps_deg, 1).tolist()}")


def test_linear_readout_never_represents_more_than_two_features(five_in_two):
    counts = toy.n_represented(five_in_two["linear"].W[0])
    assert counts.max() <= 2, (
        f"a linear model cannot filter interference, so it keeps at most d_hidden=2 features; "
        f"got {counts.tolist()} over densities {DENSITIES}")
    norms = toy.feature_norms(five_in_two["linear"].W[0])
    assert (norms[:, :2] > 0.9).all(), f"it keeps the top-2 features (like PCA), norms {norms.tolist()}"


def test_softmax_readout_can_use_superposition(five_in_two):
    W = _W(five_in_two["softmax"], SPARSE)
    assert int(toy.n_represented(W, relative=True)) == 5, (
        f"a softmax readout filters interference like a ReLU: at density {SPARSE} all 5 features "
        f"should get a direction, norms {toy.feature_norms(W).tolist()}")
    assert toy.polygon(W, relative=True).regular, "sparse softmax model: expected a regular pentagon"


def test_phase_diagram_has_the_three_phases():
    pd = toy.phase_diagram(d_hidden=1, grid=4, n_seeds=4, steps=1500, density_range=(0.01, 1.0),
                           importance_range=(0.2, 5.0), progress=False)
    # rows: importance (low -> high), columns: density (sparse -> dense)
    assert pd.phase[-1, -1] == 1, "dense and extra feature more important: it should own the dimension"
    assert pd.phase[0, -1] == 0, "dense and extra feature less important: it should be dropped"
    assert (pd.phase[:, 0] == 2).all(), f"sparse: the two features should share the dimension, got {pd.phase[:, 0]}"
    assert pd.n_models == 4 * 4 * 4


def test_anticorrelated_pairs_go_antipodal_and_correlated_pairs_merge():
    pr = toy.pair_experiment((0.3,), n_pairs=3, d_hidden=3, n_seeds=4, steps=1500, batch_size=512, progress=False)
    ang = dict(zip(pr.kinds, pr.partner_angle[:, 0]))
    assert (ang["anticorrelated"] > 170).all(), (
        f"never-co-active partners should share a dimension antipodally (octahedron), angles {ang['anticorrelated']}")
    assert (ang["correlated"] < 20).all(), (
        f"always-co-active partners at density 0.3 in too few dims should merge into one direction, {ang['correlated']}")


def test_abs_models_compute_in_superposition_only_when_sparse():
    res = toy.abs_sweep((0.01, 0.03, 1.0), n_features=20, d_hidden=10, n_seeds=3, steps=1500, batch_size=512,
                        progress=False)
    worth = np.clip(res.explained, 0, 1).sum(1)
    poly = toy.polysemantic_neurons(res.W1)
    assert poly[-1] == 0, f"dense |x| model: neurons should be monosemantic, {int(poly[-1])} polysemantic"
    assert worth[-1] < 5.5, f"dense: at most 10 / 2 features computed (two ReLUs each), got {worth[-1]:.2f}"
    assert worth[0] > 6 and poly[0] >= 6, (
        f"sparse |x| model: expected more than 5 features' worth computed with polysemantic neurons, "
        f"got {worth[0]:.2f} computed and {int(poly[0])} polysemantic neurons")


# --------------------------------------------------------------------------------------
# Geometry readers
# --------------------------------------------------------------------------------------
def test_feature_dimensionality_of_known_shapes():
    ang = torch.arange(5) * 2 * math.pi / 5
    pentagon = torch.stack([ang.cos(), ang.sin()])
    assert torch.allclose(toy.feature_dimensionality(pentagon), torch.full((5,), 0.4), atol=1e-5)
    digon = torch.tensor([[1.0, -1.0, 0.0], [0.0, 0.0, 0.0]])
    assert torch.allclose(toy.feature_dimensionality(digon), torch.tensor([0.5, 0.5, 0.0]), atol=1e-5)
    poly = toy.polygon(pentagon)
    assert poly.n_vertices == 5 and poly.regular and np.allclose(poly.gaps_deg, 72)


# --------------------------------------------------------------------------------------
# Training machinery
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("readout", toy.READOUTS)
@pytest.mark.parametrize("d_hidden", [1, 3])
def test_hand_written_gradients_match_autograd(readout, d_hidden):
    cfg = toy.ToyConfig(n_features=6, d_hidden=d_hidden, n_instances=3, feature_probability=[[0.1], [0.3], [0.45]],
                        importance=toy.decay_importance(6, 0.8), readout=readout, n_anticorrelated_pairs=1,
                        batch_size=64, seed=1)
    model = toy.ToyModel(cfg)
    model.b = torch.randn_like(model.b) * 0.1  # a non-zero bias exercises the ReLU mask
    step = toy._Step(model, cfg.batch_size)
    x = step.data(torch.Generator().manual_seed(0))  # (inst, n, batch)
    gW, gb = torch.empty_like(model.W), torch.empty_like(model.b)
    step.grads(x, gW, gb, with_loss=False)
    W, b = model.W.clone().requires_grad_(), model.b.clone().requires_grad_()
    toy.toy_loss(W, b, x.transpose(1, 2), model.importance, readout).sum().backward()
    assert torch.allclose(gW, W.grad, atol=1e-5, rtol=1e-4), f"{readout}: dL/dW differs from autograd"
    assert torch.allclose(gb, b.grad, atol=1e-5, rtol=1e-4), f"{readout}: dL/db differs from autograd"


def test_training_matches_torch_adam():
    """A few steps of the fused trainer equal autograd + torch.optim.Adam on the same batches."""
    cfg = toy.ToyConfig(n_features=5, d_hidden=2, n_instances=2, feature_probability=[[0.05], [0.5]],
                        importance=toy.decay_importance(5, 0.9), steps=5, batch_size=32, lr=1e-2,
                        lr_schedule="constant", seed=3, eval_samples=64)
    model = toy.ToyModel(cfg)
    W = torch.nn.Parameter(model.W.clone())
    b = torch.nn.Parameter(model.b.clone())
    opt = torch.optim.Adam([W, b], lr=cfg.lr)
    sampler = toy._Sampler(cfg, model.feature_probability, cfg.batch_size, keep_buffers=False)
    gen = torch.Generator().manual_seed(toy._stream_seed(cfg.seed, "data"))
    for _ in range(cfg.steps):
        x = sampler(gen).transpose(1, 2)
        opt.zero_grad()
        toy.toy_loss(W, b, x, model.importance, "relu").sum().backward()
        opt.step()
    toy.train(model, progress=False)
    assert torch.allclose(model.W, W.detach(), atol=1e-5), "the fused Adam diverged from torch.optim.Adam"
    assert torch.allclose(model.b, b.detach(), atol=1e-5)


def test_data_has_the_configured_density_and_pairing():
    cfg = toy.ToyConfig(n_features=6, n_instances=2, feature_probability=[[0.1], [0.4]],
                        n_correlated_pairs=1, n_anticorrelated_pairs=1)
    x = toy.ToyModel(cfg).sample(20_000, torch.Generator().manual_seed(0))  # (inst, batch, n)
    on = x > 0
    freq = on.float().mean(1)
    assert torch.allclose(freq, torch.tensor([[0.1], [0.4]]).expand(2, 6), atol=0.015), f"densities {freq}"
    assert (on[..., 0] == on[..., 1]).all(), "correlated partners must be on together"
    assert not (on[..., 2] & on[..., 3]).any(), "anticorrelated partners must never be on together"
    assert x.max() <= 1 and x[on].min() > 0, "feature values lie in (0, 1]"


def test_best_of_seeds_keeps_the_lowest_loss():
    cfg = toy.ToyConfig(n_instances=2, feature_probability=[[0.05], [0.5]], steps=200, batch_size=128,
                        eval_samples=1024)
    best = toy.best_of_seeds(cfg, 3, progress=False)
    assert best.seed_loss.shape == (2, 3) and best.W.shape == (2, 2, 5)
    assert np.allclose(best.loss, best.seed_loss.min(1))


def test_bad_arguments_say_what_to_do():
    with pytest.raises(ValueError, match="readout"):
        toy.ToyConfig(readout="tanh")
    with pytest.raises(ValueError, match="broadcast"):
        toy.ToyConfig(n_features=5, feature_probability=[0.1, 0.2])
    with pytest.raises(ValueError, match="anticorrelated"):
        toy.ToyConfig(n_features=4, feature_probability=0.6, n_anticorrelated_pairs=1)
    with pytest.raises(ValueError, match="0.5"):
        toy.pair_experiment((0.7,), progress=False)
    with pytest.raises(ValueError, match="2 hidden"):
        toy.polygon(torch.zeros(3, 5))
