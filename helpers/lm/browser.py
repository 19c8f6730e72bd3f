"""One line per latent, for browsing a whole dictionary: density, how much of it is one token,
the token it fires on most and the token it promotes most.

Streamed like everything in ``helpers.lm.features``: one pass for the densities, one for each
latent's ``k`` strongest rows (memory: one chunk plus ``k`` rows per latent).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from helpers.lm.validate import check_int, check_model
from helpers.lm.features import latent_stats, logit_effects, residual_effects, top_rows


class LatentTable(NamedTuple):
    """Per-latent summary of one SAE instance (alive latents only)."""

    latents: np.ndarray
    """(n,) latent indices."""
    density: np.ndarray
    """(n,) share of tokens where it fires."""
    max: np.ndarray
    """(n,) its largest activation."""
    top_token_share: np.ndarray
    """(n,) share of its ``k`` strongest activations that sit on its most common token."""
    top_token: list[str]
    """(n,) that token."""
    promotes: list[str]
    """(n,) the token its output raises most (tokens seen at least ``min_count`` times)."""


@torch.no_grad()
def latent_table(model, sae, lat, tokens: np.ndarray, k: int = 20, instance: int = 0, layer: int = 0,
                 min_count: int = 5, chunk_rows: int | None = None) -> LatentTable:
    """The ``LatentTable`` of every latent of ``lat`` (a ``lm.LatentActs`` or dense array) that fires."""
    check_model(model)
    k = check_int("k", k, 1)
    stats = latent_stats(lat, chunk_rows)
    alive = np.flatnonzero(stats.freq > 0)
    if alive.size == 0:
        raise ValueError("no latent fires on these tokens: is this the right SAE for these activations?")
    rows, values = top_rows(lat, alive, k, chunk_rows)                               # (k, n)
    flat = np.asarray(tokens).reshape(-1)
    share, top_tok = np.zeros(len(alive)), []
    for i in range(len(alive)):
        ids = flat[rows[values[:, i] > 0, i]]
        counts = np.bincount(ids)
        share[i] = counts.max() / max(len(ids), 1)
        top_tok.append(model.tokenizer.decode([int(counts.argmax())]))
    D = sae.decoder_directions()[instance, torch.as_tensor(alive, device=sae.device)].float()  # (n, d_mlp)
    effects = logit_effects(model, residual_effects(model, D, layer=layer), k=1, tokens=tokens, min_count=min_count)
    return LatentTable(alive, stats.freq[alive], stats.max[alive], share, top_tok,
                       [e.promotes[0].token for e in effects])
