"""How long notebook 03's (dictionary size x L1) grid takes at a given TUTORIAL_SCALE.

Trains the grid exactly as ``helpers.diagnostics.toy_grid`` does (each size's L1 column as one
stacked SAE), without reading or writing the cache, and prints one JSON object as its last
line: the scale, grid shape, G and h, steps, wall seconds and seconds per step. With
``--steps N`` it trains N steps instead and also reports the time extrapolated to the scale's
full step count (marked ``"extrapolated": true``): the per-step cost does not change with the
step count, and a short run says quickly whether a scale fits its time budget.

Run: ``python benchmarks/diagnostic_grid.py --scale laptop [--steps 300]``
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from helpers.data import GroundTruthConfig, GroundTruthData
from helpers.course.sizes import sizes
from helpers.device import get_device
from helpers.diagnostics import run_grid, toy_recipe


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", default=None, help="ci, laptop or full (default: TUTORIAL_SCALE)")
    ap.add_argument("--steps", type=int, default=None, help="train this many steps and extrapolate")
    args = ap.parse_args()
    s = sizes(args.scale)
    steps = s.grid.steps if args.steps is None else args.steps
    data = GroundTruthData(GroundTruthConfig(n_features=s.sae.gt_features, d=s.sae.gt_dim, seed=0))
    dev = get_device()
    t0 = time.perf_counter()
    base = toy_recipe(s.scale, steps=steps, dead_window=min(s.grid.dead_window, steps - 1))
    grid = run_grid(data.sample, base, s.sae.dict_ratios, s.grid.l1_values, reference_size=s.sae.gt_features,
                    ground_truth=data.features, keep_dictionaries=True, progress=True)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    out = {
        "benchmark": "diagnostic_grid", "scale": s.scale, "device": str(dev),
        "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "sizes": [int(J) for J in grid.d_sae_values], "n_l1": len(s.grid.l1_values),
        "G": s.sae.gt_features, "h": s.sae.gt_dim, "steps_run": steps, "seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / steps, 4),
    }
    if steps != s.grid.steps:
        out.update(extrapolated=True, full_steps=s.grid.steps, seconds_full_estimate=round(seconds / steps * s.grid.steps, 1))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
