"""How fast the SAE trainer runs on this machine, against what the machine can do.

Measured in one run, so the ratios compare like with like:

* ``matmul_peak_gflops``: a large dense fp32 matmul (2048^3), best of a few: the roof.
* per (J, instances): examples/s per SAE and achieved GFLOP/s of ``train_sae`` (autograd, fused
  Adam) with the data already in memory, counting 10*h*J FLOPs per example per SAE (forward 2
  GEMMs + backward 3 GEMMs), the
  ``fraction_of_peak``, then the same with ``GroundTruthData.sample`` generating every batch and
  the share of step time spent in it (``data_share``).
* ``stacked_speedup_8``: 8 L1 values trained as one stacked SAE vs a loop of 8 single SAEs,
  data generation included on both sides (each single SAE draws its own data).
* ``autograd``: the same SAE trained by the textbook loop (autograd through the plain forward
  lines, torch's default unfused Adam) for reference: ``ours_speedup`` is what the trainer's
  fused step, fused Adam and lighter bookkeeping buy.
* ``float32``: each configuration again with ``matmul_dtype="float32"``, for a CPU without
  native bfloat16 (the default ``auto`` uses bfloat16 products where the CPU has them:
  ``matmul_dtype`` says which one ran).

Timings are the best of ``--repeats`` runs and the matmul peak is the best seen over the whole
run (re-measured before every configuration), so a noisy neighbour on a shared machine lowers
neither side of a ratio alone.

Run: ``python benchmarks/sae_throughput.py [--quick]``; the last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

from dataclasses import replace

import torch

from helpers.data import GroundTruthConfig, GroundTruthData
from helpers.device import get_device
from helpers.sae import SAE, SAEConfig, train_sae
from helpers.sae.fused import resolve_matmul_dtype

H, B = 256, 256


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak_gflops(dev: torch.device, n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    best = float("inf")
    for _ in range(reps + 1):
        sync(dev)
        t0 = time.perf_counter()
        a @ b
        sync(dev)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


class TimedSampler:
    """Wraps a sample function and adds up the seconds spent inside it."""

    def __init__(self, fn, dev: torch.device):
        self.fn, self.dev, self.seconds = fn, dev, 0.0

    def __call__(self, n: int) -> torch.Tensor:
        sync(self.dev)
        t0 = time.perf_counter()
        out = self.fn(n)
        sync(self.dev)
        self.seconds += time.perf_counter() - t0
        return out


REPEATS = 3


def seconds_per_step(sae: SAE, sample_fn, steps: int, dev: torch.device) -> float:
    """Best of ``REPEATS`` timed runs of ``steps`` steps (after a warm-up run)."""
    train_sae(sae, sample_fn, steps=max(5, steps // 10), progress=False)  # warm up (allocator, Adam state)
    best = float("inf")
    for _ in range(REPEATS):
        sync(dev)
        t0 = time.perf_counter()
        train_sae(sae, sample_fn, steps=steps, progress=False)
        sync(dev)
        best = min(best, (time.perf_counter() - t0) / steps)
    return best


def autograd_seconds_per_step(sae: SAE, x_pool: torch.Tensor, steps: int, dev: torch.device) -> float:
    """The textbook loop: the plain forward lines, loss.backward(), torch Adam (its default foreach path)."""
    opt = torch.optim.Adam([p for p in sae.parameters() if p.requires_grad], lr=sae.cfg.lr)
    n_batches, best = x_pool.shape[0] // B, float("inf")
    for _ in range(REPEATS):
        for i in range(steps + 5):
            if i == 5:
                sync(dev)
                t0 = time.perf_counter()
            x = x_pool[(i % n_batches) * B : (i % n_batches + 1) * B]
            opt.zero_grad(set_to_none=True)
            pre = sae.pre_acts(x)                         # what SAE.forward's plain lines compute
            acts = sae.activation(pre)
            loss = ((sae.decode(acts) - x).pow(2).mean(-1).mean(-1) + sae.sparsity_loss(pre, acts)).sum()
            loss.backward()
            opt.step()
        sync(dev)
        best = min(best, (time.perf_counter() - t0) / steps)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (a smoke test, noisier numbers)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (the best counts)")
    args = parser.parse_args()
    global REPEATS
    REPEATS = args.repeats
    dev = get_device()
    scale = 0.25 if args.quick else 1.0
    data = GroundTruthData(GroundTruthConfig(n_features=512, d=H), device=dev)
    pool = data.sample(B * 64)  # (16384, h) in memory: "no data generation" runs cycle through it
    cursor = [0]

    def from_pool(n: int) -> torch.Tensor:
        start = cursor[0] % (pool.shape[0] - n + 1)
        cursor[0] += n
        return pool[start : start + n]

    t_end = time.perf_counter() + 10  # ten seconds of matmuls first: a VM's cores take a while to come up to speed
    while time.perf_counter() < t_end:
        matmul_peak_gflops(dev, reps=1)
    peak = matmul_peak_gflops(dev)
    results = []
    for J in (512, 1024):
        for inst in (1, 8):
            peak = max(peak, matmul_peak_gflops(dev))
            steps = max(10, int(scale * 4000 * 512 / (J * inst)))  # ~equal work per configuration
            cfg = SAEConfig(d_in=H, d_sae=J, l1_coeffs=(0.1,) * inst, batch_size=B)
            t_pool = seconds_per_step(SAE(cfg, device=dev), from_pool, steps, dev)
            t_fp32 = seconds_per_step(SAE(replace(cfg, matmul_dtype="float32"), device=dev), from_pool, steps, dev)
            sampler = TimedSampler(data.sample, dev)
            sae = SAE(cfg, device=dev)
            train_sae(sae, sampler, steps=5, progress=False)
            sampler.seconds = 0.0
            t0 = time.perf_counter()
            train_sae(sae, sampler, steps=steps, progress=False)
            sync(dev)
            t_data = (time.perf_counter() - t0) / steps
            gflops = 10 * H * J * inst * B / t_pool / 1e9
            results.append({
                "d_sae": J, "instances": inst,
                "matmul_dtype": str(resolve_matmul_dtype(cfg.matmul_dtype, dev)).removeprefix("torch."),
                "examples_per_s_per_sae": round(B / t_pool),
                "gflops": round(gflops, 1),
                "fraction_of_peak": round(gflops / peak, 3),
                "float32_gflops": round(10 * H * J * inst * B / t_fp32 / 1e9, 1),
                "examples_per_s_per_sae_with_data": round(B / t_data),
                "data_share": round(sampler.seconds / (t_data * steps), 3),
            })

    # The L1 sweep: 8 values stacked in one SAE vs 8 single SAEs, data generated as a user would.
    l1_values = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
    steps = max(10, int(scale * 400))
    t_stack = seconds_per_step(SAE(SAEConfig(d_in=H, d_sae=512, l1_coeffs=l1_values), device=dev), data.sample, steps, dev)
    t_loop = sum(
        seconds_per_step(SAE(SAEConfig(d_in=H, d_sae=512, l1_coeffs=(a,)), device=dev), data.sample, steps, dev)
        for a in l1_values
    )

    # Reference: the same SAEs trained by the textbook loop (unfused Adam).
    auto = {}
    for inst in (1, 8):
        steps = max(10, int(scale * 2000 / inst))
        cfg = SAEConfig(d_in=H, d_sae=512, l1_coeffs=(0.1,) * inst)
        t_auto = autograd_seconds_per_step(SAE(cfg, device=dev), pool, steps, dev)
        ours = next(r for r in results if r["d_sae"] == 512 and r["instances"] == inst)
        auto[f"instances_{inst}"] = {
            "examples_per_s_per_sae": round(B / t_auto),
            "gflops": round(10 * H * 512 * inst * B / t_auto / 1e9, 1),
            "ours_speedup": round(ours["examples_per_s_per_sae"] * t_auto / B, 2),
            "ours_float32_speedup": round(ours["float32_gflops"] / (10 * H * 512 * inst * B / t_auto / 1e9), 2),
        }

    peak = max(peak, matmul_peak_gflops(dev))
    for r in results:  # against the best peak seen in the whole run
        r["fraction_of_peak"] = round(r["gflops"] / peak, 3)
        r["float32_fraction_of_peak"] = round(r["float32_gflops"] / peak, 3)
    for key, a in auto.items():
        a["fraction_of_peak"] = round(a["gflops"] / peak, 3)
    head = next(r for r in results if r["d_sae"] == 512 and r["instances"] == 1)
    head8 = next(r for r in results if r["d_sae"] == 512 and r["instances"] == 8)
    summary = {
        "benchmark": "sae_throughput",
        "device": str(dev), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "h": H, "batch": B,
        "matmul_peak_gflops": round(peak, 1),
        "fraction_of_peak": head["fraction_of_peak"],
        "fraction_of_peak_1024": next(r for r in results if r["d_sae"] == 1024 and r["instances"] == 1)["fraction_of_peak"],
        "matmul_dtype": head["matmul_dtype"],
        "float32_fraction_of_peak": head["float32_fraction_of_peak"],
        "gflops": head["gflops"],
        "examples_per_s_per_sae": head["examples_per_s_per_sae"],
        "data_share_1": head["data_share"],
        "data_share_8": head8["data_share"],
        "stacked_speedup_8": round(t_loop / t_stack, 2),
        "configs": results,
        "autograd": auto,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
