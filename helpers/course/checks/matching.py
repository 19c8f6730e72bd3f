"""Checks of the two exercises that match dictionaries one to one (Hungarian matching): the MCC
recovery score of notebook 05 and the cross-seed consistency of notebook 06 (``helpers.course.checks.beyond``
and ``helpers.course.checks.choosing`` re-export them, so ``checks.<topic>.<name>`` finds them).

The references are the course's ``helpers.beyond.scores.mcc`` and ``helpers.beyond.choosing.consistency``.
Both checks start the likely mistakes from the same pieces, ``matching_parts``, and return the
function the notebook goes on with (see ``helpers.course.exercises.check``).
"""
from __future__ import annotations

from typing import Callable

import torch

from helpers.beyond.choosing import consistency as seed_consistency_reference
from helpers.beyond.scores import mcc as mcc_reference
from helpers.course.checks.common import as_float, near, reject, unit_rows
from helpers.course.exercises import check


# --------------------------------------------------------------------------------------
# MCC (notebook 05)
# --------------------------------------------------------------------------------------
def _mcc_case(G: int, J: int, seed: int = 0):
    """truth (G, h) unit rows; learned (J, h): noisy, rescaled copies of most true features, some
    sign-flipped, the first one duplicated, the last one missing, the rest random."""
    g = torch.Generator().manual_seed(seed)
    h = 16
    truth = unit_rows(g, G, h)
    m = min(G, J) - 2                                                        # true features the SAE found
    sign = torch.tensor([(-1.0) ** i for i in range(m)])[:, None]           # every other one points backwards
    scale = torch.linspace(0.5, 3.0, m)[:, None]
    found = sign * scale * (truth[:m] + 0.3 * torch.randn(m, h, generator=g))
    dup = truth[0] + 0.5 * torch.randn(1, h, generator=g)                    # a second, worse copy of feature 0
    rest = torch.randn(J - m - 1, h, generator=g)
    learned = torch.cat([found, dup, rest])[torch.randperm(J, generator=g)]
    return learned, 0.7 * truth


def matching_parts(learned: torch.Tensor, truth: torch.Tensor):
    """What the likely mistakes of a Hungarian-matching exercise start from: the cosine matrix (rows of
    ``truth`` x rows of ``learned``), the matching on |cosine| (r, c) and on the signed cosine (rs, cs), and
    the mean |cosine| when either set of rows (or both) is left unnormalised (each matched two ways)."""
    from scipy.optimize import linear_sum_assignment

    L = torch.nn.functional.normalize(learned, dim=-1)
    T = torch.nn.functional.normalize(truth, dim=-1)
    cos = (T @ L.T).double().numpy()
    r, c = linear_sum_assignment(abs(cos), maximize=True)
    rs, cs = linear_sum_assignment(cos, maximize=True)
    unnormalised = [float(abs(m[x, y]).mean())
                    for m in ((truth @ learned.T).double().numpy(), (truth @ L.T).double().numpy(), (T @ learned.T).double().numpy())
                    for x, y in (linear_sum_assignment(abs(m), maximize=True), (r, c))]
    return cos, (r, c), (rs, cs), unnormalised


def _wrong_mccs(learned: torch.Tensor, truth: torch.Tensor) -> list[tuple[float, str]]:
    """What the likely mistakes compute on this case, with their messages."""
    cos, (r, c), (rs, cs), unnormalised = matching_parts(learned, truth)        # cos: (G, J)
    G, J = cos.shape
    return [
        (float(abs(cos).max(1).mean()), "that is MMCS (each true feature's best latent, latents may be reused): MCC "
                                        "matches one to one, each latent to at most one feature (Hungarian matching, "
                                        "scipy.optimize.linear_sum_assignment with maximize=True)"),
        (float(abs(cos).max(0).mean()), "you took each latent's best true feature, reusing features: MCC matches one "
                                        "to one (Hungarian matching on the |cosine| matrix)"),
        (float(cos[rs, cs].mean()), "you matched on the signed cosine: MCC uses |cosine|, so a latent pointing "
                                    "against its feature counts as found (take the absolute value before matching)"),
        (float(abs(cos[rs, cs]).mean()), "you matched on the signed cosine and took |cosine| only afterwards: take "
                                         "the absolute value before the matching, so the matching itself maximises "
                                         "|cosine|"),
        (float(abs(cos[r, c]).sum() / max(G, J)), "you averaged over the larger set: MCC averages over the min(G, J) "
                                                  "matched pairs (the one-to-one mean cosine counts the unmatched as 0; "
                                                  "MCC does not)"),
    ] + [(v, "normalise both sets of rows to unit length first: a cosine ignores length") for v in unnormalised]


def _expect_matching(fn: Callable, reference: Callable, cases: list[tuple[torch.Tensor, torch.Tensor, str]],
                     mistakes: Callable[[torch.Tensor, torch.Tensor], list], explain: str) -> None:
    """Run the reader's ``fn(a, b)`` on each case ``(a, b, label)``; where it does not give the
    reference's number, fail with the first of ``mistakes(a, b)`` it matches, or else with
    ``explain`` filled in with ``want``, ``got`` and the case's ``label``."""
    for a, b, label in cases:
        got = as_float(fn(a.clone(), b.clone()), "one number")
        want = reference(a, b)
        if not abs(got - want) < 1e-5:
            reject(got, mistakes(a, b), near(1e-6), otherwise=explain.format(want=want, got=got, label=label))


def mcc(learner: Callable) -> Callable:
    """Check ``mcc(learned, truth) -> float`` against ``helpers.beyond.scores.mcc``."""

    cases = [(*_mcc_case(G, J), f"with {G} true features and {J} latents") for G, J in ((6, 9), (9, 6))]
    return check("mcc", learner, mcc_reference, lambda fn: _expect_matching(
                     fn, mcc_reference, cases, _wrong_mccs, "MCC of this case is {want:.4f}, you got {got:.4f} "
                     "({label}): normalise the rows, take |cosine| for every (feature, latent) pair, find the "
                     "one-to-one matching with the largest total, average its min(G, J) values"),
                 hint="MCC pairs latents with true features one to one, each used at most once, choosing the pairing "
                      "with the largest total absolute cosine; its score is the mean absolute cosine of the pairs, "
                      "which are as many as the smaller of the two sets",
                 how="normalise both sets of rows to unit length, form the matrix of absolute cosines between every "
                     "true feature and every latent, give it to the Hungarian algorithm (SciPy's linear sum "
                     "assignment, maximising) and average the matched entries")


# --------------------------------------------------------------------------------------
# Cross-seed consistency (notebook 06)
# --------------------------------------------------------------------------------------
def _seed_case(Ja: int, Jb: int, seed: int):
    """Two dictionaries from two 'seeds' (rows of any length): noisy copies of shared features, some
    flipped, the first found twice by seed b, the rest the seed's own."""
    g = torch.Generator().manual_seed(seed)
    h = 12
    F = unit_rows(g, max(Ja, Jb) + 2, h)
    m = min(Ja, Jb) - 2                                                     # features both seeds found

    def found(sign_every: int, noise: float):
        sign = torch.tensor([-1.0 if i % sign_every == 0 else 1.0 for i in range(m)])[:, None]
        scale = 0.3 + 2.5 * torch.rand(m, 1, generator=g)
        return sign * scale * (F[:m] + noise * torch.randn(m, h, generator=g))

    a = torch.cat([found(3, 0.25), torch.randn(Ja - m, h, generator=g)])
    b = torch.cat([found(2, 0.35), 0.7 * (F[:1] + 0.4 * torch.randn(1, h, generator=g)),
                   torch.randn(Jb - m - 1, h, generator=g) * 1.7])
    return a[torch.randperm(Ja, generator=g)], b[torch.randperm(Jb, generator=g)]


def _wrong_consistencies(a: torch.Tensor, b: torch.Tensor) -> list[tuple[float, str]]:
    """What the likely mistakes compute on this pair, with their messages."""
    cos, (r, c), (rs, cs), unnormalised = matching_parts(b, a)              # cos: (Ja, Jb)
    Ja, Jb = cos.shape
    mmcs = "that is MMCS (each latent's best match, a latent of the other seed may be used many times): consistency " \
           "matches one to one, each latent at most once (Hungarian matching, scipy.optimize.linear_sum_assignment " \
           "with maximize=True)"
    return [
        (float(abs(cos).max(1).mean()), mmcs),
        (float(abs(cos).max(0).mean()), mmcs),
        (float(cos.max(1).mean()), mmcs),
        (float(cos.max(0).mean()), mmcs),
        (float(cos[rs, cs].mean()), "you matched on the signed cosine: a latent whose decoder row points the other way "
                                    "still reads the same direction, so take |cosine| before matching"),
        (float(abs(cos[rs, cs]).mean()), "you matched on the signed cosine and took |cosine| only afterwards: take the "
                                         "absolute value before the matching, so the matching maximises |cosine|"),
        (float(cos[r, c].mean()), "you took |cosine| for the matching but averaged the signed cosines: average the "
                                  "matched |cosine| values"),
        (float(abs(cos[r, c]).sum() / max(Ja, Jb)), "you averaged over the larger dictionary (its unmatched latents "
                                                    "counting 0): average over the min(J_a, J_b) matched pairs"),
        (float(abs(cos[r, c]).sum() / (Ja + Jb) * 2), "average over the min(J_a, J_b) matched pairs"),
    ] + [(v, "normalise both dictionaries' rows to unit length first: a learned dictionary's rows need not have "
             "length 1, and a cosine ignores length") for v in unnormalised]


def seed_consistency(learner: Callable) -> Callable:
    """Check ``seed_consistency(dict_a, dict_b) -> float`` against ``helpers.beyond.choosing.consistency``."""

    cases = [(*_seed_case(Ja, Jb, seed), f"{Ja} and {Jb} latents")
             for Ja, Jb, seed in ((8, 12, 0), (12, 8, 1), (10, 10, 2), (6, 15, 3))]
    return check("seed_consistency", learner, seed_consistency_reference, lambda fn: _expect_matching(
                     fn, seed_consistency_reference, cases, _wrong_consistencies, "the consistency of these "
                     "dictionaries ({label}) is {want:.4f}, you got {got:.4f}: normalise the rows, take |cosine| for "
                     "every pair of latents, find the one-to-one matching with the largest total and average its "
                     "min(J_a, J_b) values"),
                 hint="two SAEs trained alike from different seeds should find the same latents if the setting is "
                      "right; pair the latents of one with those of the other one to one so that the paired decoder "
                      "directions agree as well as possible, and report the mean agreement (absolute cosine) of the "
                      "pairs: the MCC of the two dictionaries",
                 how="normalise both sets of rows to unit length, form the matrix of absolute cosines between every "
                     "latent of one and every latent of the other, give it to the Hungarian algorithm (SciPy's "
                     "linear sum assignment, maximising) and average the matched entries, as many as the smaller "
                     "dictionary has rows")
