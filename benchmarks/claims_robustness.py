"""Which of the course's claims hold for any seed: every notebook, once per COURSE_SEED.

A claim (``helpers.course.claims.claim``) checks one sentence of a notebook against the run beside
it. A reader's run is another run: this script runs every notebook of ``notebooks/`` once per
seed in ``--seeds``, each seed with ``COURSE_SEED`` set and a cache folder of its own (empty
at the start, so nothing computed under one seed is reused by another), through
``benchmarks/course_runtime.py``. It then lines the claims up across seeds (by notebook,
sentence, and how many times that sentence came before in the notebook) and reports for each
how many seeds it held in, with the value measured in each.

``--jobs 2`` runs two seeds side by side, each kernel on one thread (``OMP_NUM_THREADS=1``,
as the tests run); the default is one seed at a time on every thread.
``--save-executed DIR`` keeps each seed's executed notebooks under ``DIR/seed-N/``.
``--cache-root DIR`` keeps each seed's cache in ``DIR/SCALE-seed-N`` and reuses it on the next
run: quick while editing claims, but not the fresh run the result is meant to be.

Prints per-seed progress to stderr and one JSON object as its last line::

    {"scale": "ci", "seeds": [0, 1, 2], "claims": 300, "held_in_all": 295, "not_robust": [...],
     "errors": [...], "seconds": {...}, "per_claim": [...]}

``not_robust`` lists every claim that failed (or was not reached) in some seed, with its
measured values; ``near_bound`` every claim that held everywhere but came within 10% of its
bound in some seed (``closest_margin``: the smallest distance to a bound, as a share of the
bound), the next seed's likely failures; ``per_claim`` lists every claim. Claims skipped at
this scale are left out.

Run: ``python benchmarks/claims_robustness.py --scale ci --seeds 0 1 2 [--notebooks 01 02] [--jobs 2]``
"""
from __future__ import annotations

import argparse
import json
import re
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_seed(seed: int, scale: str, notebooks: list[str] | None, threads: int | None,
             save_dir: Path | None, timeout: int, cache_root: Path | None = None) -> dict:
    """Run every notebook once with COURSE_SEED=seed and an empty cache (or, with ``cache_root``,
    the seed's cache folder there, kept between runs); its claims and timings."""
    with tempfile.TemporaryDirectory(prefix=f"robust-{scale}-{seed}-") as tmp:
        claims_json = Path(tmp) / "claims.json"
        cache = Path(tmp) / "cache" if cache_root is None else cache_root / f"{scale}-seed-{seed}"
        cache.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "COURSE_SEED": str(seed), "COURSE_CACHE": str(cache), "TUTORIAL_SCALE": scale}
        if threads:
            env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        cmd = [sys.executable, str(ROOT / "benchmarks" / "course_runtime.py"), "--scale", scale,
               "--claims-json", str(claims_json), "--timeout", str(timeout)]
        if notebooks:
            cmd += ["--notebooks", *notebooks]
        if save_dir is not None:
            cmd += ["--save-executed", str(save_dir / f"seed-{seed}")]
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
        for line in proc.stderr.splitlines():
            if line.startswith("0"):  # course_runtime's one line per notebook
                print(f"seed {seed}: {line}", file=sys.stderr, flush=True)
        if proc.returncode != 0 or not claims_json.exists():
            raise RuntimeError(f"seed {seed}: course_runtime.py failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
        runtime = json.loads(proc.stdout.strip().splitlines()[-1])
        return {"seed": seed, "claims": json.loads(claims_json.read_text()), "runtime": runtime,
                "seconds": round(time.perf_counter() - start, 1)}


_NUMBER = r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?"


def _bounds(expected: str) -> tuple[float | None, float | None]:
    """(lo, hi) of a claim's printed condition: "≥ 0.99", "≤ 0.05", "62-82°", "-1 points to 10 points"."""
    nums = [float(x) for x in re.findall(_NUMBER, expected)]
    if expected.startswith("≥") and nums:
        return nums[0], None
    if expected.startswith("≤") and nums:
        return None, nums[0]
    if " to " in expected and len(nums) >= 2:
        return nums[0], nums[1]
    if len(nums) >= 2:  # "62-82°": the second number's minus sign is the dash
        return nums[0], abs(nums[1])
    return None, None


def margin(measured: str, expected: str) -> float | None:
    """How close a numeric claim came to its bound, as a share of the bound (0.1: within 10%); None
    for a true/false claim. The printed values are rounded to three digits, so this is approximate."""
    lo, hi = _bounds(expected)
    if (lo is None and hi is None) or measured in ("true", "false") or "true" in measured:
        return None
    head = measured.split(",")[0]
    if " to " in head:
        values = [float(x) for x in re.findall(_NUMBER, head)]
    else:
        values = [float(x) for x in re.findall(_NUMBER, head)]
        if len(values) == 2 and not head.startswith("-") and values[1] < 0:
            values[1] = -values[1]  # "0.3-0.5": a dash, not a sign
    if not values:
        return None
    gaps = []
    for v in (min(values), max(values)):
        if lo is not None:
            gaps.append((v - lo) / max(abs(lo), 1e-12))
        if hi is not None:
            gaps.append((hi - v) / max(abs(hi), 1e-12))
    return min(gaps)


def line_up(runs: list[dict]) -> list[dict]:
    """One record per claim (notebook, sentence, occurrence), with its verdict and value per seed.

    A claim checked in one seed and missing in another (its notebook stopped at an error) counts
    as not held there.
    """
    table: dict[tuple, dict] = {}
    order: list[tuple] = []
    for run in runs:
        seen: dict[tuple, int] = defaultdict(int)
        for c in run["claims"]:
            if c["held"] is None:  # skipped at this scale
                continue
            base = (c["notebook"], c["claim"])
            key = (*base, seen[base])
            seen[base] += 1
            if key not in table:
                table[key] = {"notebook": c["notebook"], "claim": c["claim"], "expected": c["expected"],
                              "measured": {}, "held": {}}
                order.append(key)
            table[key]["measured"][str(run["seed"])] = c["measured"]
            table[key]["held"][str(run["seed"])] = bool(c["held"])
    seeds = [str(r["seed"]) for r in runs]
    out = []
    for key in order:
        rec = table[key]
        rec["held_in"] = sum(rec["held"].get(s, False) for s in seeds)
        rec["of"] = len(seeds)
        rec["missing_in"] = [int(s) for s in seeds if s not in rec["held"]]
        margins = [m for m in (margin(v, rec["expected"]) for v in rec["measured"].values()) if m is not None]
        rec["closest_margin"] = round(min(margins), 3) if margins else None
        out.append(rec)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", required=True, choices=("ci", "laptop", "full"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="COURSE_SEED values, one run each")
    ap.add_argument("--notebooks", nargs="*", default=None, help="only notebooks whose name starts with these")
    ap.add_argument("--jobs", type=int, default=1, help="seeds run side by side (each kernel on one thread when > 1)")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds one cell may run")
    ap.add_argument("--save-executed", type=Path, default=None, help="keep the executed notebooks under DIR/seed-N/")
    ap.add_argument("--cache-root", type=Path, default=None,
                    help="while editing: keep each seed's cache in DIR/SCALE-seed-N and reuse it (not a fresh run)")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error("--jobs must be at least 1")

    threads = 1 if args.jobs > 1 else None
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        runs = list(pool.map(lambda s: run_seed(s, args.scale, args.notebooks, threads, args.save_executed,
                                                args.timeout, args.cache_root), args.seeds))
    per_claim = line_up(runs)
    not_robust = [c for c in per_claim if c["held_in"] < c["of"]]
    errors = [{"seed": r["seed"], "notebook": nb["name"], **nb["error"]}
              for r in runs for nb in r["runtime"]["notebooks"] if nb["error"]]
    result = {
        "scale": args.scale, "seeds": args.seeds, "fresh_caches": args.cache_root is None, "claims": len(per_claim),
        "held_in_all": len(per_claim) - len(not_robust),
        "not_robust": [{k: c[k] for k in ("notebook", "claim", "expected", "measured", "held_in", "of")}
                       for c in not_robust],
        "near_bound": [{k: c[k] for k in ("notebook", "claim", "expected", "measured", "closest_margin")}
                       for c in per_claim if c["held_in"] == c["of"] and c["closest_margin"] is not None
                       and c["closest_margin"] < 0.1],
        "errors": errors,
        "seconds": {str(r["seed"]): {nb["name"]: nb["wall_seconds"] for nb in r["runtime"]["notebooks"]}
                    | {"total": r["seconds"]} for r in runs},
        "per_claim": per_claim,
    }
    print(json.dumps(result, ensure_ascii=False))
    return result


if __name__ == "__main__":
    main()
