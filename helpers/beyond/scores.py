"""Every recovery metric of a stack of SAEs against the ground truth, one row per instance.

MMCS is one number of many. ``score_sae`` adds the one-to-one (Hungarian) matching and its
mean cosine, how many true features it recovers above a cosine threshold, duplicates, the
precision and recall of each matched latent's firing against its true feature, shrinkage
(||x_hat|| / ||x||), the fraction of variance unexplained, and the L0 beside the true L0.
The measures themselves live in ``helpers.recovery`` and ``helpers.metrics``; this module
applies them to held-out samples and to each instance of a stack.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch

from helpers.metrics import fvu, mmcs
from helpers.recovery import duplicates, firing_scores, one_to_one

SCORE_NAMES = ("mmcs", "one_to_one", "recovered", "duplicates", "precision", "recall", "shrinkage", "fvu",
               "l0", "true_l0")
"""The fields of ``Scores`` that are numbers, in table order."""


class Scores(NamedTuple):
    """How well one SAE recovers the planted features (on held-out samples)."""

    label: str
    """Which SAE: architecture and its sparsity setting."""
    mmcs: float
    """Mean over true features of the best cosine with any latent."""
    one_to_one: float
    """Mean cosine of the best one-to-one matching (unmatched features and latents count 0)."""
    recovered: int
    """True features whose one-to-one partner has cosine >= the threshold."""
    duplicates: int
    """True features with two or more latents above the threshold."""
    precision: float
    """Mean over recovered pairs of P(feature on | latent on)."""
    recall: float
    """Mean over recovered pairs of P(latent on | feature on)."""
    shrinkage: float
    """Mean ||x_hat|| / ||x||: below 1 when the sparsity penalty shrinks the codes."""
    fvu: float
    """Fraction of variance unexplained."""
    l0: float
    """Mean active latents per sample."""
    true_l0: float
    """Mean active true features per sample."""


@torch.no_grad()
def score_sae(sae, data, labels: Sequence[str] | None = None, n: int = 8192, threshold: float = 0.9) -> list[Scores]:
    """``Scores`` of each instance of ``sae`` on ``n`` fresh samples of ``data`` (a GroundTruthData).

    The SAE is put in eval mode (BatchTopK then encodes with its learned threshold, as it
    would be used) and left in the mode it came in.
    """
    if n < 1:
        raise ValueError(f"n must be a positive number of samples, got {n}")
    was_training = sae.training
    sae.eval()
    try:
        x, c = data.sample_with_coefficients(n)                   # (n, h), (n, G)
        x, c = x.to(sae.device), c.to(sae.device)
        acts = sae.encode(x)                                      # (I, n, J)
        x_hat = sae.decode(acts)                                  # (I, n, h)
        D = sae.decoder_directions().float()                      # (I, J, h)
        F = data.features.to(sae.device).float()                  # (G, h)
        mm, dup, fv = mmcs(D, F), duplicates(D, F, threshold), fvu(x, x_hat)
    finally:
        sae.train(was_training)
    I = D.shape[0]
    labels = list(labels) if labels is not None else [f"instance {i}" for i in range(I)]
    if len(labels) != I:
        raise ValueError(f"labels has {len(labels)} names for {I} instances")
    rows = []
    for i in range(I):
        match = one_to_one(D[i], F, threshold)
        fire = firing_scores(acts[i], c, match, x, x_hat[i])
        good = match.cosine >= threshold  # firing only means something for pairs that match
        with np.errstate(invalid="ignore"):
            prec = float(np.nanmean(fire.precision[good])) if good.any() else float("nan")
            rec = float(np.nanmean(fire.recall[good])) if good.any() else float("nan")
        rows.append(Scores(labels[i], float(mm[i]), match.mean_cosine, match.recovered, int(dup[i]), prec, rec,
                           fire.shrinkage, float(fv[i]), fire.l0, fire.true_l0))
    return rows


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
