"""A diagnostic grid of SAEs on harvested activations, trained once and reopened from disk.

``run_grid(..., keep_saes=True)`` returns the trained models, which its own cache does not
store. ``sae_grid`` stores both, as an entry of the course's one store (``helpers.store.cached``):
the grid's arrays as ``helpers.diagnostics.write_grid`` writes them and every SAE in the SAELens
layout of ``helpers.sae.save_sae`` (one folder per size, one sub-folder per L1 value), under a
key made of the training settings, the activations' cache folder (itself a hash of the model's
weights, corpus and budget), the device type and the source code of the training. The store
writes ``entry.json`` last: a folder without it is trained again, a damaged one is reported and
trained again.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import torch

from helpers.device import get_device
from helpers.lm.harvest import Activations
from helpers.paths import source_hash
from helpers.store import cached

CACHE_AREA = "lm-grids"
"""Sub-folder of the cache where these grids live."""


def grid_config(acts: Activations, base, sizes: Sequence[float], l1_values: Sequence[float],
                reference_size: int | None, holdout: float, seed: int, device: torch.device) -> dict:
    """What the cache key of one grid request covers (see the module docstring)."""
    from helpers.diagnostics import training_code
    from helpers.sae import io

    return {"sae": asdict(base), "sizes": [float(s) for s in sizes], "l1": [float(a) for a in l1_values],
            "reference_size": reference_size, "activations": acts.folder.name, "holdout": float(holdout),
            "seed": int(seed), "device": device.type, "code": training_code(Activations.sampler),
            "io": source_hash(io, grid_config)}


def sae_grid(acts: Activations, base, sizes: Sequence[float], l1_values: Sequence[float], *,
             reference_size: int | None = None, holdout: float = 0.0, seed: int = 0, progress: bool = True,
             name: str = "post"):
    """``run_grid(acts.sampler(name, holdout=holdout, seed=seed), base, sizes, l1_values,
    reference_size=..., keep_saes=True)``, stored on disk and reopened on the next call
    (``grid.from_cache`` says which happened; ``grid.saes`` holds the SAEs either way)."""
    from helpers.diagnostics import run_grid

    dev = get_device()
    config = grid_config(acts, base, sizes, l1_values, reference_size, holdout, seed, dev)

    def train():
        return run_grid(acts.sampler(name, holdout=holdout, seed=seed), base, sizes, l1_values,
                        reference_size=reference_size, keep_saes=True, progress=progress)

    # A model loaded from a local folder ("./gpt2") gives its harvest a name that starts with "." or "_"
    prefix = acts.folder.name.lstrip("._-").replace("..", "_") or "model"
    return cached(CACHE_AREA, f"{prefix}-{name}", config, train, _save,
                  lambda folder, entry: _reopen(folder, entry, base, dev))


def _save(grid, folder: Path) -> dict:
    """The grid's arrays (grid.npz, dictionaries.npz) and one SAELens folder per size."""
    from helpers.diagnostics.cache import write_grid
    from helpers.sae import save_sae

    meta = write_grid(grid, folder)
    for i, sae in enumerate(grid.saes):
        save_sae(sae, folder / f"size{i}")
    return meta


def _reopen(folder: Path, entry: dict, base, dev):
    """The stored grid with its SAEs (a damaged folder raises, and the store trains it again)."""
    from helpers.diagnostics import column_config
    from helpers.diagnostics.cache import read_grid
    from helpers.store import CacheCorruptError
    from helpers.sae import SAE, load_sae

    grid = read_grid(folder, entry)
    saes = []
    for i, J in enumerate(grid.d_sae_values):
        sae = SAE(column_config(base, int(J), grid.l1_values), device=dev)
        parts = sorted((folder / f"size{i}").glob("instance_*")) or [folder / f"size{i}"]
        if len(parts) != sae.cfg.n_instances:
            raise CacheCorruptError(f"size{i} holds {len(parts)} SAEs, expected {sae.cfg.n_instances}")
        with torch.no_grad():
            for j, part in enumerate(parts):
                one = load_sae(part, device=dev)
                for p in ("W_enc", "b_enc", "W_dec", "b_dec"):
                    getattr(sae, p)[j].copy_(getattr(one, p)[0])
        saes.append(sae)
    grid.saes = saes
    return grid
