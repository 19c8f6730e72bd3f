"""A diagnostic grid of SAEs on harvested activations, trained once and reopened from disk.

``run_grid(..., keep_saes=True)`` returns the trained models, which its own cache does not
store. ``sae_grid`` stores both: the grid with ``helpers.diagnostics.save_grid`` and every
SAE in the SAELens layout of ``helpers.sae.save_sae`` (one folder per size, one sub-folder
per L1 value), under a key made of the training settings, the activations' cache folder
(itself a hash of the model's weights, corpus and budget), the device type and the source
code of the training. ``done.json`` is written last: a folder without it is trained again.
"""
from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import torch

from helpers.device import get_device
from helpers.lm.harvest import Activations
from helpers.paths import atomic_write, cache_dir, cache_key, cache_lock, source_hash

CACHE_AREA = "lm-grids"
"""Sub-folder of the cache where these grids live."""


def grid_key(acts: Activations, base, sizes: Sequence[float], l1_values: Sequence[float], reference_size: int | None,
             holdout: float, seed: int, device: torch.device) -> str:
    """The cache key of one grid request (see the module docstring for what it covers)."""
    from helpers.diagnostics import training_code
    from helpers.sae import io

    return cache_key({"sae": asdict(base), "sizes": [float(s) for s in sizes], "l1": [float(a) for a in l1_values],
                      "reference_size": reference_size, "activations": acts.folder.name, "holdout": float(holdout),
                      "seed": int(seed), "device": device.type, "code": training_code(Activations.sampler),
                      "io": source_hash(io, grid_key)})


def sae_grid(acts: Activations, base, sizes: Sequence[float], l1_values: Sequence[float], *,
             reference_size: int | None = None, holdout: float = 0.0, seed: int = 0, progress: bool = True,
             name: str = "post"):
    """``run_grid(acts.sampler(name, holdout=holdout, seed=seed), base, sizes, l1_values,
    reference_size=..., keep_saes=True)``, stored on disk and reopened on the next call
    (``grid.from_cache`` says which happened; ``grid.saes`` holds the SAEs either way)."""
    from helpers.diagnostics import run_grid, save_grid
    from helpers.sae import save_sae

    dev = get_device()
    key = grid_key(acts, base, sizes, l1_values, reference_size, holdout, seed, dev)
    folder = cache_dir(CACHE_AREA) / f"{acts.folder.name}-{name}-{key}"
    with cache_lock(folder):  # a second process asking for this grid waits, then reopens it
        grid = _reopen(folder, base, dev)
        if grid is not None:
            return grid
        grid = run_grid(acts.sampler(name, holdout=holdout, seed=seed), base, sizes, l1_values,
                        reference_size=reference_size, keep_saes=True, progress=progress)
        shutil.rmtree(folder, ignore_errors=True)
        save_grid(grid, folder / "grid")
        for i, sae in enumerate(grid.saes):
            save_sae(sae, folder / f"size{i}")
        with atomic_write(folder / "done.json") as tmp:  # written last: its presence means complete
            tmp.write_text(json.dumps({"sizes": [int(J) for J in grid.d_sae_values], "key": key}))
    return grid


def _reopen(folder: Path, base, dev):
    """The stored grid with its SAEs, or None if it is not there (or damaged: then it is removed)."""
    from helpers.diagnostics import column_config, load_grid
    from helpers.sae import SAE, load_sae

    if not (folder / "done.json").is_file():
        return None
    try:
        grid = load_grid(folder / "grid")
        saes = []
        for i, J in enumerate(grid.d_sae_values):
            sae = SAE(column_config(base, int(J), grid.l1_values), device=dev)
            parts = sorted((folder / f"size{i}").glob("instance_*")) or [folder / f"size{i}"]
            if len(parts) != sae.cfg.n_instances:
                raise ValueError(f"size{i} holds {len(parts)} SAEs, expected {sae.cfg.n_instances}")
            with torch.no_grad():
                for j, part in enumerate(parts):
                    one = load_sae(part, device=dev)
                    for p in ("W_enc", "b_enc", "W_dec", "b_dec"):
                        getattr(sae, p)[j].copy_(getattr(one, p)[0])
            saes.append(sae)
        grid.saes = saes
        return grid
    except (OSError, ValueError) as err:  # damaged: trained again by the caller
        warnings.warn(f"The cached SAE grid in {folder} is unreadable ({err}); training it again.", stacklevel=3)
        shutil.rmtree(folder, ignore_errors=True)
        return None

