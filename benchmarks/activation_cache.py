"""Harvesting MLP activations vs loading them again from the on-disk cache, and the memory
that reading latents over the whole harvest takes.

Measured in one run, in a fresh temporary cache folder: the first ``harvest`` runs the model over
the token budget and writes memory-mapped files; the second opens them. Reading every row once
(``touch``) is timed too, so the comparison is not only against opening a file. With
``--d-sae J`` it then streams the latent statistics of a random J-latent SAE over all rows
(``latent_stats``, the top rows of 300 latents, their co-occurrence), and reports the peak of
traced Python/NumPy allocations during that step next to the size the dense (tokens, J) matrix
would have: the streamed step should stay near one chunk however many tokens there are.
Prints one JSON object as its last line.

Run: ``python benchmarks/activation_cache.py [--tokens 100000] [--d-sae 8192]``
(``/usr/bin/time -v`` around it gives the process's peak RSS as well).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
import tracemalloc

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=100_000)
    ap.add_argument("--d-sae", type=int, default=0, help="also stream latent statistics of a J-latent SAE")
    args = ap.parse_args()
    out: dict = {"benchmark": "activation_cache"}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["COURSE_CACHE"] = tmp
        import torch

        from helpers import lm
        from helpers.sae import SAE, SAEConfig

        model = lm.load_model(lm.OFFLINE_MODEL)
        t0 = time.perf_counter()
        first = lm.harvest(model, args.tokens, progress=False)
        harvest_s = time.perf_counter() - t0
        rss_after_harvest = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        again = lm.harvest(model, args.tokens, progress=False)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        total = float(sum(np.asarray(a).sum(dtype=np.float64) for a in again.acts.values()))  # read every row
        read_s = time.perf_counter() - t0
        assert again.from_cache and not first.from_cache and np.isfinite(total)
        post = again.acts["post"]
        out.update({"model": lm.OFFLINE_MODEL, "tokens": int(post.shape[0]),
                    "cache_mb": round(sum(a.nbytes for a in again.acts.values()) / 2**20, 1),
                    "harvest_seconds": round(harvest_s, 2), "load_seconds": round(load_s, 4),
                    "load_and_read_seconds": round(load_s + read_s, 3),
                    "second_load_speedup": round(harvest_s / load_s, 1),
                    "speedup_including_full_read": round(harvest_s / (load_s + read_s), 1),
                    "peak_rss_mb_after_harvest": round(rss_after_harvest, 1)})
        if args.d_sae:
            sae = SAE(SAEConfig(d_in=post.shape[1], d_sae=args.d_sae, decoder_bias=True), device="cpu")
            with torch.no_grad():
                sae.b_enc.fill_(-0.5)  # sparse-ish latents, as a trained SAE has
            lat = lm.LatentActs(sae, post)
            tracemalloc.start()
            t0 = time.perf_counter()
            stats = lm.latent_stats(lat)
            top = np.argsort(-stats.freq)[:300]
            lm.top_rows(lat, top, 20)
            lm.co_occurrence_lift(lat, top)
            stream_s = time.perf_counter() - t0
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            out.update({"d_sae": args.d_sae, "chunk_rows": lat.chunk_rows, "stream_seconds": round(stream_s, 1),
                        "stream_traced_peak_mb": round(peak / 2**20, 1),
                        "dense_latent_matrix_mb": round(post.shape[0] * args.d_sae * 4 / 2**20, 1),
                        "peak_rss_mb_total": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
