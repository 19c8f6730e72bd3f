"""Checks for notebook 03's exercises: dead latents, the dead-latent rule's pick, the standardized
log losses (SSLL), and method 3 on the grid: MMCS with every larger dictionary and the cell it picks.

Each check runs the reader's function on small hand-made cases whose answers are known, and
returns the function the notebook goes on with (see ``helpers.course.exercises.check``).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from helpers.course.checks.common import reject, unit_rows
from helpers.course.exercises import check, expect
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


ssll_reference = rules.ssll


def mmcs_with_larger_reference(dictionaries: Sequence[torch.Tensor | np.ndarray], l0: np.ndarray,
                               l1_values: Sequence[float], sizes: Sequence[int]) -> tuple[np.ndarray, tuple[int, float]]:
    """Method 3 on a grid: ``(table, (size, alpha))``. ``dictionaries[i]`` (L, J_i, d): size i's
    dictionary at every alpha, sizes ascending. ``table`` (S, L): each dictionary's MMCS with every
    larger one at the same alpha, averaged over the larger ones (``helpers.diagnostics.mmcs_with_larger``),
    NaN for the largest; the pick: the cell where it peaks, among cells with ``l0`` >= 1 (the rule
    of ``suggest_hyperparameters``), or the grid's corner if no cell qualifies."""
    table = rules.mmcs_with_larger(dictionaries)
    kept = np.where(np.asarray(l0, dtype=float) >= 1.0, table, np.nan)
    if not np.isfinite(kept).any():
        return table, (int(sizes[0]), float(l1_values[0]))
    i, j = np.unravel_index(np.nanargmax(kept), kept.shape)
    return table, (int(sizes[i]), float(l1_values[j]))


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


def _nested_grid() -> list[torch.Tensor]:
    """Three sizes (3, 6, 12 rows in 8-D) at two alphas; at each alpha every dictionary holds the
    smaller ones and adds random rows (the larger one's extra rows must not lower the score)."""
    g = torch.Generator().manual_seed(0)
    out = [[], [], []]
    for _ in range(2):
        base, extra = unit_rows(g, 3, 8), unit_rows(g, 9, 8)
        for i, D in enumerate((base, torch.cat([base, extra[:3]]), torch.cat([base, extra]))):
            out[i].append(D)
    return [torch.stack(d) for d in out]


def _differing_grid() -> tuple[list[torch.Tensor], np.ndarray]:
    """Four sizes (3, 5, 8, 12 rows in 6-D) at three alphas that differ from each other, some best
    matches antipodal, and an L0 table: every plausible variant of the table or of the pick gives
    another answer here. At alpha 2 the smallest dictionary sits inside every larger one (agreement
    1, the grid's highest) but its L0 is 0.5: the rule must pass it by (and the first alpha's too)."""
    g = torch.Generator().manual_seed(3)
    dicts = [torch.stack([unit_rows(g, J, 6) for _ in range(3)]) for J in (3, 5, 8, 12)]
    dicts[2][0, :2] = -dicts[0][0, :2]            # two rows of the smallest reappear, flipped, in the third
    for k in (1, 2, 3):
        dicts[k][2, :3] = dicts[0][2]             # alpha 2: the smallest inside every larger one
    l0 = np.full((4, 3), 5.0)
    l0[0, 2] = 0.5                                # ... but it has gone silent
    l0[0, 0] = 0.8                                # a silent cell that is no peak (np.argmax stops at its NaN)
    return dicts, l0


def _table_variants(dicts: Sequence[torch.Tensor]) -> dict[str, np.ndarray]:
    """What the plausible wrong tables give, each named by its message (see _TABLE_MESSAGES)."""
    S, L = len(dicts), dicts[0].shape[0]
    best = lambda a, b, f=lambda c: c: float(f(a @ b.T).max(1).values.mean())  # noqa: E731
    out = {k: np.full((S, L), np.nan) for k in ("next", "self", "union", "median", "abs", "flipped", "mix")}
    for j in range(L):
        D = [d[j] for d in dicts]
        for i in range(S - 1):
            larger = range(i + 1, S)
            out["next"][i, j] = best(D[i], D[i + 1])
            out["self"][i, j] = np.mean([best(D[i], D[k]) for k in range(i, S)])
            out["union"][i, j] = best(D[i], torch.cat([D[k] for k in larger]))
            out["median"][i, j] = np.median([best(D[i], D[k]) for k in larger])
            out["abs"][i, j] = np.mean([best(D[i], D[k], torch.abs) for k in larger])
            out["flipped"][i, j] = np.mean([best(D[k], D[i]) for k in larger])
            out["mix"][i, j] = np.mean([best(D[i], dicts[k][m]) for k in larger for m in range(L)])
    want = rules.mmcs_with_larger(dicts)
    out["alpha_mean"] = np.full((S, L), np.nan)
    out["alpha_mean"][:-1] = want[:-1].mean(axis=1, keepdims=True)
    return out


_TABLE_MESSAGES = {
    "next": "you compared each dictionary with the next size only: average over every larger dictionary",
    "self": "you included the dictionary itself among the 'larger' ones (it matches itself perfectly): start at the next size",
    "union": "you pooled all larger dictionaries into one before taking the best match: take the best match in each "
             "larger dictionary separately, then average over them",
    "median": "you took the median over the larger dictionaries: the report averages them (the mean)",
    "abs": "you took absolute cosines: a flipped feature is not the same feature (the decoder directions are signed)",
    "flipped": "you averaged over the larger dictionary's rows: each row of the SMALLER dictionary looks for its best "
               "match in the larger one (the larger one's extra rows would otherwise pull the score down)",
    "mix": "you compared a dictionary with the larger ones at every alpha: compare only dictionaries trained with the "
           "same alpha (cell (i, j) uses the dictionaries of column j)",
    "alpha_mean": "every alpha of a size got the same number: you averaged over the alphas; the table keeps one value "
                  "per (size, alpha) cell",
}


def _run_table(fn: Callable, dicts: Sequence[torch.Tensor], l0: np.ndarray, alphas, sizes) -> tuple[np.ndarray, object]:
    """Run the reader's function on a grid; fail unless it returns a pair whose table has the right
    shape and a NaN row for the largest size. Returns (table, pick)."""
    out = fn([d.clone() for d in dicts], np.asarray(l0).copy(), list(alphas), list(sizes))
    expect(isinstance(out, (tuple, list)) and len(out) == 2,
           f"return a pair (table, (size, alpha)); got {type(out).__name__}")
    got = np.asarray(out[0], dtype=float)
    S, L = len(dicts), dicts[0].shape[0]
    expect(got.shape == (S, L), f"the table has one row per size and one column per alpha, shape ({S}, {L}); got "
                                f"{got.shape}" + (": rows and columns swapped" if got.shape == (L, S) else ""))
    expect(np.isnan(got[-1]).all(), "the largest dictionary has nothing larger to compare with: its row is NaN")
    return got, out[1]


def _expect_table(fn: Callable, dicts: Sequence[torch.Tensor], l0: np.ndarray, alphas, sizes) -> tuple:
    """Run the reader's function; fail with the likely mistake unless its table is right. Returns its pick."""
    got, pick = _run_table(fn, dicts, l0, alphas, sizes)
    want = rules.mmcs_with_larger(dicts)
    if np.allclose(got[:-1], want[:-1], atol=1e-5):
        return pick
    reject(got[:-1], [(values[:-1], _TABLE_MESSAGES[name]) for name, values in _table_variants(dicts).items()],
           lambda a, b: np.allclose(a, b, atol=1e-5))
    expect(False, f"expected the table\n{np.round(want, 4)}\ngot\n{np.round(got, 4)}\ncell (i, j): the mean over every "
                  "larger size k of (the mean over the rows of dictionary (i, j) of their best cosine with the rows "
                  "of dictionary (k, j))")


def mmcs_with_larger(learner: Callable) -> Callable:
    """Check ``mmcs_with_larger(dictionaries, l0, l1_values, sizes) -> (table, (size, alpha))`` on a
    grid of nested dictionaries, then on one whose dictionaries differ and whose peak has gone silent."""

    def test(fn):
        nested = _nested_grid()
        got, _ = _run_table(fn, nested, np.full((len(nested), nested[0].shape[0]), 5.0), [0.1, 1.0], [3, 6, 12])
        expect(not np.allclose(got[:-1], _table_variants(nested)["flipped"][:-1], atol=1e-5), _TABLE_MESSAGES["flipped"])
        expect(np.allclose(got[:-1], 1.0, atol=1e-5),
               "every dictionary sits inside each larger one (at the same alpha), so every cell but the largest "
               f"size's is 1; got {np.round(got[:-1], 4)}")
        dicts, l0 = _differing_grid()
        alphas, sizes = [0.1, 0.3, 1.0], [3, 5, 8, 12]
        pick = _expect_table(fn, dicts, l0, alphas, sizes)
        want_table, want = mmcs_with_larger_reference(dicts, l0, alphas, sizes)
        expect(isinstance(pick, (tuple, list)) and len(pick) == 2, f"the pick is a pair (size, alpha); got {pick!r}")
        size, alpha = pick
        if (int(size), float(alpha)) == want:
            return
        cell = lambda i, j: (sizes[i], alphas[j])  # noqa: E731
        i, j = np.unravel_index(np.nanargmax(want_table), want_table.shape)
        expect((int(size), float(alpha)) != cell(i, j),
               "you picked a cell whose L0 is below 1: where the L1 penalty has silenced nearly every latent, "
               "leftover directions that no input uses can agree; keep only cells with L0 >= 1")
        kept = np.where(l0 >= 1, want_table, np.nan)
        i, j = np.unravel_index(np.nanargmax(kept), kept.shape)
        expect(not (int(size) == i and float(alpha) == j),
               "return the size and the alpha themselves (values from sizes and l1_values), not their indices")
        swapped = divmod(int(np.nanargmax(kept)), len(sizes))      # (k // S, k % S) instead of (k // L, k % L)
        expect(swapped[1] >= len(alphas) or swapped == (i, j) or (int(size), float(alpha)) != cell(*swapped),
               "turn the flat position of the maximum into (row, column) with the table's shape (S, L), "
               "np.unravel_index(k, table.shape)")
        for t in (kept, want_table):
            first_nan = np.unravel_index(int(np.argmax(np.isnan(t))), t.shape)
            expect((int(size), float(alpha)) != cell(*first_nan),
                   "np.argmax stops at the first NaN (the largest size's row is all NaN): use np.nanargmax")
        expect(False, f"the rule picks {want}, you picked ({size}, {alpha}): the cell with the highest agreement "
                      "among those with L0 >= 1")

    return check("mmcs_with_larger", learner, mmcs_with_larger_reference, test,
                 "how well a dictionary's features are found again in larger dictionaries trained with the same alpha: "
                 "for each of its features the best cosine in a larger one, averaged over its features and over every "
                 "larger dictionary; the rule picks the cell where that agreement peaks, among cells that still encode",
                 how="for each alpha, and each size with each larger size, form the cosines between their rows, take the "
                     "maximum over the larger dictionary's rows and the mean over the smaller's; average over all larger "
                     "sizes (the largest size has nothing larger: missing). Then leave out the cells whose L0 is below "
                     "1, find the largest remaining value ignoring missing ones, and return its table and its size and "
                     "alpha")


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
