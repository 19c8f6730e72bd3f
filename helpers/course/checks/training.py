"""Checks for the bigger training exercises of notebooks 01 and 02: the toy model's Adam loop
(checked in ``helpers.course.checks.toy_training``, re-exported here), and resampling the dead latents of
an SAE.

``resample_dead_latents`` is checked against ``helpers.sae.resample.resample_latents_`` with
``to="input"`` (Anthropic's recipe), by what must hold after it (structure) and by which inputs it
picks (statistics over many seeds). Each check returns the function the notebook goes on with
(see ``helpers.course.exercises.check``).
"""
from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Callable

import torch

from helpers.course.checks.common import expect_reproducible
from helpers.course.checks.toy_training import toy_train_step, toy_train_step_reference  # notebook 01 reads it here
from helpers.course.exercises import check, expect

__all__ = ["toy_train_step", "toy_train_step_reference", "resample_dead", "resample_dead_reference"]


# --------------------------------------------------------------------------------------
# References
# --------------------------------------------------------------------------------------
@torch.no_grad()
def resample_dead_reference(sae, x: torch.Tensor, dead: torch.Tensor, generator: torch.Generator,
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
        def draw():
            one = copy.deepcopy(before)
            _run_resample(fn, one, x, dead, 3)
            return one.W_dec.detach().clone()
        expect_reproducible(draw, "draw the inputs with the generator you are given (torch.multinomial(..., "
                                  "generator=generator)): two calls with the same seed chose differently, or the "
                                  "global random state moved")
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

    return check("resample_dead_latents", learner, resample_dead_reference, test,
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
