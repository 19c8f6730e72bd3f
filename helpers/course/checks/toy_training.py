"""Checks for notebook 01's training exercise: the toy model's Adam loop (``helpers.course.checks.training``
re-exports it beside the resampling of dead latents).

``train_toy`` is checked against the course's loop (``helpers.toy.train.train``: a fresh batch a
step, backward, Adam step, gradients cleared) run on the same batches, and against the loops with
the likely mistakes. The check returns the function the notebook goes on with (see
``helpers.course.exercises.check``).
"""
from __future__ import annotations

from typing import Callable

import torch

from helpers.course.checks.common import same
from helpers.course.checks.toy import sample_features_reference, toy_loss_reference
from helpers.course.exercises import check, expect


# --------------------------------------------------------------------------------------
# Reference
# --------------------------------------------------------------------------------------
def toy_train_step_reference(W: torch.Tensor, b: torch.Tensor, sample: Callable[[], torch.Tensor],
                        importance: torch.Tensor, steps: int, lr: float) -> list[float]:
    """Train the toy models' ``W`` (inst, m, n) and ``b`` (inst, n) in place with Adam (learning
    rate ``lr``) for ``steps`` steps, each on a fresh batch ``sample()`` (inst, batch, n) and the
    importance-weighted loss summed over instances; return that loss of every step, as floats."""
    opt = torch.optim.Adam([W, b], lr=lr)
    losses = []
    for _ in range(steps):
        x = sample()
        loss = toy_loss_reference(W, b, x, importance).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


# --------------------------------------------------------------------------------------
# The toy model's training loop
# --------------------------------------------------------------------------------------
class _Batches:
    """``sample()`` for the check: seeded fresh batches of the toy data, counting the calls."""

    def __init__(self, p: torch.Tensor, batch: int, seed: int):
        self.p, self.batch, self.gen, self.calls = p, batch, torch.Generator().manual_seed(seed), 0

    def __call__(self) -> torch.Tensor:
        self.calls += 1
        return sample_features_reference(self.p, self.batch, self.gen)


def _toy_problem():
    """Two instances of 5 features in 2 dimensions (sparse and dense), importance 0.8^i."""
    I, m, n = 2, 2, 5
    g = torch.Generator().manual_seed(0)
    W0 = torch.randn(I, m, n, generator=g) * (2 / (m + n)) ** 0.5
    p = torch.tensor([[0.05] * n, [0.3] * n])
    importance = (0.8 ** torch.arange(n, dtype=torch.float32)).expand(I, n).contiguous()
    return W0, torch.zeros(I, n), p, importance


def _variant(W0, b0, sample, importance, steps, lr, mode="right"):
    """What a loop with a likely mistake does (``mode``), on copies of W0 and b0; returns W, b."""
    W, b = W0.clone().requires_grad_(), b0.clone().requires_grad_()
    opt = torch.optim.Adam([W, b], lr=lr)
    for _ in range(steps):
        if mode == "new_opt":
            opt = torch.optim.Adam([W, b], lr=lr)
        loss = toy_loss_reference(W, b, sample(), importance).sum()
        if mode == "lag":
            opt.step()
            opt.zero_grad()
            loss.backward()
            continue
        if mode != "no_zero_grad":
            opt.zero_grad()
        loss.backward()
        if mode == "sgd":
            with torch.no_grad():
                W -= lr * W.grad
                b -= lr * b.grad
        else:
            opt.step()
    return W.detach(), b.detach()


def _run_learner(fn, W0, b0, p, importance, steps, lr, seed=1, batch=128):
    """The learner's loop on copies of W0, b0 and seeded batches: (W, b, losses, sampler)."""
    W, b = W0.clone().requires_grad_(), b0.clone().requires_grad_()
    sample = _Batches(p, batch, seed)
    losses = fn(W, b, sample, importance, steps, lr)
    expect(losses is not None, "return the list of the losses, one number per step")
    try:
        losses = [float(v) for v in losses]
    except (TypeError, ValueError, RuntimeError):
        expect(False, f"return the losses as a list of numbers, one per step (loss.item()); got {type(losses).__name__}")
    expect(len(losses) == steps, f"return one loss per step: {steps} steps gave {len(losses)} numbers")
    return W.detach(), b.detach(), losses, sample


def toy_train_step(learner: Callable) -> Callable:
    """Check ``train_toy(W, b, sample, importance, steps, lr) -> losses`` against the course's Adam loop."""

    def test(fn):
        W0, b0, p, importance = _toy_problem()
        lr = 0.02
        # One step: did W and b move, and as Adam's first step does?
        W, b, losses, sample = _run_learner(fn, W0, b0, p, importance, 1, lr)
        expect(sample.calls >= 1, "draw each step's batch by calling sample()")
        expect(not torch.equal(W, W0),
               "W did not change: train the W and b you are given, in place (give them to the optimiser, not "
               "copies), and call the optimiser's step after backward (a step before backward finds no gradient)")
        expect(not torch.equal(b, b0), "W changed but b did not: give both W and b to the optimiser")
        ref_W, ref_b = _variant(W0, b0, _Batches(p, 128, 1), importance, 1, lr)
        if not (same(W, ref_W) and same(b, ref_b)):
            sgd_W, _ = _variant(W0, b0, _Batches(p, 128, 1), importance, 1, lr, "sgd")
            expect(not same(W, sgd_W), "that step is plain gradient descent: use torch.optim.Adam (its first step "
                                        "moves every weight by about lr, whatever the size of its gradient)")
            other, _, _, _ = _run_learner(fn, W0, b0, p, importance, 1, 2.5 * lr)
            expect(not same(other, W), "the step does not depend on lr: give the lr you are passed to the "
                                        "optimiser (do not keep a fixed learning rate)")
            expect(False, "the first step differs from one Adam step with learning rate lr on the first batch: "
                          "compute the loss of that batch summed over instances, backward, then step")
        # Twenty steps on the same batches as the reference.
        steps = 20
        W, b, losses, sample = _run_learner(fn, W0, b0, p, importance, steps, lr)
        expect(sample.calls != 1, "you drew one batch and reused it for every step: call sample() inside the loop, "
                                  "once per step, so the model sees fresh data (on one batch it overfits)")
        expect(sample.calls == steps, f"draw exactly one batch per step: {steps} steps called sample() "
                                      f"{sample.calls} times")
        ref_W, ref_b = _variant(W0, b0, _Batches(p, 128, 1), importance, steps, lr)
        if not (same(W, ref_W, 1e-4) and same(b, ref_b, 1e-4)):
            for mode, message in (
                    ("no_zero_grad", "the gradients pile up from step to step: clear them every step (the "
                                     "optimiser's zero_grad) before backward, or each step follows the sum of all "
                                     "past gradients"),
                    ("new_opt", "you create a new optimiser every step, so Adam forgets its running averages: create "
                                "it once, before the loop"),
                    ("lag", "each step uses the previous batch's gradient: call backward before the optimiser's step "
                            "(and clear the gradients before backward)")):
                got_W, got_b = _variant(W0, b0, _Batches(p, 128, 1), importance, steps, lr, mode)
                expect(not (same(W, got_W, 1e-4) and same(b, got_b, 1e-4)), message)
            expect(False, f"after {steps} steps W differs from the course's Adam loop on the same batches: each step "
                          "draws a batch, computes the loss summed over instances, clears the gradients, runs "
                          "backward and steps the one optimiser")
        want = torch.tensor(toy_train_step_reference(W0.clone().requires_grad_(), b0.clone().requires_grad_(),
                                                     _Batches(p, 128, 1), importance, steps, lr))
        got = torch.tensor(losses)
        expect(same(got, want, 1e-4) or same(got, want / W0.shape[0], 1e-4),
               "W and b train right, but the losses you return are not each step's loss on its batch (summed over "
               "instances, taken before the step): record loss.item() every step")
        # A few hundred steps: the loss must fall as the reference's does.
        steps = 300
        W, b, losses, _ = _run_learner(fn, W0, b0, p, importance, steps, 0.03, seed=2)
        ref_W, ref_b = _variant(W0, b0, _Batches(p, 128, 2), importance, steps, 0.03)
        fresh = sample_features_reference(p, 20_000, torch.Generator().manual_seed(9))
        mine = float(toy_loss_reference(W, b, fresh, importance).sum())
        ref = float(toy_loss_reference(ref_W, ref_b, fresh, importance).sum())
        start = float(toy_loss_reference(W0, b0, fresh, importance).sum())
        expect(mine < start, f"training made the loss on fresh data worse ({start:.4f} -> {mine:.4f})")
        expect(mine < ref * 1.05 + 1e-4, f"after {steps} steps your model's loss on fresh data is {mine:.4f}, the "
                                         f"reference's {ref:.4f} (from {start:.4f})")

    return check("train_toy", learner, toy_train_step_reference, test,
                 hint="training repeats four things with one Adam optimiser made before the loop: draw a fresh batch, "
                      "compute its loss summed over instances, clear the old gradients and backpropagate, then let "
                      "the optimiser step W and b in place; record each step's loss as a plain number",
                 how="make the Adam optimiser once from W and b with the learning rate you are given. In each step "
                     "call sample for a new batch, compute the toy loss of every instance and add them up, clear the "
                     "gradients, run backward, step the optimiser, and append the loss as a Python number to a list "
                     "you return. Do not copy W and b: the check reads the tensors it passed you")
