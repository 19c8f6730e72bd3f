"""The checks of notebook 03's exercises: each plausible wrong solution is caught with its own
message (tests/test_checks_common.py checks the reference and the stub)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.checks import diagnostics as checks
from helpers.diagnostics.rules import dead_free_run
from helpers.exercises import ExerciseError


def test_dead_latents_catches_off_by_one_windows():
    with pytest.raises(ExerciseError, match=">= T, not > T"):
        checks.dead_latents(lambda ssf, T: (np.asarray(ssf) > T).sum(-1))
    with pytest.raises(ExerciseError, match=">= T, not >= T-1"):
        checks.dead_latents(lambda ssf, T: (np.asarray(ssf) >= T - 1).sum(-1))
    with pytest.raises(ExerciseError, match="last axis"):
        checks.dead_latents(lambda ssf, T: (np.asarray(ssf) >= T).sum(0) if np.asarray(ssf).ndim > 2
                            else (np.asarray(ssf) >= T).sum(-1))


def test_ssll_catches_log_of_zero_and_standardizing_first():
    def with_log0(r, l):
        lr, ll = np.log(r), np.log(l)
        return (lr - lr.mean()) / lr.std() + (ll - ll.mean()) / ll.std()

    with pytest.raises(ExerciseError, match="log\\(0\\)"):
        checks.ssll(with_log0)

    def std_first(r, l):
        return np.log((r - r.mean()) / r.std()) + np.log((l - l.mean()) / l.std())

    with pytest.raises(ExerciseError, match="standardized before taking the log"):
        checks.ssll(std_first)

    def zero_filled(r, l):  # log(0) replaced by a number instead of left out
        ll = np.log(np.where(l > 0, l, 1e-12))
        lr = np.log(r)
        return (lr - lr.mean()) / lr.std() + (ll - ll.mean()) / ll.std()

    with pytest.raises(ExerciseError, match="no logarithm"):
        checks.ssll(zero_filled)


def test_mmcs_with_larger_catches_averaging_over_the_larger_rows():
    def flipped(dicts):
        S = len(dicts)
        out = np.full(S, np.nan)
        for i in range(S - 1):
            out[i] = np.mean([float((dicts[k] @ dicts[i].T).max(1).values.mean()) for k in range(i + 1, S)])
        return out

    with pytest.raises(ExerciseError, match="larger dictionary's rows"):
        checks.mmcs_with_larger(flipped)

    def no_nan(dicts):  # the largest gets 0 instead of NaN
        out = checks.mmcs_with_larger_reference(dicts)
        out[-1] = 0.0
        return out

    with pytest.raises(ExerciseError, match="NaN"):
        checks.mmcs_with_larger(no_nan)


def _variant(kind):
    """mmcs_with_larger with one plausible mistake (the first four agree with the reference whenever
    every dictionary sits inside the larger ones, as in the check's first case)."""
    def fn(dicts):
        S, out = len(dicts), np.full(len(dicts), np.nan)
        best = lambda a, b: float((a @ b.T).max(1).values.mean())  # noqa: E731
        for i in range(S - 1):
            larger = list(range(i + 1, S))
            if kind == "next":
                out[i] = best(dicts[i], dicts[i + 1])
            elif kind == "self":
                out[i] = np.mean([best(dicts[i], dicts[k]) for k in [i, *larger]])
            elif kind == "union":
                out[i] = best(dicts[i], torch.cat([dicts[k] for k in larger]))
            elif kind == "median":
                out[i] = np.median([best(dicts[i], dicts[k]) for k in larger])
            elif kind == "abs":
                out[i] = np.mean([float((dicts[i] @ dicts[k].T).abs().max(1).values.mean()) for k in larger])
        return out
    return fn


@pytest.mark.parametrize("kind, message", [("next", "next size only"), ("self", "dictionary itself"),
                                           ("union", "pooled all larger"), ("median", "median"),
                                           ("abs", "absolute cosines")])
def test_mmcs_with_larger_catches_each_plausible_variant(kind, message):
    with pytest.raises(ExerciseError, match=message):
        checks.mmcs_with_larger(_variant(kind))


def _pick(kind):
    """dead_latent_pick with one plausible misreading of the rule."""
    def fn(dead, alphas, sizes):
        dead = np.asarray(dead, dtype=float)
        if kind == "anywhere":   # the largest dead-free alpha of any size, gaps ignored
            j, i = max((j, i) for i in range(len(sizes)) for j in range(len(alphas)) if dead[i, j] == 0)
            return sizes[i], alphas[j]
        rows = np.nan_to_num(dead, nan=0.0) if kind == "nan_ok" else dead
        runs = [dead_free_run(r) for r in rows]
        if max(runs) < 0:
            return sizes[0], alphas[0]
        if kind == "smaller":
            i = min(range(len(sizes)), key=lambda i: (-runs[i], i))
        else:
            i = max(range(len(sizes)), key=lambda i: (runs[i], i))
        return (i, runs[i]) if kind == "indices" else (sizes[i], alphas[runs[i]])
    return fn


@pytest.mark.parametrize("kind, message", [("anywhere", "does not count"), ("nan_ok", "diverged cell"),
                                           ("smaller", "prefers the larger size"), ("indices", "not their indices")])
def test_dead_latent_pick_catches_each_misreading(kind, message):
    with pytest.raises(ExerciseError, match=message):
        checks.dead_latent_pick(_pick(kind))


def test_dead_latent_pick_is_the_rule_the_suggestions_use():
    from helpers.diagnostics import run_grid, suggest_hyperparameters
    from helpers.sae import SAEConfig

    gen = torch.Generator().manual_seed(0)
    grid = run_grid(lambda n: torch.randn(n, 8, generator=gen).relu(), SAEConfig(d_in=8, d_sae=8, steps=60,
                    dead_window=20, log_every=20), (4, 8, 16), (0.01, 0.3, 3.0, 30.0), progress=False)
    want = suggest_hyperparameters(grid).dead
    got = checks.dead_latent_pick_reference(grid.dead, grid.l1_values, grid.d_sae_values)
    assert got == (want.d_sae, want.l1), f"the exercise's rule picks {got}, suggest_hyperparameters {want}"
