"""Reading an SAE's latents: how often they fire, where they fire hardest, what they write.

A latent matrix has one row per harvested token and one column per latent: at the ``full``
scale that is 450k x 8192 floats (15 GB). ``LatentActs`` stands for it without holding it:
it encodes the memory-mapped activations ``chunk_rows`` rows at a time, and every statistic
here (firing rates, top activations, the picks) is folded over those chunks, so memory is
bounded by one chunk. Small runs may still pass a dense numpy array: the code is the same.
"""
from __future__ import annotations

from typing import Iterator, NamedTuple

import numpy as np
import torch

from helpers.lm.validate import check_instance, check_int, check_model, check_rows, check_sae
from helpers.lm.loading import mlp_hooks, model_device

CHUNK_ELEMENTS = 1 << 23
"""Default chunk: about this many latent activations (8M floats = 32 MB) per step."""


def chunk_rows_for(width: int, chunk_rows: int | None) -> int:
    """Rows per chunk: ``chunk_rows`` if given, else what keeps a chunk near ``CHUNK_ELEMENTS``."""
    if chunk_rows is None:
        return max(1, CHUNK_ELEMENTS // max(width, 1))
    return check_int("chunk_rows", chunk_rows, 1)


class LatentActs:
    """(n_rows, d_sae) latent activations of instance ``instance`` of ``sae`` over ``acts``,
    computed chunk by chunk when read. ``lat[:, f]`` / ``lat[:, [f, g]]`` give columns."""

    def __init__(self, sae, acts: np.ndarray, instance: int = 0, chunk_rows: int | None = None):
        check_rows("acts", acts)
        check_sae(sae, acts.shape[1])
        self.sae, self.acts, self.instance = sae, acts, check_instance(instance, sae)
        self.chunk_rows = chunk_rows_for(sae.cfg.d_sae * sae.cfg.n_instances, chunk_rows)
        self.shape = (acts.shape[0], sae.cfg.d_sae)

    @torch.no_grad()
    def chunks(self, chunk_rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, (rows, d_sae) float32 array) for consecutive chunks of rows."""
        step = self.chunk_rows if chunk_rows is None else check_int("chunk_rows", chunk_rows, 1)
        for s in range(0, self.shape[0], step):
            x = torch.from_numpy(np.array(self.acts[s:s + step], dtype=np.float32)).to(self.sae.device)  # a copy: memmaps are read-only
            yield s, self.sae.encode(x)[self.instance].float().cpu().numpy()

    def __getitem__(self, key) -> np.ndarray:
        if not (isinstance(key, tuple) and len(key) == 2 and key[0] == slice(None)):
            raise IndexError("LatentActs supports lat[:, latent] and lat[:, [latents]] (columns) only")
        cols = key[1]
        return np.concatenate([c[:, cols] for _, c in self.chunks()], axis=0)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """The whole matrix (small runs only: rows x d_sae floats)."""
        out = np.concatenate([c for _, c in self.chunks()], axis=0)
        return out if dtype is None else out.astype(dtype)


def latent_activations(sae, acts: np.ndarray, instance: int = 0, batch: int = 8192, lazy: bool = False):
    """The (n_rows, d_sae) latent activations of one instance: a dense float32 array, or with
    ``lazy=True`` a ``LatentActs`` that computes them chunk by chunk (any scale)."""
    lat = LatentActs(sae, acts, instance, chunk_rows=batch)
    return lat if lazy else np.asarray(lat)


def row_chunks(lat, chunk_rows: int | None) -> Iterator[tuple[int, np.ndarray]]:
    """Chunks of rows of a dense array or a ``LatentActs``."""
    if isinstance(lat, LatentActs):
        yield from lat.chunks(chunk_rows)
        return
    check_rows("latent_acts", lat)
    step = chunk_rows_for(lat.shape[1], chunk_rows)
    for s in range(0, lat.shape[0], step):
        yield s, np.asarray(lat[s:s + step], dtype=np.float32)


class LatentStats(NamedTuple):
    """Per-latent statistics over all rows."""

    freq: np.ndarray
    """(d_sae,) share of rows where the latent is positive (its density)."""
    mean: np.ndarray
    """(d_sae,) mean activation over all rows."""
    max: np.ndarray
    """(d_sae,) largest activation."""


def latent_stats(lat, chunk_rows: int | None = None) -> LatentStats:
    """Density, mean and maximum of every latent, folded over chunks of rows."""
    count = total = peak = None
    n = 0
    for _, c in row_chunks(lat, chunk_rows):                                # c: (rows, d_sae)
        on, s, m = (c > 0).sum(0, dtype=np.int64), c.sum(0, dtype=np.float64), c.max(0)
        count, total, peak = (on, s, m) if count is None else (count + on, total + s, np.maximum(peak, m))
        n += len(c)
    return LatentStats(count / n, (total / n).astype(np.float32), peak)


def merge_top(best_v: np.ndarray, best_r: np.ndarray, v: np.ndarray, r: np.ndarray, k: int):
    """The running top-k of each column: the ``k`` largest of the kept (best_v, best_r) and of a
    chunk's values ``v`` at rows ``r`` (all (rows, m)), largest first (ties: earlier row first)."""
    if len(v) > k:  # the chunk's own top k first: the merge below then sorts 2k rows, not the chunk
        part = np.argpartition(-v, k - 1, axis=0)[:k]
        v, r = np.take_along_axis(v, part, 0), np.take_along_axis(r, part, 0)
    v, r = np.concatenate([best_v, v]), np.concatenate([best_r, r])                    # (<= 2k, m)
    order = np.lexsort((r, -v), axis=0)[:k]                                             # by value, then row
    return np.take_along_axis(v, order, 0), np.take_along_axis(r, order, 0)


def top_rows(lat, latents: np.ndarray, k: int, chunk_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(k, m) rows and values of each listed latent's ``k`` largest activations (``merge_top``)."""
    latents = np.asarray(latents, dtype=np.int64)
    best_v = np.full((0, len(latents)), -np.inf, dtype=np.float32)
    best_r = np.zeros((0, len(latents)), dtype=np.int64)
    for s, c in row_chunks(lat, chunk_rows):
        v = c[:, latents]                                                               # (rows, m)
        best_v, best_r = merge_top(best_v, best_r, v, np.broadcast_to(np.arange(s, s + len(c))[:, None], v.shape), k)
    return best_r, best_v


def top_contexts(latent_acts: np.ndarray, tokens: np.ndarray, k: int = 5, before: int = 10, after: int = 3):
    """The ``k`` strongest activations of one latent, each as (token ids, index of the token, value, window acts).

    ``latent_acts`` is one latent's (n_seq * seq_len,) activations, rows in ``tokens`` order
    (``lat[:, f]``): a column, so memory is one float per token whatever the dictionary size."""
    if isinstance(latent_acts, torch.Tensor):
        latent_acts = latent_acts.detach().cpu().numpy()
    if isinstance(tokens, torch.Tensor):
        tokens = tokens.detach().cpu().numpy()
    if not isinstance(tokens, np.ndarray) or tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"tokens must be the (n_seq, seq_len) integer token ids of the harvest (acts.tokens), "
                         f"got {getattr(tokens, 'shape', type(tokens).__name__)} {getattr(tokens, 'dtype', '')}")
    if not isinstance(latent_acts, np.ndarray) or latent_acts.shape != (tokens.size,):
        raise ValueError(f"latent_acts must be one latent's activations, shape ({tokens.size},) (lat[:, f]), "
                         f"got {getattr(latent_acts, 'shape', type(latent_acts).__name__)}")
    k, before, after = check_int("k", k, 1), check_int("before", before, 0), check_int("after", after, 0)
    seq_len = tokens.shape[1]
    rows, values = top_rows(latent_acts[:, None], np.array([0]), k, chunk_rows=1 << 20)
    out = []
    for row, value in zip(rows[:, 0], values[:, 0]):
        if value <= 0:
            break
        s, p = divmod(int(row), seq_len)
        lo, hi = max(p - before, 0), min(p + after + 1, seq_len)
        out.append((tokens[s, lo:hi], p - lo, float(value), latent_acts[s * seq_len + lo:s * seq_len + hi]))
    return out


def pick_latents(latent_acts, tokens: np.ndarray, n: int = 4, min_freq: float = 1e-3, max_freq: float = 3e-2,
                 k: int = 20, chunk_rows: int | None = None) -> np.ndarray:
    """``n`` latents worth reading first: moderately rare, and with a consistent trigger.

    A latent's *consistency* is the share of its ``k`` strongest activations that sit on its
    most common token (or follow its most common previous token). Pure single-token latents
    are easy to read but teach little, so half the picks are the most consistent latents and
    half come from the middle of the ranking (a trigger that is shared, but not one token).
    """
    n, k = check_int("n", n, 1), check_int("k", k, 1)
    if np.ndim(tokens) != 2 or np.size(tokens) != latent_acts.shape[0]:
        raise ValueError(f"tokens must be the harvest's (n_seq, seq_len) ids, one per row of latent_acts "
                         f"({latent_acts.shape[0]} rows), got shape {np.shape(tokens)}")
    freq = latent_stats(latent_acts, chunk_rows).freq
    cands = np.flatnonzero((freq >= min_freq) & (freq <= max_freq))
    if len(cands) < 3 * n:  # too few in the range (a dense SAE): the live latents nearest to it in log frequency
        alive = np.flatnonzero(freq > 0)
        centre = 0.5 * (np.log(min_freq) + np.log(max_freq))
        cands = np.sort(alive[np.argsort(np.abs(np.log(freq[alive]) - centre), kind="stable")[: 3 * n]])  # in-range ones first
    flat = np.asarray(tokens).reshape(-1)
    seq_len = np.asarray(tokens).shape[1]
    rows, values = top_rows(latent_acts, cands, k, chunk_rows)                     # (k, cands)
    score = np.empty(len(cands))
    for i in range(len(cands)):
        top = rows[values[:, i] > 0, i]
        cur = flat[top]
        prev = np.where(top % seq_len == 0, -1, flat[np.maximum(top - 1, 0)])
        score[i] = max(np.bincount(cur).max(initial=0), np.bincount(prev + 1).max(initial=0)) / max(len(top), 1)
    order = cands[np.argsort(-score, kind="stable")]
    head = order[: (n + 1) // 2]
    rest = order[len(head):]                                                       # never pick a latent twice
    start = max(len(order) // 3 - len(head), 0)
    middle = rest[start: start + n - len(head)]
    return np.concatenate([head, middle]).astype(int)


@torch.no_grad()
def residual_effects(model, directions: torch.Tensor, layer: int = 0, chunk: int = 64) -> torch.Tensor:
    """(n, d_model) what each MLP-neuron-space direction adds to the residual stream: W_out^T v.

    Read off the model itself (so it works for any architecture the bridge supports): the
    directions are written into ``hook_post`` of a dummy sequence, one per position, and the
    MLP output minus the output for a zero vector is the linear map applied to them.
    """
    check_model(model)
    if not isinstance(directions, torch.Tensor) or directions.dim() != 2 or directions.shape[1] != model.cfg.d_mlp:
        raise ValueError(f"directions must be a (n, {model.cfg.d_mlp}) tensor of MLP-neuron-space directions, got "
                         f"{getattr(directions, 'shape', type(directions).__name__)}")
    hooks = mlp_hooks(layer)
    dev = model_device(model)
    directions = directions.to(dev, torch.float32)
    chunk = min(check_int("chunk", chunk, 1), model.cfg.n_ctx - 1)
    outs = []
    for s in range(0, directions.shape[0], chunk):
        d = directions[s:s + chunk]
        toks = torch.zeros(1, d.shape[0] + 1, dtype=torch.long, device=dev)
        got = {}

        def put(x, hook, d=d):
            y = x.clone()
            y[0, 1:] = d.to(x.dtype)
            y[0, 0] = 0
            return y

        def grab(x, hook):
            got["out"] = x.detach()
            return x

        model.run_with_hooks(toks, return_type=None, fwd_hooks=[(hooks["post"], put), (hooks["out"], grab)])
        outs.append((got["out"][0, 1:] - got["out"][0, :1]).float())
    return torch.cat(outs)


class TokenLogit(NamedTuple):
    """One token of a logit effect."""

    token: str
    """The token as text."""
    logit: float
    """Its change in logit per unit of the direction (through the unembedding)."""


class LogitEffect(NamedTuple):
    """What one residual-stream direction does to the next-token logits."""

    promotes: list[TokenLogit]
    """The tokens it raises most, largest first."""
    suppresses: list[TokenLogit]
    """The tokens it lowers most, most lowered first (negative logits)."""


@torch.no_grad()
def logit_effects(model, residual: torch.Tensor, k: int = 8, tokens: np.ndarray | None = None,
                  min_count: int = 0) -> list[LogitEffect]:
    """For each residual-stream direction: the ``k`` tokens it promotes and suppresses most,
    through the unembedding (the final LayerNorm's scale is left out: a direct, linear read).

    Tokens the corpus never shows have never been trained towards a useful unembedding and
    often have the largest ones (3.4x the mean norm in the offline model), so they dominate
    raw rankings. ``tokens=acts.tokens, min_count=5`` ranks only tokens seen at least 5 times.
    Each result unpacks as ``(promotes, suppresses)``; their items as ``(token, logit)``.
    """
    check_model(model)
    k, min_count = check_int("k", k, 1), check_int("min_count", min_count, 0)
    W_U = model.W_U if hasattr(model, "W_U") else model.unembed.W_U  # (d_model, vocab)
    if not isinstance(residual, torch.Tensor) or residual.dim() != 2 or residual.shape[1] != W_U.shape[0]:
        raise ValueError(f"residual must be a (n, {W_U.shape[0]}) tensor (from lm.residual_effects), got "
                         f"{getattr(residual, 'shape', type(residual).__name__)}")
    if min_count > 0 and tokens is None:
        raise ValueError("min_count needs tokens=...: the harvested token ids (acts.tokens) to count tokens in")
    logits = residual.to(W_U.device, W_U.dtype) @ W_U  # (n, vocab)
    vocab = logits.shape[1]
    tok = model.tokenizer
    # Tokens that are a fragment of a multi-byte character decode to U+FFFD: unreadable, skipped.
    names = [tok.decode([t]) for t in range(vocab)]
    keep = torch.tensor([("\ufffd" not in n) and n.isprintable() for n in names], device=logits.device)
    if tokens is not None:
        ids = np.asarray(tokens.detach().cpu() if isinstance(tokens, torch.Tensor) else tokens).reshape(-1)
        if not np.issubdtype(ids.dtype, np.integer) or (ids.size and (ids.min() < 0 or ids.max() >= vocab)):
            raise ValueError(f"tokens must be integer token ids in [0, {vocab}) (acts.tokens)")
        counts = torch.from_numpy(np.bincount(ids, minlength=vocab)[:vocab]).to(logits.device)
        keep &= counts >= min_count
    if int(keep.sum()) < k:
        raise ValueError(f"only {int(keep.sum())} tokens are readable and seen >= min_count={min_count} times; "
                         "lower min_count or k")
    logits = logits.masked_fill(~keep, float("nan"))
    out = []
    for row in logits:
        up = torch.topk(row.nan_to_num(float("-inf")), k)
        down = torch.topk((-row).nan_to_num(float("-inf")), k)
        out.append(LogitEffect([TokenLogit(names[t], float(v)) for t, v in zip(up.indices.tolist(), up.values.tolist())],
                               [TokenLogit(names[t], -float(v)) for t, v in zip(down.indices.tolist(), down.values.tolist())]))
    return out
