"""Every recovery metric of a stack of SAEs against the ground truth, one row per instance.

MMCS is one number of many. ``score_sae`` adds the one-to-one (Hungarian) matching: its mean
cosine over max(G, J) pairs and over the min(G, J) matched pairs (MCC, the "mean correlation
coefficient" of SynthSAEBench), how many true features it recovers above a cosine threshold,
duplicates, the firing precision, recall and F1 of each matched latent against its true feature
(averaged over *all* matched pairs, so that two SAEs are compared on the same features),
shrinkage (||x_hat|| / ||x||), the fraction of variance unexplained, and the L0 beside the true L0.
The measures themselves live in ``helpers.recovery`` and ``helpers.metrics``; this module
applies them to held-out samples and to each instance of a stack.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import NamedTuple, Sequence

import numpy as np
import torch

from helpers.metrics import fvu, mmcs
from helpers.recovery import cosines, duplicates, firing_scores, one_to_one

SCORE_NAMES = ("mmcs", "one_to_one", "mcc", "recovered", "duplicates", "precision", "recall", "f1", "shrinkage",
               "fvu", "l0", "true_l0")
"""The fields of ``Scores`` that are numbers, in table order."""


class Scores(NamedTuple):
    """How well one SAE recovers the planted features (on held-out samples)."""

    label: str
    """Which SAE: architecture and its sparsity setting."""
    mmcs: float
    """Mean over true features of the best cosine with any latent."""
    one_to_one: float
    """Mean cosine of the best one-to-one matching (unmatched features and latents count 0)."""
    mcc: float
    """SynthSAEBench's MCC: mean |cosine| over the min(G, J) pairs of the matching that maximises |cosine|."""
    recovered: int
    """True features whose one-to-one partner has cosine >= the threshold."""
    duplicates: int
    """True features with two or more latents above the threshold."""
    precision: float
    """Mean over all matched pairs of P(feature on | latent on) (0 for a latent that never fires)."""
    recall: float
    """Mean over all matched pairs of P(latent on | feature on)."""
    f1: float
    """Mean over all matched pairs of the F1 of the latent's firing against its feature's."""
    shrinkage: float
    """Mean ||x_hat|| / ||x||: below 1 when the sparsity penalty shrinks the codes."""
    fvu: float
    """Fraction of variance unexplained."""
    l0: float
    """Mean active latents per sample."""
    true_l0: float
    """Mean active true features per sample."""


@contextmanager
def eval_mode(sae):
    """``sae`` in eval mode (BatchTopK then encodes with its learned threshold, as it would be
    used), put back in the mode it came in afterwards."""
    was_training = sae.training
    sae.eval()
    try:
        yield sae
    finally:
        sae.train(was_training)


@torch.no_grad()
def score_sae(sae, data, labels: Sequence[str] | None = None, n: int = 8192, threshold: float = 0.9) -> list[Scores]:
    """``Scores`` of each instance of ``sae`` on ``n`` fresh samples of ``data`` (a GroundTruthData),
    in ``eval_mode``. The samples come from a fixed stream (``data.fixed_stream("score")``): every SAE
    scored on the same data is scored on the same samples, whatever was drawn before."""
    if n < 1:
        raise ValueError(f"n must be a positive number of samples, got {n}")
    with eval_mode(sae), data.fixed_stream("score"):
        x, c = data.sample_with_coefficients(n)                   # (n, h), (n, G)
        x, c = x.to(sae.device), c.to(sae.device)
        acts = sae.encode(x)                                      # (I, n, J)
        x_hat = sae.decode(acts)                                  # (I, n, h)
        D = sae.decoder_directions().float()                      # (I, J, h)
        F = data.features.to(sae.device).float()                  # (G, h)
        mm, dup, fv = mmcs(D, F), duplicates(D, F, threshold), fvu(x, x_hat)
    I = D.shape[0]
    labels = list(labels) if labels is not None else [f"instance {i}" for i in range(I)]
    if len(labels) != I:
        raise ValueError(f"labels has {len(labels)} names for {I} instances")
    rows = []
    for i in range(I):
        match = one_to_one(D[i], F, threshold)
        fire = firing_scores(acts[i], c, match, x, x_hat[i])
        prec, rec, f1 = matched_firing(fire)
        rows.append(Scores(labels[i], float(mm[i]), match.mean_cosine, mcc(D[i], F),
                           match.recovered, int(dup[i]), prec, rec, f1, fire.shrinkage, float(fv[i]), fire.l0,
                           fire.true_l0))
    return rows


def mcc(learned: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean correlation coefficient (as in SynthSAEBench and ``sae_lens.synthetic``): the Hungarian
    matching of ``learned`` (J, h) to ``truth`` (G, h) on |cosine|, its mean |cosine| over the
    min(G, J) matched pairs. Unlike ``one_to_one`` a latent pointing *against* a feature counts,
    and nothing unmatched counts 0."""
    from scipy.optimize import linear_sum_assignment

    cos = cosines(learned, truth).abs().detach().cpu().double().numpy()   # (G, J)
    rows, cols = linear_sum_assignment(cos, maximize=True)
    return float(cos[rows, cols].mean())


def matched_firing(fire) -> tuple[float, float, float]:
    """Mean precision, recall and F1 over every matched pair of ``fire`` (a ``FiringScores``).

    Every pair counts, however poor its cosine, so two SAEs are scored on the same number of
    features: a latent that never fires scores precision 0 (not a missing value), a feature
    that never fires in the sample is left out of all three means.
    """
    seen = ~np.isnan(fire.recall)                                   # the feature fired in the sample
    p, r = np.nan_to_num(fire.precision[seen]), fire.recall[seen]
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    if not seen.any():
        return float("nan"), float("nan"), float("nan")
    return float(p.mean()), float(r.mean()), float(f1.mean())


def at_matched_l0(rows: Sequence[Scores], target: float) -> Scores:
    """The row whose L0 is closest to ``target`` on a log scale (L0 0 never counts as close)."""
    live = [r for r in rows if r.l0 > 0]
    if not live:
        raise ValueError("no SAE in rows has any active latent: nothing can match an L0")
    return min(live, key=lambda r: abs(np.log(r.l0 / target)))


def format_scores(rows: Sequence[Scores]) -> str:
    """A plain-text table, one line per SAE."""
    head = f"{'SAE':<24}" + "".join(f"{n[:10]:>11}" for n in SCORE_NAMES)
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = "".join(f"{v:>11d}" if isinstance(v, int) else f"{v:>11.3f}" for v in r[1:])
        lines.append(f"{r.label:<24}{cells}")
    return "\n".join(lines)
