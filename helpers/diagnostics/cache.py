"""Grids on disk: ``save_grid`` / ``load_grid`` (the recipe of notebook 03's grid is in ``helpers.course.recipes``).

A grid is an entry of the course's one store (``helpers.store.cached``): ``grid.npz`` (every
number and log), ``dictionaries.npz`` (the learned dictionaries, float16) and ``entry.json``
(the config, and the size, checksum, shapes and dtypes of every array), written last, so its
presence means the folder is complete. A folder whose files do not match ``entry.json`` (cut
short, edited, half written by two runs at once) raises ``CacheCorruptError``, so the store
reports it and trains it again, never trusting it and never ending in a bare numpy or zip error.

``write_grid`` / ``read_grid`` are the store's ``save`` and ``load``; ``save_grid`` / ``load_grid``
write and read a whole folder (entry.json included) anywhere, in the same layout.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from helpers.diagnostics.result import LOG_ARRAYS, METRICS, GridResult
from helpers.sae import TrainLog
from helpers.store import CacheCorruptError, load_entry, read_npz, write_entry, write_npz

CACHE_AREA = "diagnostics"
"""Sub-folder of the cache where grids live."""

_FORMAT = 3  # the layout below; a folder of another layout is rebuilt


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------
def write_grid(result: GridResult, folder: Path) -> dict:
    """Write ``result``'s arrays to ``folder`` (grid.npz, dictionaries.npz); return what entry.json records."""
    folder = Path(folder)
    arrays = {k: np.asarray(getattr(result, k)) for k in ("d_sae_values", "l1_values") + METRICS}
    arrays["diverged"] = np.asarray(result.diverged, dtype=bool)
    for i, log in enumerate(result.logs):
        for k in LOG_ARRAYS:
            arrays[f"log{i}_{k}"] = np.asarray(getattr(log, k))
    files = {"grid.npz": write_npz(folder / "grid.npz", arrays, compressed=True)}
    if result.dictionaries is not None:
        dicts = {f"size{i}": np.asarray(d) for i, d in enumerate(result.dictionaries)}
        files["dictionaries.npz"] = write_npz(folder / "dictionaries.npz", dicts, compressed=False)
    return {"format": _FORMAT, "grid_config": result.config, "reference_size": result.reference_size,
            "seconds": result.seconds, "files": files,
            "log_meta": [{"seconds": log.seconds, "examples": log.examples} for log in result.logs]}


def save_grid(result: GridResult, folder) -> None:
    """Write ``result`` to ``folder`` (grid.npz, dictionaries.npz, entry.json), atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_entry(folder, result.config, write_grid(result, folder))


# --------------------------------------------------------------------------------------
# Reading, with every file checked against entry.json
# --------------------------------------------------------------------------------------
def _check_shapes(arrays: dict, dicts: list | None, d_in: int | None) -> None:
    """The arrays must fit together: (S, L) metrics, (L, J_i, d_in) dictionaries, logs per size."""
    S, L = len(arrays["d_sae_values"]), len(arrays["l1_values"])
    for k in METRICS + ("diverged",):
        if arrays[k].shape != (S, L):
            raise CacheCorruptError(f"grid.npz: {k} has shape {arrays[k].shape}, expected ({S}, {L})")
    for i, J in enumerate(arrays["d_sae_values"]):
        rows = len(arrays[f"log{i}_steps"])
        for k in LOG_ARRAYS[1:-1]:
            if arrays[f"log{i}_{k}"].shape != (rows, L):
                raise CacheCorruptError(f"grid.npz: log {i} {k} has shape {arrays[f'log{i}_{k}'].shape}, expected ({rows}, {L})")
        if dicts is not None and dicts[i].shape != (L, int(J), d_in if d_in is not None else dicts[i].shape[-1]):
            raise CacheCorruptError(f"dictionaries.npz: size {i} has shape {dicts[i].shape}, expected ({L}, {int(J)}, d_in)")


def read_grid(folder: Path, entry: dict) -> GridResult:
    """Read a grid written by ``write_grid`` (``entry``: the fields of its entry.json);
    ``CacheCorruptError`` if any file disagrees with them."""
    folder = Path(folder)
    if entry.get("format") != _FORMAT:
        raise CacheCorruptError(f"entry.json is not a format-{_FORMAT} grid description")
    config = entry["grid_config"]
    arrays = read_npz(folder, "grid.npz", entry["files"]["grid.npz"])
    S = len(arrays["d_sae_values"])
    dicts = None
    if "dictionaries.npz" in entry["files"]:
        z = read_npz(folder, "dictionaries.npz", entry["files"]["dictionaries.npz"])
        dicts = [z[f"size{i}"] for i in range(S)]
    _check_shapes(arrays, dicts, (config.get("sae") or {}).get("d_in"))
    alphas = tuple(float(a) for a in arrays["l1_values"])
    logs = [TrainLog(alphas, **{k: arrays[f"log{i}_{k}"] for k in LOG_ARRAYS},
                     seconds=float(lm["seconds"]), examples=int(lm["examples"]))
            for i, lm in enumerate(entry["log_meta"])]
    if len(logs) != S:
        raise CacheCorruptError(f"entry.json has {len(logs)} training logs for {S} sizes")
    return GridResult(
        **{k: arrays[k] for k in ("d_sae_values", "l1_values") + METRICS}, diverged=arrays["diverged"],
        reference_size=entry["reference_size"], logs=logs, dictionaries=dicts,
        config=config, seconds=float(entry["seconds"]), from_cache=True,
    )


def load_grid(folder, expected_config: dict | None = None) -> GridResult:
    """Read a grid written by ``save_grid``; ``CacheCorruptError`` if any file disagrees with
    entry.json (or entry.json with ``expected_config``)."""
    return load_entry(folder, read_grid, expected_config)
