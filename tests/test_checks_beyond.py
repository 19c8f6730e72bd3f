"""The checks of notebook 05's exercises: the references are the course's own code, and each
likely wrong solution fails with its own message. (The reference and stub cases are in
tests/test_checks_common.py.)"""
import pytest
import torch

from helpers.course.checks import beyond as checks
from helpers.course.exercises import ExerciseError


def _scatter(pre, idx, values):
    return torch.zeros_like(pre).scatter(-1, idx, values)


# --- JumpReLU: the reference's backward is the paper's formula ----------------------------------
def test_jumprelu_reference_is_the_rectangle_kernel_formula():
    x, theta, eps, grad_out = checks._jump_case()
    gx, gt = checks.jumprelu_backward_reference(x, theta, eps, grad_out)
    window = ((x - theta).abs() < eps / 2).float()
    assert torch.allclose(gt, (-(theta / eps) * window * grad_out).sum(0))
    assert torch.allclose(gx, grad_out * (x > theta))
    assert 0 < int(window.sum()) < window.numel() and int((((x - theta).abs() < eps).float() - window).sum()) > 0, \
        "the case must have entries inside the window and in its outer half"


# --- TopK -----------------------------------------------------------------------------------
def test_topk_with_a_detached_mask_passes(capsys):
    def masked(pre, k):
        kth = pre.topk(k, dim=-1).values[..., -1:]
        mask = (pre >= kth).detach()
        return pre.relu() * mask
    assert checks.topk_activation(masked) is masked
    assert "✔" in capsys.readouterr().out


def test_topk_relu_first_passes():
    def relu_first(pre, k):
        values, idx = pre.relu().topk(k, dim=-1)
        return _scatter(pre, idx, values)
    assert checks.topk_activation(relu_first) is relu_first


@pytest.mark.parametrize("wrong, message", [
    (lambda pre, k: checks.topk_activation_reference(pre.transpose(1, 2), k).transpose(1, 2), "over the batch"),
    (lambda pre, k: _scatter(pre, pre.topk(k, -1, largest=False).indices, pre.topk(k, -1, largest=False).values.relu()),
     "k smallest"),
    (lambda pre, k: _scatter(pre, pre.abs().topk(k, -1).indices, pre.gather(-1, pre.abs().topk(k, -1).indices).relu()),
     "absolute value"),
    (lambda pre, k: _scatter(pre, pre.topk(k, -1).indices, pre.topk(k, -1).values), "ReLU"),
    (lambda pre, k: torch.tensor(checks.topk_activation_reference(pre, k).tolist()), "no gradient"),
    (lambda pre, k: checks.topk_activation_reference(pre.detach(), k).requires_grad_(), "no gradient"),
    (lambda pre, k: pre + (checks.topk_activation_reference(pre, k) - pre).detach(), "passes gradient"),
    (lambda pre, k: 2 * checks.topk_activation_reference(pre, k) - checks.topk_activation_reference(pre, k).detach(),
     "wrong gradient"),
    (lambda pre, k: pre.relu(), "all positive"),
    (lambda pre, k: _scatter(pre, pre.topk(k, -1).indices, torch.ones(pre.shape[:-1] + (k,))), "mask"),
], ids=["batch-axis", "smallest", "abs", "no-relu", "from-numbers", "detached", "straight-through", "scaled-grad",
        "relu-only", "mask"])
def test_topk_mistakes_fail_with_their_message(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        checks.topk_activation(wrong)


def test_topk_wrong_shape_fails():
    with pytest.raises(ExerciseError, match="shape"):
        checks.topk_activation(lambda pre, k: pre.topk(k, -1).values)


# --- BatchTopK ------------------------------------------------------------------------------
def _flat_topk(pre, n, relu=True, pool=False):
    I, B, J = pre.shape
    flat = (pre.relu() if relu else pre).reshape(-1 if pool else I, B * J if not pool else I * B * J)
    values, idx = flat.topk(n, dim=-1)
    return torch.zeros_like(flat).scatter(-1, idx, values).reshape(I, B, J)


def test_batchtopk_with_a_threshold_mask_passes():
    def by_threshold(pre, k):
        I, B, J = pre.shape
        kth = pre.reshape(I, -1).topk(int(k * B), dim=-1).values[:, -1]
        return pre.relu() * (pre >= kth[:, None, None]).detach()
    assert checks.batchtopk_activation(by_threshold) is by_threshold


@pytest.mark.parametrize("wrong, message", [
    (checks.topk_activation_reference, "that is TopK"),
    (lambda pre, k: _flat_topk(pre, k), "for the whole batch"),
    (lambda pre, k: _flat_topk(pre, k * pre.shape[1] * pre.shape[0], pool=True), "pooled the instances"),
    (lambda pre, k: _flat_topk(pre, k * pre.shape[1], pool=True), "pooled the instances"),
    (lambda pre, k: _flat_topk(pre, k * pre.shape[1], relu=False), "ReLU"),
    (lambda pre, k: torch.tensor(checks.batchtopk_activation_reference(pre, k).tolist()), "no gradient"),
], ids=["per-example", "k-not-kxbatch", "pooled-all", "pooled-kxbatch", "no-relu", "from-numbers"])
def test_batchtopk_mistakes_fail_with_their_message(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        checks.batchtopk_activation(wrong)


# --- JumpReLU's backward --------------------------------------------------------------------
def _jump(x, theta, eps, g, *, factor="theta", width=0.5, sign=-1, reduce="sum", gx="mask", window=True,
          use_grad=True):
    f = {"theta": theta / eps, "one": 1 / eps, "x": x / eps}[factor]
    w = ((x - theta).abs() < width * eps).float() if window else torch.ones_like(x)
    t = sign * f * w * (g if use_grad else 1)
    t = {"sum": t.sum(0), "mean": t.mean(0), "none": t}[reduce]
    return {"mask": g * (x > theta), "all": g.clone(), "times-x": g * x}[gx], t


def test_jumprelu_formula_passes():
    assert checks.jumprelu_threshold_grad(_jump) is _jump


@pytest.mark.parametrize("kwargs, message", [
    (dict(factor="one"), "lacks the factor theta"),
    (dict(width=1.0), "twice too wide"),
    (dict(sign=1), "wrong sign"),
    (dict(reduce="none"), "sum the per-example terms over the batch"),
    (dict(reduce="mean"), "averaged over the batch"),
    (dict(gx="all"), "passes the gradient everywhere"),
    (dict(gx="times-x"), "grad_out times x"),
    (dict(factor="x"), "use theta, not x"),
    (dict(window=False), "within the kernel window"),
    (dict(use_grad=False), "multiply by grad_out"),
], ids=["one-over-eps", "full-width", "sign", "no-sum", "mean", "grad-x-everywhere", "grad-x-times-x", "x-factor",
        "no-window", "no-grad-out"])
def test_jumprelu_mistakes_fail_with_their_message(kwargs, message):
    def wrong(x, theta, eps, g):
        return _jump(x, theta, eps, g, **kwargs)
    with pytest.raises(ExerciseError, match=message):
        checks.jumprelu_threshold_grad(wrong)


# --- MCC ------------------------------------------------------------------------------------
def _cos(learned, truth):
    L = torch.nn.functional.normalize(learned, dim=-1)
    T = torch.nn.functional.normalize(truth, dim=-1)
    return (T @ L.T).numpy()


def _hungarian(m):
    from scipy.optimize import linear_sum_assignment
    return linear_sum_assignment(m, maximize=True)


def _mcc_signed(learned, truth):
    cos = _cos(learned, truth)
    r, c = _hungarian(cos)
    return float(cos[r, c].mean())


def _mcc_over_larger(learned, truth):
    cos = abs(_cos(learned, truth))
    r, c = _hungarian(cos)
    return float(cos[r, c].sum() / max(cos.shape))


def _mcc_unnormalised(learned, truth):
    raw = abs((truth @ learned.T).numpy())
    r, c = _hungarian(raw)
    return float(raw[r, c].mean())


@pytest.mark.parametrize("wrong, message", [
    (lambda learned, truth: float(abs(_cos(learned, truth)).max(1).mean()), "that is MMCS"),
    (lambda learned, truth: float(abs(_cos(learned, truth)).max(0).mean()), "each latent's best true feature"),
    (_mcc_signed, "signed cosine"),
    (_mcc_over_larger, "larger set"),
    (_mcc_unnormalised, "normalise"),
], ids=["mmcs", "max-over-truth", "no-abs", "over-larger", "unnormalised"])
def test_mcc_mistakes_fail_with_their_message(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        checks.mcc(wrong)


def test_mcc_tensor_result_passes():
    def as_tensor(learned, truth):
        cos = abs(_cos(learned, truth))
        r, c = _hungarian(cos)
        return torch.tensor(cos[r, c]).mean()
    assert checks.mcc(as_tensor) is as_tensor
