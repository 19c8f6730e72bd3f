"""Notebook 06's (width x setting) grid of one architecture over seeds, each cell scored by the
measures of ``helpers.beyond.choosing``, and the rules of ``L0_RULES`` that pick L0 on it without
the truth (``l0_picks``), graded on the truth (``grade_l0_rules``, ``format_grades``)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch

from helpers.beyond.choosing import (SyntheticEval, consistency, elbow, nth_decoder_projection, reconstruction_eval,
                                     synthetic_eval)
from helpers.beyond.matryoshka import PerInstanceBatchTopK
from helpers.beyond.scores import eval_mode
from helpers.beyond.training import train_cached
from helpers.device import get_device, stream_seed
from helpers.diagnostics.result import GridResult
from helpers.diagnostics.rules import mmcs_with_larger
from helpers.metrics import mmcs
from helpers.sae import SAEConfig


@dataclass
class ChoiceGrid:
    """One architecture's (width x setting) grid over seeds; every number per (seed, width, setting)."""

    arch: str
    """``l1``, ``batchtopk`` or ``matryoshka``."""
    widths: np.ndarray
    """(S,) dictionary sizes J."""
    settings: np.ndarray
    """(L,) k values, or alpha values for ``l1``."""
    scores: dict[str, np.ndarray]
    """Each (seeds, S, L): every ``SyntheticEval`` field, ``fvu``, ``nth`` (s_n), ``mmcs``."""
    consistency: np.ndarray
    """(S, L) MCC between the dictionaries of seed 0 and seed 1 over the latents that fire on the
    evaluation inputs (dead latents left out: they match nothing); NaN with one seed."""
    grids: list[GridResult]
    """Per seed, the report's view of the same grid (for ``suggest_hyperparameters``)."""
    saes: list
    """Per width, the trained stack (instance s * L + j: seed s, setting j)."""


def choice_grid(data, base: SAEConfig, widths: Sequence[int], settings: Sequence[float], arch: str,
                seeds: int, name: str, nth: int, prefixes: Sequence[float] = (0.125, 0.25, 0.5),
                n_eval: int = 8192, device=None) -> ChoiceGrid:
    """Train (or load) ``arch`` at every width and setting for ``seeds`` initialisations, and score it."""
    if arch not in ("l1", "batchtopk", "matryoshka"):
        raise ValueError(f"arch must be 'l1', 'batchtopk' or 'matryoshka', got {arch!r}")
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    truth = hasattr(data, "features")          # toy data; otherwise HarvestData (no ground truth)
    dev, G = get_device(device), (data.cfg.n_features if truth else None)
    settings = [float(s) for s in settings] if arch == "l1" else [int(s) for s in settings]
    F = data.features.to(dev).float() if truth else None
    names = list(SyntheticEval._fields) + ["fvu", "nth", "mmcs", "recon", "l1", "dead"]
    scores = {k: np.full((seeds, len(widths), len(settings)), np.nan) for k in names}
    dicts = [[None] * len(widths) for _ in range(seeds)]
    lives = [[None] * len(widths) for _ in range(seeds)]
    if truth:
        with data.fixed_stream("choice-grid-nth"):
            x_nth = data.sample(4096).to(dev)
    else:
        x_eval = data.held_out(n_eval).to(dev)
        x_nth = x_eval[:4096]
    L, saes = len(settings), []
    for w, J in enumerate(widths):     # one stack per width: instance s * L + j is seed s at setting j
        seed = stream_seed(base.seed, f"choice:{arch}:J={int(J)}")
        if arch == "l1":
            cfg = replace(base, architecture="standard", d_sae=int(J), l1_coeffs=tuple(settings) * seeds, seed=seed)
            run = train_cached(cfg, data, f"{name}-l1-J{J}")
        else:
            cfg = replace(base, architecture="batchtopk", d_sae=int(J), k=max(settings),
                          l1_coeffs=(0.0,) * (L * seeds), seed=seed)
            extra = {"prefixes": tuple(prefixes)} if arch == "matryoshka" else {}
            run = train_cached(cfg, data, f"{name}-{arch}-J{J}", list(settings) * seeds, cls=PerInstanceBatchTopK, **extra)
        sae = run.sae
        saes.append(sae)
        cell = lambda values: np.asarray(values, dtype=float).reshape(seeds, L)   # (I,) -> (seeds, L)
        evals = synthetic_eval(sae, data, n_eval) if truth else reconstruction_eval(sae, x_eval)
        for k in SyntheticEval._fields:
            scores[k][:, w] = cell([getattr(r, k) for r in evals])
        scores["fvu"][:, w] = 1 - scores["explained_variance"][:, w]
        D = sae.decoder_directions().detach().float()                             # (I, J, h)
        scores["nth"][:, w] = cell(nth_decoder_projection(x_nth, D, sae.b_dec.detach(), min(nth, int(J) - 1)).cpu().numpy())
        if truth:
            scores["mmcs"][:, w] = cell(mmcs(D, F).cpu().numpy())
        scores["recon"][:, w], scores["dead"][:, w] = cell(run.final["recon_loss"]), cell(run.final["dead"])
        if arch == "l1":                                                          # the penalty it trained with
            scores["l1"][:, w] = cell(run.final["l1_loss"])
        else:                                                                     # the L1 norm a penalty would see
            with torch.no_grad(), data.fixed_stream("choice-grid-l1"):
                acts = sae.encode(data.sample(n_eval).to(dev) if truth else x_eval)
            scores["l1"][:, w] = cell((acts.sum(-1).mean(-1) / int(J)).cpu().numpy())
        with torch.no_grad(), eval_mode(sae):
            live = (sae.encode(x_nth) != 0).any(1)                                 # (I, J) fired at least once
        for s in range(seeds):
            dicts[s][w] = D[s * L:(s + 1) * L]
            lives[s][w] = live[s * L:(s + 1) * L]
    both = np.full((len(widths), len(settings)), np.nan)
    if seeds > 1:
        for w in range(len(widths)):
            for j in range(len(settings)):
                a, b = dicts[0][w][j][lives[0][w][j]], dicts[1][w][j][lives[1][w][j]]
                both[w, j] = consistency(a, b) if len(a) and len(b) else np.nan
    grids = [GridResult(d_sae_values=np.asarray(widths), l1_values=np.asarray(settings, dtype=float),
                        recon_loss=scores["recon"][s], l1_loss=scores["l1"][s], l0=scores["sae_l0"][s],
                        dead=scores["dead"][s], mmcs_ground_truth=scores["mmcs"][s],
                        mmcs_larger=mmcs_with_larger(dicts[s]), reference_size=G or int(dicts[s][0].shape[-1]),
                        config={"arch": arch, "seed": s}) for s in range(seeds)]
    return ChoiceGrid(arch, np.asarray(widths), np.asarray(settings), scores, both, grids, saes)


L0_RULES = ("reconstruction elbow", "s_n elbow", "cross-seed consistency")
"""The rules that pick a sparsity setting at each width without the ground truth."""


def l0_picks(g: ChoiceGrid, window: slice = slice(None)) -> dict[str, np.ndarray]:
    """Per rule, the index (into ``g.settings``) of the setting it picks at each (seed, width),
    (seeds, S) ints, when only the settings in ``window`` were tried.

    The elbows read each curve against the measured L0 on a log scale, over the settings where
    some latent still fires; consistency takes the setting whose two seeds agree best (the
    same pick for both seeds); ``middle of the grid`` takes the middle setting tried, a rule that
    knows nothing but where the grid was put.
    """
    seeds, S, L = g.scores["fvu"].shape
    tried = np.arange(L)[window]
    picks = {r: np.zeros((seeds, S), dtype=int) for r in (*L0_RULES, "middle of the grid")}
    for s in range(seeds):
        for w in range(S):
            l0 = g.scores["sae_l0"][s, w]
            live = tried[l0[tried] > 0]
            order = live[np.argsort(l0[live])]
            for rule, key in (("reconstruction elbow", "fvu"), ("s_n elbow", "nth")):
                picks[rule][s, w] = order[elbow(l0[order], g.scores[key][s, w, order])] if len(order) >= 3 else order[-1]
            cons = g.consistency[w, tried]
            picks["cross-seed consistency"][s, w] = tried[int(np.nanargmax(cons))] if np.isfinite(cons).any() else tried[0]
            picks["middle of the grid"][s, w] = tried[(len(tried) - 1) // 2]
    return picks


def grade_l0_rules(g: ChoiceGrid, true_l0: float, metric: str = "mcc", drop: int = 2) -> list[dict]:
    """One row per rule (and three references): the L0 it picks over the true L0, and how much of
    ``metric`` it gives up against the best setting tried at the same (seed, width), over seeds,
    widths and the windows of the grid.

    The windows: the whole grid and, with ``drop`` > 0, every grid with ``drop`` settings removed
    from its ends (all from the low end, all from the high end, or split), so a rule that only finds
    the middle of whatever grid it is given is caught. The references: ``middle of the grid``,
    ``a setting at random`` (the mean loss over the settings tried) and ``L0 nearest the true L0``.
    """
    m, l0 = g.scores[metric], g.scores["sae_l0"]
    L = m.shape[-1]
    windows = [slice(None)] + [slice(a, L - (drop - a)) for a in range(drop + 1)] if 0 < drop <= L - 3 else [slice(None)]
    rows: dict[str, dict] = {}
    for win in windows:
        tried = np.arange(L)[win]
        best = np.nanmax(m[..., tried], axis=-1)                                 # (seeds, S)
        take = lambda idx: np.take_along_axis(m, idx[..., None], -1)[..., 0]
        at = lambda idx: np.take_along_axis(l0, idx[..., None], -1)[..., 0] / true_l0
        near = tried[np.abs(np.log(np.maximum(l0[..., tried], 1e-9) / true_l0)).argmin(-1)]
        found = {**l0_picks(g, win), "L0 nearest the true L0": near}
        for rule, idx in found.items():
            r = rows.setdefault(rule, {"rule": rule, "L0 / true L0": [], "lost": []})
            r["L0 / true L0"].append(at(idx)); r["lost"].append(best - take(idx))
        r = rows.setdefault("a setting at random", {"rule": "a setting at random", "L0 / true L0": [], "lost": []})
        r["L0 / true L0"].append(np.full(best.shape, np.nan)); r["lost"].append(best - np.nanmean(m[..., tried], axis=-1))
    order = (*L0_RULES, "middle of the grid", "a setting at random", "L0 nearest the true L0")
    return [{"rule": k, "L0 / true L0": np.stack(rows[k]["L0 / true L0"]), "lost": np.stack(rows[k]["lost"])} for k in order]


def format_grades(rows: list[dict], metric: str = "MCC") -> str:
    """The graded rules as a plain-text table (ranges over windows, seeds and widths)."""
    head = f"{'rule':<26}{'picked L0 / true L0':>22}{f'{metric} lost: mean':>20}{'max':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        ratio = r["L0 / true L0"]
        span = "n/a" if np.isnan(ratio).all() else f"{np.nanmin(ratio):.2f} - {np.nanmax(ratio):.2f}"
        lines.append(f"{r['rule']:<26}{span:>22}{np.mean(r['lost']):>20.3f}{np.max(r['lost']):>8.3f}")
    return "\n".join(lines)
