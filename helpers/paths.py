"""Where the course keeps shipped data and computed caches, and how caches are written.

* ``data_dir()``: the repository's ``data/`` folder (small files the project made and ships).
* ``cache_dir()``: a writable folder for things a reader computed (``$COURSE_CACHE``, else
  ``cache/`` at the repository root, else ``~/.cache/sae-course``).
* ``atomic_write()``: write to a temporary file beside the target, then rename, so an
  interrupted run never leaves a half-written cache that a later run would trust.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

_PACKAGE_ROOT = Path(__file__).resolve().parents[1]


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


def cache_dir(*parts: str) -> Path:
    """A writable cache folder (created), optionally a sub-folder of it."""
    env = os.environ.get("COURSE_CACHE")
    root = _repo_root()
    base = Path(env) if env else (root / "cache" if root is not None else Path.home() / ".cache" / "sae-course")
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_key(config: dict) -> str:
    """A short stable hash of a JSON-able config: a changed config is a new cache entry."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


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
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
