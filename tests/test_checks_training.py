"""The checks of the training exercises (the toy model's Adam loop, resampling dead latents): each
likely wrong solution fails with its own message, and solutions written differently from the
reference pass. (The reference and stub cases are in tests/test_checks_common.py.)"""
import pytest
import torch

from helpers.course.checks import training as checks
from helpers.course.checks.toy import toy_loss_reference
from helpers.course.exercises import ExerciseError


# --- the toy model's training loop ----------------------------------------------------------
def _train(W, b, sample, importance, steps, lr, *, mode="right"):
    params = [W] if mode == "only-W" else [W, b]
    if mode == "copies":
        W, b = W.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
        params = [W, b]
    opt = torch.optim.Adam(params, lr=1e-3 if mode == "fixed-lr" else lr)
    losses, x = [], sample()
    for step in range(steps):
        if mode == "new-opt":
            opt = torch.optim.Adam(params, lr=lr)
        if mode != "one-batch" and step > 0:
            x = sample()
        if mode == "two-samples":
            sample()
        loss = toy_loss_reference(W, b, x, importance).sum()
        if mode == "step-first":
            opt.zero_grad()
            opt.step()
            loss.backward()
        elif mode == "sgd":
            W.grad = b.grad = None
            loss.backward()
            with torch.no_grad():
                W -= lr * W.grad
                b -= lr * b.grad
        else:
            if mode != "no-zero-grad":
                opt.zero_grad()
            loss.backward()
            opt.step()
        losses.append(loss.item())
    return None if mode == "no-return" else losses


def test_train_toy_mean_over_instances_and_tensor_losses_pass():
    def mean_loss(W, b, sample, importance, steps, lr):
        opt = torch.optim.Adam([W, b], lr=lr)
        losses = []
        for _ in range(steps):
            loss = toy_loss_reference(W, b, sample(), importance).mean()
            opt.zero_grad(set_to_none=False)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        return torch.stack(losses)
    assert checks.toy_train_step(mean_loss) is mean_loss


@pytest.mark.parametrize("mode, message", [
    ("no-zero-grad", "pile up"),
    ("step-first", "did not change"),
    ("one-batch", "reused"),
    ("two-samples", "exactly one batch per step"),
    ("fixed-lr", "does not depend on lr"),
    ("sgd", "plain gradient descent"),
    ("new-opt", "new optimiser every step"),
    ("copies", "did not change"),
    ("only-W", "b did not"),
    ("no-return", "return the list"),
])
def test_train_toy_mistakes_fail_with_their_message(mode, message):
    def wrong(W, b, sample, importance, steps, lr):
        return _train(W, b, sample, importance, steps, lr, mode=mode)
    with pytest.raises(ExerciseError, match=message):
        checks.toy_train_step(wrong)


# --- resampling dead latents ------------------------------------------------------------------
@torch.no_grad()
def _resample(sae, x, dead, generator, opt=None, *, weights="square", normalise=True, replacement=False,
              target="input", scale_over="live", zero_bias=True, clear="dead", global_rng=False, touch_live=False):
    idx = dead.nonzero().flatten()
    if len(idx) == 0:
        return
    x_hat = sae.decode(sae.encode(x))[0]
    err = (x - x_hat).pow(2).sum(-1)
    w = {"square": err.square(), "linear": err, "uniform": torch.ones_like(err), "argmax": None}[weights]
    if weights == "argmax":
        pick = err.topk(len(idx)).indices
    else:
        pick = torch.multinomial(w, len(idx), replacement=replacement,
                                 generator=None if global_rng else generator)
    v = (x if target == "input" else x - x_hat)[pick]
    if normalise:
        v = v / v.norm(dim=-1, keepdim=True)
    cols = sae.W_enc[0][:, ~dead] if scale_over == "live" else sae.W_enc[0]
    norm = cols.norm(dim=0).mean()
    sae.W_dec[0, idx] = v
    sae.W_enc[0][:, idx] = 0.2 * norm * v.T
    if zero_bias:
        sae.b_enc[0, idx] = 0.0
    if touch_live:
        sae.b_enc.zero_()
    if opt is not None and clear:
        for p, where in ((sae.W_dec, (0, idx)), (sae.W_enc, (0, slice(None), idx)), (sae.b_enc, (0, idx))):
            for buf in ("exp_avg", "exp_avg_sq"):
                if buf in opt.state.get(p, {}):
                    if clear == "all":
                        opt.state[p][buf].zero_()
                    else:
                        opt.state[p][buf][where] = 0.0


def test_resample_written_out_passes(capsys):
    assert checks.resample_dead(_resample) is _resample
    assert "✔" in capsys.readouterr().out


@pytest.mark.parametrize("kwargs, message", [
    (dict(weights="uniform"), "equally often"),
    (dict(weights="linear"), "in proportion to their squared error"),
    (dict(weights="argmax"), "always revive with the worst"),
    (dict(normalise=False), "unit length"),
    (dict(replacement=True), "same input"),
    (dict(target="residual"), "residuals"),
    (dict(scale_over="all"), "all encoder columns"),
    (dict(zero_bias=False), "encoder bias to 0"),
    (dict(clear=None), "clear Adam"),
    (dict(clear="all"), "of live latents"),
    (dict(global_rng=True), "generator"),
    (dict(touch_live=True), "changed live latents"),
], ids=["uniform", "linear-weights", "argmax", "not-normalised", "replacement", "residual", "scale-all", "bias",
        "adam-kept", "adam-all", "global-rng", "live-touched"])
def test_resample_mistakes_fail_with_their_message(kwargs, message):
    def wrong(sae, x, dead, generator, opt=None):
        return _resample(sae, x, dead, generator, opt, **kwargs)
    with pytest.raises(ExerciseError, match=message):
        checks.resample_dead(wrong)


def test_resample_reference_is_the_course_recipe():
    """The statistics case draws the four inputs with probabilities 1:4:9:16 under the reference."""
    picks = torch.tensor(checks._picks(checks.resample_dead_reference, range(300), 1)).flatten()
    freq = torch.bincount(picks, minlength=4).float() / 300
    assert torch.allclose(freq, torch.tensor([1.0, 4.0, 9.0, 16.0]) / 30, atol=0.06), freq
