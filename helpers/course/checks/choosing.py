"""Checks for notebook 06's exercises (choosing L0 and width): the Matryoshka loss, the nth
decoder projection s_n of "Sparse but Wrong", the cross-seed consistency of two dictionaries and
the elbow of a curve (the consistency check lives in ``helpers.course.checks.matching`` beside MCC's, and
is re-exported here).

The references are the course's own code: ``helpers.beyond.matryoshka.matryoshka_loss`` (the loss
``PerInstanceBatchTopK`` trains with) and, in ``helpers.beyond.choosing``, ``nth_decoder_projection``,
``consistency`` and ``elbow`` (with its default ``log_x=True``). Each check runs the reader's function on several small
random cases, names the likely mistake when the answer differs, and returns the function the
notebook goes on with (see ``helpers.course.exercises.check``).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from helpers.beyond.choosing import elbow as elbow_reference
from helpers.beyond.matryoshka import matryoshka_loss as matryoshka_loss_reference
from helpers.beyond.choosing import nth_decoder_projection as nth_decoder_projection_reference
from helpers.course.checks.matching import seed_consistency, seed_consistency_reference  # notebook 06 finds all its checks here
from helpers.course.checks.common import as_tensor, expect_same_gradients, reject, same, shape_of, unit_rows
from helpers.course.exercises import check, expect

__all__ = ["matryoshka_loss", "matryoshka_loss_reference", "nth_decoder_projection",
           "nth_decoder_projection_reference", "seed_consistency", "seed_consistency_reference",
           "elbow", "elbow_reference"]


# --------------------------------------------------------------------------------------
# Matryoshka loss
# --------------------------------------------------------------------------------------
def _matryoshka_case(I: int, B: int, J: int, h: int, seed: int):
    """acts (I, B, J) sparse and non-negative, D (I, J, h) unit rows, b_dec (I, h) far from 0,
    target (B, h) roughly what the SAE would rebuild, so every prefix's error differs."""
    g = torch.Generator().manual_seed(seed)
    acts = (torch.randn(I, B, J, generator=g) - 0.3).relu() * torch.rand(I, B, J, generator=g).mul(2)
    D = unit_rows(g, I, J, h)
    b_dec = 0.5 + torch.randn(I, h, generator=g)
    target = torch.randn(B, h, generator=g) + b_dec.mean(0)
    return acts, D, b_dec, target


def _matryoshka_variant(acts, D, b_dec, target, widths, *, bias=True, over_h="mean", cumulative=True,
                        add_full=False, over_batch="mean", last_only=False) -> torch.Tensor:
    """The Matryoshka loss with one of the likely mistakes switched on."""
    I, B, J = acts.shape
    widths = list(widths) + ([J] if add_full and J not in widths else [])
    base = b_dec[:, None, :] if bias else torch.zeros_like(b_dec)[:, None, :]
    x_hat, start, total, last = base, 0, acts.new_zeros(I), None
    for m in widths:
        block = torch.bmm(acts[..., start:m], D[:, start:m])
        x_hat = x_hat + block if cumulative else base + block
        err = (x_hat - target).pow(2)
        err = err.mean(-1) if over_h == "mean" else err.sum(-1)
        err = err.mean(-1) if over_batch == "mean" else err.sum(-1)
        total, last, start = total + err, err, m
    return last if last_only else total


_MATRYOSHKA_MISTAKES = [
    (dict(bias=False), "you left out b_dec: every prefix's reconstruction is b_dec plus its latents times their "
                       "decoder rows (a prefix of no latents would still rebuild b_dec)"),
    (dict(over_h="sum"), "you summed the squared error over the h coordinates: average it (the 1/h in the loss), "
                         "as the SAE's own reconstruction loss does"),
    (dict(cumulative=False), "each prefix uses only its own block of latents (from the previous width to this one): "
                             "prefix m rebuilds the target from ALL of the first m latents, latents 0 .. m-1"),
    (dict(add_full=True), "you added the full width J as one more prefix: the full dictionary's error is the usual "
                          "reconstruction loss, already in the SAE's loss; sum only over the widths you are given "
                          "(J counts only when it is among them)"),
    (dict(over_batch="sum"), "you summed over the batch: average each prefix's error over the batch (then sum over "
                             "the prefixes)"),
    (dict(last_only=True), "you returned only the last prefix's error: add up the errors of every prefix width"),
    (dict(bias=False, over_h="sum"), "you left out b_dec and summed over h: rebuild from b_dec plus the latents, and "
                                     "average the squared error over h"),
]


def matryoshka_loss(learner: Callable) -> Callable:
    """Check ``matryoshka_loss(acts, D, b_dec, target, widths) -> (inst,)`` against the course's
    ``helpers.beyond.matryoshka.matryoshka_loss``."""

    def test(fn):
        cases = [((3, 6, 10, 5), [3, 7], 0),          # J = 10 is no multiple of the widths
                 ((2, 4, 12, 6), [1, 3, 6], 1),        # the usual J/8, J/4, J/2 (rounded)
                 ((4, 5, 9, 4), [2, 5, 9], 2),         # J itself among the widths: then it counts
                 ((2, 7, 11, 3), [4], 3)]              # one prefix
        for (I, B, J, h), widths, seed in cases:
            acts, D, b_dec, target = _matryoshka_case(I, B, J, h, seed)
            ins = [t.clone().requires_grad_() for t in (acts, D, b_dec)]
            given = [t.detach().clone() for t in ins]
            raw = fn(*ins, target.clone(), list(widths))
            for name, now, before in zip(("acts", "D", "b_dec"), ins, given):
                expect(torch.equal(now.detach(), before),
                       f"your function changed {name} in place (an in-place += on a view of it?): build the "
                       "reconstruction as a new tensor, e.g. x_hat = x_hat + ..., so the SAE's own tensors are untouched")
            got = as_tensor(raw, (I,), "one loss per instance")
            want = matryoshka_loss_reference(acts, D, b_dec, target, widths)
            if same(got, want):
                expect_same_gradients(
                    raw, matryoshka_loss_reference(*ins, target, widths), dict(zip(("acts", "D", "b_dec"), ins)),
                    "your loss has the right values but no gradient: it is trained through, so build it from acts, D "
                    "and b_dec with torch operations (no .item(), .tolist(), numpy or torch.no_grad())",
                    lambda _: "your loss has the right values but the wrong gradient (a detached piece?): keep every "
                              "prefix's reconstruction connected to acts, D and b_dec",
                    weights=torch.arange(1.0, I + 1))                  # a different weight per instance
                continue
            mixed = ("you mixed the instances: each instance is its own SAE with its own loss, so keep the instance "
                     "axis first and reduce only over the batch and h")
            reject(got, [(_matryoshka_variant(acts, D, b_dec, target, widths, **kwargs), message)
                         for kwargs, message in _MATRYOSHKA_MISTAKES]
                   + [(torch.full_like(want, float(want.sum())), mixed), (want.mean().expand_as(want), mixed)],
                   otherwise=f"with {I} instances, batch {B}, J = {J}, h = {h} and widths {widths} the loss is "
                             f"{[round(v, 4) for v in want.tolist()]}, you got {[round(v, 4) for v in got.tolist()]}: "
                             "for each width m, rebuild the target as b_dec + acts[..., :m] @ D[:, :m], take the "
                             "squared error averaged over h and over the batch, and add these up over the widths")

    return check("matryoshka_loss", learner, matryoshka_loss_reference, test,
                 hint="a Matryoshka SAE asks every nested prefix of its dictionary (the first m latents, for each "
                      "width m) to rebuild the input on its own, so the early latents must carry the general "
                      "features; the extra loss adds up, over the prefix widths, the reconstruction error of each "
                      "prefix, measured like the usual reconstruction loss",
                 how="for each width in turn, rebuild the target from the decoder bias plus the first m latents "
                     "times their decoder rows (the whole prefix, not only the newest block; adding the newest "
                     "block to the previous reconstruction is the cheap way); take the squared error averaged over "
                     "the input coordinates and over the batch, one number per instance; add these numbers up over "
                     "the widths you are given, and no other (the full width is the ordinary loss)")


# --------------------------------------------------------------------------------------
# nth decoder projection
# --------------------------------------------------------------------------------------
def _nth_case(I: int, B: int, J: int, h: int, seed: int):
    """x (B, h), D (I, J, h) unit rows, b_dec (I, h) far from 0 and different per instance."""
    g = torch.Generator().manual_seed(seed)
    D = unit_rows(g, I, J, h)
    b_dec = 1.0 + 0.8 * torch.randn(I, h, generator=g)
    x = torch.randn(B, h, generator=g) + b_dec[0] + 0.3 * torch.randn(h, generator=g)
    return x, D, b_dec


def _nth_variants(x, D, b_dec, n) -> list[tuple[torch.Tensor, str]]:
    """What the likely mistakes compute on this case, with their messages."""
    I, J, h = D.shape
    B = x.shape[0]
    proj = torch.einsum("bh,ijh->ibj", x, D) - torch.einsum("ih,ijh->ij", b_dec, D)[:, None]     # (I, B, J)
    flat = proj.reshape(I, -1)
    nobias = torch.einsum("bh,ijh->ibj", x, D).reshape(I, -1)
    desc = flat.sort(-1, descending=True).values
    out = [
        (nobias.sort(-1, descending=True).values[:, n * B],
         "you projected x itself: subtract b_dec first (x - b_dec is what the SAE encodes and the decoder rows rebuild)"),
        (desc[:, n * B - 1] if n > 0 else desc[:, -1],
         f"off by one: counting from 0, the entry ranked n x batch from the top is index n x batch (= {n * B}), i.e. "
         "the (n x batch + 1)-th largest (with topk, ask for n x batch + 1 values and keep the last)"),
        (desc[:, n * B + 1] if n * B + 1 < B * J else desc[:, 0],
         "off by one: counting from 0, the entry ranked n x batch from the top is index n x batch, the "
         "(n x batch + 1)-th largest, not the one after it"),
        (proj.sort(-1, descending=True).values[..., n].mean(-1),
         "you took each input's (n+1)-th largest projection and averaged over the batch: s_n pools the batch's "
         "batch x J projections of each instance and reads ONE value, the one ranked n x batch from the top (a "
         "busy input may hold several of the large ones, as in BatchTopK)"),
        (proj.sort(-1, descending=True).values[..., n].median(-1).values,
         "you took each input's (n+1)-th largest projection: s_n pools the batch's batch x J projections of each "
         "instance and reads the one ranked n x batch from the top"),
        (flat.sort(-1).values[:, n * B],
         "you read from the bottom (the smallest projections): s_n counts n x batch from the TOP, the large ones"),
        (flat.sort(-1).values[:, n],
         "you read the n-th smallest: s_n counts n x batch from the TOP, the large projections"),
        (desc[:, n],
         "you counted n from the top of the pooled projections: the batch holds batch x J of them, so the entry "
         f"ranked n x batch (= {n * B}) from the top plays the role of each input's (n+1)-th largest"),
    ]
    # D laid out wrongly: reshaped instead of transposed, one instance's D for all, instances pooled
    xc = x[None] - b_dec[:, None, :]
    reshaped = torch.bmm(xc, D.reshape(I, h, J)).reshape(I, -1).sort(-1, descending=True).values[:, n * B]
    first = (torch.einsum("ibh,jh->ibj", xc, D[0])).reshape(I, -1).sort(-1, descending=True).values[:, n * B]
    first_bias = torch.einsum("bh,jh->bj", x - b_dec[0], D[0]).reshape(-1).sort(descending=True).values[n * B]
    pooled = proj.reshape(-1).sort(descending=True).values[n * B * I]
    pooled_nb = proj.reshape(-1).sort(descending=True).values[n * B]
    out += [(reshaped, "you reshaped D (inst, J, h) into (inst, h, J): that scrambles the rows; swap the last two axes "
                       "instead (D.transpose(1, 2), or an einsum), so each column is one latent's decoder row"),
            (first, "every instance used the first instance's decoder: project on each instance's own rows D[i]"),
            (first_bias.expand(I), "every instance used the first instance's b_dec and decoder: each instance is its "
                                   "own SAE, with its own b_dec and rows"),
            (pooled.expand(I), "you pooled the instances: each instance is its own SAE, so keep the instance axis and "
                               "pool only the batch and latent axes"),
            (pooled_nb.expand(I), "you pooled the instances: each instance is its own SAE, so keep the instance axis "
                                  "and pool only the batch and latent axes")]
    return out


def nth_decoder_projection(learner: Callable) -> Callable:
    """Check ``nth_decoder_projection(x, D, b_dec, n) -> (inst,)`` against the course's
    ``helpers.beyond.choosing.nth_decoder_projection``."""

    def test(fn):
        cases = [((3, 6, 10, 5), 3, 0), ((2, 5, 7, 4), 0, 1), ((3, 4, 8, 6), 7, 2),   # n = 0 and n = J - 1
                 ((4, 9, 12, 5), 5, 3), ((2, 1, 6, 3), 2, 4)]                          # batch of one
        for (I, B, J, h), n, seed in cases:
            x, D, b_dec = _nth_case(I, B, J, h, seed)
            got = as_tensor(fn(x.clone(), D.clone(), b_dec.clone(), n), (I,), "one s_n per instance")
            want = nth_decoder_projection_reference(x, D, b_dec, n)
            if same(got, want):
                continue
            reject(got, _nth_variants(x, D, b_dec, n),
                   otherwise=f"with {I} instances, batch {B}, J = {J} and n = {n}, s_n is "
                             f"{[round(v, 4) for v in want.tolist()]}, you got {[round(v, 4) for v in got.tolist()]}: "
                             "per instance, project every x - b_dec on every decoder row, pool the batch x J numbers "
                             "and take the one ranked n x batch from the top (counting from 0)")

    return check("nth_decoder_projection", learner, nth_decoder_projection_reference, test,
                 hint="s_n measures how strongly an input points along its (n+1)-th best decoder direction: if the "
                      "SAE's L0 is too low its latents mix several features and many decoder rows line up with each "
                      "input, so s_n stays high. Over a batch it pools every input's projections, the way BatchTopK "
                      "pools activations",
                 how="for each instance subtract its decoder bias from the inputs and take the dot product of each "
                     "centred input with each of its decoder rows (batch times J numbers per instance); lay those out "
                     "as one row per instance and read the value ranked n times batch from the top, counting the "
                     "largest as rank 0")


# --------------------------------------------------------------------------------------
# Elbow
# --------------------------------------------------------------------------------------
def _elbow_cases() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Curves of different shapes against L0-like x values spread over orders of magnitude."""
    rng = np.random.default_rng(6)
    x1 = np.array([1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144], dtype=float)
    x2 = np.array([2, 4, 8, 16, 32, 64, 128, 256], dtype=float)
    x3 = np.geomspace(1, 300, 12) * (1 + 0.05 * rng.standard_normal(12))
    x3.sort()
    x4 = np.array([1, 1.5, 2, 3, 4, 6, 9, 12, 20, 40], dtype=float)
    x5 = np.geomspace(1, 1000, 10)
    return [    # the hump comes first: there every mistake but "no log" picks its own, different point
        ("a curve that rises and falls again", x3, np.exp(-(np.log(x3) - np.log(20)) ** 2 / (2 * 1.5 ** 2))
         + 0.3 * np.log(x3) / np.log(x3.max())),
        ("a power law (log x matters here)", x5, x5 ** -0.5),
        ("a falling curve (FVU against L0)", x1, 0.9 / (1 + (x1 / 6) ** 1.5) + 0.02 * x1 / x1.max()),
        ("a rising curve that saturates", x2, 1 - np.exp(-x2 / 20)),
        ("a falling curve with a sharp knee", x4, np.where(x4 < 4, 1 - 0.2 * x4, 0.2 - 0.002 * x4)),
        ("a noisy falling curve", x1, np.exp(-x1 / 15) + 0.03 * rng.standard_normal(x1.size)),
    ]


def _elbow_variants(x: np.ndarray, y: np.ndarray) -> list[tuple[int | None, str]]:
    """What the likely mistakes pick on this curve (None: not defined here), with their messages."""
    d2 = np.diff(y, 2)
    second = "you took the largest second difference (the sharpest bend between neighbours): the elbow is the " \
             "point farthest from the chord between the curve's two ends, after rescaling both axes to [0, 1]"

    def chord_to_max(upto: bool) -> int | None:
        u = np.log(x)
        u = (u - u.min()) / np.ptp(u)
        v = (y - y.min()) / max(np.ptp(y), 1e-12)
        e = int(np.argmax(y))
        if e == 0:                                 # no chord: this mistake says nothing on this curve
            return None
        dist = np.abs((v[e] - v[0]) * u - (u[e] - u[0]) * v + u[e] * v[0] - v[e] * u[0]) / np.hypot(u[e] - u[0], v[e] - v[0])
        return int(np.argmax(dist[:e + 1] if upto else dist))

    def unscaled() -> int:
        u, v = np.log(x), y
        dist = np.abs((v[-1] - v[0]) * u - (u[-1] - u[0]) * v + u[-1] * v[0] - v[-1] * u[0])
        return int(np.argmax(dist))

    return [
        (int(np.argmin(y)), "you took the lowest point of the curve (argmin y): the elbow is where the curve bends, "
                            "the point farthest from the straight line between its first and last points"),
        (int(np.argmax(y)), "you took the highest point of the curve: the elbow is the point farthest from the "
                            "straight line between its first and last points"),
        (int(np.argmax(d2)) + 1, second), (int(np.argmax(np.abs(d2))) + 1, second), (int(np.argmin(d2)) + 1, second),
        (int(np.argmax(d2)), second), (int(np.argmax(np.abs(d2))), second),
        (elbow_reference(x, y, log_x=False), "you used x as it is: L0 values span orders of magnitude, so take log x "
                                             "first (the curve is read on a log axis), then rescale both axes to [0, 1]"),
        (chord_to_max(False), "your chord ends at the highest point of the curve: draw it between the curve's first "
                              "and LAST points"),
        (chord_to_max(True), "your chord ends at the highest point of the curve: draw it between the curve's first "
                             "and LAST points"),
        (unscaled(), "rescale both axes to [0, 1] (after taking log x) before measuring distances: otherwise the "
                     "axis with the larger numbers decides alone"),
    ]


def elbow(learner: Callable) -> Callable:
    """Check ``elbow(x, y) -> int`` against ``helpers.beyond.choosing.elbow`` (with ``log_x=True``)."""

    def test(fn):
        cases, picks = _elbow_cases(), []
        for name, x, y in cases:
            got = fn(x.copy(), y.copy())
            want = elbow_reference(x, y)
            try:
                value = float(got)
            except (TypeError, ValueError, RuntimeError):
                expect(False, f"return the index of the elbow point, one int; got {type(got).__name__} {shape_of(got)}")
            expect(not (value == x[want] and value != want),
                   f"you returned the elbow's x value ({value:g}): return its index ({want}), an int")
            expect(value.is_integer(), f"return the index of the elbow point, an int; got {got!r}")
            picks.append(int(value))
        wants = [elbow_reference(x, y) for _, x, y in cases]
        if picks == wants:
            return
        # an index can match a mistake by chance: name a mistake only if it picks what you picked on every curve
        variants = [_elbow_variants(x, y) for _, x, y in cases]
        for k, (_, message) in enumerate(variants[0]):
            theirs = [v[k][0] for v in variants]
            expect(not all(t is None or t == mine for t, mine in zip(theirs, picks)), message)
        i = next(i for i, (mine, want) in enumerate(zip(picks, wants)) if mine != want)
        name, x, _ = cases[i]
        expect(False, f"on {name} the elbow is index {wants[i]} (x = {x[wants[i]]:.3g}), you picked {picks[i]}: take "
                      "log x, rescale log x and y to [0, 1], and pick the point farthest from the line through the "
                      "first and last points")

    return check("elbow", learner, elbow_reference, test,
                 hint="an elbow is where a curve stops changing fast and starts changing slowly; a simple, scale-free "
                      "way to find it is the point farthest from the straight line joining the curve's two ends, once "
                      "both axes are put on the same footing (L0 read on a log axis, both axes rescaled to [0, 1])",
                 how="take the logarithm of x; rescale it and y each to run from 0 to 1 (subtract the minimum, divide "
                     "by the range); draw the straight line through the first and the last point; compute each "
                     "point's perpendicular distance to that line and return the index of the largest")
