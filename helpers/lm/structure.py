"""How much of an MLP's activity is more than a lookup table of the current token.

Two numbers describe it, both computed streaming over chunks of rows (memory bounded by the
chunk and by one (vocabulary x width) table of sums):

* ``token_r2``: the share of the activations' variance that the current token's identity
  explains *out of sample*. Per-token mean activation vectors are fitted on one set of rows
  and used as the prediction on another; a token the fit never saw is predicted by the global
  mean. 1 means the MLP is a token lookup; 0 means the token tells nothing.
* ``pcs``: how many principal components hold 90% and 99% of the variance. A model that
  stores only a few hundred token-shaped directions needs few; many features need many.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from helpers.lm.validate import check_int, check_rows


class MLPStructure(NamedTuple):
    token_r2: float
    """Share of held-out variance the current token explains (fitted on other rows)."""
    pcs_90: int
    """Principal components needed for 90% of the variance."""
    pcs_99: int
    """... and for 99%."""
    fit_rows: int
    eval_rows: int

    def describe(self) -> str:
        return (f"the current token explains {100 * self.token_r2:.0f}% of the MLP's variance "
                f"(fitted on {self.fit_rows:,} tokens, measured on {self.eval_rows:,} others); "
                f"{self.pcs_90} principal components hold 90% of it, {self.pcs_99} hold 99%")


def mlp_structure(acts: np.ndarray, tokens: np.ndarray, fit_rows: np.ndarray, eval_rows: np.ndarray,
                  vocab_size: int, chunk: int = 16384) -> MLPStructure:
    """``token_r2`` and PC counts (see the module) of ``acts``, fitted on some rows, measured on others.

    ``acts``: (rows, d) activations, one row per token (a memory-mapped harvest is read
    ``chunk`` rows at a time); ``tokens``: (rows,) the current token of each row;
    ``fit_rows`` / ``eval_rows``: disjoint row indices to fit the per-token means on and to
    measure on (leave out rows you do not want, e.g. the BOS position).
    """
    check_int("vocab_size", vocab_size, 1)
    check_int("chunk", chunk, 1)
    check_rows("acts", acts)
    tokens = np.asarray(tokens).reshape(-1)
    if tokens.shape[0] != acts.shape[0]:
        raise ValueError(f"tokens has {tokens.shape[0]} entries for {acts.shape[0]} activation rows; pass one token per row")
    fit_rows, eval_rows = np.asarray(fit_rows, dtype=np.int64), np.asarray(eval_rows, dtype=np.int64)
    for name, rows in (("fit_rows", fit_rows), ("eval_rows", eval_rows)):
        if rows.ndim != 1 or rows.size == 0:
            raise ValueError(f"{name} must be a non-empty 1-D array of row indices")
        if rows.min() < 0 or rows.max() >= acts.shape[0]:
            raise ValueError(f"{name} holds indices outside [0, {acts.shape[0]})")
        if tokens[rows].min() < 0 or tokens[rows].max() >= vocab_size:
            raise ValueError(f"tokens holds ids outside [0, vocab_size={vocab_size}) in the rows of {name}")
    if np.intersect1d(fit_rows, eval_rows).size:
        raise ValueError("fit_rows and eval_rows overlap; the token means must be measured on rows they were not fitted on")
    d = acts.shape[1]

    def chunks(rows):
        for i in range(0, rows.size, chunk):
            idx = rows[i:i + chunk]
            yield np.asarray(acts[idx], dtype=np.float64), tokens[idx]

    sums, counts = np.zeros((vocab_size, d)), np.zeros(vocab_size)
    for a, t in chunks(fit_rows):
        np.add.at(sums, t, a)
        counts += np.bincount(t, minlength=vocab_size)
    global_mean = sums.sum(0) / counts.sum()
    means = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], global_mean)

    total_mean = sum(a.sum(0) for a, _ in chunks(eval_rows)) / eval_rows.size
    resid, scatter = 0.0, np.zeros((d, d))
    for a, t in chunks(eval_rows):
        resid += float(((a - means[t]) ** 2).sum())
        c = a - total_mean
        scatter += c.T @ c
    total = float(np.trace(scatter))
    if total <= 0:
        raise ValueError("the evaluation rows have no variance; are the activations all equal (or all zero)?")
    eig = np.sort(np.linalg.eigvalsh(scatter))[::-1].clip(min=0)
    cum = np.cumsum(eig) / eig.sum()
    pcs = [int(min(np.searchsorted(cum, level) + 1, d)) for level in (0.90, 0.99)]
    return MLPStructure(token_r2=1 - resid / total, pcs_90=pcs[0], pcs_99=pcs[1],
                        fit_rows=int(fit_rows.size), eval_rows=int(eval_rows.size))
