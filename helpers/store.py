"""The one store every slow result of the course goes through (``cached``), and its parts.

* ``cached()``: a folder per entry under ``cache_dir(area)``, named by a hash of its config,
  computed under ``cache_lock``, completed by ``entry.json``; a damaged entry is reported with a
  ``CacheWarning``, removed and computed again.
* ``cache_lock()``: one process at a time computes a given cache entry; another process
  asking for it meanwhile waits and then reads it instead of computing it a second time.
* ``write_npz()`` / ``read_npz()``: arrays of a cache entry, their shapes and dtypes recorded and
  checked (``CacheCorruptError``); the entry's manifest holds every file's size and checksum.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import numpy as np
from filelock import FileLock, Timeout

from helpers.paths import atomic_write, cache_dir, cache_key, check_cache_name, jsonable


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
