"""A dashboard per feature: how often and how strongly it fires, where, and what it writes.

The same code reads an SAE latent or an MLP neuron: both are a ``Units`` (a function from the
MLP's hidden activations to one activation per unit, and the direction each unit writes into
the hidden layer per unit of activation). ``dashboards`` streams the harvested activations
twice, chunk by chunk (memory: one chunk, plus a few numbers per unit, token and bin):

1. density, mean, largest value, the ``k`` strongest rows, and activation mass per current
   token (how much of the unit is just "this token");
2. a histogram of its positive values and, per fine bin, a few sampled rows, from which the
   examples of each activation quantile are drawn (a deterministic random sample per bin; a
   bin on the edge of two bands serves both, but no row is shown in two bands).

Rendering (HTML with tokens shaded by activation, and a plain-text fallback) is in
``helpers.figures.lm``.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch

from helpers.lm.validate import check_instance, check_int, check_model, check_rows
from helpers.lm.features import LogitEffect, chunk_rows_for, logit_effects, merge_top, residual_effects

QUANTILES = ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 0.95), (0.95, 1.0))
"""Bands of a unit's positive activations (as quantiles) that examples are shown from."""


class Units(NamedTuple):
    """Things to read in the MLP's hidden layer: SAE latents or neurons."""

    kind: str
    """'latent' or 'neuron' (used in titles)."""
    ids: np.ndarray
    """(m,) their indices (latent or neuron numbers)."""
    encode: Callable[[torch.Tensor], torch.Tensor]
    """(rows, d_mlp) hidden activations -> (rows, m) unit activations."""
    write: torch.Tensor
    """(m, d_mlp) what each unit adds to the hidden layer per unit of activation."""


def latent_units(sae, latents: Sequence[int], instance: int = 0) -> Units:
    """Latents of instance ``instance`` of ``sae``: activation = the latent, write = its decoder direction."""
    instance = check_instance(instance, sae)
    ids = np.asarray(latents, dtype=np.int64).reshape(-1)
    if ids.size == 0 or ids.min() < 0 or ids.max() >= sae.cfg.d_sae:
        raise ValueError(f"latents must be indices in [0, {sae.cfg.d_sae}), got {ids.tolist()}")
    cols = torch.as_tensor(ids, device=sae.device)

    @torch.no_grad()
    def encode(x: torch.Tensor) -> torch.Tensor:
        return sae.encode(x.to(sae.device, torch.float32))[instance][:, cols].float().cpu()

    with torch.no_grad():
        write = sae.decoder_directions()[instance, cols].detach().float().cpu()
    return Units("latent", ids, encode, write)


def neuron_units(neurons: Sequence[int], d_mlp: int) -> Units:
    """MLP neurons: activation = the neuron's value (GELU: can be negative), write = its basis vector."""
    ids = np.asarray(neurons, dtype=np.int64).reshape(-1)
    if ids.size == 0 or ids.min() < 0 or ids.max() >= d_mlp:
        raise ValueError(f"neurons must be indices in [0, {d_mlp}), got {ids.tolist()}")
    cols = torch.as_tensor(ids)

    def encode(x: torch.Tensor) -> torch.Tensor:
        return x.float().cpu()[:, cols]

    return Units("neuron", ids, encode, torch.eye(d_mlp)[cols])


class Example(NamedTuple):
    """One place a unit fires: a window of tokens around it."""

    ids: np.ndarray
    """(w,) token ids of the window."""
    at: int
    """Index of the token the unit fires on, in the window."""
    value: float
    """The unit's activation there."""
    window: np.ndarray
    """(w,) the unit's activation on every token of the window."""


class Dashboard(NamedTuple):
    """Everything shown for one unit."""

    kind: str
    """'latent' or 'neuron'."""
    unit: int
    """Its index."""
    density: float
    """Share of tokens (BOS left out) where it is positive."""
    mean: float
    """Mean activation over all tokens."""
    max: float
    """Largest activation."""
    hist_edges: np.ndarray
    """(bins + 1,) edges of the histogram of positive activations."""
    hist_counts: np.ndarray
    """(bins,) tokens per bin."""
    top: list[Example]
    """The strongest activations, largest first."""
    bands: list[tuple[tuple[float, float], list[Example]]]
    """((lo, hi) quantiles, examples whose activation falls in that band), weakest band first."""
    top_tokens: list[tuple[str, float, int]]
    """(token, share of the unit's positive activation mass on it, times it fired on it), largest share first."""
    token_share: float
    """Share of the activation mass on its most common current token (1: a token detector)."""
    token_r2: float
    """Share of the activation's variance explained by the current token's identity."""
    logits: LogitEffect | None
    """Tokens its output promotes and suppresses (direct read through the unembedding)."""


def _row_keys(rows: np.ndarray, seed: int) -> np.ndarray:
    """A fixed pseudo-random number in [0, 1) per row: keeping the smallest keys per bin samples
    rows uniformly, the same rows on every run and whatever the chunk size."""
    x = (rows.astype(np.uint64) + np.uint64(seed)) * np.uint64(0x9E3779B97F4A7C15)
    x ^= x >> np.uint64(31)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(29)
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _keep_smallest(bins: np.ndarray, keys: np.ndarray, rows: np.ndarray, per_bin: int):
    """Of (bin, key, row) triples, the ``per_bin`` smallest keys of every bin."""
    order = np.lexsort((keys, bins))
    bins, keys, rows = bins[order], keys[order], rows[order]
    first = np.searchsorted(bins, bins, side="left")
    keep = np.arange(len(bins)) - first < per_bin
    return bins[keep], keys[keep], rows[keep]


def _iter_chunks(post: np.ndarray, step: int):
    for s in range(0, post.shape[0], step):
        yield s, torch.from_numpy(np.array(post[s:s + step], dtype=np.float32))


@torch.no_grad()
def dashboards(units: Units, post: np.ndarray, tokens: np.ndarray, model=None, k: int = 8, per_band: int = 3,
               bins: int = 40, fine_bins: int = 200, n_logits: int = 6, min_count: int = 5, before: int = 10,
               after: int = 3, layer: int = 0, chunk_rows: int | None = None) -> list[Dashboard]:
    """One ``Dashboard`` per unit, streamed over the harvested ``post`` activations.

    ``post``: (n_seq * seq_len, d_mlp) hidden activations (``acts.acts["post"]``, memory-mapped);
    ``tokens``: (n_seq, seq_len) their token ids. BOS rows are left out of every statistic.
    ``model`` (optional) adds the logit effects, over tokens seen ``min_count`` times.
    """
    if not isinstance(units, Units):
        raise TypeError("units must come from lm.latent_units(sae, [...]) or lm.neuron_units([...], d_mlp)")
    if model is not None:
        check_model(model)
    check_rows("post", post, units.write.shape[1])
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.size != post.shape[0]:
        raise ValueError(f"tokens must be the (n_seq, seq_len) ids of the harvest, one per row of post "
                         f"({post.shape[0]} rows), got shape {tokens.shape}")
    k, per_band = check_int("k", k, 1), check_int("per_band", per_band, 1)
    bins, fine_bins = check_int("bins", bins, 1), check_int("fine_bins", fine_bins, len(QUANTILES))
    m, seq_len, flat = len(units.ids), tokens.shape[1], tokens.reshape(-1).astype(np.int64)
    vocab = max(int(flat.max()) + 1, model.cfg.d_vocab if model is not None else 0)
    step = chunk_rows_for(max(m, 256), chunk_rows)

    # Pass 1: counts, sums, maxima, top rows, and activation per current token.
    n = 0
    on = np.zeros(m, np.int64)
    total, peak = np.zeros(m), np.full(m, -np.inf)
    tok_sum, tok_sq = np.zeros((m, vocab)), np.zeros((m, vocab))
    tok_n = np.zeros(vocab)
    pos_mass, tok_on = np.zeros((m, vocab)), np.zeros((m, vocab), np.int64)
    best_v, best_r = np.full((0, m), -np.inf, np.float32), np.zeros((0, m), np.int64)
    for s, x in _iter_chunks(post, step):
        a = units.encode(x).numpy()                                          # (rows, m)
        rows = np.arange(s, s + len(a))
        keep = rows % seq_len != 0                                           # BOS rows left out
        a, rows, t = a[keep], rows[keep], flat[s:s + len(x)][keep]
        n += len(a)
        on += (a > 0).sum(0)
        total += a.sum(0, dtype=np.float64)
        peak = np.maximum(peak, a.max(0, initial=-np.inf))
        tok_n += np.bincount(t, minlength=vocab)
        for u in range(m):
            tok_sum[u] += np.bincount(t, weights=a[:, u], minlength=vocab)
            tok_sq[u] += np.bincount(t, weights=a[:, u].astype(np.float64) ** 2, minlength=vocab)
            pos_mass[u] += np.bincount(t, weights=np.maximum(a[:, u], 0), minlength=vocab)
            tok_on[u] += np.bincount(t[a[:, u] > 0], minlength=vocab)
        best_v, best_r = merge_top(best_v, best_r, a, np.broadcast_to(rows[:, None], a.shape), k)
    if n == 0:
        raise ValueError("post holds only BOS rows: harvest more tokens")

    # Pass 2: histogram of positive values, and a few sampled rows per fine bin.
    top = np.where(peak > 0, peak, 1.0)
    edges = [np.linspace(0, p, bins + 1) for p in top]
    counts = np.zeros((m, bins), np.int64)
    fine = np.zeros((m, fine_bins), np.int64)
    kept = [(np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64)) for _ in range(m)]
    for s, x in _iter_chunks(post, step):
        a = units.encode(x).numpy()
        rows = np.arange(s, s + len(a))
        for u in range(m):
            sel = (a[:, u] > 0) & (rows % seq_len != 0)
            v, r = a[sel, u], rows[sel]
            counts[u] += np.histogram(v, bins=edges[u])[0]
            fb = np.minimum((v / top[u] * fine_bins).astype(np.int64), fine_bins - 1)
            fine[u] += np.bincount(fb, minlength=fine_bins)
            b0, k0, r0 = kept[u]
            kept[u] = _keep_smallest(np.concatenate([b0, fb]), np.concatenate([k0, _row_keys(r, int(units.ids[u]))]),
                                     np.concatenate([r0, r]), per_band * len(QUANTILES))

    logits = [None] * m
    if model is not None:
        effects = residual_effects(model, units.write, layer=layer)
        logits = logit_effects(model, effects, k=n_logits, tokens=tokens, min_count=min_count)

    out = []
    for u in range(m):
        ex = [_example(post, flat, units, u, int(r), float(v), seq_len, before, after)
              for r, v in zip(best_r[:, u], best_v[:, u]) if v > 0]
        cum = np.cumsum(fine[u]) / max(fine[u].sum(), 1)                    # (fine_bins,) share at or below each bin
        bands = []
        used = np.zeros(len(kept[u][0]), bool)  # a fine bin on a band edge serves both bands: never the same row twice
        for lo, hi in QUANTILES:
            first, last = int(np.searchsorted(cum, lo, side="right")), int(np.searchsorted(cum, hi, side="left"))
            b, key, r = kept[u]
            pick = np.flatnonzero((b >= first) & (b <= min(last, fine_bins - 1)) & ~used)
            pick = pick[np.argsort(key[pick], kind="stable")[:per_band]]
            used[pick] = True
            bands.append(((lo, hi), [_example(post, flat, units, u, int(r[i]), None, seq_len, before, after)
                                     for i in sorted(pick, key=lambda i: r[i])]))
        mass = pos_mass[u]
        share = mass / max(mass.sum(), 1e-12)
        order = np.argsort(-share, kind="stable")[:5]
        fired = tok_on[u]
        S, Q = tok_sum[u].sum(), tok_sq[u].sum()
        ss_total = Q - S * S / n
        seen = tok_n > 0
        ss_between = (tok_sum[u][seen] ** 2 / tok_n[seen]).sum() - S * S / n
        out.append(Dashboard(
            units.kind, int(units.ids[u]), float(on[u] / n), float(total[u] / n), float(peak[u]), edges[u], counts[u],
            ex, bands, [(_decode(model, t), float(share[t]), int(fired[t])) for t in order if share[t] > 0],
            float(share.max(initial=0.0)), float(ss_between / ss_total) if ss_total > 0 else float("nan"), logits[u]))
    return out


def _decode(model, t: int) -> str:
    return model.tokenizer.decode([int(t)]) if model is not None else f"<{int(t)}>"


def _example(post, flat, units: Units, u: int, row: int, value, seq_len: int, before: int, after: int) -> Example:
    """The window of tokens around ``row`` (within its own sequence), with the unit's activations."""
    s, p = divmod(row, seq_len)
    lo, hi = max(p - before, 1), min(p + after + 1, seq_len)                  # BOS left out of the window
    a = units.encode(torch.from_numpy(np.array(post[s * seq_len + lo:s * seq_len + hi], dtype=np.float32)))
    window = a.numpy()[:, u]
    return Example(flat[s * seq_len + lo:s * seq_len + hi], p - lo, float(window[p - lo] if value is None else value),
                   window)
