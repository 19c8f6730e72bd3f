"""The pair geometry of notebook 04's section 5: do co-occurring latents point apart?

For pairs among an SAE's most frequent latents: how much more often they fire together than
chance (lift), how similar their effects on the residual stream are, and the cosine between
their decoder directions. The co-occurrence counts are summed over chunks of rows, so memory
is one chunk plus the (m, m) count matrix, whatever the number of tokens.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from helpers.device import stream_seed
from helpers.lm.validate import check_fraction, check_instance, check_int, check_model, check_sae
from helpers.lm.features import row_chunks, latent_stats, residual_effects


class PairGeometry(NamedTuple):
    """Pairs of latents of one SAE (upper triangle of the ``latents`` x ``latents`` matrix)."""

    latents: np.ndarray
    """(m,) the latents compared."""
    lift: np.ndarray
    """(pairs,) P(both fire) / (P(i) P(j)): above 1 they co-occur more often than chance."""
    output_cos: np.ndarray
    """(pairs,) cosine between the two latents' effects on the residual stream."""
    decoder_cos: np.ndarray
    """(pairs,) cosine between their decoder directions (in MLP-neuron space)."""


def co_occurrence_lift(lat, latents: np.ndarray, chunk_rows: int | None = None) -> np.ndarray:
    """(m, m) P(i and j fire) / (P(i) P(j)) for the listed latents, counted chunk by chunk."""
    latents = np.asarray(latents, dtype=np.int64)
    both = np.zeros((len(latents), len(latents)), dtype=np.float64)
    n = 0
    for _, c in row_chunks(lat, chunk_rows):
        on = (c[:, latents] > 0).astype(np.float32)                    # (rows, m)
        both += on.T @ on                                              # counts: exact in float32 per chunk
        n += len(c)
    p = np.diag(both) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        return (both / n) / np.outer(p, p)


@torch.no_grad()
def pair_geometry(model, sae, latent_acts, n_latents: int = 300, layer: int = 0, instance: int = 0,
                  chunk_rows: int | None = None) -> PairGeometry:
    """Co-occurrence, output similarity and decoder cosine for pairs of the ``n_latents`` most
    frequently firing latents of instance ``instance`` of ``sae``.

    ``latent_acts`` is that instance's latent matrix: a dense array or a ``LatentActs``.
    """
    check_model(model)
    check_sae(sae, model.cfg.d_mlp)
    instance = check_instance(instance, sae)
    n_latents = check_int("n_latents", n_latents, 2)
    if tuple(latent_acts.shape) != (latent_acts.shape[0], sae.cfg.d_sae):
        raise ValueError(f"latent_acts must have shape (tokens, {sae.cfg.d_sae}) for this sae, got {latent_acts.shape}")
    freq = latent_stats(latent_acts, chunk_rows).freq
    alive = np.flatnonzero(freq > 0)
    top = alive[np.argsort(-freq[alive], kind="stable")[:n_latents]]
    lift = co_occurrence_lift(latent_acts, top, chunk_rows)             # (m, m)
    D = sae.decoder_directions()[instance, torch.as_tensor(top, device=sae.device)]        # (m, d_mlp)
    E = torch.nn.functional.normalize(residual_effects(model, D, layer=layer), dim=-1)   # (m, d_model)
    iu = np.triu_indices(len(top), 1)
    return PairGeometry(top, lift[iu], (E @ E.T).cpu().numpy()[iu], (D @ D.T).cpu().numpy()[iu])


def geometry_table(geo: PairGeometry, similar_quantile: float = 0.9) -> dict[tuple[bool, bool], tuple[float, int]]:
    """The 2x2 summary: (output similar?, co-occur?) -> (mean decoder cosine, number of pairs).

    "Co-occur" means a lift above 1; "similar output" means the top ``1 - similar_quantile``
    of output cosines among the pairs.
    """
    similar_quantile = check_fraction("similar_quantile", similar_quantile)
    cooc = geo.lift > 1.0
    similar = geo.output_cos > np.quantile(geo.output_cos, similar_quantile)
    out = {}
    for s in (True, False):
        for c in (False, True):
            m = (similar == s) & (cooc == c)
            out[s, c] = (float(geo.decoder_cos[m].mean()) if m.any() else float("nan"), int(m.sum()))
    return out


@torch.no_grad()
def random_geometry(model, geo: PairGeometry, layer: int = 0, seed: int = 0) -> PairGeometry:
    """A null for ``geo``: the same pairs and co-occurrence lifts, but random unit decoder
    directions (no training) and the output similarities those directions give.

    Output similarity is a linear image of the decoder direction (through W_out), so two
    directions with a large cosine tend to have similar outputs whatever they encode: a pattern
    of the 2x2 table that this null reproduces says nothing about what the SAE learned.
    """
    check_model(model)
    m = len(geo.latents)
    gen = torch.Generator().manual_seed(stream_seed(seed, "lm-random-directions"))
    D = torch.nn.functional.normalize(torch.randn(m, model.cfg.d_mlp, generator=gen), dim=-1)      # (m, d_mlp)
    E = torch.nn.functional.normalize(residual_effects(model, D, layer=layer), dim=-1).cpu()      # (m, d_model)
    iu = np.triu_indices(m, 1)
    return PairGeometry(geo.latents, geo.lift, (E @ E.T).numpy()[iu], (D @ D.T).numpy()[iu])


def shuffled_geometry(geo: PairGeometry, seed: int = 0) -> PairGeometry:
    """A null for ``geo``: the SAE's own decoder directions and output similarities, with the
    co-occurrence lifts of a random relabelling of the latents (who fires with whom is kept as
    a pattern, but no longer belongs to these directions)."""
    m = len(geo.latents)
    iu = np.triu_indices(m, 1)
    lift = np.zeros((m, m))
    lift[iu] = geo.lift
    lift = lift + lift.T                                                    # (m, m) symmetric
    perm = np.random.default_rng(stream_seed(seed, "lm-shuffle")).permutation(m)
    return PairGeometry(geo.latents, lift[np.ix_(perm, perm)][iu], geo.output_cos, geo.decoder_cos)


def _centred_rows(post: np.ndarray, seq_len: int, n: int, gen: np.random.Generator, mean: np.ndarray) -> np.ndarray:
    """(n, d_mlp) randomly drawn non-BOS rows of ``post``, minus ``mean``, in float32."""
    rows = gen.choice(post.shape[0], size=min(n * 2 + seq_len, post.shape[0]), replace=False)
    rows = np.sort(rows[rows % seq_len != 0][:n])
    return np.asarray(post[rows], dtype=np.float32) - mean


def _mean_row(post: np.ndarray, seq_len: int, n: int, gen: np.random.Generator) -> np.ndarray:
    return _centred_rows(post, seq_len, n, gen, 0.0).mean(0)


@torch.no_grad()
def activation_row_geometry(model, post: np.ndarray, seq_len: int, n_latents: int = 300, top: float = 0.05,
                            n_rows: int = 50_000, layer: int = 0, seed: int = 0) -> PairGeometry:
    """A null for ``pair_geometry`` that makes its own co-occurrence: ``n_latents`` "latents"
    whose directions are random harvested activation rows, centred (minus the mean row) and
    normalised, each firing on its own top ``top`` share of ``n_rows`` sampled tokens (ranked
    by the projection of the centred activation on its direction). No training, no sparsity
    penalty: whatever table it gives comes from the shape of the activations alone.

    ``post``: the harvested (n_seq * seq_len, d_mlp) activations; BOS rows are never drawn.
    """
    check_model(model)
    n_latents, n_rows = check_int("n_latents", n_latents, 2), check_int("n_rows", n_rows, 10)
    top = check_fraction("top", top)
    gen = np.random.default_rng(stream_seed(seed, "lm-activation-row-null"))
    mean = _mean_row(post, seq_len, n_rows, gen)
    D = _centred_rows(post, seq_len, n_latents, gen, mean)
    D = D / np.linalg.norm(D, axis=1, keepdims=True).clip(1e-12)                   # (m, d_mlp) unit directions
    proj = _centred_rows(post, seq_len, n_rows, gen, mean) @ D.T                   # (rows, m)
    on = (proj > np.quantile(proj, 1 - top, axis=0)).astype(np.float32)             # each fires on its own top share
    both = on.T @ on / len(on)
    p = np.diag(both)
    lift = both / np.outer(p, p)
    Dt = torch.from_numpy(D)
    E = torch.nn.functional.normalize(residual_effects(model, Dt, layer=layer), dim=-1).cpu()
    iu = np.triu_indices(n_latents, 1)
    return PairGeometry(np.arange(n_latents), lift[iu], (E @ E.T).numpy()[iu], (D @ D.T)[iu])


def activation_row_mmcs(post: np.ndarray, seq_len: int, d_sae_values, n_rows: int = 50_000, seed: int = 0) -> np.ndarray:
    """(S,) what ``mmcs_with_larger`` gives for untrained dictionaries made of random centred
    activation rows (one dictionary per size, ``d_sae_values`` ascending; NaN for the largest).
    Directions drawn from the activations share the activations' few large principal
    components, so they match each other far better than random unit vectors do."""
    from helpers.diagnostics.rules import mmcs_with_larger

    gen = np.random.default_rng(stream_seed(seed, "lm-activation-row-mmcs"))
    mean = _mean_row(post, seq_len, n_rows, gen)
    dicts = []
    for J in d_sae_values:
        D = torch.from_numpy(_centred_rows(post, seq_len, int(J), gen, mean))
        dicts.append(torch.nn.functional.normalize(D, dim=-1)[None])                # (1, J, d_mlp)
    return mmcs_with_larger(dicts)[:, 0]
