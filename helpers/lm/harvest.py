"""Harvesting MLP activations into a memory-mapped, self-checking cache on disk.

A harvest writes ``.npy`` files batch by batch (memory stays at one batch however large the
budget) into a folder private to this process, then renames it into place in one step, so
two notebooks asking for the same activations never write into the same files and an
interrupted harvest is never mistaken for a finished one. The cache key hashes the model's
weights and tokenizer, the layer, the hooks, the corpus and the budget. ``meta.json``
records every file's shape, dtype and size; a cache that no longer matches it (a truncated
copy, a file rewritten with fewer rows) is reported and rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from helpers.device import get_device, stream_seed
from helpers.lm.validate import check_fraction, check_int, check_kinds, check_layer, check_model
from helpers.lm.loading import corpus_name, corpus_token_windows, mlp_hooks, model_device, weights_fingerprint
from helpers.paths import atomic_write, cache_dir, cache_key
from helpers.store import cache_lock

CACHE_VERSION = 2
"""Bumped when the cache layout changes (2: weights-hash key, per-file metadata)."""


class Activations(NamedTuple):
    """Harvested activations: arrays are memory-mapped from the cache (read-only)."""

    tokens: np.ndarray
    """(n_seq, seq_len) int32 token ids."""
    acts: dict[str, np.ndarray]
    """hook kind ('post', 'out') -> (n_seq * seq_len, d) float32 activations, row = token."""
    folder: Path
    """The cache folder the arrays live in."""
    from_cache: bool
    """True when an earlier harvest's files were opened."""
    seconds: float
    """Time this call took (loading, when from_cache)."""

    def held_out_start(self, holdout: float) -> int:
        """First held-out row: the last ``ceil(holdout * n_seq)`` windows are held out whole,
        so the same windows serve for reconstruction metrics and for CE loss recovered."""
        holdout = check_fraction("holdout", holdout, allow_zero=True)
        n_seq, seq_len = self.tokens.shape
        n_held = int(np.ceil(holdout * n_seq))
        if holdout > 0 and n_held >= n_seq:
            raise ValueError(f"holdout={holdout} leaves no training windows out of {n_seq}")
        return (n_seq - n_held) * seq_len

    def held_out_tokens(self, holdout: float) -> np.ndarray:
        """(n_held, seq_len) the held-out windows (see ``held_out_start``)."""
        return self.tokens[self.held_out_start(holdout) // self.tokens.shape[1]:]

    def rows(self, holdout: float = 0.0, held_out: bool = False, skip_bos: bool = True) -> np.ndarray:
        """Row indices of the training windows (all but the last ``holdout`` share of them), or with
        ``held_out=True`` of the held-out ones; the BOS position's rows left out unless ``skip_bos=False``."""
        start = self.held_out_start(holdout) if holdout else self.tokens.size
        rows = np.arange(start, self.tokens.size) if held_out else np.arange(start)
        return rows[rows % self.tokens.shape[1] != 0] if skip_bos else rows

    def sampler(self, kind: str = "post", device: str | torch.device | None = None, seed: int = 0,
                skip_bos: bool = True, holdout: float = 0.0):
        """A ``sample_fn(n)`` for ``train_sae``: random rows of one activation array.

        ``holdout=0.1`` never samples the last 10% of windows, which ``evaluate_saes(...,
        holdout=0.1)`` then judges the SAE on.
        """
        if kind not in self.acts:
            raise ValueError(f"kind {kind!r} was not harvested; this harvest has {sorted(self.acts)}")
        arr = self.acts[kind]
        dev = get_device(device)
        rows = self.rows(holdout, skip_bos=skip_bos)  # the BOS position's activations are a constant outlier
        data = torch.from_numpy(np.ascontiguousarray(arr[rows])).to(dev)  # (rows, d)
        gen = torch.Generator(device="cpu").manual_seed(stream_seed(seed, "lm-sampler"))

        def sample(n: int) -> torch.Tensor:
            idx = torch.randint(0, data.shape[0], (n,), generator=gen).to(dev)
            return data[idx]

        sample.generator = gen          # what HarvestData.fixed_stream reseeds for a while
        return sample


def cache_folder(model, layer: int, kinds: Sequence[str], n_tokens: int, seq_len: int) -> Path:
    """Where the harvest for this request lives (whether or not it exists yet)."""
    key = cache_key({"weights": weights_fingerprint(model), "layer": layer, "kinds": list(kinds), "corpus": corpus_name(model),
                     "n_tokens": n_tokens, "seq_len": seq_len, "version": CACHE_VERSION})
    slug = str(getattr(model, "course_name", None) or model.cfg.model_name).replace("/", "_")
    return cache_dir("activations") / f"{slug}-L{layer}-{key}"


def harvest(model, n_tokens: int, layer: int = 0, kinds: Sequence[str] = ("post", "out"), seq_len: int = 128,
            batch_size: int = 16, progress: bool = True) -> Activations:
    """MLP activations for ``n_tokens`` corpus tokens, cached on disk and memory-mapped."""
    check_model(model)
    n_tokens = check_int("n_tokens", n_tokens, 1)
    layer = check_layer(layer, model)
    kinds = check_kinds(kinds)
    seq_len = check_int("seq_len", seq_len, 2, model.cfg.n_ctx)
    batch_size = check_int("batch_size", batch_size, 1)
    t0 = time.perf_counter()
    folder = cache_folder(model, layer, kinds, n_tokens, seq_len)
    with cache_lock(folder):  # another process harvesting the same request: wait, then read it
        _remove_stale_partials(folder)
        if folder.exists():
            problem = cache_problem(folder)
            if problem is None:
                return _open(folder, True, t0)
            warnings.warn(f"The activation cache {folder} is damaged ({problem}); harvesting it again.", stacklevel=2)
            _discard(folder)
        windows = corpus_token_windows(model, n_tokens, seq_len)
        # A folder of our own (pid in the name, so a later run can tell it was abandoned).
        tmp = Path(tempfile.mkdtemp(prefix=f"{folder.name}.partial-{os.getpid()}-", dir=folder.parent))
        try:
            _write(model, windows, tmp, layer, kinds, batch_size, progress)
            try:
                os.rename(tmp, folder)  # atomic; fails if another process published first
            except OSError:
                if cache_problem(folder) is not None:  # theirs is unusable: put ours in its place
                    _discard(folder)
                    os.rename(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return _open(folder, False, t0)


def _write(model, windows: torch.Tensor, tmp: Path, layer: int, kinds: tuple[str, ...], batch_size: int,
           progress: bool) -> None:
    n_seq, seq_len = windows.shape
    hooks = mlp_hooks(layer)
    dims = {"post": model.cfg.d_mlp, "out": model.cfg.d_model}
    # float32 activations per hook plus the int32 token ids
    check_free_space(tmp.parent, 4 * n_seq * seq_len * (sum(dims[k] for k in kinds) + 1))
    outs = {k: np.lib.format.open_memmap(tmp / f"{k}.npy", mode="w+", dtype=np.float32,
                                         shape=(n_seq * seq_len, dims[k])) for k in kinds}
    tokens = windows.numpy().astype(np.int32)
    np.save(tmp / "tokens.npy", tokens)
    dev = model_device(model)
    grabbed: dict[str, torch.Tensor] = {}

    def grab(kind):
        def hook(x, hook):
            grabbed[kind] = x.detach()
            return x
        return hook

    fwd = [(hooks[k], grab(k)) for k in kinds]
    with torch.no_grad():
        for start in tqdm(range(0, n_seq, batch_size), desc=f"harvesting {n_seq * seq_len:,} tokens",
                          disable=not progress):
            toks = windows[start:start + batch_size].to(dev)
            model.run_with_hooks(toks, fwd_hooks=fwd, return_type=None)
            for k in kinds:  # (batch, seq, d) -> rows of the memory map
                rows = slice(start * seq_len, (start + len(toks)) * seq_len)
                outs[k][rows] = grabbed[k].reshape(-1, dims[k]).float().cpu().numpy()
    files = {}
    for k, arr in outs.items():
        arr.flush()
        files[f"{k}.npy"] = {"shape": list(arr.shape), "dtype": "float32"}
    del outs
    files["tokens.npy"] = {"shape": list(tokens.shape), "dtype": "int32",
                           "sha256": hashlib.sha256(tokens.tobytes()).hexdigest()}
    for name, info in files.items():
        info["bytes"] = (tmp / name).stat().st_size
    meta = {"version": CACHE_VERSION, "n_seq": n_seq, "seq_len": seq_len, "kinds": list(kinds), "layer": layer,
            "model": getattr(model, "course_name", None), "files": files}
    with atomic_write(tmp / "meta.json") as t:  # written last: its presence marks a complete harvest
        t.write_text(json.dumps(meta, indent=1))


FREE_SPACE_MARGIN = 16 * 2**20
"""Bytes left free beyond what a harvest's files need (``meta.json``, the file system's own)."""


def check_free_space(folder: Path, need: int) -> None:
    """An OSError saying what to do if ``folder``'s disk has less than ``need`` bytes (plus a margin) free.

    A memory map written past a full disk is not an error Python can catch: the process dies of
    SIGBUS with no message, so the harvest checks before it creates its files.
    """
    free = shutil.disk_usage(folder).free
    if free < need + FREE_SPACE_MARGIN:
        raise OSError(
            f"This harvest needs about {(need + FREE_SPACE_MARGIN) / 1e9:.3g} GB in the activation cache {folder}, "
            f"but only {free / 1e9:.3g} GB is free there: free some space, set COURSE_CACHE to a folder "
            "on a disk with room, or use a smaller TUTORIAL_SCALE (fewer tokens)."
        )


def cache_problem(folder: Path) -> str | None:
    """What is wrong with a cache folder, checked against its ``meta.json``; None if it is sound.

    Checks sizes and ``.npy`` headers (cheap, so opening stays fast) and the token ids' hash.
    """
    try:
        meta = json.loads((folder / "meta.json").read_text())
        files = meta["files"]
        kinds = meta["kinds"]
    except FileNotFoundError:
        return "meta.json is missing"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"meta.json is unreadable: {type(err).__name__}"
    if not isinstance(meta, dict) or meta.get("version") != CACHE_VERSION:
        return f"cache version {meta.get('version') if isinstance(meta, dict) else None} is not {CACHE_VERSION}"
    try:
        return _files_problem(folder, files, kinds)
    except (KeyError, TypeError, AttributeError) as err:  # valid JSON of the wrong shape
        return f"meta.json is malformed ({type(err).__name__}: {err})"


def _files_problem(folder: Path, files: dict, kinds: list) -> str | None:
    """``cache_problem``'s check of each file against its ``meta.json`` entry."""
    for name in ["tokens.npy", *(f"{k}.npy" for k in kinds)]:
        path, info = folder / name, files.get(name)
        if info is None:
            return f"meta.json does not describe {name}"
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != info["bytes"]:
            return f"{name} has {path.stat().st_size} bytes, expected {info['bytes']}"
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
                shape, _, dtype = read[version](f)
        except (OSError, ValueError, KeyError) as err:
            return f"{name} has no valid .npy header ({err})"
        if list(shape) != info["shape"] or dtype != np.dtype(info["dtype"]):
            return f"{name} holds {dtype} {shape}, expected {info['dtype']} {tuple(info['shape'])}"
    tokens = np.load(folder / "tokens.npy")
    if hashlib.sha256(tokens.tobytes()).hexdigest() != files["tokens.npy"].get("sha256"):
        return "tokens.npy does not match its checksum"
    return None


def _open(folder: Path, from_cache: bool, t0: float) -> Activations:
    meta = json.loads((folder / "meta.json").read_text())
    tokens = np.load(folder / "tokens.npy")
    acts = {k: np.load(folder / f"{k}.npy", mmap_mode="r") for k in meta["kinds"]}
    return Activations(tokens, acts, folder, from_cache, time.perf_counter() - t0)


def _discard(folder: Path) -> None:
    """Move a folder aside (atomic), then delete it: readers never see it half-deleted."""
    trash = Path(tempfile.mkdtemp(prefix=f"{folder.name}.trash-", dir=folder.parent))
    try:
        os.rename(folder, trash / folder.name)
    except FileNotFoundError:
        pass  # someone else discarded it already
    shutil.rmtree(trash, ignore_errors=True)


def _remove_stale_partials(folder: Path) -> None:
    """Delete partial folders for this request left by processes that no longer run (the pid
    in the name; a cache shared by several machines should use one folder per machine)."""
    for path in folder.parent.glob(f"{folder.name}.trash-*"):  # a discard that was interrupted
        shutil.rmtree(path, ignore_errors=True)
    for path in folder.parent.glob(f"{folder.name}.partial*"):
        pid = path.name[len(folder.name) + len(".partial-"):].split("-")[0]
        if pid.isdigit() and _alive(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
