"""Training stacks of SAEs for notebook 05, cached on disk, and the (size x k) TopK grid.

* ``PerInstanceTopK``: a TopK SAE whose instances each keep their own number k of latents, so
  a whole k sweep trains as one stacked model, the way an L1 sweep does. Like ``TopKSAE`` it
  trains with the AuxK loss, which revives dead latents, when its config sets ``auxk``.
* ``train_cached``: train a stack once and keep its weights under ``cache_dir("beyond")``,
  keyed by the config, the data's settings and the source code of the training (an entry of
  the course's one store, ``helpers.store.cached``: ``stack.npz`` with the state_dict's arrays
  and the last log window, checked against ``entry.json``).
* ``k_grid``: notebook 03's diagnostic grid with k in place of alpha. TopK has no L1 term, so
  the L1 loss of the grid is the L1 norm of the codes, measured but not penalised: what the
  sparsity penalty would see. SSLL and stickiness then read the same way as for L1 grids.
"""
from __future__ import annotations

from dataclasses import asdict, replace
from typing import NamedTuple, Sequence

import numpy as np
import torch

from helpers.device import get_device, stream_seed
from helpers.diagnostics.grid import training_code
from helpers.diagnostics.result import GridResult
from helpers.diagnostics.rules import mmcs_with_larger
from helpers.metrics import mmcs
from helpers.paths import check_cache_name, jsonable, source_hash
from helpers.store import cached, read_npz, write_npz
from helpers.sae import SAE, SAEConfig, TopKSAE, train_sae
from helpers.sae.config import AuxKConfig

CACHE_AREA = "beyond"
"""Sub-folder of the cache where trained stacks live."""


class PerInstanceTopK(TopKSAE):
    """TopK with k per instance: instance i keeps its ``ks[i]`` largest pre-activations."""

    architecture = "topk"

    def __init__(self, cfg: SAEConfig, ks: Sequence[int] | None = None, device=None):
        ks = [int(cfg.k)] * cfg.n_instances if ks is None else [int(k) for k in ks]
        if len(ks) != cfg.n_instances or min(ks) < 1 or max(ks) > cfg.d_sae:
            raise ValueError(f"ks must give one k in [1, d_sae={cfg.d_sae}] per instance "
                             f"({cfg.n_instances}), got {ks}")
        super().__init__(replace(cfg, k=max(ks)), device)
        self.register_buffer("ks", torch.tensor(ks, device=self.device))  # (I,)

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        kmax = int(self.cfg.k)
        values, idx = pre.topk(kmax, dim=-1, sorted=True)                        # (I, B, kmax), descending
        keep = torch.arange(kmax, device=pre.device) < self.ks[:, None, None]    # (I, 1, kmax)
        return torch.zeros_like(pre).scatter(-1, idx, values.relu() * keep)


def _build(cfg: SAEConfig, ks, device, cls=None, **options) -> SAE:
    return (cls or PerInstanceTopK)(cfg, ks, device, **options) if ks is not None else SAE(cfg, device=device)


class Trained(NamedTuple):
    """A trained stack and the last window of its training log."""

    sae: SAE
    """The stack, in training mode."""
    final: dict[str, np.ndarray]
    """(inst,) ``recon_loss``, ``l1_loss``, ``l0`` and ``dead`` of the last logged window."""


def train_cached(cfg: SAEConfig, data, name: str, ks: Sequence[int] | None = None, device=None,
                 cache: bool = True, aux_coeff: float = 0.0, cls: type | None = None, **options) -> Trained:
    """Train a stack on ``data.sample`` (a GroundTruthData) once; later calls load it.

    ``ks`` makes it a ``PerInstanceTopK`` (cfg.architecture must be ``topk``), or ``cls(cfg, ks, device,
    **options)`` when ``cls`` is given (a class with its own k per instance); ``aux_coeff > 0``
    trains a TopK or BatchTopK stack with the AuxK loss (``helpers.sae.variants``): it sets
    ``cfg.auxk``'s coefficient (``AuxKConfig(coeff=aux_coeff)`` when ``cfg.auxk`` is None). The cache
    key covers the config, ``ks``, the data's config and the code of the SAE, its training and the
    data generator, so a change to any of them trains again. Training draws from a stream of its own,
    named after ``name`` (``data.fixed_stream``), so what it learns, and every sample drawn after it,
    is the same whether this stack or any other was trained just now or reopened from the cache.
    """
    needed = (cls or PerInstanceTopK).architecture
    if ks is not None and cfg.architecture != needed:
        raise ValueError(f"ks (one k per instance) needs cfg.architecture={needed!r}, got {cfg.architecture!r}")
    if (cls is not None or options) and ks is None:
        raise ValueError("cls and its options build a stack with one k per instance: give ks too")
    if aux_coeff:
        if cfg.architecture not in ("topk", "batchtopk"):
            raise ValueError(f"aux_coeff (the AuxK loss) is for TopK and BatchTopK, not {cfg.architecture!r}")
        cfg = replace(cfg, auxk=replace(cfg.auxk or AuxKConfig(), coeff=aux_coeff))
    dev = get_device(device)
    key = {"sae": asdict(cfg), "ks": None if ks is None else [int(k) for k in ks], "data": jsonable(data.cfg),
           **({"class": source_hash(cls), "options": jsonable(options)} if cls is not None else {}),
           "code": training_code(data.sample), "here": source_hash(PerInstanceTopK)}

    def train() -> Trained:
        sae = _build(cfg, ks, dev, cls, **options)
        with data.fixed_stream(f"train:{name}"):
            return Trained(sae, train_sae(sae, data.sample, progress=False).final())

    def load(folder, entry) -> Trained:
        arrays = read_npz(folder, "stack.npz", entry["files"]["stack.npz"])
        sae = _build(cfg, ks, dev, cls, **options)
        sae.load_state_dict({k[6:]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith("state.")})
        return Trained(sae, {k[6:]: v for k, v in arrays.items() if k.startswith("final.")})

    check_cache_name(name)
    # One process trains a stack; another asking for the same one meanwhile (a notebook and its
    # exercise version under the tests) waits for it, then loads it.
    return cached(CACHE_AREA, name, key, train, _save_stack, load) if cache else train()


def _save_stack(trained: Trained, folder) -> dict:
    """The stack's weights (its state_dict) and last log window to stack.npz; what entry.json records."""
    arrays = {f"state.{k}": v.detach().cpu().numpy() for k, v in trained.sae.state_dict().items()}
    arrays.update({f"final.{k}": np.asarray(v) for k, v in trained.final.items()})
    return {"files": {"stack.npz": write_npz(folder / "stack.npz", arrays, compressed=False)}}


def k_grid(data, base: SAEConfig, size_ratios: Sequence[float], ks: Sequence[int], name: str = "k-grid",
           n_eval: int = 4096, device=None) -> tuple[GridResult, list[SAE]]:
    """A (size x k) grid of TopK SAEs on ``data`` (a GroundTruthData): a ``GridResult`` and the stacks.

    The grid's ``l1_values`` hold the k values; its ``l1_loss`` is the mean L1 norm of the
    codes over J on ``n_eval`` fresh samples, the same for every size (TopK penalises nothing, so SSLL
    reads the norm a penalty would have seen). Each size is one ``PerInstanceTopK`` with its own seed
    (``k_grid_config``), trained through ``train_cached``.
    """
    ks = [int(k) for k in ks]
    if not ks or ks != sorted(set(ks)) or ks[0] < 1:
        raise ValueError(f"ks must be positive, distinct and ascending, got {ks}")
    G = data.cfg.n_features
    sizes_J = [int(round(r * G)) for r in size_ratios]
    if max(ks) > min(sizes_J):
        raise ValueError(f"the largest k ({max(ks)}) exceeds the smallest dictionary ({min(sizes_J)} latents)")
    dev = get_device(device)
    F = data.features.to(dev).float()
    finals, dicts, l1, saes = [], [], [], []
    for J in sizes_J:
        sae, final = train_cached(k_grid_config(base, J, ks), data, f"{name}-J{J}", ks, dev)
        finals.append(final)
        with torch.no_grad(), data.fixed_stream(f"{name}-l1"):                     # the same samples for every size
            acts = sae.encode(data.sample(n_eval).to(dev))                          # (K, n, J)
            l1.append((acts.sum(-1).mean(-1) / J).cpu().numpy())
            dicts.append(sae.decoder_directions().detach().float())                # (K, J, h)
        saes.append(sae)
    metrics = {k: np.stack([np.asarray(f[k], dtype=float) for f in finals]) for k in ("recon_loss", "l0", "dead")}
    result = GridResult(
        d_sae_values=np.array(sizes_J), l1_values=np.array(ks, dtype=float), l1_loss=np.stack(l1), **metrics,
        mmcs_ground_truth=np.stack([mmcs(D, F).cpu().numpy() for D in dicts]), mmcs_larger=mmcs_with_larger(dicts),
        reference_size=G, dictionaries=[D.cpu().half().numpy() for D in dicts],
        config={"sae": {"d_in": base.d_in}, "ks": ks})
    return result, saes


def k_grid_config(base: SAEConfig, d_sae: int, ks: Sequence[int]) -> SAEConfig:
    """The config of the (size x k) grid's stack at size ``d_sae``: TopK, one instance per k,
    a seed of its own per size (as notebook 03's grid gives each size)."""
    return replace(base, architecture="topk", d_sae=int(d_sae), k=max(ks), l1_coeffs=(0.0,) * len(ks),
                   seed=stream_seed(base.seed, f"k-grid:d_sae={int(d_sae)}"))
