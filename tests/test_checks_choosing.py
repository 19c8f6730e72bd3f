"""The checks of notebook 06's exercises (helpers.course.checks.choosing): the references are the course's
own functions in helpers.beyond.choosing, other correct solutions pass, and each likely wrong
solution fails with its own message."""
import math

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from helpers.course.checks import choosing as checks
from helpers.course.exercises import ExerciseError

NAMES = ("matryoshka_loss", "nth_decoder_projection", "seed_consistency", "elbow")


# --- every check: the reference passes, a stub falls back to it with both hints ------------------
@pytest.mark.parametrize("name", NAMES)
def test_reference_passes_its_check(name, capsys):
    reference = getattr(checks, f"{name}_reference")
    assert getattr(checks, name)(reference) is reference, f"the check of {name} rejects its own reference"
    assert "✔" in capsys.readouterr().out


@pytest.mark.parametrize("name", NAMES)
def test_stub_falls_back_to_reference_with_hint(name, capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError
    assert getattr(checks, name)(stub) is getattr(checks, f"{name}_reference")
    out = capsys.readouterr().out
    assert "The idea:" in out and "A second hint" in out


# --- Matryoshka loss --------------------------------------------------------------------------
def _matryoshka(acts, D, b_dec, target, widths, *, bias=True, reduce_h="mean", cumulative=True, add_full=False,
                reduce_batch="mean", last_only=False):
    """A loop over the prefixes; every keyword is one of the mistakes."""
    J = acts.shape[-1]
    widths = list(widths) + ([J] if add_full and J not in widths else [])
    total, last = 0, None
    for i, m in enumerate(widths):
        start = 0 if cumulative else (widths[i - 1] if i else 0)
        x_hat = torch.einsum("ibj,ijh->ibh", acts[..., start:m], D[:, start:m])
        if bias:
            x_hat = x_hat + b_dec[:, None, :]
        err = (x_hat - target) ** 2
        err = err.mean(-1) if reduce_h == "mean" else err.sum(-1)
        err = err.mean(-1) if reduce_batch == "mean" else err.sum(-1)
        total, last = total + err, err
    return last if last_only else total


def test_matryoshka_loop_from_scratch_passes(capsys):
    assert checks.matryoshka_loss(_matryoshka) is _matryoshka
    assert "✔" in capsys.readouterr().out


def test_matryoshka_with_masks_passes():
    def masked(acts, D, b_dec, target, widths):
        J = acts.shape[-1]
        losses = []
        for m in widths:
            keep = (torch.arange(J) < m).float()
            x_hat = torch.bmm(acts * keep, D) + b_dec[:, None]
            losses.append(((x_hat - target) ** 2).mean(dim=(1, 2)))
        return torch.stack(losses).sum(0)
    assert checks.matryoshka_loss(masked) is masked


@pytest.mark.parametrize("kwargs, message", [
    (dict(bias=False), "left out b_dec"),
    (dict(reduce_h="sum"), "summed the squared error over the h coordinates"),
    (dict(cumulative=False), "only its own block of latents"),
    (dict(add_full=True), "added the full width J"),
    (dict(reduce_batch="sum"), "summed over the batch"),
    (dict(last_only=True), "only the last prefix's error"),
], ids=["no-b_dec", "sum-over-h", "blocks-not-prefixes", "adds-full-width", "sum-over-batch", "last-prefix-only"])
def test_matryoshka_mistakes_fail_with_their_message(kwargs, message):
    def wrong(acts, D, b_dec, target, widths):
        return _matryoshka(acts, D, b_dec, target, widths, **kwargs)
    with pytest.raises(ExerciseError, match=message):
        checks.matryoshka_loss(wrong)


def test_matryoshka_other_mistakes_fail():
    with pytest.raises(ExerciseError, match="one loss per instance"):
        checks.matryoshka_loss(lambda *a: _matryoshka(*a).sum())
    with pytest.raises(ExerciseError, match="mixed the instances"):
        checks.matryoshka_loss(lambda *a: _matryoshka(*a).mean().expand(a[0].shape[0]))
    with pytest.raises(ExerciseError, match="no gradient"):
        checks.matryoshka_loss(lambda *a: torch.tensor(_matryoshka(*a).tolist()))
    with pytest.raises(ExerciseError, match="wrong gradient"):
        checks.matryoshka_loss(lambda acts, D, b, t, w: _matryoshka(acts.detach(), D, b, t, w))


def test_matryoshka_in_place_change_fails():
    def in_place(acts, D, b_dec, target, widths):
        out = _matryoshka(acts, D, b_dec, target, widths)
        with torch.no_grad():
            acts.mul_(0.5)
        return out
    with pytest.raises(ExerciseError, match="in place"):
        checks.matryoshka_loss(in_place)


# --- nth decoder projection -------------------------------------------------------------------
def _projections(x, D, b_dec, bias=True):
    """(inst, batch, J) projections of x - b_dec on every decoder row."""
    centred = x[None] - b_dec[:, None, :] if bias else x[None].expand(D.shape[0], *x.shape)
    return torch.bmm(centred, D.transpose(1, 2))


def _nth_sorted(x, D, b_dec, n, *, bias=True, index=None, largest=True):
    B = x.shape[0]
    flat = _projections(x, D, b_dec, bias).flatten(1)
    values = flat.sort(-1, descending=largest).values
    return values[:, n * B if index is None else index(n, B)]


def test_nth_by_sorting_passes(capsys):
    def by_sorting(x, D, b_dec, n):
        return _nth_sorted(x, D, b_dec, n)
    assert checks.nth_decoder_projection(by_sorting) is by_sorting
    assert "✔" in capsys.readouterr().out


def test_nth_by_einsum_and_kthvalue_passes():
    def by_kthvalue(x, D, b_dec, n):
        proj = torch.einsum("bh,ijh->ibj", x, D) - torch.einsum("ih,ijh->ij", b_dec, D)[:, None]
        flat = proj.reshape(D.shape[0], -1)
        return flat.kthvalue(flat.shape[1] - n * x.shape[0], dim=-1).values
    assert checks.nth_decoder_projection(by_kthvalue) is by_kthvalue


def _per_example(x, D, b_dec, n):
    return _projections(x, D, b_dec).sort(-1, descending=True).values[..., n].mean(-1)


def _reshaped_D(x, D, b_dec, n):
    I, J, h = D.shape
    proj = torch.bmm(x[None] - b_dec[:, None, :], D.reshape(I, h, J))
    return proj.reshape(I, -1).topk(n * x.shape[0] + 1, dim=-1).values[:, -1]


def _first_instance(x, D, b_dec, n):
    proj = (x[None] - b_dec[:, None, :]) @ D[0].T              # forgot that D has an instance axis
    return proj.reshape(D.shape[0], -1).topk(n * x.shape[0] + 1, dim=-1).values[:, -1]


@pytest.mark.parametrize("wrong, message", [
    (lambda x, D, b, n: _nth_sorted(x, D, b, n, bias=False), "subtract b_dec"),
    (lambda x, D, b, n: _nth_sorted(x, D, b, n, index=lambda n, B: n * B - 1), "off by one"),
    (_per_example, "averaged over the batch"),
    (_reshaped_D, "reshaped D"),
    (_first_instance, "first instance's decoder"),
    (lambda x, D, b, n: _nth_sorted(x, D, b, n, largest=False), "from the bottom"),
], ids=["no-b_dec", "off-by-one", "per-example-mean", "reshaped-D", "first-instance-D", "nth-smallest"])
def test_nth_mistakes_fail_with_their_message(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        checks.nth_decoder_projection(wrong)


def test_nth_other_mistakes_fail():
    with pytest.raises(ExerciseError, match="pooled the instances"):
        checks.nth_decoder_projection(
            lambda x, D, b, n: _projections(x, D, b).flatten().sort(descending=True).values[n * x.shape[0]]
            .expand(D.shape[0]))
    with pytest.raises(ExerciseError, match="one s_n per instance"):
        checks.nth_decoder_projection(lambda x, D, b, n: _projections(x, D, b).flatten(1).sort(-1).values)
    with pytest.raises(ExerciseError, match="n from the top"):
        checks.nth_decoder_projection(lambda x, D, b, n: _nth_sorted(x, D, b, n, index=lambda n, B: n))


# --- cross-seed consistency -------------------------------------------------------------------
def _cos(a, b, normalise=True):
    if normalise:
        a, b = torch.nn.functional.normalize(a, dim=-1), torch.nn.functional.normalize(b, dim=-1)
    return (a @ b.T).double().numpy()


def _hungarian(m):
    return linear_sum_assignment(m, maximize=True)


def _consistency(a, b, *, normalise=True, absolute=True, over="min"):
    cos = _cos(a, b, normalise)
    cos = abs(cos) if absolute else cos
    r, c = _hungarian(cos)
    return float(cos[r, c].sum() / (min if over == "min" else max)(cos.shape))


def test_consistency_by_hand_passes(capsys):
    assert checks.seed_consistency(_consistency) is _consistency
    assert "✔" in capsys.readouterr().out


def test_consistency_as_tensor_and_transposed_passes():
    def transposed(a, b):
        cos = abs(_cos(b, a))
        r, c = _hungarian(cos)
        return torch.tensor(cos[r, c]).mean()
    assert checks.seed_consistency(transposed) is transposed


@pytest.mark.parametrize("wrong, message", [
    (lambda a, b: float(abs(_cos(a, b)).max(1).mean()), "that is MMCS"),
    (lambda a, b: float(abs(_cos(a, b)).max(0).mean()), "that is MMCS"),
    (lambda a, b: _consistency(a, b, absolute=False), "signed cosine"),
    (lambda a, b: _consistency(a, b, normalise=False), "normalise"),
    (lambda a, b: _consistency(a, b, over="max"), "larger dictionary"),
], ids=["mmcs-rows", "mmcs-columns", "no-abs", "unnormalised", "over-max"])
def test_consistency_mistakes_fail_with_their_message(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        checks.seed_consistency(wrong)


def test_consistency_must_be_one_number():
    with pytest.raises(ExerciseError, match="one number"):
        checks.seed_consistency(lambda a, b: torch.tensor(abs(_cos(a, b))))


# --- elbow ------------------------------------------------------------------------------------
def _elbow(x, y, *, log=True, end="last"):
    """The chord-distance elbow; ``end='max'`` draws the chord to the highest point instead."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    u = np.log(x) if log else x
    u = (u - u.min()) / (u.max() - u.min())
    v = (y - y.min()) / (y.max() - y.min())
    e = len(y) - 1 if end == "last" else int(np.argmax(y))
    p0, p1 = np.array([u[0], v[0]]), np.array([u[e], v[e]])
    d = p1 - p0
    dist = np.abs(d[0] * (v - p0[1]) - d[1] * (u - p0[0])) / np.hypot(*d)
    return int(np.argmax(dist))


def test_elbow_by_hand_passes(capsys):
    assert checks.elbow(_elbow) is _elbow
    assert "✔" in capsys.readouterr().out


def test_elbow_by_projection_passes():
    def by_projection(x, y):                                  # distance = |component normal to the chord|
        p = np.stack([np.log(x), np.asarray(y, float)], 1)
        p = (p - p.min(0)) / np.ptp(p, 0)
        t = (p[-1] - p[0]) / np.linalg.norm(p[-1] - p[0])
        rel = p - p[0]
        return int(np.argmax(np.linalg.norm(rel - np.outer(rel @ t, t), axis=1)))
    assert checks.elbow(by_projection) is by_projection


@pytest.mark.parametrize("wrong, message", [
    (lambda x, y: int(np.argmin(y)), "argmin y"),
    (lambda x, y: int(np.argmax(np.diff(y, 2))) + 1, "second difference"),
    (lambda x, y: int(np.argmax(np.abs(np.diff(y, 2)))) + 1, "second difference"),
    (lambda x, y: _elbow(x, y, log=False), "take log x"),
    (lambda x, y: _elbow(x, y, end="max"), "highest point"),
], ids=["argmin", "second-difference", "abs-second-difference", "no-log", "chord-to-max"])
def test_elbow_mistakes_fail_with_their_message(wrong, message):
    with np.errstate(all="ignore"):
        with pytest.raises(ExerciseError, match=message):
            checks.elbow(wrong)


def test_elbow_must_return_the_index():
    def x_value(x, y):
        return float(np.asarray(x)[checks.elbow_reference(x, y)])
    with pytest.raises(ExerciseError, match="x value"):
        checks.elbow(x_value)


def test_each_elbow_case_is_a_distinct_curve():
    """The cases must really differ in shape: a falling, a rising, a hump, a power law."""
    shapes = set()
    for _, x, y in checks._elbow_cases():
        assert np.all(np.diff(x) > 0) and x.min() > 0 and x.max() / x.min() > 10
        shapes.add((bool(y[0] > y[-1]), int(np.argmax(y)) not in (0, len(y) - 1)))
    assert len(shapes) >= 3, shapes
    assert not math.isnan(sum(checks.elbow_reference(x, y) for _, x, y in checks._elbow_cases()))
