"""Checks for the bigger training exercises of notebooks 01 and 02: the toy model's Adam loop,
and resampling the dead latents of an SAE.

``train_toy`` is checked against the course's loop (``helpers.toy.train.train``: a fresh batch a
step, backward, Adam step, gradients cleared) run on the same batches; ``resample_dead_latents``
against ``helpers.sae.resample.resample_latents_`` with ``to="input"`` (Anthropic's recipe), by
what must hold after it (structure) and by which inputs it picks (statistics over many seeds).
Each check returns the function the notebook goes on with (see ``helpers.exercises.check``).
"""
from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Callable

import torch

from helpers.checks.toy import sample_features_reference, toy_loss_reference
from helpers.exercises import check, expect

__all__ = ["toy_train_step", "toy_train_step_reference", "train_toy_reference",
           "resample_dead", "resample_dead_reference", "resample_dead_latents_reference"]


# --------------------------------------------------------------------------------------
# References
# --------------------------------------------------------------------------------------
def train_toy_reference(W: torch.Tensor, b: torch.Tensor, sample: Callable[[], torch.Tensor],
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


toy_train_step_reference = train_toy_reference


@torch.no_grad()
def resample_dead_latents_reference(sae, x: torch.Tensor, dead: torch.Tensor, generator: torch.Generator,
                                    opt: torch.optim.Optimizer | None = None) -> None:
    """Revive the latents marked in ``dead`` (J,) of a one-instance ``sae``, in place, from the
    inputs ``x`` (N, h), as ``helpers.sae.resample.resample_latents_`` does with ``to="input"``:
    draw one input per dead latent (without replacement) with probability proportional to the
    square of its squared reconstruction error, set the latent's decoder row to that input
    (minus b_dec) at unit length, its encoder column to the same direction at 0.2 x the mean norm
    of the live latents' encoder columns, its bias to 0, and clear its Adam moments in ``opt``."""
    from helpers.sae.resample import resample_latents_

    opt = opt if opt is not None else SimpleNamespace(state={})
    resample_latents_(opt, sae.W_enc, sae.W_dec, sae.b_enc, sae.b_dec, x, dead.reshape(1, -1), "input",
                      generator=generator)


resample_dead_reference = resample_dead_latents_reference


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


def _same(a, b, tol=1e-5) -> bool:
    return bool(torch.allclose(a, b, rtol=tol, atol=tol))


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
        if not (_same(W, ref_W) and _same(b, ref_b)):
            sgd_W, _ = _variant(W0, b0, _Batches(p, 128, 1), importance, 1, lr, "sgd")
            expect(not _same(W, sgd_W), "that step is plain gradient descent: use torch.optim.Adam (its first step "
                                        "moves every weight by about lr, whatever the size of its gradient)")
            other, _, _, _ = _run_learner(fn, W0, b0, p, importance, 1, 2.5 * lr)
            expect(not _same(other, W), "the step does not depend on lr: give the lr you are passed to the "
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
        if not (_same(W, ref_W, 1e-4) and _same(b, ref_b, 1e-4)):
            for mode, message in (
                    ("no_zero_grad", "the gradients pile up from step to step: clear them every step (the "
                                     "optimiser's zero_grad) before backward, or each step follows the sum of all "
                                     "past gradients"),
                    ("new_opt", "you create a new optimiser every step, so Adam forgets its running averages: create "
                                "it once, before the loop"),
                    ("lag", "each step uses the previous batch's gradient: call backward before the optimiser's step "
                            "(and clear the gradients before backward)")):
                got_W, got_b = _variant(W0, b0, _Batches(p, 128, 1), importance, steps, lr, mode)
                expect(not (_same(W, got_W, 1e-4) and _same(b, got_b, 1e-4)), message)
            expect(False, f"after {steps} steps W differs from the course's Adam loop on the same batches: each step "
                          "draws a batch, computes the loss summed over instances, clears the gradients, runs "
                          "backward and steps the one optimiser")
        want = torch.tensor([float(toy_loss_reference(w, bb, x, importance).sum()) for w, bb, x in _trajectory(
            W0, b0, p, importance, steps, lr)])
        got = torch.tensor(losses)
        expect(_same(got, want, 1e-4) or _same(got, want / W0.shape[0], 1e-4),
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

    return check("train_toy", learner, train_toy_reference, test,
                 hint="training repeats four things with one Adam optimiser made before the loop: draw a fresh batch, "
                      "compute its loss summed over instances, clear the old gradients and backpropagate, then let "
                      "the optimiser step W and b in place; record each step's loss as a plain number",
                 how="make the Adam optimiser once from W and b with the learning rate you are given. In each step "
                     "call sample for a new batch, compute the toy loss of every instance and add them up, clear the "
                     "gradients, run backward, step the optimiser, and append the loss as a Python number to a list "
                     "you return. Do not copy W and b: the check reads the tensors it passed you")


def _trajectory(W0, b0, p, importance, steps, lr):
    """(W, b, x) before each step of the reference loop (for the losses it should report)."""
    W, b = W0.clone().requires_grad_(), b0.clone().requires_grad_()
    opt, sample, out = torch.optim.Adam([W, b], lr=lr), _Batches(p, 128, 1), []
    for _ in range(steps):
        x = sample()
        out.append((W.detach().clone(), b.detach().clone(), x))
        opt.zero_grad()
        toy_loss_reference(W, b, x, importance).sum().backward()
        opt.step()
    return out


# --------------------------------------------------------------------------------------
# Resampling dead latents
# --------------------------------------------------------------------------------------
def _resample_case():
    """A one-instance SAE (h 6, J 8) whose decoder rows are not unit norm, some live latents that
    fire, latents 1, 4 and 6 dead; 32 inputs; an Adam optimiser with non-zero moments."""
    from helpers.sae import SAE, SAEConfig

    g = torch.Generator().manual_seed(4)
    sae = SAE(SAEConfig(d_in=6, d_sae=8, seed=4), device="cpu")
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(1, 8, 1, generator=g) * 2 + 0.5)
        sae.W_enc.copy_(torch.randn(sae.W_enc.shape, generator=g) * torch.rand(1, 1, 8, generator=g) * 2)
        sae.b_enc.copy_(0.2 * torch.randn(sae.b_enc.shape, generator=g))
    x = torch.randn(32, 6, generator=g) * torch.rand(32, 1, generator=g) * 3
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    for _ in range(2):
        opt.zero_grad()
        sae.loss(x).backward()
        opt.step()
    dead = torch.zeros(8, dtype=torch.bool)
    dead[[1, 4, 6]] = True
    return sae, x, dead, opt


def _stat_case():
    """An SAE none of whose latents fires on 4 inputs of squared norms 1, 2, 3, 4 along different
    axes: their squared errors are 1, 2, 3, 4, so the course draws them with probabilities 1:4:9:16."""
    from helpers.sae import SAE, SAEConfig

    sae = SAE(SAEConfig(d_in=4, d_sae=6, seed=1), device="cpu")
    with torch.no_grad():
        sae.b_enc.fill_(-100.0)
    x = torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0]).sqrt())
    return sae, x


def _run_resample(fn, sae, x, dead, seed, opt=None):
    out = fn(sae, x.clone(), dead.clone(), torch.Generator().manual_seed(seed), opt)
    expect(out is None or out is sae or isinstance(out, int),
           "change the SAE in place (under torch.no_grad()); there is nothing to return")


def _picks(fn, seeds, n_dead: int) -> list[list[int]]:
    """Which of the statistics case's inputs each seed's revived latents point at."""
    sae0, x = _stat_case()
    dead = torch.zeros(sae0.cfg.d_sae, dtype=torch.bool)
    dead[:n_dead] = True
    out = []
    for seed in seeds:
        sae = copy.deepcopy(sae0)
        _run_resample(fn, sae, x, dead, seed)
        rows = sae.W_dec.detach()[0, :n_dead]                                   # (n_dead, 4)
        expect(bool((rows.abs().max(-1).values > 1e-6).all()), "a dead latent's decoder row is zero: set it to "
                                                               "the chosen input")
        out.append(rows.abs().argmax(-1).tolist())
    return out


def resample_dead(learner: Callable) -> Callable:
    """Check ``resample_dead_latents(sae, x, dead, generator, opt=None)`` against the course's recipe."""

    def test(fn):
        sae, x, dead, opt = _resample_case()
        before = copy.deepcopy(sae)
        moments = {name: {k: v.clone() for k, v in opt.state[p].items()} for name, p in sae.named_parameters()
                   if p in opt.state}
        _run_resample(fn, sae, x, dead, 0, opt)
        W_dec, W_enc, b_enc = sae.W_dec.detach()[0], sae.W_enc.detach()[0], sae.b_enc.detach()[0]
        live = ~dead
        expect(torch.equal(W_dec[live], before.W_dec.detach()[0, live])
               and torch.equal(W_enc[:, live], before.W_enc.detach()[0][:, live])
               and torch.equal(b_enc[live], before.b_enc.detach()[0, live])
               and torch.equal(sae.b_dec.detach(), before.b_dec.detach()),
               "you changed live latents (or b_dec): touch only the latents marked dead, in the decoder's rows, the "
               "encoder's columns and the encoder bias")
        expect(not torch.equal(W_dec[dead], before.W_dec.detach()[0, dead]),
               "the dead latents' decoder rows did not change: write into sae.W_dec in place (under torch.no_grad())")
        norms = W_dec[dead].norm(dim=-1)
        units = x / x.norm(dim=-1, keepdim=True)
        cos = (W_dec[dead] / norms[:, None]) @ units.T                       # (n_dead, N)
        best = cos.max(-1)
        if not bool((best.values > 1 - 1e-5).all()):
            x_hat = before.decode(before.encode(x))[0].detach()
            r = x - x_hat
            r_cos = (W_dec[dead] / norms[:, None]) @ (r / r.norm(dim=-1, keepdim=True)).T
            expect(not bool((r_cos.max(-1).values > 1 - 1e-5).all()),
                   "you pointed the latents at the residuals x - x_hat: this exercise follows Anthropic's recipe and "
                   "points them at the chosen inputs themselves")
            expect(not bool((best.values < -1 + 1e-5).any()), "a decoder row points against its input: use +x")
            expect(False, "each dead latent's decoder row must point along one of the inputs x (the one drawn for it)")
        expect(torch.allclose(norms, torch.ones_like(norms), atol=1e-5),
               f"the new decoder rows have norms {[round(v, 3) for v in norms.tolist()]}: divide the input by its "
               "norm so that each row has unit length")
        expect(len(set(best.indices.tolist())) == len(best.indices), "two dead latents point at the same input: "
               "draw without replacement")
        enc = W_enc[:, dead].T                                                 # (n_dead, h)
        enc_cos = torch.nn.functional.cosine_similarity(enc, W_dec[dead], dim=-1)
        expect(bool((enc_cos > 1 - 1e-5).all()), "each revived latent's encoder column must point the same way as its "
                                                  "new decoder row")
        scale = 0.2 * before.W_enc.detach()[0][:, live].norm(dim=0).mean()
        got_scale = enc.norm(dim=-1)
        expect(not torch.allclose(got_scale, 0.2 * before.W_enc.detach()[0].norm(dim=0).mean().expand_as(got_scale),
                                  atol=1e-5),
               "you averaged the norms of all encoder columns: take the mean over the live latents only (the dead "
               "ones' old columns say nothing)")
        expect(torch.allclose(got_scale, scale.expand_as(got_scale), atol=1e-5),
               f"the new encoder columns have norms {[round(v, 3) for v in got_scale.tolist()]}: scale the unit "
               f"direction to 0.2 times the mean norm of the live latents' encoder columns ({float(scale):.3f})")
        expect(torch.allclose(b_enc[dead], torch.zeros(int(dead.sum()))), "set the revived latents' encoder bias to 0")
        for name, p in sae.named_parameters():
            if name not in moments or name not in ("W_dec", "W_enc", "b_enc"):
                continue
            for buf in ("exp_avg", "exp_avg_sq"):
                now, then = opt.state[p][buf][0], moments[name][buf][0]
                if name == "W_enc":
                    now, then = now.T, then.T                                  # (J, h): one row per latent
                expect(torch.all(now[dead] == 0), f"clear Adam's {buf} of the revived latents in {name} (set those "
                                                  "entries of the optimiser's state to 0), or the old momentum drags "
                                                  "them back")
                expect(torch.equal(now[live], then[live]), f"you cleared Adam's {buf} of live latents in {name}: "
                                                           "only the revived latents start afresh")
        # The generator: same seed, same result; the global random state untouched.
        state = torch.get_rng_state()
        twice = []
        for _ in range(2):
            one = copy.deepcopy(before)
            _run_resample(fn, one, x, dead, 3)
            twice.append(one.W_dec.detach().clone())
        moved = not torch.equal(state, torch.get_rng_state())
        torch.set_rng_state(state)
        expect(torch.equal(twice[0], twice[1]) and not moved,
               "draw the inputs with the generator you are given (torch.multinomial(..., generator=generator)): two "
               "calls with the same seed chose differently, or the global random state moved")
        # Which inputs: probabilities 1:4:9:16 (the square of the squared errors 1, 2, 3, 4).
        n = 300
        picks = torch.tensor(_picks(fn, range(n), 1)).flatten()
        freq = torch.bincount(picks, minlength=4).float() / n
        expect(not bool((freq == 1).any()), "you always revive with the worst-reconstructed input: draw at random, "
                                            "with probability proportional to the square of the squared error")
        expect(float(freq.max() - freq.min()) > 0.2,
               f"the inputs were picked about equally often ({[round(v, 2) for v in freq.tolist()]}) although one has "
               "four times the squared error of another: draw with probability proportional to the square of each "
               "input's squared reconstruction error, not uniformly")
        want = torch.tensor([1.0, 4.0, 9.0, 16.0]) / 30
        linear = torch.tensor([1.0, 2.0, 3.0, 4.0]) / 10
        expect(not (float((freq - linear).abs().max()) < 0.09 < float((freq - want).abs().max())),
               f"you drew inputs in proportion to their squared error ({[round(v, 2) for v in freq.tolist()]}): "
               "the recipe squares it once more, so badly reconstructed inputs dominate (weights 1:4:9:16 here)")
        expect(float((freq - want).abs().max()) < 0.09,
               f"the inputs were picked with frequencies {[round(v, 2) for v in freq.tolist()]}, expected about "
               f"{[round(v, 2) for v in want.tolist()]}: probability proportional to the square of each input's "
               "squared error")
        for seed_picks in _picks(fn, range(20), 3):
            expect(len(set(seed_picks)) == 3, "two dead latents point at the same input: draw without replacement")
        # Nothing dead: nothing changes.
        calm = copy.deepcopy(before)
        _run_resample(fn, calm, x, torch.zeros_like(dead), 0)
        expect(all(torch.equal(a, b) for a, b in zip(calm.parameters(), before.parameters())),
               "with no dead latent nothing may change")

    return check("resample_dead_latents", learner, resample_dead_latents_reference, test,
                 hint="a dead latent gets no gradient, so it is pointed somewhere useful by hand: at an input the SAE "
                      "reconstructs badly, drawn at random with weight the square of its squared error; its decoder "
                      "row becomes that input at unit length, its encoder column the same direction at a fifth of the "
                      "live latents' typical encoder norm, its bias zero, and its Adam moments start afresh",
                 how="without tracking gradients: reconstruct the inputs, compute each input's squared error and "
                     "square it; draw as many inputs as there are dead latents, without replacement, with those "
                     "weights and the generator you are given; normalise them. Write them into the dead latents' "
                     "decoder rows; write them, scaled by 0.2 times the mean norm of the live latents' encoder "
                     "columns, into the dead latents' encoder columns; zero their biases. If an optimiser is given, "
                     "zero the dead latents' entries of its two moment buffers for all three parameters. Leave the "
                     "live latents alone")
