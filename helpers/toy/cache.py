"""Slow toy sweeps on disk: ``cached`` trains once, then loads.

An entry is a folder under ``cache_dir("toy")`` named by the experiment and a hash of
everything its numbers depend on: the base ``ToyConfig``, the swept settings, the device
kind, the torch version and the source of the toy package and the optimizer (so an edit to
the model, data or training retrains). It is an entry of the course's one store
(``helpers.store.cached``): ``result.npz`` (tensors and arrays), then ``entry.json`` (the config,
the other fields, the file's size, checksum and array shapes), last, so its presence means the
entry is complete. A damaged entry is reported with a ``CacheWarning`` and trained again.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple, TypeVar

import numpy as np
import torch

from helpers import store
from helpers.device import resolve_device
from helpers.paths import jsonable, source_hash
from helpers.store import CacheCorruptError, read_npz, write_npz

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
    return jsonable({"experiment": name, "base": base.as_dict(), "settings": settings,
                     "device": resolve_device(base.device).type, "torch": torch.__version__.split("+")[0],
                     "code": training_code()}, f"{name} settings")


def save_result(result: NamedTuple, folder: Path) -> dict:
    """Tensors and arrays to result.npz; what entry.json records: the other fields and the arrays' shapes."""
    arrays, fields = {}, {}
    for k, v in result._asdict().items():
        if isinstance(v, (torch.Tensor, np.ndarray)):
            arrays[k] = v.numpy() if isinstance(v, torch.Tensor) else v
            fields[k] = "tensor" if isinstance(v, torch.Tensor) else "array"
        else:
            fields[k] = {"tuple": jsonable(list(v))} if isinstance(v, tuple) else {"value": jsonable(v, k)}
    return {"fields": fields, "files": {"result.npz": write_npz(folder / "result.npz", arrays, compressed=True)}}


def load_result(folder: Path, entry: dict, result_type: type[R]) -> R:
    """The result in ``folder`` (``entry``: its entry.json); ``CacheCorruptError`` if a file disagrees with it."""
    if list(entry["fields"]) != list(result_type._fields):
        raise CacheCorruptError(f"entry.json holds the fields {list(entry['fields'])}, "
                                f"not those of {result_type.__name__}")
    arrays = read_npz(folder, "result.npz", entry["files"]["result.npz"])
    values = {}
    for k, kind in entry["fields"].items():
        if kind in ("tensor", "array"):
            values[k] = torch.from_numpy(arrays[k]) if kind == "tensor" else arrays[k]
        else:
            values[k] = tuple(kind["tuple"]) if "tuple" in kind else kind["value"]
    return result_type(**values)


def cached(name: str, base, settings: dict, result_type: type[R], compute: Callable[[], R],
           enabled: bool = True) -> R:
    """``compute()``, stored on disk under a key of (``name``, ``base``, ``settings``, code) and
    loaded from there the next time; ``enabled=False`` always computes and stores nothing."""
    if not enabled:
        return compute()
    return store.cached(CACHE_AREA, name, cache_config(name, base, settings), compute, save_result,
                        lambda folder, entry: load_result(folder, entry, result_type))
