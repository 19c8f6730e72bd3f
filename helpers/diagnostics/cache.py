"""Grids on disk: ``save_grid`` / ``load_grid``, and notebook 03's cached toy grid ``toy_grid``.

A grid is three files in one folder under ``cache_dir("diagnostics")``: ``grid.npz`` (every
number and log), ``dictionaries.npz`` (the learned dictionaries, float16) and ``grid.json``
(the config, and the size, checksum, shapes and dtypes of every array), written last, so its
presence means the folder is complete. A folder whose files do not match ``grid.json`` (cut
short, edited, half written by two runs at once) is reported and trained again, never
trusted and never a bare numpy or zip error.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from helpers.diagnostics.result import LOG_ARRAYS, METRICS, GridLog, GridResult
from helpers.paths import atomic_write, cache_dir, cache_key, check_cache_name, source_hash

if TYPE_CHECKING:  # only for the annotation of toy_grid
    from helpers.data import GroundTruthData

CACHE_AREA = "diagnostics"
"""Sub-folder of the cache where grids live."""

_FORMAT = 2  # the layout below; a folder of another layout is rebuilt


class CacheWarning(UserWarning):
    """A cached grid was damaged and is being trained again."""


class CacheCorruptError(ValueError):
    """A cache folder's files do not match what its grid.json says they hold."""


warnings.simplefilter("always", CacheWarning)


def training_code(sample_fn) -> dict:
    """Hashes of the code a grid's numbers come from: the grid and its diagnostics, the SAE
    package (model, loss, trainer), the optimizer, the metrics, and the data's sampler."""
    import helpers.metrics
    import helpers.optim
    import helpers.sae
    from helpers.diagnostics import grid, rules

    sae_file = Path(helpers.sae.__file__)
    sae_files = sorted(sae_file.parent.glob("*.py")) if sae_file.name == "__init__.py" else [sae_file]
    sae_text = "\n\0".join(f.read_text() for f in sae_files)
    return {"grid": source_hash(grid, rules, helpers.metrics, helpers.optim),
            "sae": hashlib.sha256(sae_text.encode()).hexdigest()[:16],
            "data": source_hash(sample_fn), "torch": torch.__version__.split("+")[0]}


def grid_folder(cache_name: str, config: dict) -> Path:
    """Where the grid named ``cache_name`` with this ``config`` lives (inside the cache folder)."""
    return cache_dir(CACHE_AREA) / f"{check_cache_name(cache_name)}-{cache_key(config)}"


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------
def _write_npz(path: Path, arrays: dict[str, np.ndarray], compressed: bool) -> dict:
    """Write ``arrays`` atomically; return what grid.json records about the file."""
    with atomic_write(path) as tmp:
        with open(tmp, "wb") as fh:
            (np.savez_compressed if compressed else np.savez)(fh, **arrays)
        blob = tmp.read_bytes()
    return {"bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest(),
            "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()}}


def save_grid(result: GridResult, folder) -> None:
    """Write ``result`` to ``folder`` (grid.npz, dictionaries.npz, grid.json), atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.asarray(getattr(result, k)) for k in ("d_sae_values", "l1_values") + METRICS}
    arrays["diverged"] = np.asarray(result.diverged, dtype=bool)
    for i, log in enumerate(result.logs):
        for k in LOG_ARRAYS:
            arrays[f"log{i}_{k}"] = np.asarray(getattr(log, k))
    files = {"grid.npz": _write_npz(folder / "grid.npz", arrays, compressed=True)}
    if result.dictionaries is not None:
        dicts = {f"size{i}": np.asarray(d) for i, d in enumerate(result.dictionaries)}
        files["dictionaries.npz"] = _write_npz(folder / "dictionaries.npz", dicts, compressed=False)
    meta = {"format": _FORMAT, "config": result.config, "reference_size": result.reference_size,
            "seconds": result.seconds, "files": files,
            "log_meta": [{"seconds": log.seconds, "examples": log.examples} for log in result.logs]}
    with atomic_write(folder / "grid.json") as tmp:  # written last: its presence means complete
        tmp.write_text(json.dumps(meta, indent=1))


# --------------------------------------------------------------------------------------
# Reading, with every file checked against grid.json
# --------------------------------------------------------------------------------------
def _read_npz(folder: Path, name: str, info: dict) -> dict[str, np.ndarray]:
    path = folder / name
    if not path.is_file():
        raise CacheCorruptError(f"{name} is missing")
    blob = path.read_bytes()
    if len(blob) != info["bytes"] or hashlib.sha256(blob).hexdigest() != info["sha256"]:
        raise CacheCorruptError(f"{name} has {len(blob)} bytes and a checksum that differ from grid.json's "
                                f"{info['bytes']} bytes: it was cut short or changed")
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    for k, want in info["arrays"].items():
        got = arrays.get(k)
        if got is None or list(got.shape) != want["shape"] or str(got.dtype) != want["dtype"]:
            found = "missing" if got is None else f"{got.dtype} {list(got.shape)}"
            raise CacheCorruptError(f"{name}: array {k} should be {want['dtype']} {want['shape']}, found {found}")
    return arrays


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
        arrays = _read_npz(folder, "grid.npz", meta["files"]["grid.npz"])
        S = len(arrays["d_sae_values"])
        dicts = None
        if "dictionaries.npz" in meta["files"]:
            z = _read_npz(folder, "dictionaries.npz", meta["files"]["dictionaries.npz"])
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


# --------------------------------------------------------------------------------------
# Notebook 03's toy-data grid (also read by notebooks 02 and 04)
# --------------------------------------------------------------------------------------
def toy_recipe(scale: str | None = None, **changes) -> "SAEConfig":
    """The one SAE training recipe for the toy data at this ``TUTORIAL_SCALE`` (J = G, the grid's
    lr, schedule, decoder reset, steps, batch and dead window); ``changes`` replace fields."""
    from dataclasses import replace

    from helpers.device import sizes
    from helpers.sae import SAEConfig

    s = sizes(scale)
    base = SAEConfig(d_in=s.gt_dim, d_sae=s.gt_features, lr=s.grid_lr, lr_schedule=s.grid_schedule,
                     renorm_decoder=s.grid_renorm, batch_size=s.sae_batch, steps=s.grid_steps,
                     dead_window=s.dead_window)
    return replace(base, **changes)


def toy_grid(correlated: bool = True, decay: float = 0.99, scale: str | None = None,
             size_ratios: Sequence[float] | None = None, l1_values: Sequence[float] | None = None,
             progress: bool = True) -> tuple[GridResult, "GroundTruthData"]:
    """The (size x L1) grid on ground-truth toy data at this ``TUTORIAL_SCALE``, cached.

    Returns the grid and the data generator (whose ``features`` are the ground truth).
    ``correlated`` and ``decay`` switch the report's two data properties; any change is a
    new cache entry, so every variant is trained once per machine.
    """
    from helpers.data import GroundTruthConfig, GroundTruthData
    from helpers.device import sizes
    from helpers.diagnostics.grid import run_grid

    s = sizes(scale)
    cfg = GroundTruthConfig(n_features=s.gt_features, d=s.gt_dim, correlated=correlated, decay=decay, seed=0)
    data = GroundTruthData(cfg)
    base = toy_recipe(scale)
    grid = run_grid(
        data.sample, base, s.sae_dict_ratios if size_ratios is None else size_ratios,
        s.grid_l1_values if l1_values is None else l1_values, reference_size=s.gt_features,
        ground_truth=data.features, cache_name=f"toy-{s.scale}", cache_description=cfg, progress=progress,
    )
    return grid, data
