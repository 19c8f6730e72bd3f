"""Where the course keeps shipped data and computed caches, and how caches are written.

* ``data_dir()``: the repository's ``data/`` folder (small files the project made and ships).
* ``cache_dir()``: a writable folder for things a reader computed (``$COURSE_CACHE``, else
  ``cache/`` at the repository root, else ``~/.cache/sae-course``).
* ``cache_key()``: a short hash of everything a cached result depends on; ``source_hash()``
  adds the code that computes it, so a cache follows the code instead of a version number.
* ``atomic_write()``: write to a temporary file beside the target, then rename, so an
  interrupted run never leaves a half-written cache that a later run would trust.
* ``cache_lock()``: one process at a time computes a given cache entry; another process
  asking for it meanwhile waits and then reads it instead of computing it a second time.
* ``write_npz()`` / ``read_npz()``: arrays of a cache entry, their shapes and dtypes recorded and
  checked (``CacheCorruptError``); the entry's manifest holds every file's size and checksum.
* ``cached()``: the one store every slow result goes through: a folder per entry, named by a
  hash of its config, computed under ``cache_lock``, completed by ``entry.json``; a damaged
  entry is reported with a ``CacheWarning``, removed and computed again.
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
import sys
import tempfile
import shutil
import types
import warnings
from pathlib import Path, PurePath
from typing import Callable, Iterator, TypeVar

import numpy as np
import torch
from filelock import FileLock, Timeout

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


@contextlib.contextmanager
def cache_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on the cache entry ``path``.

    Two notebooks (or a notebook and a test) that ask for the same grid at the same time
    would otherwise both train it. The lock is the ``filelock`` package's (the operating
    system's file lock, on Windows too), which is released when its process ends, so a killed
    run never leaves a lock behind. The lock file lives in the system's temporary folder, named
    by a hash of the entry's absolute path, so the cache folder holds only results.
    """
    path = Path(path)
    locks = Path(tempfile.gettempdir()) / "sae-course-locks"
    locks.mkdir(exist_ok=True)
    name = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:24]
    lock = FileLock(locks / f"{name}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"Waiting for another process that is computing {path.name} ...", file=sys.stderr, flush=True)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


# --------------------------------------------------------------------------------------
# The checked on-disk format every cache uses: arrays in .npz, their size, checksum and shapes in JSON,
# and the one store that locks, loads, repairs and saves an entry
# --------------------------------------------------------------------------------------
class CacheWarning(UserWarning):
    """A cache entry was damaged and is being computed again."""


class CacheCorruptError(ValueError):
    """A cache folder's files do not match what its JSON says they hold."""


warnings.simplefilter("always", CacheWarning)


def write_npz(path: Path, arrays: dict[str, np.ndarray], compressed: bool) -> dict:
    """Write ``arrays`` atomically; return what the entry's JSON records about them (shapes and
    dtypes; the file's size and checksum go into the entry's manifest, see ``write_entry``)."""
    with atomic_write(path) as tmp:
        with open(tmp, "wb") as fh:
            (np.savez_compressed if compressed else np.savez)(fh, **arrays)
    return {"arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()}}


def read_npz(folder: Path, name: str, info: dict) -> dict[str, np.ndarray]:
    """The arrays of ``folder / name``, checked against ``info`` (what ``write_npz`` returned): an
    array missing, reshaped or of another dtype raises ``CacheCorruptError``. (A file cut short or
    changed never gets here: ``load_entry`` checks every file against the entry's manifest first.)"""
    with np.load(folder / name, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    for k, want in info["arrays"].items():
        got = arrays.get(k)
        if got is None or list(got.shape) != want["shape"] or str(got.dtype) != want["dtype"]:
            found = "missing" if got is None else f"{got.dtype} {list(got.shape)}"
            raise CacheCorruptError(f"{name}: array {k} should be {want['dtype']} {want['shape']}, found {found}")
    return arrays


ENTRY = "entry.json"
"""The file that completes a cache entry: written last, it holds the entry's config, what
``save`` returned (the arrays' shapes, say) and the size and checksum of every file (its
manifest), with a checksum of its own. A folder without it is unfinished."""

# What reading a damaged entry.json raises (JSON errors are ValueErrors).
_UNREADABLE = (OSError, ValueError, KeyError, TypeError)


T = TypeVar("T")


def entry_folder(area: str, name: str, config) -> Path:
    """The folder of the entry ``name`` with this ``config`` under ``cache_dir(area)``."""
    name = check_cache_name(name)
    return cache_dir(area) / f"{name}-{cache_key(config)}"


def _manifest(folder: Path) -> dict[str, list]:
    """[size, sha256] of every file under ``folder`` but entry.json, by path relative to it."""
    return {p.relative_to(folder).as_posix(): [p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest()]
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ENTRY}


def write_entry(folder: Path, config, meta: dict | None = None) -> None:
    """Complete the entry in ``folder``: ``entry.json`` with ``config``, the fields of ``meta`` and
    the size and checksum of every file the folder holds (``manifest``)."""
    meta = dict(meta or {})
    if {"config", "manifest", "sha256"} & meta.keys():
        raise ValueError("a cache entry's meta may not have a 'config', 'manifest' or 'sha256' field: the store writes those")
    folder = Path(folder)
    entry = {"config": jsonable(config), **jsonable(meta, "meta"), "manifest": _manifest(folder)}
    entry["sha256"] = _digest(entry)
    with atomic_write(folder / ENTRY) as tmp:
        tmp.write_text(json.dumps(entry, indent=1))


def _digest(entry: dict) -> str:
    return hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()


def read_entry(folder: Path, config=None) -> dict:
    """The ``entry.json`` of ``folder`` (its config and meta fields); ``CacheCorruptError`` if it
    is not an entry description or describes another config than ``config`` (when given)."""
    entry = json.loads((Path(folder) / ENTRY).read_text())
    if not isinstance(entry, dict) or "config" not in entry or entry.pop("sha256", None) != _digest(entry):
        raise CacheCorruptError(f"{ENTRY} is not the entry description the store wrote (edited or damaged)")
    if config is not None and (json.dumps(entry["config"], sort_keys=True)  # as text: NaN equals NaN
                               != json.dumps(jsonable(config), sort_keys=True)):
        raise CacheCorruptError(f"{ENTRY} describes a different config than its folder name says")
    if _manifest(Path(folder)) != entry.get("manifest"):
        raise CacheCorruptError("its files differ from those entry.json lists (missing, extra, cut short or changed)")
    return entry


def load_entry(folder, load: Callable[[Path, dict], T], config=None) -> T:
    """``load(folder, entry)`` with ``entry`` read from ``folder``'s entry.json (checked against
    ``config`` when given). Before ``load`` runs, entry.json is checked against its own checksum
    and every file against the size and checksum entry.json lists, so anything damaged ends in
    ``CacheCorruptError`` here, and ``load`` only ever reads what was written: an error it raises
    on those files (other than its own ``CacheCorruptError``) is a bug, or on a GPU an
    out-of-memory error, and propagates rather than deleting a good entry."""
    folder = Path(folder)
    try:
        entry = read_entry(folder, config)
    except CacheCorruptError as err:
        raise CacheCorruptError(f"{folder}: {err}") from None
    except _UNREADABLE as err:
        why = (str(err).strip().splitlines() or [""])[0][:200]
        raise CacheCorruptError(f"{folder}: {ENTRY} is unreadable ({type(err).__name__}: {why})") from err
    try:
        return load(folder, entry)
    except CacheCorruptError as err:
        raise CacheCorruptError(f"{folder}: {err}") from None


def cached(area: str, name: str, config, compute: Callable[[], T], save: Callable[[T, Path], dict | None],
           load: Callable[[Path, dict], T]) -> T:
    """``compute()``, stored under ``cache_dir(area)`` and loaded from there the next time.

    The entry is the folder ``{name}-{cache_key(config)}``: ``config`` must hold everything the
    result depends on, the hash of the code that computes it included. One process at a time
    works on an entry (``cache_lock``): another asking meanwhile waits, then loads it.

    * ``save(result, folder)`` writes the result's files into ``folder`` (with ``write_npz``, or
      another format that must stay as it is) and returns JSON that describes them (the
      arrays' shapes, say); ``entry.json`` with ``config`` and those fields is written after it, last.
    * ``load(folder, entry)`` reads them back (``entry``: the fields of ``entry.json``). A damaged
      entry (a file missing, cut short or changed, or one ``load`` finds wrong and reports with
      ``CacheCorruptError``) is reported with a ``CacheWarning``, removed and computed again; any
      other error of ``load`` propagates (see ``load_entry``).
    """
    config = jsonable(config, f"{name} config")
    folder = entry_folder(area, name, config)
    with cache_lock(folder):
        if (folder / ENTRY).is_file():
            try:
                return load_entry(folder, load, config)
            except CacheCorruptError as err:
                warnings.warn(f"The cached {name} in {folder} is damaged or unreadable and will be computed "
                              f"again: {err}", CacheWarning, stacklevel=3)
                shutil.rmtree(folder, ignore_errors=True)
        result = compute()
        shutil.rmtree(folder, ignore_errors=True)  # files of a run that never finished
        folder.mkdir(parents=True, exist_ok=True)
        write_entry(folder, config, save(result, folder))  # last: its presence means complete
    return result
