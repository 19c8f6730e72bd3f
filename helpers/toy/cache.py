"""Slow toy sweeps on disk: ``cached`` trains once, then loads.

An entry is a folder under ``cache_dir("toy")`` named by the experiment and a hash of
everything its numbers depend on: the base ``ToyConfig``, the swept settings, the device
kind, the torch version and the source of the toy package and the optimizer (so an edit to
the model, data or training retrains). The files are written the way notebook 03's grids are
(``helpers.diagnostics.cache``): ``result.npz`` atomically, then ``result.json`` with its size,
checksum and array shapes, last, so its presence means the entry is complete. A damaged entry
is reported with a ``CacheWarning`` and trained again.
"""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Callable, NamedTuple, TypeVar

import numpy as np
import torch

from helpers.paths import (CacheCorruptError, CacheWarning, atomic_write, cache_dir, cache_key, cache_lock,
                           check_cache_name, jsonable, read_npz, source_hash, write_npz)

CACHE_AREA = "toy"
"""Sub-folder of the cache where toy sweeps live."""

R = TypeVar("R", bound=NamedTuple)


def training_code() -> str:
    """A hash of the code a toy sweep's numbers come from."""
    import helpers.optim

    # Every file of the toy package, read as files: importing the experiments here would make
    # a circle (they import this module to cache themselves).
    return source_hash(helpers.optim, *sorted(Path(__file__).parent.glob("*.py")))


def cache_config(name: str, base, settings: dict) -> dict:
    """Everything a cached sweep depends on, as JSON (its hash names the folder)."""
    from helpers.toy.config import resolve_device

    return jsonable({"experiment": name, "base": base.as_dict(), "settings": settings,
                     "device": resolve_device(base.device).type, "torch": torch.__version__.split("+")[0],
                     "code": training_code()}, f"{name} settings")


def entry_folder(name: str, config: dict) -> Path:
    """Where the sweep ``name`` with this ``config`` lives."""
    return cache_dir(CACHE_AREA) / f"{check_cache_name(name)}-{cache_key(config)}"


def save_result(result: NamedTuple, folder: Path, config: dict) -> None:
    """Tensors and arrays to result.npz, everything else and the file's checksum to result.json."""
    arrays, fields = {}, {}
    for k, v in result._asdict().items():
        if isinstance(v, (torch.Tensor, np.ndarray)):
            arrays[k] = v.numpy() if isinstance(v, torch.Tensor) else v
            fields[k] = "tensor" if isinstance(v, torch.Tensor) else "array"
        else:
            fields[k] = {"tuple": jsonable(list(v))} if isinstance(v, tuple) else {"value": jsonable(v, k)}
    folder.mkdir(parents=True, exist_ok=True)
    files = {"result.npz": write_npz(folder / "result.npz", arrays, compressed=True)}
    with atomic_write(folder / "result.json") as tmp:  # written last: its presence means complete
        tmp.write_text(json.dumps({"config": config, "fields": fields, "files": files}, indent=1))


def load_result(folder: Path, config: dict, result_type: type[R]) -> R:
    """The result in ``folder``; ``CacheCorruptError`` if a file disagrees with result.json."""
    try:
        meta = json.loads((folder / "result.json").read_text())
        if json.dumps(meta["config"], sort_keys=True) != json.dumps(config, sort_keys=True):
            raise CacheCorruptError("result.json describes a different config than its folder name says")
        if list(meta["fields"]) != list(result_type._fields):
            raise CacheCorruptError(f"result.json holds the fields {list(meta['fields'])}, "
                                    f"not those of {result_type.__name__}")
        arrays = read_npz(folder, "result.npz", meta["files"]["result.npz"])
        values = {}
        for k, kind in meta["fields"].items():
            if kind in ("tensor", "array"):
                values[k] = torch.from_numpy(arrays[k]) if kind == "tensor" else arrays[k]
            else:
                values[k] = tuple(kind["tuple"]) if "tuple" in kind else kind["value"]
        return result_type(**values)
    except CacheCorruptError as err:
        raise CacheCorruptError(f"{folder}: {err}") from None
    except (OSError, ValueError, KeyError, TypeError) as err:  # json and numpy errors of a damaged file
        raise CacheCorruptError(f"{folder}: unreadable ({type(err).__name__}: {err})") from err


def cached(name: str, base, settings: dict, result_type: type[R], compute: Callable[[], R],
           enabled: bool = True) -> R:
    """``compute()``, stored on disk under a key of (``name``, ``base``, ``settings``, code) and
    loaded from there the next time; ``enabled=False`` always computes and stores nothing."""
    if not enabled:
        return compute()
    config = cache_config(name, base, settings)
    folder = entry_folder(name, config)
    with cache_lock(folder):  # a second process asking for the same sweep waits, then reads it
        if (folder / "result.json").is_file():
            try:
                return load_result(folder, config, result_type)
            except CacheCorruptError as err:
                warnings.warn(f"The cached {name} in {folder} is damaged and will be trained again: {err}",
                              CacheWarning, stacklevel=3)
                shutil.rmtree(folder, ignore_errors=True)
        result = compute()
        save_result(result, folder, config)
    return result
