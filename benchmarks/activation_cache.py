"""Harvesting MLP activations vs loading them again from the on-disk cache.

Measured in one run, in a fresh temporary cache folder: the first ``harvest`` runs the model over
the token budget and writes memory-mapped files; the second opens them. Reading every row once
(``touch``) is timed too, so the comparison is not only against opening a file. Prints one JSON
object as its last line with ``"second_load_speedup"`` (harvest seconds / load seconds) and the
speedup including a full read of the activations.

Run: ``python benchmarks/activation_cache.py [--tokens 100000]``
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=100_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["COURSE_CACHE"] = tmp
        from helpers import lm

        model = lm.load_model(lm.OFFLINE_MODEL)
        t0 = time.perf_counter()
        first = lm.harvest(model, args.tokens, progress=False)
        harvest_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = lm.harvest(model, args.tokens, progress=False)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        total = float(sum(np.asarray(a).sum(dtype=np.float64) for a in again.acts.values()))  # read every row
        read_s = time.perf_counter() - t0
        assert again.from_cache and not first.from_cache and np.isfinite(total)
        size_mb = sum(a.nbytes for a in again.acts.values()) / 2**20
    print(json.dumps({
        "benchmark": "activation_cache", "model": lm.OFFLINE_MODEL, "tokens": int(again.acts["post"].shape[0]),
        "cache_mb": round(size_mb, 1), "harvest_seconds": round(harvest_s, 2), "load_seconds": round(load_s, 4),
        "load_and_read_seconds": round(load_s + read_s, 3),
        "second_load_speedup": round(harvest_s / load_s, 1),
        "speedup_including_full_read": round(harvest_s / (load_s + read_s), 1),
    }))


if __name__ == "__main__":
    main()
