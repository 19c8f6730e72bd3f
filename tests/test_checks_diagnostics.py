"""The checks of notebook 03's exercises: each plausible wrong solution is caught with its own
message (tests/test_checks_common.py checks the reference and the stub)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.course.checks import diagnostics as checks
from helpers.diagnostics.rules import dead_free_run
from helpers.course.exercises import ExerciseError


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


def _method3(table_kind=None, pick_kind=None):
    """mmcs_with_larger (method 3 on a grid) with one plausible mistake in the table or in the pick."""
    def fn(dicts, l0, alphas, sizes):
        S, L = len(dicts), dicts[0].shape[0]
        best = lambda a, b: float((a @ b.T).max(1).values.mean())  # noqa: E731
        out = np.full((S, L), np.nan)
        for j in range(L):
            for i in range(S - 1):
                larger = list(range(i + 1, S))
                D = lambda k: dicts[k][j]  # noqa: E731
                if table_kind == "next":
                    out[i, j] = best(D(i), D(i + 1))
                elif table_kind == "self":
                    out[i, j] = np.mean([best(D(i), D(k)) for k in [i, *larger]])
                elif table_kind == "union":
                    out[i, j] = best(D(i), torch.cat([D(k) for k in larger]))
                elif table_kind == "median":
                    out[i, j] = np.median([best(D(i), D(k)) for k in larger])
                elif table_kind == "abs":
                    out[i, j] = np.mean([float((D(i) @ D(k).T).abs().max(1).values.mean()) for k in larger])
                elif table_kind == "flipped":
                    out[i, j] = np.mean([best(D(k), D(i)) for k in larger])
                elif table_kind == "mix":
                    out[i, j] = np.mean([best(D(i), dicts[k][m]) for k in larger for m in range(L)])
                else:
                    out[i, j] = np.mean([best(D(i), D(k)) for k in larger])
        if table_kind == "alpha_mean":
            out = np.repeat(np.nanmean(out, axis=1, keepdims=True), L, axis=1)
        elif table_kind == "no_nan":
            out[-1] = 0.0
        kept = out if pick_kind == "no_mask" else np.where(np.asarray(l0) >= 1, out, np.nan)
        k = int(np.argmax(kept)) if pick_kind == "argmax" else int(np.nanargmax(kept))
        i, j = divmod(k, S) if pick_kind == "swapped" else np.unravel_index(k, kept.shape)
        pick = (int(i), int(j)) if pick_kind == "indices" else (sizes[int(i)], alphas[int(j)])
        return (out.T if table_kind == "transposed" else out), pick
    return fn


def test_method3_right_solution_passes(capsys):
    right = _method3()
    assert checks.mmcs_with_larger(right) is right
    assert "✔" in capsys.readouterr().out


@pytest.mark.parametrize("kind, message", [
    ("next", "next size only"), ("self", "dictionary itself"), ("union", "pooled all larger"), ("median", "median"),
    ("abs", "absolute cosines"), ("flipped", "larger dictionary's rows"), ("mix", "same alpha"),
    ("alpha_mean", "averaged over the alphas"), ("no_nan", "NaN"), ("transposed", "swapped")])
def test_method3_table_mistakes_fail_with_their_message(kind, message):
    with pytest.raises(ExerciseError, match=message):
        checks.mmcs_with_larger(_method3(table_kind=kind))


@pytest.mark.parametrize("kind, message", [
    ("no_mask", "L0 is below 1"), ("argmax", "nanargmax"), ("indices", "not their indices"),
    ("swapped", "unravel_index")])
def test_method3_pick_mistakes_fail_with_their_message(kind, message):
    with pytest.raises(ExerciseError, match=message):
        checks.mmcs_with_larger(_method3(pick_kind=kind))


def test_method3_is_the_rule_the_suggestions_use():
    from helpers.diagnostics import run_grid, suggest_hyperparameters
    from helpers.sae import SAEConfig

    gen = torch.Generator().manual_seed(0)
    grid = run_grid(lambda n: torch.randn(n, 8, generator=gen).relu(), SAEConfig(d_in=8, d_sae=8, steps=60,
                    dead_window=20, log_every=20), (4, 8, 16), (0.01, 0.3, 3.0, 30.0), progress=False)
    want = suggest_hyperparameters(grid).mmcs_larger
    table, got = checks.mmcs_with_larger_reference(grid.dictionaries, grid.l0, grid.l1_values, grid.d_sae_values)
    assert got == (want.d_sae, want.l1), f"the exercise's rule picks {got}, suggest_hyperparameters {want}"
    assert np.allclose(table, grid.mmcs_larger, equal_nan=True, atol=2e-3)


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
