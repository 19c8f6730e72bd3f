"""The checks of notebook 01's exercises: each plausible wrong solution is caught with its own
message (tests/test_checks_common.py checks the reference and the stub)."""
from __future__ import annotations

import pytest
import torch

from helpers.course.checks import toy as checks
from helpers.course.exercises import ExerciseError


# --- forward pass and loss ----------------------------------------------------------------
def _x_hat(W, b, x, relu=True, bias=True):
    z = torch.einsum("imn,ibm->ibn", W, torch.einsum("imn,ibn->ibm", W, x)) + (b[:, None] if bias else 0)
    return torch.relu(z) if relu else z


@pytest.mark.parametrize("wrong, message", [
    (lambda W, b, x, imp: ((x - _x_hat(W, b, x)) ** 2).sum(-1).mean(-1), "not weighted by importance"),
    (lambda W, b, x, imp: (imp[:, None] * (x - _x_hat(W, b, x)) ** 2).mean((-1, -2)), "sum over the features"),
    (lambda W, b, x, imp: (imp[:, None] * (x - _x_hat(W, b, x, relu=False)) ** 2).sum(-1).mean(-1), "ReLU"),
    (lambda W, b, x, imp: (imp[:, None] * (x - _x_hat(W, b, x, bias=False)) ** 2).sum(-1).mean(-1), "bias"),
    (lambda W, b, x, imp: (imp[:, None] * (x - _x_hat(W, b, x)) ** 2).sum(-1), "one loss per instance"),
])
def test_toy_loss_catches_mistakes(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        checks.toy_loss(wrong)


def _neuron_x_hat(W, b, x, hidden_relu=True, out_relu=True):
    h = torch.einsum("imn,ibn->ibm", W, x)
    z = torch.einsum("imn,ibm->ibn", W, torch.relu(h) if hidden_relu else h) + b[:, None]
    return torch.relu(z) if out_relu else z


def _neuron_bias_in_hidden(W, b, x, imp):
    h = torch.relu(torch.einsum("imn,ibn->ibm", W, x + b[:, None]))
    return (imp[:, None] * (x - torch.relu(torch.einsum("imn,ibm->ibn", W, h))) ** 2).sum(-1).mean(-1)


def _neuron_detached(W, b, x, imp):  # the way back cut from the graph
    h = torch.relu(torch.einsum("imn,ibn->ibm", W, x))
    return (imp[:, None] * (x - torch.relu(torch.einsum("imn,ibm->ibn", W.detach(), h) + b[:, None])) ** 2).sum(-1).mean(-1)


@pytest.mark.parametrize("wrong, message", [
    (lambda W, b, x, imp: checks.toy_loss_reference(W, b, x, imp), "ReLU on the neurons"),
    (lambda W, b, x, imp: (imp[:, None] * (x - _neuron_x_hat(W, b, x, out_relu=False)) ** 2).sum(-1).mean(-1),
     "ReLU on the output"),
    (lambda W, b, x, imp: ((x - _neuron_x_hat(W, b, x)) ** 2).sum(-1).mean(-1), "not weighted by importance"),
    (lambda W, b, x, imp: (imp[:, None] * (x - _neuron_x_hat(W, b, x)) ** 2).mean((-1, -2)), "sum over the features"),
    (lambda W, b, x, imp: (imp[:, None] * (x - _neuron_x_hat(W, b, x)) ** 2).sum(-1).sum(-1), "rather than summing"),
    (_neuron_bias_in_hidden, "no bias"),
    (lambda W, b, x, imp: (imp[:, None] * (x - (_neuron_x_hat(W, 0 * b, x) + b[:, None])) ** 2).sum(-1).mean(-1),
     "inside the output ReLU"),
    (lambda W, b, x, imp: (imp[:, None] * (x - _neuron_x_hat(W, b, x)) ** 2).sum(-1), "one loss per instance"),
    (_neuron_detached, "wrong gradient with respect to W"),
    (lambda W, b, x, imp: torch.tensor(checks.neuron_loss_reference(W, b, x, imp).tolist()), "no gradient"),
])
def test_neuron_loss_catches_mistakes(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        checks.neuron_loss(wrong)


def test_neuron_loss_reference_is_the_loss_the_sweep_trains():
    from helpers import toy
    base = toy.ToyConfig(n_features=6, d_hidden=3, steps=20, batch_size=64, device="cpu")
    r = toy.neuron_sweep(base, (1.0,), n_seeds=2, progress=False, cache=False)
    W, b = r.W[0], r.b[0]  # (seeds, m, n), (seeds, n)
    x = torch.rand(2, 50_000, 6, generator=torch.Generator().manual_seed(0))
    got = checks.neuron_loss_reference(W, b, x, toy.decay_importance(6, 0.75).expand(2, 6))
    assert torch.allclose(got, torch.as_tensor(r.loss[0], dtype=torch.float32), rtol=0.03), (
        f"the exercise's loss {got.tolist()} and the sweep's held-out loss {r.loss[0].tolist()} disagree: "
        "they must be the same model")


# --- sampler ----------------------------------------------------------------------------------
def test_sampler_catches_inverted_probability():
    def inverted(p, batch, generator=None):
        return checks.sample_features_reference(1 - p, batch, generator)
    with pytest.raises(ExerciseError, match="not 1-p"):
        checks.sample_features(inverted)


def test_sampler_catches_constant_values():
    def ones(p, batch, generator=None):
        return (torch.rand(p.shape[0], batch, p.shape[1], generator=generator) < p[:, None]).float()
    with pytest.raises(ExerciseError, match="uniform in \\[0, 1\\], not always 1"):
        checks.sample_features(ones)


def test_sampler_catches_shared_switch():
    def shared(p, batch, generator=None):  # one draw decides every feature: features are correlated
        u = torch.rand(p.shape[0], batch, 1, generator=generator)
        return (u < p[:, None]) * torch.rand(p.shape[0], batch, p.shape[1], generator=generator)
    with pytest.raises(ExerciseError, match="independently"):
        checks.sample_features(shared)


# --- feature dimensionality -------------------------------------------------------------------
def test_dimensionality_catches_missing_self_term():
    def no_self(W):
        norms2 = W.square().sum(-2)
        W_hat = W / W.norm(dim=-2, keepdim=True).clamp_min(1e-8)
        sq = (W_hat.mT @ W).square() * (1 - torch.eye(W.shape[-1]))
        return norms2 / sq.sum(-1).clamp_min(1e-12)
    with pytest.raises(ExerciseError, match="itself included"):
        checks.feature_dimensionality(no_self)


def test_dimensionality_catches_unnormalised_projection():
    def raw(W):
        norms2 = W.square().sum(-2)
        return torch.where(norms2 > 1e-6, norms2 / (W.mT @ W).square().sum(-1).clamp_min(1e-12), torch.zeros_like(norms2))
    with pytest.raises(ExerciseError, match="unit direction"):
        checks.feature_dimensionality(raw)


# --- tegum factors ----------------------------------------------------------------------------
def test_tegum_catches_signed_overlap():
    def signed(W, threshold=0.1):  # W_i . W_j > threshold: misses the antipodal partners
        return _components(W.mT @ W > threshold, W)
    with pytest.raises(ExerciseError, match="antipodal"):
        checks.tegum_factors(signed)


def test_tegum_catches_direct_neighbours_only():
    def direct(W, threshold=0.1):
        keep = W.norm(dim=0) > 0.5
        link = (W.mT @ W).abs() > threshold
        groups, seen = [], set()
        for i in range(W.shape[1]):
            if keep[i] and i not in seen:
                g = [j for j in range(W.shape[1]) if keep[j] and link[i, j] and j not in seen]
                seen.update(g)
                groups.append(g)
        return groups
    with pytest.raises(ExerciseError, match="connected component"):
        checks.tegum_factors(direct)


def test_tegum_catches_dropped_features_kept():
    def keep_all(W, threshold=0.1):
        return checks.tegum_factors_reference(W, threshold, min_norm=0.0)
    with pytest.raises(ExerciseError, match="not represented"):
        checks.tegum_factors(keep_all)


def _components(link, W):
    keep = W.norm(dim=0) > 0.5
    n, seen, groups = W.shape[1], set(), []
    for s in range(n):
        if not keep[s] or s in seen:
            continue
        stack, g = [s], []
        seen.add(s)
        while stack:
            i = stack.pop()
            g.append(i)
            for j in range(n):
                if keep[j] and link[i, j] and j not in seen:
                    seen.add(j)
                    stack.append(j)
        groups.append(g)
    return groups


# --- the two exercises of sections 4 and 6: reference, stub, and mistakes ---------------------
def _stub(*args, **kwargs):
    raise NotImplementedError


@pytest.mark.parametrize("name", ["classify_phase", "sample_anticorrelated_pairs"])
def test_reference_passes_and_stub_falls_back_with_hint(name, capsys):
    check, reference = getattr(checks, name), getattr(checks, f"{name}_reference")
    assert check(reference) is reference, f"the check of {name} rejects its own reference"
    assert "✔" in capsys.readouterr().out
    assert check(_stub) is reference, f"a stub of {name} must hand back the reference solution"
    out = capsys.readouterr().out
    assert "The idea:" in out and "A second hint" in out, f"the check of {name} must print its two hints for a stub"


def _phase(W, first=False, self_term=False, unit=True, order_ok=True, threshold=0.2):
    """classify_phase with one chosen mistake."""
    k = 0 if first else -1
    extra = W[..., k]
    norm = extra.norm(dim=-1)
    d = extra / norm.clamp_min(1e-8)[..., None] if unit else extra
    others = W if self_term else torch.cat([W[..., :k], W[..., k + 1:]] if first else [W[..., :-1]], -1)
    shared = ((d[..., None] * others).sum(-2) ** 2).sum(-1)
    if not order_ok:
        return torch.where(shared > threshold, 2, torch.where(norm < 0.5, 0, 1))
    return torch.where(norm < 0.5, 0, torch.where(shared > threshold, 2, 1))


@pytest.mark.parametrize("wrong, message", [
    (lambda W: _phase(W, first=True), "last column"),
    (lambda W: _phase(W, self_term=True), "out of its own sum"),
    (lambda W: _phase(W, order_ok=False), "check the norm first"),
    (lambda W: _phase(W, unit=False), "unit direction"),
    (lambda W: _phase(W, threshold=0.1), "more than 0.2"),
    (lambda W: _phase(W).float(), "integers"),
    (lambda W: [checks.classify_phase_reference(w) for w in W], "int tensor"),
])
def test_classify_phase_catches_mistakes(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        checks.classify_phase(wrong)


def _pairs_sampler(shared_draw=False, independent=False, halves=False, second_from_zero=False):
    """sample_anticorrelated_pairs with one chosen mistake."""
    def sample(p, batch, generator=None):
        inst, n = p.shape
        if independent:
            return checks.sample_features_reference(p, batch, generator)
        a, b = (slice(0, n // 2), slice(n // 2, n)) if halves else (slice(0, n, 2), slice(1, n, 2))
        pa, pb = p[:, None, a], p[:, None, b]
        u = torch.rand(inst, batch, 1 if shared_draw else n // 2, generator=generator)
        second = u < pb if second_from_zero else (u >= pa) & (u < pa + pb)
        on = torch.zeros(inst, batch, n, dtype=torch.bool)
        on[..., a], on[..., b] = (u < pa).expand(-1, -1, n // 2), (second & ~(u < pa)).expand(-1, -1, n // 2)
        return on * torch.rand(inst, batch, n, generator=generator)
    return sample


@pytest.mark.parametrize("wrong, message", [
    (_pairs_sampler(independent=True), "never be on together"),
    (_pairs_sampler(halves=True), "neighbours"),
    (_pairs_sampler(second_from_zero=True), "same draw"),
    (_pairs_sampler(shared_draw=True), "independently of each other"),
])
def test_anticorrelated_sampler_catches_mistakes(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        checks.sample_anticorrelated_pairs(wrong)


# --- mistakes that give the right values but would not train, or ignore the generator ------------
def _loss_detached_half(W, b, x, imp):  # the decoder half of W cut from the graph
    h = torch.einsum("imn,ibn->ibm", W, x)
    x_hat = torch.relu(torch.einsum("imn,ibm->ibn", W.detach(), h) + b[:, None])
    return (imp[:, None] * (x - x_hat) ** 2).sum(-1).mean(-1)


def _loss_from_numbers(W, b, x, imp):  # right numbers, rebuilt without a graph
    return torch.tensor(checks.toy_loss_reference(W, b, x, imp).tolist())


@pytest.mark.parametrize("wrong, message", [(_loss_detached_half, "wrong gradient with respect to W"),
                                            (_loss_from_numbers, "no gradient")])
def test_toy_loss_catches_right_values_that_would_not_train(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        checks.toy_loss(wrong)


def _ignores_generator(p, batch, generator=None):
    return checks.sample_features_reference(p, batch, None)


def _one_value_per_sample(p, batch, generator=None):
    inst, n = p.shape
    on = torch.rand(inst, batch, n, generator=generator) < p[:, None]
    return on * torch.rand(inst, batch, 1, generator=generator)


@pytest.mark.parametrize("wrong, message", [(_ignores_generator, "use the generator you are given"),
                                            (_one_value_per_sample, "same value")])
def test_sampler_catches_ignored_generator_and_shared_values(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        checks.sample_features(wrong)


def test_pair_sampler_catches_ignored_generator():
    def pairs_global(p, batch, generator=None):
        return checks.sample_anticorrelated_pairs_reference(p, batch, None)
    with pytest.raises(ExerciseError, match="use the generator you are given"):
        checks.sample_anticorrelated_pairs(pairs_global)


def test_classify_phase_catches_the_largest_instead_of_the_total():
    def largest(W):
        extra = W[..., -1]
        norm = extra.norm(dim=-1)
        shared = ((extra / norm[..., None])[..., None] * W[..., :-1]).sum(-2).square().max(-1).values
        return torch.where(norm < 0.5, 0, torch.where(shared > 0.2, 2, 1))
    with pytest.raises(ExerciseError, match="not only the largest"):
        checks.classify_phase(largest)


def test_tegum_catches_cosines_and_bridges_through_dropped_features():
    def cosine(W, threshold=0.1):
        U = W / W.norm(dim=0).clamp_min(1e-8)
        return _components((U.mT @ U).abs() > threshold, W)

    def drop_after_linking(W, threshold=0.1):
        groups = checks.tegum_factors_reference(W, threshold, min_norm=0.0)
        keep = W.norm(dim=0) > 0.5
        return [[i for i in g if keep[i]] for g in groups if any(keep[i] for i in g)]
    with pytest.raises(ExerciseError, match="not the cosine"):
        checks.tegum_factors(cosine)
    with pytest.raises(ExerciseError, match="before linking"):
        checks.tegum_factors(drop_after_linking)
