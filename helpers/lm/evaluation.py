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
    """Mean next-token loss over ``tokens`` (n_seq, seq_len) with ``fwd_hooks`` applied: a list of
    (hook name, hook), or a function of one batch's tokens that returns it (see ``_hooked_batches``);
    no hooks, the clean loss. The tokens go to the model's device here, in batches."""
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


@torch.no_grad()
def ce_baselines(model, tokens: torch.Tensor | np.ndarray, layer: int = 0, batch_size: int = 16) -> Baselines:
    """Loss of the clean model and of the model with the MLP's hidden activations zeroed."""
    check_model(model)
    tokens = check_tokens(tokens, model)
    layer = check_layer(layer, model)
    batch_size = check_int("batch_size", batch_size, 1)
    hook = mlp_hooks(layer)["post"]
    return Baselines(hooked_loss(model, tokens, [], batch_size),
                     hooked_loss(model, tokens, [(hook, _zero_after_bos)], batch_size))


@torch.no_grad()
def loss_with_hook(model, tokens: torch.Tensor | np.ndarray, hook, layer: int = 0, batch_size: int = 16) -> float:
    """Mean next-token loss over ``tokens`` (n_seq, seq_len) with ``hook`` on the MLP's post-activations.

    The tokens go to the model's device here, in batches: a cell that calls the model itself
    would have to remember that (on a GPU, CPU token ids in the embedding are an error).
    """
    check_model(model)
    tokens = check_tokens(tokens, model)
    layer = check_layer(layer, model)
    return hooked_loss(model, tokens, [(mlp_hooks(layer)["post"], hook)], check_int("batch_size", batch_size, 1))


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


@torch.no_grad()
def ce_with_sae(model, tokens: torch.Tensor | np.ndarray, sae, instance: int = 0, layer: int = 0,
                batch_size: int = 16, baselines: Baselines | None = None) -> SpliceResult:
    """Splice instance ``instance`` of ``sae`` into the MLP's post-activations and measure CE.

    The SAE reads and rewrites ``blocks.{layer}.mlp.hook_post`` at every position but the
    first (BOS), which it was not trained on and which stays untouched in all three runs.
    Pass ``baselines`` (from ``ce_baselines`` on the same tokens) to skip recomputing them.
    """
    from helpers.metrics import ce_loss_recovered

    check_model(model)
    tokens = check_tokens(tokens, model)
    layer = check_layer(layer, model)
    check_sae(sae, model.cfg.d_mlp)
    instance = check_instance(instance, sae)
    batch_size = check_int("batch_size", batch_size, 1)
    if baselines is not None and not isinstance(baselines, Baselines):
        raise TypeError(f"baselines must come from lm.ce_baselines, got {type(baselines).__name__}")
    one = sae.select(instance) if sae.cfg.n_instances > 1 and hasattr(sae, "select") else sae
    base = baselines or ce_baselines(model, tokens, layer, batch_size)
    hook = splice_hook(one, 0 if one is not sae else instance)
    with_sae = hooked_loss(model, tokens, [(mlp_hooks(layer)["post"], hook)], batch_size)
    return SpliceResult(base.clean, with_sae, base.zero_ablated,
                        float(ce_loss_recovered(base.clean, with_sae, base.zero_ablated)))


class ContextFreeBaselines(NamedTuple):
    """Losses (nats/token) with the MLP's post-activations replaced by something that ignores context.

    Zeroing the MLP is a harsh reference (it can cost more than guessing uniformly over the
    vocabulary), so "CE loss recovered" against it flatters every SAE. These two are fairer
    floors: an SAE that does not beat the per-token lookup adds nothing a table of the current
    token could not.
    """

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
    check_model(model)
    tokens = check_tokens(tokens, model)
    hooks = context_free_hooks(model, acts, layer, holdout)
    return ContextFreeBaselines(hooked_loss(model, tokens, hooks["mean"], batch_size),
                                hooked_loss(model, tokens, hooks["token lookup"], batch_size))


@torch.no_grad()
def context_free_hooks(model, acts: Activations, layer: int = 0, holdout: float = 0.1) -> dict:
    """The forward hooks of ``context_free_baselines`` (and of zero-ablation), as ``hooked_loss``
    and ``kl_to_clean`` take them: ``{"zero": [...], "mean": [...], "token lookup": f(tokens) -> [...]}``."""
    check_model(model)
    layer = check_layer(layer, model)
    rows = acts.rows(check_fraction("holdout", holdout) if holdout else 0.0)
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


@torch.no_grad()
def kl_to_clean(model, tokens: torch.Tensor | np.ndarray, fwd_hooks, batch_size: int = 16) -> float:
    """Mean over next-token predictions of KL(clean || hooked), in nats: how far ``fwd_hooks``
    (a list, or a function of one batch's tokens returning one) move the model's next-token
    distribution. Averaged over the same positions as the loss (all but the last)."""
    check_model(model)
    tokens = check_tokens(tokens, model)
    batch_size = check_int("batch_size", batch_size, 1)
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
    check_model(model)
    check_sae(sae, model.cfg.d_mlp)
    instance = check_instance(instance, sae)
    one = sae.select(instance) if sae.cfg.n_instances > 1 and hasattr(sae, "select") else sae
    hook = splice_hook(one, 0 if one is not sae else instance)
    return kl_to_clean(model, tokens, [(mlp_hooks(check_layer(layer, model))["post"], hook)], batch_size)


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
    check_sae(sae, model.cfg.d_mlp)
    n_rows = check_int("n_rows", n_rows, 1)
    n_seq = check_int("n_seq", n_seq, 1)
    layer = check_layer(layer, model)
    dense_threshold = check_fraction("dense_threshold", dense_threshold)
    if chunk_rows is not None:
        check_int("chunk_rows", chunk_rows, 1)
    if baselines is not None and not isinstance(baselines, Baselines):
        raise TypeError(f"baselines must come from lm.ce_baselines, got {type(baselines).__name__}")
    post = acts.acts["post"]
    seq_len = acts.tokens.shape[1]
    if holdout is None:
        rows, tokens = np.arange(max(post.shape[0] - n_rows, 0), post.shape[0]), acts.tokens[:n_seq]
        rows = rows[rows % seq_len != 0]
    else:
        holdout = check_fraction("holdout", holdout)
        rows, tokens = acts.rows(holdout, held_out=True), acts.held_out_tokens(holdout)[:n_seq]
    stats = reconstruction_stats(sae, post, rows, chunk_rows)
    base = baselines or ce_baselines(model, tokens, layer)
    out = []
    for i, alpha in enumerate(sae.cfg.l1_coeffs):
        out.append(SAEEval(sae.cfg.d_sae, float(alpha), float(stats.l0[i]), float(stats.fvu[i]),
                           int((stats.rate[i] == 0).sum()), int((stats.rate[i] > dense_threshold).sum()),
                           ce_with_sae(model, tokens, sae, instance=i, layer=layer, baselines=base)))
    return out


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
