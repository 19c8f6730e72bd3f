"""Where the course keeps shipped data and computed caches, and what names and keys them
(the store that locks, checks and repairs cache entries is ``helpers.store``).

* ``data_dir()``: the repository's ``data/`` folder (small files the project made and ships).
* ``cache_dir()``: a writable folder for things a reader computed (``$COURSE_CACHE``, else
  ``cache/`` at the repository root, else ``~/.cache/sae-course``).
* ``cache_key()``: a short hash of everything a cached result depends on; ``source_hash()``
  adds the code that computes it, so a cache follows the code instead of a version number.
* ``atomic_write()``: write to a temporary file beside the target, then rename, so an
  interrupted run never leaves a half-written cache that a later run would trust.
"""
from __future__ import annotations

import contextlib
import dataclasses
import enum
import hashlib
import inspect
import json
import os
import re
import tempfile
import types
from pathlib import Path, PurePath
from typing import Iterator

import numpy as np
import torch

from helpers.device import course_seed

_PACKAGE_ROOT = Path(__file__).resolve().parents[1]
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# Text such as "<function f at 0x7f...>" differs from one Python process to the next: a key
# made from it would never match again, and every run would silently retrain.
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _repo_root() -> Path | None:
    """The course repository this code runs from, if any (editable install or a clone as cwd)."""
    for base in (_PACKAGE_ROOT, Path.cwd(), *Path.cwd().parents):
        if (base / "data").is_dir() and (base / "notebooks").is_dir():
            return base
    return None


def data_dir() -> Path:
    """The shipped ``data/`` folder; a clear error if the course files are not around."""
    env = os.environ.get("COURSE_DATA")
    if env:
        return Path(env)
    root = _repo_root()
    if root is None:
        raise FileNotFoundError(
            "Cannot find the course's data/ folder. Run from inside a clone of the course "
            "(or set COURSE_DATA to its data/ folder)."
        )
    return root / "data"


def check_cache_name(name: str, what: str = "cache_name") -> str:
    """``name`` if it is one plain folder or file name, else a ValueError naming ``what``.

    A cache name becomes part of a path under the cache folder: a separator, ``..`` or an
    absolute path would write (or later delete) files somewhere else.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise ValueError(
            f"{what}={name!r} must be one plain name of letters, digits, '.', '_' or '-' "
            "(no path separators, no '..', not absolute), e.g. 'toy-ci'"
        )
    return name


def cache_dir(*parts: str) -> Path:
    """A writable cache folder (created), optionally a sub-folder of it (plain names only)."""
    for part in parts:
        check_cache_name(part, "cache_dir part")
    env = os.environ.get("COURSE_CACHE")
    root = _repo_root()
    base = Path(env) if env else (root / "cache" if root is not None else Path.home() / ".cache" / "sae-course")
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _array_digest(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a)
    return {"array_sha256": hashlib.sha256(a.tobytes()).hexdigest()[:16], "shape": list(a.shape), "dtype": str(a.dtype)}


def jsonable(obj, where: str = "config"):
    """``obj`` as plain JSON (dicts, lists, numbers, strings), the same text in every process.

    Arrays and tensors become a hash of their bytes with shape and dtype (their printed form
    is truncated: two different large arrays can print alike). Dataclasses become their
    fields. Anything else (a function, a model, an open file) is a ValueError: its text can
    contain a memory address that changes from run to run; describe it with numbers instead.
    """
    if obj is None or isinstance(obj, (bool, int, float)):
        return obj
    if isinstance(obj, str):
        if _ADDRESS.search(obj):
            raise ValueError(f"{where} = {obj[:80]!r} contains a memory address, which changes every run: "
                             "describe the object by its settings (numbers, names) instead")
        return obj
    if isinstance(obj, enum.Enum):
        return jsonable(obj.value, where)
    if isinstance(obj, (np.generic,)):
        return jsonable(obj.item(), where)
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        return _array_digest(t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy())
    if isinstance(obj, np.ndarray):
        return _array_digest(obj)
    if isinstance(obj, (torch.dtype, torch.device, PurePath)):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name), f"{where}.{f.name}") for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool)):
                raise ValueError(f"{where} has a key {k!r} of type {type(k).__name__}: use strings or numbers as keys")
            out[str(k)] = jsonable(v, f"{where}[{k!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise ValueError(
        f"{where} is a {type(obj).__name__} ({repr(obj)[:60]}), which a cache key cannot describe stably: "
        "pass plain numbers, strings, lists, dicts, dataclasses, arrays or tensors"
    )


def cache_key(config: dict) -> str:
    """A short stable hash of a config (see ``jsonable``): a changed config is a new cache entry."""
    if course_seed():  # every random stream follows COURSE_SEED: so does the key
        config = {**config, "course_seed": course_seed()}
    blob = json.dumps(jsonable(config), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _source_of(obj) -> str:
    """The code behind ``obj``: a whole module for anything defined in this package (its
    helper functions included), else the object's own source (or its class's, for a method)."""
    if isinstance(obj, PurePath):  # a source file (a whole package: pass its files)
        return Path(obj).read_text()
    if isinstance(obj, types.MethodType):
        obj = type(obj.__self__) if not isinstance(obj.__self__, type) else obj.__self__
    while hasattr(obj, "func") and callable(obj.func):  # functools.partial
        obj = obj.func
    module = obj if isinstance(obj, types.ModuleType) else inspect.getmodule(obj)
    target = module if module is not None and module.__name__.split(".")[0] == __name__.split(".")[0] else obj
    if not isinstance(target, (types.ModuleType, type, types.FunctionType)) and callable(target):
        target = type(target)  # a callable object: its class holds the code
    try:
        return inspect.getsource(target)
    except (OSError, TypeError) as err:
        raise ValueError(f"cannot read the source code of {obj!r} to key a cache on it ({err}); "
                         "define it in a file or a notebook cell, or run without a cache") from err


def source_hash(*objects) -> str:
    """A short hash of the source code of ``objects`` (functions, classes, modules, source files).

    Put it in a cache key and the cache follows the code: edit the training loop, the loss
    or the data generator and the next run retrains instead of serving stale results.
    """
    texts = sorted(set(_source_of(o) for o in objects))
    return hashlib.sha256("\n\0".join(texts).encode()).hexdigest()[:16]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes files only the owner can read; give them the usual mode
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
