"""Fairer floors for CE loss recovered than deleting the MLP: context-free stand-ins for ``hook_post``.

Zeroing the MLP is a harsh reference (it can cost more than guessing uniformly over the
vocabulary), so "CE loss recovered" against it flatters every SAE. ``context_free_baselines``
replaces the MLP's post-activations by their training mean, and by the mean of the current
token (a lookup table): an SAE that does not beat the lookup adds nothing a table of the
current token could not. ``context_free_hooks`` gives the same replacements as forward hooks.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from helpers.lm.evaluation import _checked, _zero_after_bos, hooked_loss
from helpers.lm.harvest import Activations
from helpers.lm.loading import mlp_hooks, model_device
from helpers.lm.validate import check_layer, check_model


class ContextFreeBaselines(NamedTuple):
    """Losses (nats/token) with the MLP's post-activations replaced by something that ignores context."""

    mean_ablated: float
    """Every position but BOS gets the MLP's mean activation over the training tokens."""
    token_lookup: float
    """Every position but BOS gets the mean activation of its current token over the training
    tokens (the global mean for a token never seen there)."""


def token_mean_table(chunks, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(vocab, d) the mean activation of each current token, and (d,) the overall mean, summed in
    float64 over ``chunks``: pairs of activations (n, d) and their token ids (n,). A token never
    seen gets the overall mean (the per-token lookup baseline; notebook 04's exercise 1)."""
    sums = counts = None
    for x, t in chunks:
        x, t = torch.as_tensor(np.asarray(x), dtype=torch.float64), torch.as_tensor(np.asarray(t), dtype=torch.int64)
        if sums is None:
            sums, counts = torch.zeros(vocab, x.shape[1], dtype=torch.float64), torch.zeros(vocab, dtype=torch.float64)
        sums.index_add_(0, t, x)
        counts.index_add_(0, t, torch.ones(len(t), dtype=torch.float64))
    overall = sums.sum(0) / counts.sum()
    means = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], overall)
    return means.float(), overall.float()


def _token_means(acts: Activations, rows: np.ndarray, vocab: int, chunk: int = 65_536) -> tuple[torch.Tensor, torch.Tensor]:
    """``token_mean_table`` of the post-activations over ``rows``, read ``chunk`` rows at a time."""
    post, tokens = acts.acts["post"], acts.tokens.reshape(-1)
    return token_mean_table(((post[rows[s:s + chunk]], tokens[rows[s:s + chunk]]) for s in range(0, len(rows), chunk)),
                            vocab)


@torch.no_grad()
def context_free_baselines(model, acts: Activations, tokens: torch.Tensor | np.ndarray, layer: int = 0,
                           holdout: float = 0.1, batch_size: int = 16) -> ContextFreeBaselines:
    """Loss on ``tokens`` with ``hook_post`` replaced by its training mean, and by a per-token lookup.

    Both are fitted on the training windows of ``acts`` (all but the last ``holdout`` of them,
    BOS positions left out), so judge them on held-out ``tokens``, as the SAEs are.
    """
    tokens, _, batch_size, _ = _checked(model, tokens, layer, batch_size)
    hooks = _context_free_hooks(model, acts, layer, holdout)
    return ContextFreeBaselines(hooked_loss(model, tokens, hooks["mean"], batch_size),
                                hooked_loss(model, tokens, hooks["token lookup"], batch_size))


@torch.no_grad()
def context_free_hooks(model, acts: Activations, layer: int = 0, holdout: float = 0.1) -> dict:
    """The forward hooks of ``context_free_baselines`` (and of zero-ablation), as ``hooked_loss``
    and ``kl_to_clean`` take them: ``{"zero": [...], "mean": [...], "token lookup": f(tokens) -> [...]}``."""
    check_model(model)
    return _context_free_hooks(model, acts, check_layer(layer, model), holdout)


def _context_free_hooks(model, acts: Activations, layer: int, holdout: float) -> dict:
    rows = acts.rows(holdout or 0.0)                                        # checks holdout
    means, overall = _token_means(acts, rows, model.cfg.d_vocab)
    dev, hook = model_device(model), mlp_hooks(layer)["post"]
    means, overall = means.to(dev), overall.to(dev)

    def mean_hook(x, hook):
        y = x.clone()
        y[:, 1:] = overall.to(x.dtype)
        return y

    def lookup_hooks(toks):  # the hook needs the batch's own tokens
        def lookup_hook(x, hook):
            y = x.clone()
            y[:, 1:] = means[toks[:, 1:]].to(x.dtype)
            return y
        return [(hook, lookup_hook)]

    return {"zero": [(hook, _zero_after_bos)], "mean": [(hook, mean_hook)], "token lookup": lookup_hooks}
