"""Checks for notebook 03's exercises: dead latents, the standardized log losses (SSLL) and
MMCS with every larger dictionary.

Each check runs the reader's function on small hand-made cases whose answers are known, and
returns the function the notebook goes on with (see ``helpers.exercises.check``).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from helpers.exercises import check, expect
from helpers.diagnostics import rules


# --------------------------------------------------------------------------------------
# References
# --------------------------------------------------------------------------------------
def dead_latents_reference(steps_since_fired: np.ndarray, T: int) -> np.ndarray:
    """Latents that fired in none of the last ``T`` batches, counted over the last axis.

    ``steps_since_fired`` (..., J): batches since each latent last fired (0: it fired in the
    last batch). Fired within the last T batches means a count of 0 .. T-1.
    """
    return (np.asarray(steps_since_fired) >= T).sum(-1)


standardized_log_reference = rules.standardized_log
ssll_reference = rules.ssll


def mmcs_with_larger_reference(dictionaries: Sequence[torch.Tensor]) -> np.ndarray:
    """(S,) MMCS of each dictionary (J_i, d) with every larger one, averaged; NaN for the largest
    (``helpers.diagnostics.mmcs_with_larger`` for one alpha)."""
    return rules.mmcs_with_larger([torch.as_tensor(d)[None] for d in dictionaries])[:, 0]


# --------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------
def dead_latents(learner: Callable) -> Callable:
    """Check ``dead_latents(steps_since_fired, T)`` on latents that fired exactly at the window's edge."""

    def test(fn):
        T = 10
        # one instance, 6 latents: fired in the last batch, T-1 and T and T+1 batches ago, never (steps=50)
        ssf = np.array([[0, T - 1, T, T + 1, 50, 3]])
        got = np.asarray(fn(ssf, T))
        expect(got.shape == (1,), f"for a (1, 6) array the answer is one count per instance, shape (1,); got {got.shape}")
        expect(int(got[0]) != 2,
               "a latent with steps_since_fired == T last fired T+1 batches ago (0 means the last batch): "
               "it is dead. Use >= T, not > T")
        expect(int(got[0]) != 4,
               "a latent with steps_since_fired == T-1 fired in batch T of the last T (0 is the last batch): "
               "it is alive. Use >= T, not >= T-1")
        expect(int(got[0]) == 3, f"expected 3 dead latents (steps since fired T, T+1 and 50), got {int(got[0])}")
        many = np.random.default_rng(0).integers(0, 40, size=(3, 4, 25))
        expect(np.array_equal(np.asarray(fn(many, T)), dead_latents_reference(many, T)),
               "count over the last axis (the latents) only: a (3, 4, J) array gives a (3, 4) answer")

    return check("dead_latents", learner, dead_latents_reference, test,
                 "a latent is dead when it fired in none of the last T batches; count the dead latents of each SAE",
                 how="compare each latent's steps since it last fired with T (zero means it fired in the last batch, so "
                     "dead means at least T), then count over the latent axis, keeping one count per SAE")


def _loss_grid():
    rng = np.random.default_rng(1)
    recon = np.exp(rng.normal(-3, 1.5, size=(4, 6)))
    l1 = np.exp(rng.normal(-1, 0.8, size=(4, 6)))
    l1[2:, 4:] = 0.0  # every latent dead: no L1 loss, no logarithm
    return recon, l1


def ssll(learner: Callable) -> Callable:
    """Check ``ssll(recon_loss, l1_loss)`` on a grid whose L1 loss is exactly 0 in four cells."""

    def test(fn):
        recon, l1 = _loss_grid()
        with np.errstate(all="ignore"):
            got = np.asarray(fn(recon, l1), dtype=float)
        want = ssll_reference(recon, l1)
        expect(got.shape == want.shape, f"ssll keeps the grid's shape {want.shape}; got {got.shape}")
        zero = l1 == 0
        expect(np.isfinite(got[~zero]).any(),
               "every cell is NaN or infinite: a cell with L1 loss 0 has log(0) = -inf, which makes the mean "
               "and the std -inf or NaN. Leave those cells out of the mean and std (and make them NaN)")
        expect(not np.isfinite(got[zero]).any(),
               "cells with L1 loss 0 have no logarithm: make them NaN rather than giving them a value")
        with np.errstate(all="ignore"):
            std_first = np.log((recon - recon.mean()) / recon.std()) + np.log((l1 - l1.mean()) / l1.std())
        expect(not np.allclose(np.nan_to_num(got, nan=7.0), np.nan_to_num(std_first, nan=7.0)),
               "you standardized before taking the log: take log(loss) first, then subtract the mean and divide by "
               "the std of the logs (the losses span decades; the report standardizes the log losses)")
        expect(np.allclose(got[~zero], want[~zero], rtol=1e-6, atol=1e-9),
               "the values differ from log(loss), minus its mean, over its std (population std, over the cells "
               "where the log exists), summed for the two losses")

    return check("ssll", learner, ssll_reference, test,
                 "standardise the log of each loss over the grid, then add the two: a cell where both losses are low "
                 "relative to the rest of the grid scores low",
                 how="take logs of positive losses only (the others become missing values); subtract the mean and divide "
                     "by the standard deviation of the logs, ignoring missing cells, separately for the reconstruction "
                     "loss and the L1 loss; add the two standardised grids")


def _differing_dictionaries() -> list[torch.Tensor]:
    """Four dictionaries (3, 5, 8, 12 rows in 6-D) that differ from each other, some of whose best
    matches are antipodal: every plausible variant of MMCS with larger gives another answer here."""
    g = torch.Generator().manual_seed(3)
    dicts = [torch.nn.functional.normalize(torch.randn(J, 6, generator=g), dim=-1) for J in (3, 5, 8, 12)]
    dicts[2][:2] = -dicts[0][:2]      # two rows of the smallest reappear, flipped, in the third
    return dicts


def _mmcs_variants(dicts: Sequence[torch.Tensor]) -> dict[str, np.ndarray]:
    """What the plausible wrong versions of MMCS with larger give, each with its message."""
    S = len(dicts)
    best = lambda a, b, f=lambda c: c: float(f(a @ b.T).max(1).values.mean())  # noqa: E731
    out = {k: np.full(S, np.nan) for k in ("next", "self", "union", "median", "abs")}
    for i in range(S - 1):
        larger = range(i + 1, S)
        out["next"][i] = best(dicts[i], dicts[i + 1])
        out["self"][i] = np.mean([best(dicts[i], dicts[k]) for k in range(i, S)])
        out["union"][i] = best(dicts[i], torch.cat([dicts[k] for k in larger]))
        out["median"][i] = np.median([best(dicts[i], dicts[k]) for k in larger])
        out["abs"][i] = np.mean([best(dicts[i], dicts[k], torch.abs) for k in larger])
    return out


_VARIANT_MESSAGES = {
    "next": "you compared each dictionary with the next size only: average over every larger dictionary",
    "self": "you included the dictionary itself among the 'larger' ones (it matches itself perfectly): start at the next size",
    "union": "you pooled all larger dictionaries into one before taking the best match: take the best match in each "
             "larger dictionary separately, then average over them",
    "median": "you took the median over the larger dictionaries: the report averages them (the mean)",
    "abs": "you took absolute cosines: a flipped feature is not the same feature (the decoder directions are signed)",
}


def _expect_mmcs_variants_rejected(fn: Callable) -> None:
    dicts = _differing_dictionaries()
    got = np.asarray(fn([d.clone() for d in dicts]), dtype=float)
    want = mmcs_with_larger_reference(dicts)
    if got.shape == want.shape and np.allclose(got[:-1], want[:-1], atol=1e-5):
        return
    for name, values in _mmcs_variants(dicts).items():
        expect(not (got.shape == values.shape and np.allclose(got[:-1], values[:-1], atol=1e-5)), _VARIANT_MESSAGES[name])
    expect(False, f"on four dictionaries that differ from each other, expected {np.round(want[:-1], 4)}, got "
           f"{np.round(got[:-1], 4)}: for each i, the mean over every larger k of (the mean over D_i's rows of the "
           "best cosine with D_k's rows)")


def mmcs_with_larger(learner: Callable) -> Callable:
    """Check ``mmcs_with_larger(dictionaries)``: a small dictionary inside a larger one that adds noise rows."""

    def test(fn):
        g = torch.Generator().manual_seed(0)
        d = 8
        base = torch.nn.functional.normalize(torch.randn(3, d, generator=g), dim=-1)
        extra = torch.nn.functional.normalize(torch.randn(9, d, generator=g), dim=-1)
        small, mid, large = base, torch.cat([base, extra[:3]]), torch.cat([base, extra])
        got = np.asarray(fn([small, mid, large]), dtype=float)
        want = mmcs_with_larger_reference([small, mid, large])
        expect(got.shape == (3,), f"one number per dictionary, shape (3,); got {got.shape}")
        expect(np.isnan(got[-1]), "the largest dictionary has nothing larger to compare with: its entry is NaN")
        flipped = np.mean([float(torch.mm(large, small.T).max(1).values.mean()),
                           float(torch.mm(mid, small.T).max(1).values.mean())])
        expect(abs(got[0] - flipped) > 1e-4,
               "you averaged over the larger dictionary's rows: each row of the SMALLER dictionary looks for its "
               "best match in the larger one (the larger one's extra rows would otherwise pull the score down)")
        expect(abs(got[0] - 1.0) < 1e-5,
               f"the small dictionary's 3 rows all appear in both larger ones, so its MMCS with larger is 1; got {got[0]:.4f}")
        expect(np.allclose(got[:-1], want[:-1], atol=1e-5),
               f"expected {np.round(want[:-1], 4)}, got {np.round(got[:-1], 4)}: for each i, the mean over larger k of "
               "(mean over rows of D_i of the max cosine with the rows of D_k)")
        _expect_mmcs_variants_rejected(fn)

    return check("mmcs_with_larger", learner, mmcs_with_larger_reference, test,
                 "how well a dictionary's features are found again in larger dictionaries: for each of its features the "
                 "best cosine in a larger one, averaged over its features and over every larger dictionary",
                 how="for a dictionary and each larger one, form the cosines between their rows, take the maximum over "
                     "the larger dictionary's rows and the mean over the smaller's; average over all larger "
                     "dictionaries, not only the next one. The largest has nothing larger: missing (NaN)")


def dead_latent_pick_reference(dead: np.ndarray, l1_values: Sequence[float], sizes: Sequence[int]) -> tuple[int, float]:
    """(size, alpha) the dead-latent rule picks from a grid's dead counts ``dead`` (S, L): for
    each size, the run of dead-free cells from the smallest alpha (a NaN ends it: a diverged
    cell is not known to be dead-free); the largest alpha any size reaches, ties to the larger
    size; the grid's corner if every size starts with dead latents (``suggest_hyperparameters``)."""
    runs = [rules.dead_free_run(row) for row in np.asarray(dead, dtype=float)]
    if max(runs) < 0:
        return int(sizes[0]), float(l1_values[0])
    i = max(range(len(runs)), key=lambda i: (runs[i], i))
    return int(sizes[i]), float(l1_values[runs[i]])


def dead_latent_pick(learner: Callable) -> Callable:
    """Check ``dead_latent_pick(dead, l1_values, sizes) -> (size, alpha)`` on grids built so that
    each plausible misreading of the rule picks another cell."""
    alphas, sizes = [0.01, 0.03, 0.1, 0.3, 1.0], [64, 128, 256]
    cases = [  # (dead counts (S, L), what the mistake it exposes would pick)
        np.array([[0, 0, 0, 2, 5], [0, 0, 3, 0, 9], [0, 0, 0, 4, 9]], dtype=float),   # a late gap; a tie at 0.1
        np.array([[0, 0, 1, 0, 0], [0, 0, 0, 0, 3], [0, np.nan, 0, 0, 0]], dtype=float),  # a diverged cell
        np.array([[2, 3, 5, 7, 9], [1, 4, 6, 8, 9], [3, 5, 7, 9, 9]], dtype=float),   # dead everywhere
    ]

    def test(fn):
        for dead in cases:
            got = fn(dead.copy(), list(alphas), list(sizes))
            want = dead_latent_pick_reference(dead, alphas, sizes)
            expect(isinstance(got, (tuple, list)) and len(got) == 2,
                   f"return a pair (size, alpha), got {type(got).__name__} {got!r}")
            size, alpha = got
            indices = float(size) == int(size) < len(sizes) and float(alpha) == int(alpha) < len(alphas)
            expect(not indices, "return the size and the alpha themselves (values from sizes and l1_values), not their indices")
            if (int(size), float(alpha)) == want:
                continue
            runs_nan_ok = [rules.dead_free_run(row) for row in np.nan_to_num(dead, nan=0.0)]
            if np.isnan(dead).any() and max(runs_nan_ok) >= 0:
                i = max(range(len(sizes)), key=lambda i: (runs_nan_ok[i], i))
                expect((int(size), float(alpha)) != (sizes[i], alphas[runs_nan_ok[i]]),
                       "a diverged cell (NaN) is not dead-free: nothing says it was, so it ends the run")
            anywhere = max(((j, i) for i in range(len(sizes)) for j in range(len(alphas)) if dead[i, j] == 0), default=None)
            expect(anywhere is None or (int(size), float(alpha)) != (sizes[anywhere[1]], alphas[anywhere[0]]),
                   "a dead-free cell after a cell with dead latents does not count: the run stops at the first "
                   "cell with dead latents, going up in alpha from the smallest")
            runs = [rules.dead_free_run(row) for row in dead]
            if max(runs) >= 0:
                i = min(range(len(sizes)), key=lambda i: (-runs[i], i))
                expect((int(size), float(alpha)) != (sizes[i], alphas[runs[i]]),
                       "two sizes reach the same alpha: the rule prefers the larger size")
            else:
                expect(False, "every size has dead latents at the smallest alpha: the rule falls back to the "
                              f"grid's corner, (sizes[0], l1_values[0]) = ({sizes[0]}, {alphas[0]})")
            expect(False, f"on this grid the rule picks {want}, you picked ({size}, {alpha}): for each size, walk "
                          "up in alpha while the cells are dead-free; take the largest alpha any size reaches")

    return check("dead_latent_pick", learner, dead_latent_pick_reference, test,
                 "the dead-latent rule takes the strongest L1 pressure a dictionary survives without dead latents, "
                 "looking along each size's row from the weakest alpha, and the size that survives the most",
                 how="for each size, walk up the alphas from the smallest while the dead count is exactly zero (a "
                     "missing value stops the walk); note how far each size got; pick the size that got furthest, "
                     "the larger size on a tie, with the last alpha of its walk. If no size has a dead-free first "
                     "cell, fall back to the smallest size and alpha")
