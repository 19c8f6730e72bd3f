"""Judging an SAE on a language model: reconstruction metrics, and CE loss with it spliced in.

``ce_with_sae`` replaces ``hook_post`` by the SAE's reconstruction inside a forward pass and
measures the next-token loss, between the clean model (100% recovered) and the model with the
MLP zeroed (0%). The SAE may live on another device than the model (a model kept on the CPU,
SAEs trained on the GPU): activations go to the SAE's device and come back.
``evaluate_saes`` streams its rows in chunks, so its memory does not grow with the rows.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from helpers.lm.validate import (check_fraction, check_instance, check_int, check_layer, check_model, check_sae,
                                 check_tokens)
from helpers.lm.features import chunk_rows_for
from helpers.lm.harvest import Activations
from helpers.lm.loading import mlp_hooks, model_device


class SpliceResult(NamedTuple):
    """Cross-entropy losses (nats/token) around one spliced-in SAE."""

    clean: float
    """Cross-entropy (nats/token) of the unchanged model."""
    with_sae: float
    """... with the MLP activations replaced by the SAE's reconstruction."""
    zero_ablated: float
    """... with the MLP activations set to zero."""
    recovered: float
    """(zero - with_sae) / (zero - clean): 1 is perfect, 0 is no better than deleting the MLP."""


class Baselines(NamedTuple):
    """The two reference losses CE loss recovered is measured between (nats/token)."""

    clean: float
    """Loss of the unchanged model."""
    zero_ablated: float
    """Loss with the MLP's hidden activations zeroed (BOS position kept)."""


def _hooked_batches(model, tokens: torch.Tensor, fwd_hooks, batch_size: int):
    """Yield (a batch of ``tokens`` on the model's device, its forward hooks): ``fwd_hooks`` is a
    list, or a function of one batch's tokens that returns the list."""
    dev = model_device(model)
    for start in range(0, tokens.shape[0], batch_size):
        toks = tokens[start:start + batch_size].to(dev)
        yield toks, (fwd_hooks(toks) if callable(fwd_hooks) else fwd_hooks)


def hooked_loss(model, tokens: torch.Tensor, fwd_hooks, batch_size: int = 16) -> float:
    """Mean next-token loss over ``tokens`` (n_seq, seq_len) with ``fwd_hooks`` (see ``_hooked_batches``;
    none: the clean loss), the tokens moved to the model's device here, a batch at a time."""
    total = 0.0
    for toks, hooks in _hooked_batches(model, tokens, fwd_hooks, batch_size):
        loss = model.run_with_hooks(toks, return_type="loss", fwd_hooks=hooks) if hooks else \
            model(toks, return_type="loss")
        total += float(loss) * len(toks)  # weight by sequences: a short last batch counts less
    return total / tokens.shape[0]


def _zero_after_bos(x, hook):
    y = x.clone()
    y[:, 1:] = 0
    return y


def _checked(model, tokens, layer: int | None, batch_size: int, sae=None, instance: int = 0, baselines=None):
    """The checks of the entry points below, run once before any work: (tokens as a CPU long tensor,
    the name of the layer's ``hook_post``, batch_size, instance)."""
    check_model(model)
    tokens = check_tokens(tokens, model)
    hook = None if layer is None else mlp_hooks(check_layer(layer, model))["post"]
    batch_size = check_int("batch_size", batch_size, 1)
    if sae is not None:
        check_sae(sae, model.cfg.d_mlp)
        instance = check_instance(instance, sae)
    if baselines is not None and not isinstance(baselines, Baselines):
        raise TypeError(f"baselines must come from lm.ce_baselines, got {type(baselines).__name__}")
    return tokens, hook, batch_size, instance


def _baselines(model, tokens: torch.Tensor, hook: str, batch_size: int) -> Baselines:
    return Baselines(hooked_loss(model, tokens, [], batch_size),
                     hooked_loss(model, tokens, [(hook, _zero_after_bos)], batch_size))


@torch.no_grad()
def ce_baselines(model, tokens: torch.Tensor | np.ndarray, layer: int = 0, batch_size: int = 16) -> Baselines:
    """Loss of the clean model and of the model with the MLP's hidden activations zeroed."""
    tokens, hook, batch_size, _ = _checked(model, tokens, layer, batch_size)
    return _baselines(model, tokens, hook, batch_size)


def splice_hook(sae, instance: int = 0):
    """A hook that replaces every position but the first by instance ``instance``'s reconstruction."""
    def splice(x, hook):                                               # x: (batch, seq, d_mlp)
        y = x.clone()
        inner = x[:, 1:]
        flat = inner.reshape(-1, x.shape[-1]).to(sae.device, torch.float32)   # (batch * (seq - 1), d_mlp)
        x_hat = sae.decode(sae.encode(flat))[instance]                        # on the SAE's device
        y[:, 1:] = x_hat.reshape(inner.shape).to(x.device, x.dtype)           # back to the model's
        return y
    return splice


def _splice_hooks(sae, instance: int, hook: str) -> list:
    """``fwd_hooks`` splicing in instance ``instance`` of ``sae`` (selected out of the stack first
    when it can be, so that the other instances are not computed)."""
    one = sae.select(instance) if sae.cfg.n_instances > 1 and hasattr(sae, "select") else sae
    return [(hook, splice_hook(one, 0 if one is not sae else instance))]


def _spliced(model, tokens: torch.Tensor, sae, instance: int, hook: str, batch_size: int, base: Baselines) -> SpliceResult:
    from helpers.metrics import ce_loss_recovered

    with_sae = hooked_loss(model, tokens, _splice_hooks(sae, instance, hook), batch_size)
    return SpliceResult(base.clean, with_sae, base.zero_ablated,
                        float(ce_loss_recovered(base.clean, with_sae, base.zero_ablated)))


@torch.no_grad()
def ce_with_sae(model, tokens: torch.Tensor | np.ndarray, sae, instance: int = 0, layer: int = 0,
                batch_size: int = 16, baselines: Baselines | None = None) -> SpliceResult:
    """Splice instance ``instance`` of ``sae`` into the MLP's post-activations and measure CE.

    The SAE reads and rewrites ``blocks.{layer}.mlp.hook_post`` at every position but the
    first (BOS), which it was not trained on and which stays untouched in all three runs.
    Pass ``baselines`` (from ``ce_baselines`` on the same tokens) to skip recomputing them.
    """
    tokens, hook, batch_size, instance = _checked(model, tokens, layer, batch_size, sae, instance, baselines)
    base = baselines or _baselines(model, tokens, hook, batch_size)
    return _spliced(model, tokens, sae, instance, hook, batch_size, base)


@torch.no_grad()
def kl_to_clean(model, tokens: torch.Tensor | np.ndarray, fwd_hooks, batch_size: int = 16) -> float:
    """Mean over next-token predictions of KL(clean || hooked), in nats: how far ``fwd_hooks``
    (a list, or a function of one batch's tokens returning one) move the model's next-token
    distribution. Averaged over the same positions as the loss (all but the last)."""
    tokens, _, batch_size, _ = _checked(model, tokens, None, batch_size)
    return _kl(model, tokens, fwd_hooks, batch_size)


def _kl(model, tokens: torch.Tensor, fwd_hooks, batch_size: int) -> float:
    total, count = 0.0, 0
    for toks, hooks in _hooked_batches(model, tokens, fwd_hooks, batch_size):
        clean = torch.log_softmax(model(toks, return_type="logits")[:, :-1].double(), -1)
        hooked = torch.log_softmax(model.run_with_hooks(toks, return_type="logits", fwd_hooks=hooks)[:, :-1].double(), -1)
        total += float((clean.exp() * (clean - hooked)).sum(-1).sum())
        count += clean.shape[0] * clean.shape[1]
    return total / count


@torch.no_grad()
def kl_with_sae(model, tokens: torch.Tensor | np.ndarray, sae, instance: int = 0, layer: int = 0,
                batch_size: int = 16) -> float:
    """``kl_to_clean`` with instance ``instance`` of ``sae`` spliced in (BOS kept), as in ``ce_with_sae``."""
    tokens, hook, batch_size, instance = _checked(model, tokens, layer, batch_size, sae, instance)
    return _kl(model, tokens, _splice_hooks(sae, instance, hook), batch_size)


class SAEEval(NamedTuple):
    """One SAE instance judged on held-back activations and inside the model."""

    d_sae: int
    """Latents in the dictionary."""
    alpha: float
    """Its L1 coefficient."""
    l0: float
    """Mean active latents per token."""
    fvu: float
    """Fraction of variance unexplained (0 = perfect)."""
    dead: int
    """Latents that fire on none of the evaluation tokens."""
    dense: int
    """Latents that fire on more than ``dense_threshold`` of them."""
    ce: SpliceResult
    """CE loss with the SAE spliced in."""


@torch.no_grad()
def evaluate_saes(model, sae, acts: Activations, n_rows: int = 8192, n_seq: int = 32, layer: int = 0,
                  dense_threshold: float = 0.1, baselines: Baselines | None = None, holdout: float | None = None,
                  chunk_rows: int | None = None) -> list[SAEEval]:
    """Every instance of a stacked ``sae``: L0, FVU, dead and dense latents, and CE loss recovered.

    ``holdout=None``: the metrics use the last ``n_rows`` harvested tokens and CE the first
    ``n_seq`` windows. ``holdout=0.1``: both use only the last 10% of windows, which a
    sampler made with ``acts.sampler(..., holdout=0.1)`` never trains on (all their rows for
    the metrics, the first ``n_seq`` of them for CE; ``baselines`` must then come from
    ``ce_baselines(model, acts.held_out_tokens(0.1)[:n_seq])``). BOS rows are left out.
    """
    check_model(model)
    if not isinstance(acts, Activations) or "post" not in acts.acts:
        raise TypeError("acts must be the Activations of lm.harvest with the 'post' kind harvested")
    n_rows, n_seq = check_int("n_rows", n_rows, 1), check_int("n_seq", n_seq, 1)
    dense_threshold = check_fraction("dense_threshold", dense_threshold)
    post = acts.acts["post"]
    seq_len = acts.tokens.shape[1]
    if holdout is None:
        rows, tokens = np.arange(max(post.shape[0] - n_rows, 0), post.shape[0]), acts.tokens[:n_seq]
        rows = rows[rows % seq_len != 0]
    else:
        holdout = check_fraction("holdout", holdout)
        rows, tokens = acts.rows(holdout, held_out=True), acts.held_out_tokens(holdout)[:n_seq]
    tokens, hook, batch_size, _ = _checked(model, tokens, layer, 16, sae, 0, baselines)
    stats = reconstruction_stats(sae, post, rows, chunk_rows)             # checks chunk_rows first
    base = baselines or _baselines(model, tokens, hook, batch_size)
    return [SAEEval(sae.cfg.d_sae, float(alpha), float(stats.l0[i]), float(stats.fvu[i]),
                    int((stats.rate[i] == 0).sum()), int((stats.rate[i] > dense_threshold).sum()),
                    _spliced(model, tokens, sae, i, hook, batch_size, base))
            for i, alpha in enumerate(sae.cfg.l1_coeffs)]


class ReconstructionStats(NamedTuple):
    """Per-instance reconstruction metrics over a set of rows."""

    l0: np.ndarray
    """(inst,) mean active latents per row."""
    fvu: np.ndarray
    """(inst,) fraction of variance unexplained."""
    rate: np.ndarray
    """(inst, d_sae) share of rows each latent fires on."""


@torch.no_grad()
def reconstruction_stats(sae, x: np.ndarray, rows: np.ndarray, chunk_rows: int | None = None) -> ReconstructionStats:
    """L0, FVU and firing rates of every instance on ``x[rows]``, ``chunk_rows`` rows at a time."""
    I, J = sae.cfg.n_instances, sae.cfg.d_sae
    if len(rows) == 0:
        raise ValueError("no rows to evaluate on: raise n_rows or holdout")
    step = chunk_rows_for(I * J, chunk_rows)
    dev = sae.device
    fired = torch.zeros(I, J, dtype=torch.float64, device=dev)
    err = torch.zeros(I, dtype=torch.float64, device=dev)
    sum_x = torch.zeros(x.shape[1], dtype=torch.float64, device=dev)
    sum_x2 = torch.zeros((), dtype=torch.float64, device=dev)
    for s in range(0, len(rows), step):
        xb = torch.from_numpy(np.asarray(x[rows[s:s + step]], dtype=np.float32)).to(dev)  # (b, d)
        c = sae.encode(xb)                                                                # (inst, b, d_sae)
        fired += (c > 0).sum(1, dtype=torch.float64)
        err += (sae.decode(c) - xb).double().pow(2).sum((1, 2))
        sum_x += xb.double().sum(0)
        sum_x2 += xb.double().pow(2).sum()
    n = len(rows)
    total = (sum_x2 - sum_x.pow(2).sum() / n).clamp_min(1e-12)  # sum of squares around the mean
    return ReconstructionStats((fired.sum(1) / n).cpu().numpy(), (err / total).cpu().numpy(),
                               (fired / n).cpu().numpy())
