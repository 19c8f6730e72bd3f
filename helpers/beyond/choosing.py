"""Choosing L0 and width (notebook 06): the measures each cell of its grid is scored by.

* ``synthetic_eval``: the numbers SAELens' synthetic-data evaluation reports (MCC, uniqueness,
  precision / recall / F1 of each latent against its best-matching true feature, explained
  variance, shrinkage, dead latents, L0), defined as ``sae_lens.synthetic.evals`` defines them;
  ``reconstruction_eval`` those that need no truth, for ``HarvestData`` (a language model's harvest).
* ``nth_decoder_projection`` (Chanin & Garriga-Alonso, "Sparse but Wrong"), ``elbow`` and
  ``consistency`` (Hungarian-matched MCC between two seeds' dictionaries, Paulo & Belrose).
* ``hedging``: how the latent of a parent feature leans towards its children.

The SAEs are in ``helpers.beyond.matryoshka``, the grid and its L0 rules in ``helpers.beyond.choice_grid``.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import NamedTuple, Sequence

import numpy as np
import torch

from helpers.beyond.scores import eval_mode, mcc
from helpers.device import reseeded, stream_seed
from helpers.recovery import cosines


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
    with eval_mode(sae):
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
    x = x.to(sae.device).float()
    with eval_mode(sae):
        acts = sae.encode(x)
        x_hat = sae.decode(acts)
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

    @contextmanager
    def fixed_stream(self, name: str):
        """Inside the block, ``sample`` draws rows from a generator seeded by ``name`` and the seed;
        the training stream is put back where it was afterwards (``held_out`` is fixed anyway)."""
        with reseeded(self.sample.generator, stream_seed(self.cfg["seed"], name)):
            yield self


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
