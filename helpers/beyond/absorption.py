"""Feature absorption: a parent latent that stays silent when one of its children fires.

With a hierarchy (``GroundTruthConfig.n_parents``), a parent feature never fires without
exactly one of its children. An SAE pushed to be sparse can save a latent per sample by
folding the parent's direction into each child's latent ("parent + child" fires once instead
of two latents): the parent latent then stops firing on those children. Measured here per
parent: its best-matching latent, how often that latent fires when the parent is on, split
by which child is on, and how much of the parent's direction each child's latent has taken.

``token_absorbed`` is the per-token reading of Chanin et al. (2024, "A is for Absorption"): on
a token where the parent is on, its latent is silent, *yet the reconstruction still carries the
parent* (its component along the parent direction is at least half the parent's coefficient),
so other latents (the child's) took the parent over. A silent parent latent whose direction is
also missing from the reconstruction is a plain miss (``token_missed``), not absorption.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from helpers.beyond.scores import eval_mode


class AbsorptionScores(NamedTuple):
    """Absorption in one SAE (one instance of a stack)."""

    parent_cosine: np.ndarray
    """(P,) cosine of each parent feature with its best-matching latent."""
    parent_recall: np.ndarray
    """(P,) P(that latent fires | parent on)."""
    child_recall: np.ndarray
    """(P, children) P(parent latent fires | parent on and this child on)."""
    child_parent_cosine: np.ndarray
    """(P, children) cosine of the parent direction with the latent that best matches each child."""
    absorbed: float
    """Share of (parent, child) pairs on which the parent latent fires less than half the time."""
    token_absorbed: float
    """Share of the tokens with a parent on where its latent is silent but the reconstruction
    carries at least half the parent's coefficient along its direction (Chanin et al.)."""
    token_missed: float
    """Share of those tokens where the parent latent is silent and the reconstruction carries less."""
    l0: float
    """Mean active latents per sample."""


@torch.no_grad()
def absorption_scores(sae, data, n: int = 16384) -> list[AbsorptionScores]:
    """``AbsorptionScores`` of every instance of ``sae`` on ``n`` samples of ``data``, drawn from a
    fixed stream (``data.fixed_stream``) so the scores do not depend on what was sampled before."""
    cfg = data.cfg
    if cfg.n_parents < 1:
        raise ValueError("data has no hierarchy: build it with GroundTruthConfig(n_parents=...) >= 1")
    with eval_mode(sae):
        with data.fixed_stream("absorption"):
            x, c = data.sample_with_coefficients(n)                 # (n, h), (n, G)
        acts = sae.encode(x.to(sae.device))                         # (I, n, J)
        D = sae.decoder_directions().float()                        # (I, J, h)
        recon = torch.bmm(acts.float(), D)                          # (I, n, h) x_hat without b_dec
    F = data.features.to(D.device).float()
    k = cfg.children_per_parent
    parents = data.parents.to(D.device)                             # (P,)
    children = parents[:, None] + 1 + torch.arange(k, device=D.device)  # (P, k)
    on = (c.to(D.device) > 0)                                       # (n, G)
    out = []
    for i in range(D.shape[0]):
        cos = F @ D[i].T                                            # (G, J) unit rows: cosines
        p_lat = cos[parents].argmax(-1)                             # (P,)
        fires = acts[i][:, p_lat] > 0                               # (n, P)
        p_on = on[:, parents]                                       # (n, P)
        p_rec = (fires & p_on).sum(0) / p_on.sum(0).clamp_min(1)
        c_on = on[:, children]                                      # (n, P, k)
        c_rec = (fires[:, :, None] & c_on).sum(0) / c_on.sum(0).clamp_min(1)
        c_lat = cos[children].argmax(-1)                            # (P, k)
        c_par = torch.einsum("ph,pkh->pk", F[parents], D[i][c_lat])
        along = recon[i] @ F[parents].T                             # (n, P) reconstruction along each parent
        carried = along >= 0.5 * c.to(D.device)[:, parents]
        silent = p_on & ~fires
        n_on = p_on.sum().clamp_min(1)
        out.append(AbsorptionScores(cos[parents, p_lat].cpu().numpy(), p_rec.cpu().numpy(), c_rec.cpu().numpy(),
                                    c_par.cpu().numpy(), float((c_rec < 0.5).float().mean()),
                                    float((silent & carried).sum() / n_on), float((silent & ~carried).sum() / n_on),
                                    float((acts[i] > 0).float().sum(-1).mean())))
    return out
