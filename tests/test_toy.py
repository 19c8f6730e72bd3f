"""Toy models of superposition: the paper's reference results, the loss that trains, data, errors.

The 5-features-in-2-D checks train every density as one stack (best of 3 seeds) through the
default autograd trainer, as the notebook does, so each takes a few seconds on a CPU.
"""
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from helpers import toy
from helpers.device import stream_seed

DENSE, SPARSE = 1.0, 0.02
DENSITIES = (0.01, SPARSE, 0.05, 0.1, 0.3, DENSE)


@pytest.fixture(scope="module")
def five_in_two():
    """readout -> Sweep of 5 features (importance 0.9^i) in 2-D over DENSITIES."""
    return {r: toy.sweep(toy.ToyConfig(readout=r, steps=1500, batch_size=256), DENSITIES, (0.9,), n_seeds=3,
                         progress=False)
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
        f"density {density}: expected a regular pentagon (neighbouring angles 72 +- 10 deg), got gaps "
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
    poly = toy.polygon(W, relative=True)
    assert poly.regular, (
        f"sparse softmax model: expected a regular pentagon, gaps {np.round(poly.gaps_deg, 1).tolist()}")


def test_phase_diagram_has_the_three_phases(monkeypatch):
    trained, real_train = [], toy.experiments.train

    def counting_train(model, **kw):  # records how many models each stack it trains holds
        trained.append(model.W.shape[0])
        return real_train(model, **kw)

    monkeypatch.setattr(toy.experiments, "train", counting_train)
    base = toy.ToyConfig(n_features=2, d_hidden=1, steps=1500, batch_size=256)
    pd = toy.phase_diagram(base, grid=4, n_seeds=4, density_range=(0.01, 1.0), importance_range=(0.2, 5.0),
                           progress=False, cache=False)
    # rows: importance (low -> high), columns: density (sparse -> dense)
    assert pd.phase[-1, -1] == 1, "dense and extra feature more important: it should own the dimension"
    assert pd.phase[0, -1] == 0, "dense and extra feature less important: it should be dropped"
    assert (pd.phase[:, 0] == 2).all(), f"sparse: the two features should share the dimension, got {pd.phase[:, 0]}"
    assert pd.n_models == sum(trained), (
        f"the phase diagram reports {pd.n_models} models trained, but it trained stacks of {trained} models")


def test_anticorrelated_pairs_go_antipodal_and_correlated_pairs_merge():
    base = toy.ToyConfig(n_features=6, d_hidden=3, steps=1500, batch_size=256)
    pr = toy.pair_experiment(base, (0.3,), n_seeds=4, progress=False)
    ang = dict(zip(pr.kinds, pr.partner_angle[:, 0]))
    assert (ang["anticorrelated"] > 170).all(), (
        f"never-co-active partners should share a dimension antipodally (octahedron), angles {ang['anticorrelated']}")
    assert (ang["correlated"] < 20).all(), (
        f"always-co-active partners at density 0.3 in too few dims should merge into one direction, {ang['correlated']}")


def test_abs_models_compute_in_superposition_only_when_sparse():
    base = toy.ToyConfig(n_features=20, d_hidden=10, steps=1500, batch_size=512)
    res = toy.abs_sweep(base, (0.01, 0.03, 1.0), n_seeds=3, progress=False)
    worth = np.clip(res.explained, 0, 1).sum(1)
    poly = toy.polysemantic_neurons(res.W1)
    assert poly[-1] == 0, f"dense |x| model: neurons should be monosemantic, {int(poly[-1])} polysemantic"
    assert worth[-1] < 5.5, f"dense: at most 10 / 2 features computed (two ReLUs each), got {worth[-1]:.2f}"
    assert worth[0] > 6 and poly[0] >= 6, (
        f"sparse |x| model: expected more than 5 features' worth computed with polysemantic neurons, "
        f"got {worth[0]:.2f} computed and {int(poly[0])} polysemantic neurons")


def test_neurons_read_one_feature_each_only_when_the_relu_makes_them_privileged():
    """The paper's ReLU-hidden-layer model (n=10, m=5, importance 0.75^i): dense, the best seed gives the
    five most important features a neuron each; without the ReLU the hidden units are a rotation (mixed)."""
    base = toy.ToyConfig(n_features=10, d_hidden=5, steps=3000, batch_size=512)
    relu = toy.neuron_sweep(base, (1.0, 0.01), n_seeds=12, progress=False, cache=False)
    linear = toy.neuron_sweep(base, (1.0,), n_seeds=4, hidden="linear", progress=False, cache=False)
    best = relu.loss.argmin(1)
    W = relu.W[0, best[0]]  # (m, n)
    poly = toy.polysemantic_neurons(relu.W[[0, 1], best])
    assert poly[0] == 0 and poly[1] >= 4, f"dense: 0 and sparse: at least 4 of 5 polysemantic neurons expected, got {poly.tolist()}"
    assert sorted(W.abs().argmax(1).tolist()) == [0, 1, 2, 3, 4], (
        f"dense: each of the 5 most important features should own a neuron, neurons read {W.abs().argmax(1).tolist()}")
    ideal = float((toy.decay_importance(10, 0.75)[5:] / 12).sum())  # top 5 exact, the rest at their mean
    assert abs(relu.loss[0, best[0]] / ideal - 1) < 0.02, f"dense loss {relu.loss[0, best[0]]:.4f} vs optimum {ideal:.4f}"
    assert (toy.polysemantic_neurons(linear.W[0]) >= 3).all(), "without the ReLU the hidden units should be mixed"
    with pytest.raises(ValueError, match="hidden"):
        toy.neuron_sweep(base, (1.0,), hidden="gelu")


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


def test_feature_shapes_name_the_polytope_of_each_tegum_factor():
    from helpers.toy.shapes import feature_shapes
    ang = torch.arange(5) * 2 * math.pi / 5
    pentagon = torch.stack([ang.cos(), ang.sin()])  # (2, 5)
    tri = torch.arange(3) * 2 * math.pi / 3
    W = torch.zeros(5, 11)
    W[:2, :5] = pentagon
    W[2:4, 5:8] = torch.stack([tri.cos(), tri.sin()])
    W[4, 8], W[4, 9] = 1.0, -1.0  # feature 10 is dropped
    shapes = feature_shapes(W, toy.feature_dimensionality(W))
    assert shapes == ["pentagon"] * 5 + ["triangle"] * 3 + ["digon"] * 2 + [""]
    squashed = W.clone()
    squashed[1, :5] *= 0.7  # the pentagon squashed: the D_i move off 2/5, no regular shape is left
    assert set(feature_shapes(squashed, toy.feature_dimensionality(squashed))[:5]) == {"other"}


def test_loss_parts_add_up_and_keep_the_bias_apart_from_interference():
    from helpers.toy.loss_parts import loss_parts
    model, x = _model_and_batch("relu", batch=256)
    W, b, imp = model.W.detach(), model.b.detach(), model.importance
    parts = loss_parts(W, b, x, imp)
    assert torch.allclose(sum(parts), model.loss(x).detach(), rtol=1e-4)
    # with W = 0 nothing interferes: an off feature costs exactly its bias
    zero = loss_parts(torch.zeros_like(W), b, x, imp)
    assert torch.allclose(zero.one_other, torch.zeros(3), atol=1e-7) and torch.allclose(zero.several_others, torch.zeros(3), atol=1e-7)
    assert (zero.bias > 0).all()


# --------------------------------------------------------------------------------------
# The loss that trains
# --------------------------------------------------------------------------------------
def _naive_loss(W, b, x, importance, readout):
    """One instance, one sample at a time, straight from the definitions: (inst,)."""
    out = []
    for i in range(W.shape[0]):
        total = 0.0
        for s in range(x.shape[1]):
            xs = x[i, s]  # (n,)
            z = W[i].T @ (W[i] @ xs) + b[i]
            if readout == "softmax":
                if xs.sum() > 0:
                    total = total - (importance[i] * xs / xs.sum() * torch.log_softmax(z, 0)).sum()
            else:
                pred = torch.relu(z) if readout == "relu" else z
                total = total + (importance[i] * (xs - pred) ** 2).sum()
        out.append(total / x.shape[1])
    return torch.stack(out)


def _model_and_batch(readout, d_hidden=2, batch=16):
    cfg = toy.ToyConfig(n_features=6, d_hidden=d_hidden, n_instances=3, feature_probability=[[0.1], [0.3], [0.45]],
                        importance=toy.decay_importance(6, 0.8), readout=readout, n_anticorrelated_pairs=1,
                        batch_size=batch, seed=1)
    model = toy.ToyModel(cfg)
    with torch.no_grad():
        # a non-zero bias exercises the ReLU mask
        model.b.copy_(torch.randn(model.b.shape, generator=torch.Generator().manual_seed(5)) * 0.1)
    return model, model.sample(batch, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("readout", toy.READOUTS)
@pytest.mark.parametrize("d_hidden", [1, 3])  # 1 takes the multiply-and-sum branch of toy.logits
def test_model_loss_equals_a_naive_per_instance_reference(readout, d_hidden):
    model, x = _model_and_batch(readout, d_hidden)
    weights = torch.tensor([0.5, 1.0, 2.0])  # a different upstream gradient per instance
    got = model.loss(x)
    (got * weights).sum().backward()
    W, b = model.W.detach().clone().requires_grad_(), model.b.detach().clone().requires_grad_()
    want = _naive_loss(W, b, x, model.importance, readout)
    (want * weights).sum().backward()
    assert got.shape == (3,), f"ToyModel.loss must return one loss per instance, got shape {tuple(got.shape)}"
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4), (
        f"{readout}: ToyModel.loss {got.tolist()} differs from the per-sample definition {want.tolist()}")
    same_grads = torch.allclose(model.W.grad, W.grad, atol=1e-5, rtol=1e-4) and torch.allclose(model.b.grad, b.grad, atol=1e-5)
    assert same_grads, (
        f"{readout}: the gradients of ToyModel.loss differ from those of the per-sample definition "
        "(instances leaking into each other's gradients?)")


def test_training_matches_a_plain_torch_adam_loop():
    """The trainer equals the loop one would write by hand: same batches, torch.optim.Adam, cosine lr."""
    cfg = toy.ToyConfig(n_features=5, d_hidden=2, n_instances=2, feature_probability=[[0.05], [0.5]],
                        importance=toy.decay_importance(5, 0.9), steps=5, batch_size=32, lr=1e-2,
                        seed=3, eval_samples=64)
    model = toy.ToyModel(cfg)
    W, b = torch.nn.Parameter(model.W.detach().clone()), torch.nn.Parameter(model.b.detach().clone())
    opt = torch.optim.Adam([W, b], lr=cfg.lr, foreach=False)
    gen = torch.Generator().manual_seed(stream_seed(cfg.seed, "toy:data"))
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        x = model.sample(cfg.batch_size, gen)
        opt.zero_grad()
        toy.toy_loss(W, b, x, model.importance, "relu").sum().backward()
        opt.step()
    toy.train(model, progress=False)
    assert torch.allclose(model.W, W, atol=1e-5), "the trainer diverged from a plain Adam loop on the same data"
    assert torch.allclose(model.b, b, atol=1e-5)


def test_by_default_the_trainer_runs_model_loss_uncompiled():
    from helpers.toy.train import loss_function

    model = toy.ToyModel(toy.ToyConfig())
    assert loss_function(model) == model.loss, "without compile=True the trainer must call model.loss itself"


# --------------------------------------------------------------------------------------
# Data and devices
# --------------------------------------------------------------------------------------
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


def test_model_buffers_and_sampler_live_on_the_device_asked_for():
    cfg = toy.ToyConfig(n_features=4, n_instances=3, n_correlated_pairs=1, device="meta")
    model = toy.ToyModel(cfg)
    placed = dict(model.named_parameters()) | dict(model.named_buffers())
    assert set(placed) >= {"W", "b", "feature_probability", "importance"}
    off = {k: str(v.device) for k, v in placed.items() if v.device.type != "meta"}
    assert not off, f"asked for device 'meta', but these tensors are elsewhere: {off}"
    x = model.sample(8)
    assert x.is_meta and x.shape == (3, 8, 4), f"the sampler drew on {x.device} with shape {tuple(x.shape)}"
    assert model.loss(x).is_meta and model(x).is_meta, "the loss and forward must stay on the model's device"


# --------------------------------------------------------------------------------------
# Several seeds, and errors a reader can act on
# --------------------------------------------------------------------------------------
def test_best_of_seeds_keeps_the_lowest_loss():
    cfg = toy.ToyConfig(n_instances=2, feature_probability=[[0.05], [0.5]], steps=200, batch_size=128,
                        eval_samples=1024)
    best = toy.best_of_seeds(cfg, 3, progress=False)
    assert best.seed_loss.shape == (2, 3) and best.W.shape == (2, 2, 5)
    assert (best.seed_loss.max(1) > best.seed_loss.min(1) + 1e-6).all(), "seeds should differ (else nothing to pick)"
    # Re-evaluate the returned weights on their own: they must be the seed with the lowest loss.
    for s in range(2):
        kept = toy.ToyModel(cfg.select(s), best.W[s:s + 1], best.b[s:s + 1])
        again = float(toy.evaluate(kept)[0])
        assert np.isclose(again, best.seed_loss[s].min(), rtol=1e-4), (
            f"setting {s}: the returned W has loss {again:.5g}, but the seeds' losses were "
            f"{best.seed_loss[s].round(5).tolist()}: best_of_seeds picked the wrong instance")


@pytest.mark.parametrize("kwargs, error, name", [
    (dict(importance=float("nan")), ValueError, "importance"),
    (dict(importance=[1.0, -1.0, 1.0, 1.0, 1.0]), ValueError, "importance"),
    (dict(importance=[1.0, math.inf, 1.0, 1.0, 1.0]), ValueError, "importance"),
    (dict(feature_probability=float("nan")), ValueError, "feature_probability"),
    (dict(feature_probability=1.5), ValueError, "feature_probability"),
    (dict(feature_probability=-0.1), ValueError, "feature_probability"),
    (dict(feature_probability="dense"), TypeError, "feature_probability"),
    (dict(feature_probability=[0.1, 0.2]), ValueError, "broadcast"),
    (dict(steps=0), ValueError, "steps"),
    (dict(batch_size=-1), ValueError, "batch_size"),
    (dict(log_every=0), ValueError, "log_every"),
    (dict(steps=10.5), TypeError, "steps"),
    (dict(n_features=np.float64(5)), TypeError, "n_features"),
    (dict(lr=float("nan")), ValueError, "lr"),
    (dict(readout="tanh"), ValueError, "readout"),
    (dict(n_features=4, feature_probability=0.6, n_anticorrelated_pairs=1), ValueError, "anticorrelated"),
])
def test_bad_config_names_the_argument(kwargs, error, name):
    with pytest.raises(error, match=name):
        toy.ToyConfig(**kwargs)


def test_unknown_device_is_refused_by_the_config():
    """ToyConfig(device="gpu") was accepted, and training failed later with torch's own error."""
    with pytest.raises(ValueError, match=r"device='gpu' is not a torch device: use 'cpu', 'cuda'.*leave it None"):
        toy.ToyConfig(device="gpu")
    assert toy.ToyModel(toy.ToyConfig(device="meta")).device.type == "meta", "'meta' still builds shapes only"


def test_numpy_settings_are_accepted():
    cfg = toy.ToyConfig(n_instances=np.int64(2), feature_probability=np.array([[0.1], [0.2]]),
                        importance=np.ones(5))
    assert cfg.probabilities.dtype == torch.float32 and cfg.probabilities.shape == (2, 5), (
        f"numpy settings must be read as a float32 (inst, n) table, got {cfg.probabilities.dtype} "
        f"{tuple(cfg.probabilities.shape)}")


def test_replace_with_another_size_broadcasts_the_settings_anew():
    cfg = toy.ToyConfig(n_features=5, n_instances=2, feature_probability=[[0.1], [0.2]], importance=0.5)
    wider = replace(cfg, n_features=8)  # failed when the settings were stored broadcast to 5 features
    assert wider.probabilities.shape == (2, 8) and wider.importances.shape == (2, 8), (
        f"replace(cfg, n_features=8) must give (2, 8) tables, got {tuple(wider.probabilities.shape)} and "
        f"{tuple(wider.importances.shape)}")
    assert torch.equal(wider.probabilities[:, 0], torch.tensor([0.1, 0.2])) and bool((wider.importances == 0.5).all()), (
        "replace must keep the given per-instance densities and importance")
    more = replace(toy.ToyConfig(feature_probability=0.3), n_instances=4, n_features=3)
    assert more.probabilities.shape == (4, 3), f"a scalar density must broadcast to (4, 3), got {tuple(more.probabilities.shape)}"
    with pytest.raises(ValueError, match="broadcast"):  # per-feature values that cannot fit the new size still fail, by name
        replace(toy.ToyConfig(n_features=2, importance=[1.0, 0.5]), n_features=3)
    assert toy.ToyModel(wider).importance.shape == (2, 8), "the model reads the broadcast importances"
    assert cfg.as_dict()["feature_probability"] == toy.ToyConfig(
        n_features=5, n_instances=2, feature_probability=torch.tensor([[0.1] * 5, [0.2] * 5])).as_dict()["feature_probability"], (
        "equal settings given in different shapes must have equal cache keys")


def test_nan_in_the_data_stops_training_naming_instance_and_step():
    model = toy.ToyModel(toy.ToyConfig(n_instances=3, steps=20, log_every=5, batch_size=32))
    draw = model.sample

    def poisoned(batch, generator=None):
        x = draw(batch, generator).clone()
        x[1, 0, 0] = float("nan")  # one bad value in instance 1
        return x

    model.sample = poisoned
    with pytest.raises(toy.NonFiniteLossError, match=r"instance\(s\) 1 .*step 0"):
        toy.train(model, progress=False)


def test_other_bad_arguments_say_what_to_do():
    with pytest.raises(ValueError, match="0.5"):
        toy.pair_experiment(toy.ToyConfig(n_features=4), (0.7,), progress=False)
    with pytest.raises(ValueError, match="even"):
        toy.pair_experiment(toy.ToyConfig(n_features=5), (0.1,), progress=False)
    with pytest.raises(ValueError, match="n_features=2"):
        toy.phase_diagram(toy.ToyConfig(n_features=5, d_hidden=1), progress=False)
    with pytest.raises(TypeError, match="base must be a ToyConfig"):
        toy.sweep(dict(n_features=5), (0.1,), progress=False)
    with pytest.raises(ValueError, match="2 hidden"):
        toy.polygon(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="W must have shape"):
        toy.ToyModel(toy.ToyConfig(), W=torch.zeros(2, 2))


# --------------------------------------------------------------------------------------
# The slow sweeps are cached on disk
# --------------------------------------------------------------------------------------
@pytest.fixture
def trainings(monkeypatch, tmp_path):
    """An empty cache folder, and a list that records every stack the phase diagram trains."""
    from helpers.toy import experiments

    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    calls, real = [], experiments.best_of_seeds

    def counting(cfg, *args, **kwargs):
        calls.append(cfg)
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(experiments, "best_of_seeds", counting)
    return calls


TINY = toy.ToyConfig(n_features=2, d_hidden=1, steps=20, batch_size=32, eval_samples=256)


def test_phase_diagram_is_served_from_the_cache(trainings):
    first = toy.phase_diagram(TINY, grid=2, n_seeds=1, progress=False)
    second = toy.phase_diagram(TINY, grid=2, n_seeds=1, progress=False)
    assert len(trainings) == 1, f"the second identical call trained again ({len(trainings)} trainings): not cached"
    assert torch.equal(first.W, second.W) and np.array_equal(first.phase, second.phase), (
        "the cached phase diagram differs from the one that was trained")
    assert type(second.W) is torch.Tensor and type(second.densities) is np.ndarray and second.d_hidden == 1, (
        f"the cached result must have the trained result's types, got {type(second.W)}, {type(second.densities)}")


@pytest.mark.parametrize("base, grid", [(replace(TINY, steps=21), 2), (replace(TINY, lr=1e-2), 2), (TINY, 3)],
                         ids=["steps changed", "lr changed", "grid changed"])
def test_a_changed_setting_trains_again(trainings, base, grid):
    toy.phase_diagram(TINY, grid=2, n_seeds=1, progress=False)
    toy.phase_diagram(base, grid=grid, n_seeds=1, progress=False)
    assert len(trainings) == 2, "a phase diagram with other settings was served from the cache of the first"


def test_a_damaged_cache_entry_is_reported_and_trained_again(trainings, tmp_path):
    from helpers.store import CacheWarning

    first = toy.phase_diagram(TINY, grid=2, n_seeds=1, progress=False)
    (npz,) = tmp_path.glob("toy/phase-diagram-*/result.npz")
    npz.write_bytes(npz.read_bytes()[:100])  # cut short, as by a full disk
    with pytest.warns(CacheWarning, match="damaged"):
        again = toy.phase_diagram(TINY, grid=2, n_seeds=1, progress=False)
    assert len(trainings) == 2 and torch.equal(first.W, again.W), "the damaged entry was not retrained to the same result"


def test_cache_can_be_switched_off(trainings):
    toy.phase_diagram(TINY, grid=2, n_seeds=1, progress=False, cache=False)
    toy.phase_diagram(TINY, grid=2, n_seeds=1, progress=False, cache=False)
    assert len(trainings) == 2, "cache=False must train every time"


SMALL = toy.ToyConfig(n_features=4, d_hidden=2, steps=20, batch_size=32, eval_samples=256)


@pytest.mark.parametrize("module, trainer, call", [
    ("experiments", "_dimensionality_sweep",
     lambda: toy.dimensionality_sweep(SMALL, (0.1, 0.5), progress=False)),
    ("computation", "_abs_sweep",
     lambda: toy.abs_sweep(SMALL, (0.1, 1.0), n_seeds=2, progress=False)),
    ("computation", "_neuron_sweep",
     lambda: toy.neuron_sweep(SMALL, (0.1, 1.0), n_seeds=2, progress=False)),
], ids=["dimensionality_sweep", "abs_sweep", "neuron_sweep"])
def test_the_other_slow_sweeps_are_cached(monkeypatch, tmp_path, module, trainer, call):
    import importlib

    mod = importlib.import_module(f"helpers.toy.{module}")
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    calls, real = [], getattr(mod, trainer)
    monkeypatch.setattr(mod, trainer, lambda *a, **k: calls.append(1) or real(*a, **k))
    first, second = call(), call()
    assert len(calls) == 1, f"{trainer} ran {len(calls)} times for two identical calls: not served from the cache"
    for name, a, b in zip(first._fields, first, second):
        same = torch.equal(a, b) if isinstance(a, torch.Tensor) else np.array_equal(a, b)
        assert same and type(a) is type(b), f"{name} differs between the trained and the cached result"
