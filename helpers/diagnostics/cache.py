"""Grids on disk: ``save_grid`` / ``load_grid`` (the recipe of notebook 03's grid is in ``helpers.recipes``).

A grid is three files in one folder under ``cache_dir("diagnostics")``: ``grid.npz`` (every
number and log), ``dictionaries.npz`` (the learned dictionaries, float16) and ``grid.json``
(the config, and the size, checksum, shapes and dtypes of every array), written last, so its
presence means the folder is complete. A folder whose files do not match ``grid.json`` (cut
short, edited, half written by two runs at once) is reported and trained again, never
trusted and never a bare numpy or zip error.
"""
from __future__ import annotations

import json
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np

from helpers.diagnostics.result import LOG_ARRAYS, METRICS, GridLog, GridResult
from helpers.paths import (CacheCorruptError, CacheWarning, atomic_write, cache_dir, cache_key, check_cache_name,
                           read_npz, write_npz)

CACHE_AREA = "diagnostics"
"""Sub-folder of the cache where grids live."""

_FORMAT = 2  # the layout below; a folder of another layout is rebuilt


def grid_folder(cache_name: str, config: dict) -> Path:
    """Where the grid named ``cache_name`` with this ``config`` lives (inside the cache folder)."""
    return cache_dir(CACHE_AREA) / f"{check_cache_name(cache_name)}-{cache_key(config)}"


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------
def save_grid(result: GridResult, folder) -> None:
    """Write ``result`` to ``folder`` (grid.npz, dictionaries.npz, grid.json), atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.asarray(getattr(result, k)) for k in ("d_sae_values", "l1_values") + METRICS}
    arrays["diverged"] = np.asarray(result.diverged, dtype=bool)
    for i, log in enumerate(result.logs):
        for k in LOG_ARRAYS:
            arrays[f"log{i}_{k}"] = np.asarray(getattr(log, k))
    files = {"grid.npz": write_npz(folder / "grid.npz", arrays, compressed=True)}
    if result.dictionaries is not None:
        dicts = {f"size{i}": np.asarray(d) for i, d in enumerate(result.dictionaries)}
        files["dictionaries.npz"] = write_npz(folder / "dictionaries.npz", dicts, compressed=False)
    meta = {"format": _FORMAT, "config": result.config, "reference_size": result.reference_size,
            "seconds": result.seconds, "files": files,
            "log_meta": [{"seconds": log.seconds, "examples": log.examples} for log in result.logs]}
    with atomic_write(folder / "grid.json") as tmp:  # written last: its presence means complete
        tmp.write_text(json.dumps(meta, indent=1))


# --------------------------------------------------------------------------------------
# Reading, with every file checked against grid.json
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


def _text(config: dict) -> str:
    return json.dumps(config, sort_keys=True)  # compares NaN equal to NaN, unlike dicts


def load_grid(folder, expected_config: dict | None = None) -> GridResult:
    """Read a grid written by ``save_grid``; ``CacheCorruptError`` if any file disagrees with
    grid.json (or grid.json with ``expected_config``)."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "grid.json").read_text())
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
            raise CacheCorruptError(f"grid.json is not a format-{_FORMAT} grid description")
        if expected_config is not None and _text(meta["config"]) != _text(expected_config):
            raise CacheCorruptError("grid.json describes a different config than its folder name says")
        arrays = read_npz(folder, "grid.npz", meta["files"]["grid.npz"])
        S = len(arrays["d_sae_values"])
        dicts = None
        if "dictionaries.npz" in meta["files"]:
            z = read_npz(folder, "dictionaries.npz", meta["files"]["dictionaries.npz"])
            dicts = [z[f"size{i}"] for i in range(S)]
        _check_shapes(arrays, dicts, (meta["config"].get("sae") or {}).get("d_in"))
        alphas = tuple(float(a) for a in arrays["l1_values"])
        logs = [GridLog(alphas, **{k: arrays[f"log{i}_{k}"] for k in LOG_ARRAYS},
                        seconds=float(lm["seconds"]), examples=int(lm["examples"]))
                for i, lm in enumerate(meta["log_meta"])]
        if len(logs) != S:
            raise CacheCorruptError(f"grid.json has {len(logs)} training logs for {S} sizes")
        return GridResult(
            **{k: arrays[k] for k in ("d_sae_values", "l1_values") + METRICS}, diverged=arrays["diverged"],
            reference_size=meta["reference_size"], logs=logs, dictionaries=dicts,
            config=meta["config"], seconds=float(meta["seconds"]), from_cache=True,
        )
    except CacheCorruptError as err:
        raise CacheCorruptError(f"{folder}: {err}") from None
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, EOFError,
            zipfile.BadZipFile) as err:  # json, zip and numpy errors of a damaged file
        raise CacheCorruptError(f"{folder}: unreadable ({type(err).__name__}: {err})") from err


def load_cached(folder: Path, config: dict) -> GridResult | None:
    """The grid in ``folder`` if it is complete and intact; None (after a warning, for a damaged
    one, whose folder is cleared) if it has to be trained."""
    if not (folder / "grid.json").is_file():
        return None  # never finished (grid.json is written last): train it
    try:
        return load_grid(folder, config)
    except CacheCorruptError as err:
        warnings.warn(f"The cached grid in {folder} is damaged and will be trained again: {err}", CacheWarning,
                      stacklevel=3)
        shutil.rmtree(folder, ignore_errors=True)
        return None
