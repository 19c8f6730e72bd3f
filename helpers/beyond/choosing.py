"""Choosing L0 and width (notebook 06): the SAEs, the measures and the rules, graded on ground truth.

* the SAEs: ``PerInstanceBatchTopK`` and its Matryoshka loss (``helpers.beyond.matryoshka``, a
  module of its own so that the grid's cache keys follow the training code only).
* ``synthetic_eval``: the numbers SAELens' synthetic-data evaluation reports (MCC, uniqueness,
  precision / recall / F1 of each latent against its best-matching true feature, explained
  variance, shrinkage, dead latents, L0), defined as ``sae_lens.synthetic.evals`` defines them.
* ``nth_decoder_projection`` (Chanin & Garriga-Alonso, "Sparse but Wrong"), ``elbow`` and
  ``consistency`` (Hungarian-matched MCC between two seeds' dictionaries, Paulo & Belrose).
* ``choice_grid``: a (width x setting) grid of one architecture over seeds, every cell scored.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import NamedTuple, Sequence

import numpy as np
import torch

from helpers.beyond.scores import mcc
from helpers.beyond.training import train_cached
from helpers.device import get_device, stream_seed
from helpers.diagnostics.result import GridResult
from helpers.diagnostics.rules import mmcs_with_larger
from helpers.metrics import mmcs
from helpers.recovery import cosines
from helpers.sae import SAEConfig
from helpers.beyond.matryoshka import PerInstanceBatchTopK, matryoshka_loss  # noqa: F401  (re-exported)


class SyntheticEval(NamedTuple):
    """One SAE scored as ``sae_lens.synthetic.evals.eval_sae_on_synthetic_data`` scores it."""

    true_l0: float
    """Mean active true features per sample."""
    sae_l0: float
    """Mean active latents per sample."""
    dead_latents: int
    """Latents that never fired on the evaluation samples."""
    shrinkage: float
    """Mean ||x_hat|| / ||x|| over the samples with ||x|| > 1e-6 (an empty sample has no ratio)."""
    explained_variance: float
    """1 - E||x - x_hat||^2 / (E||x||^2 - ||E x||^2)."""
    mcc: float
    """Mean |cosine| of the Hungarian matching of decoder rows to true features."""
    uniqueness: float
    """Distinct true features among the latents' best matches, over J."""
    precision: float
    """Mean over latents of P(its best-matching feature on | latent on); 0 for a latent that never fires."""
    recall: float
    """Mean over latents of P(latent on | its best-matching feature on)."""
    f1: float
    """Mean over latents of the F1 of the two (0 where precision and recall are both 0)."""
    accuracy: float
    """Mean over latents of the share of samples where latent and feature agree (on / off)."""


@torch.no_grad()
def synthetic_eval(sae, data, n: int = 16_384, chunk: int = 4096) -> list[SyntheticEval]:
    """``SyntheticEval`` of each instance of ``sae`` on ``n`` fresh samples of ``data`` (a
    GroundTruthData), in eval mode (BatchTopK then uses its learned threshold)."""
    if n < 1 or chunk < 1:
        raise ValueError(f"n and chunk must be positive numbers of samples, got n={n}, chunk={chunk}")
    was_training = sae.training
    sae.eval()
    try:
        D = sae.decoder_directions().float()                                     # (I, J, h)
        F = data.features.to(sae.device).float()                                 # (G, h)
        best = torch.stack([cosines(D[i], F).abs().argmax(0) for i in range(D.shape[0])])  # (I, J) feature per latent
        I, J = best.shape
        tp, fp, fn, tn = (torch.zeros(I, J, device=sae.device) for _ in range(4))
        fired = torch.zeros(I, J, dtype=torch.bool, device=sae.device)
        sums = torch.zeros(4, I, device=sae.device, dtype=torch.float64)         # l0, shrinkage, residual, true l0
        sx, sxx, seen, nonzero = torch.zeros(F.shape[1], dtype=torch.float64, device=sae.device), 0.0, 0, 0
        for start in range(0, n, chunk):
            x, c = data.sample_with_coefficients(min(chunk, n - start))
            x, c = x.to(sae.device).float(), c.to(sae.device)
            acts = sae.encode(x)                                                 # (I, b, J)
            x_hat = sae.decode(acts)
            on = acts != 0
            truth = (c > 0)[:, best].permute(1, 0, 2) if I > 1 else (c > 0)[:, best[0]][None]  # (I, b, J)
            tp += (on & truth).sum(1); fp += (on & ~truth).sum(1)
            fn += (~on & truth).sum(1); tn += (~on & ~truth).sum(1)
            fired |= on.any(1)
            keep = x.norm(dim=-1) > 1e-6
            sums[0] += on.sum(-1).sum(-1).double()
            sums[1] += (x_hat[:, keep].norm(dim=-1) / x[keep].norm(dim=-1)).sum(-1).double()
            nonzero += int(keep.sum())                                           # shrinkage averages over these only
            sums[2] += (x - x_hat).pow(2).sum(-1).sum(-1).double()
            sums[3] += float((c > 0).sum())
            sx += x.double().sum(0); sxx += float(x.double().pow(2).sum()); seen += x.shape[0]
    finally:
        sae.train(was_training)
    variance = sxx / seen - float(sx.div(seen).pow(2).sum())
    prec = torch.where(tp + fp > 0, tp / (tp + fp).clamp_min(1), 0.0)
    rec = torch.where(tp + fn > 0, tp / (tp + fn).clamp_min(1), 0.0)
    f1 = torch.where(prec + rec > 0, 2 * prec * rec / (prec + rec).clamp_min(1e-12), 0.0)
    acc = (tp + tn) / (tp + fp + fn + tn).clamp_min(1e-8)
    return [SyntheticEval(float(sums[3, i] / seen), float(sums[0, i] / seen), int((~fired[i]).sum()),
                          float(sums[1, i] / max(nonzero, 1)), 1 - float(sums[2, i] / seen) / variance, mcc(D[i], F),
                          len(best[i].unique()) / J, float(prec[i].mean()), float(rec[i].mean()),
                          float(f1[i].mean()), float(acc[i].mean()))
            for i in range(I)]


@torch.no_grad()
def reconstruction_eval(sae, x: torch.Tensor) -> list[SyntheticEval]:
    """For data without ground truth (a language model's held-out activations ``x``, (n, h)):
    the ``SyntheticEval`` fields that need no truth, per instance; the others are NaN."""
    was_training = sae.training
    sae.eval()
    try:
        x = x.to(sae.device).float()
        acts = sae.encode(x)
        x_hat = sae.decode(acts)
    finally:
        sae.train(was_training)
    variance = float(x.pow(2).sum(-1).mean() - x.mean(0).pow(2).sum())
    keep = x.norm(dim=-1) > 1e-6
    nan = float("nan")
    return [SyntheticEval(nan, float((acts[i] != 0).sum(-1).float().mean()), int((~(acts[i] != 0).any(0)).sum()),
                          float((x_hat[i, keep].norm(dim=-1) / x[keep].norm(dim=-1)).mean()),
                          1 - float((x - x_hat[i]).pow(2).sum(-1).mean()) / variance, nan, nan, nan, nan, nan, nan)
            for i in range(acts.shape[0])]


class HarvestData:
    """A language model's harvested activations as a data source for ``choice_grid``: ``sample(n)``
    draws training rows, ``held_out(n)`` the first n held-out rows, ``cfg`` names the harvest."""

    def __init__(self, acts, holdout: float = 0.1, seed: int = 0, kind: str = "post"):
        self.cfg = {"harvest": acts.folder.name, "kind": kind, "holdout": holdout, "seed": seed}
        self.sample = acts.sampler(kind, holdout=holdout, seed=seed)
        self._acts, self._rows = acts.acts[kind], acts.rows(holdout, held_out=True)

    def held_out(self, n: int) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self._acts[self._rows[:n]]))

    def fixed_stream(self, name: str):
        return nullcontext()                        # held-out rows are fixed already


@torch.no_grad()
def nth_decoder_projection(x: torch.Tensor, D: torch.Tensor, b_dec: torch.Tensor, n: int) -> torch.Tensor:
    """(inst,) s_n of "Sparse but Wrong": project each input x - b_dec (x: (batch, h)) on every
    unit decoder row (D: (inst, J, h); b_dec: (inst, h)), pool the batch's batch x J projections
    and read the one ranked n x batch from the top (counting from 0): on average, an input's
    (n+1)-th largest projection."""
    B, J = x.shape[-2], D.shape[1]
    if not 0 <= n < J:
        raise ValueError(f"n must lie in [0, J={J}), got {n}")
    proj = torch.bmm(x.expand(D.shape[0], *x.shape[-2:]) - b_dec[:, None, :], D.transpose(1, 2))   # (I, B, J)
    return proj.reshape(D.shape[0], -1).topk(n * B + 1, dim=-1).values[:, -1]


def elbow(x: Sequence[float], y: Sequence[float], log_x: bool = True) -> int:
    """Index of the elbow of the curve y(x): the point farthest from the straight line between
    its ends, with x (on a log scale when ``log_x``) and y each rescaled to [0, 1]."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.size < 3 or not np.isfinite(y).all():
        raise ValueError(f"elbow needs at least 3 finite points with matching x and y, got {x.size} and {y.size}")
    if not np.isfinite(x).all() or (log_x and (x <= 0).any()):
        raise ValueError(f"elbow needs finite x (and x > 0 with log_x=True, which takes log x), got {x}; "
                         "pass log_x=False for a linear axis")
    x = np.log(x) if log_x else x
    u = (x - x.min()) / max(np.ptp(x), 1e-12)
    v = (y - y.min()) / max(np.ptp(y), 1e-12)
    (u0, v0), (u1, v1) = (u[0], v[0]), (u[-1], v[-1])
    dist = np.abs((v1 - v0) * u - (u1 - u0) * v + u1 * v0 - v1 * u0) / math.hypot(u1 - u0, v1 - v0)
    return int(np.argmax(dist))


def consistency(dict_a: torch.Tensor, dict_b: torch.Tensor) -> float:
    """MCC between two learned dictionaries (J, h): how far two seeds found the same latents."""
    return mcc(dict_a, dict_b)


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
        with torch.no_grad():
            was = sae.training
            live = (sae.eval().encode(x_nth) != 0).any(1)                          # (I, J) fired at least once
            sae.train(was)
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


class Hedging(NamedTuple):
    """How each matched parent's latent points at its children (one dictionary)."""

    matched: np.ndarray
    """(P,) |cosine| of each parent with its best-matching latent."""
    top_child: np.ndarray
    """(P,) the largest excess, over the truth, of one child's cosine with the parent's latent (a merge)."""
    other_children: np.ndarray
    """(P,) the mean excess over the other children (hedging: a little of each)."""


def hedging(D: torch.Tensor, data) -> Hedging:
    """For the latent that best matches each parent feature (by |cosine|; D: (J, h) one dictionary),
    the excess of its cosine with each of the parent's children over the parent's own cosine with
    that child in the truth (0 for the truth itself), split into the most-taken child and the rest."""
    F = data.features.to(D.device).float()
    P, k = data.cfg.n_parents, data.cfg.children_per_parent
    if P == 0 or k < 2:
        raise ValueError("hedging needs data with a hierarchy of at least 2 children per parent "
                         "(GroundTruthConfig.n_parents > 0, children_per_parent >= 2)")
    cos = cosines(D, F)                                                      # (G, J)
    parents = data.parents.to(D.device)
    kids = parents[:, None] + 1 + torch.arange(k, device=D.device)           # (P, k)
    latent = cos[parents].abs().argmax(-1)                                   # (P,) each parent's latent
    sign = cos[parents, latent].sign()[:, None]
    truth = (F[kids] * F[parents][:, None]).sum(-1) / (F[kids].norm(dim=-1) * F[parents].norm(dim=-1)[:, None])
    excess = (sign * cos[kids, latent[:, None]] - truth).sort(-1, descending=True).values   # (P, k)
    return Hedging(cos[parents, latent].abs().cpu().numpy(), excess[:, 0].cpu().numpy(), excess[:, 1:].mean(-1).cpu().numpy())
