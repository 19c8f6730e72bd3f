"""How fast the SAE trainer is, against the simple ways to write it and against ARENA's toy SAE.

The work: 8 stacked 256 -> 512 SAEs (an L1 sweep of 8 values), batch 256, 600 Adam steps, on
batches from the report's ground-truth data (G=512 features in h=256), drawn once into a pool
that every contender cycles through, so data generation is not timed. Timed, one after another
on the same machine (seconds for the 600 steps):

1. ``loop``: a plain per-model loop, the first thing one would write: one SAE per L1 value,
   ``nn.Parameter``s, autograd, ``torch.optim.Adam`` defaults. ``--loop-models`` of the 8 are
   timed and the total extrapolated linearly (``sae_loop_extrapolated`` says so).
2. ``ours``: ``train_sae`` (stacked autograd + fused Adam), logging and dead-latent tracking included.
3. ``compiled``: the same with ``SAEConfig(compile=True)``; compile seconds reported apart.
4. ``handwritten``: the backward written out by hand + fused Adam (the trainer's former fast
   path, kept here only as a reference): ``sae_fast_over_autograd`` is why it was dropped.
5. ``arena``: ARENA's toy SAE training code (``benchmarks/peers/arena_sae.py``) on the same
   pool, its sparsity coefficient set to alpha / J so it minimises the same loss.

``sae_ours_over_arena`` is the examples/s ratio. ``sae_ours_over_arena_equal_quality``: ARENA's
code trains 3000 steps on fresh ground-truth batches and reaches some MMCS (the best of its
sweep); ours trains on the same batches until the best of its sweep reaches that MMCS; the ratio
is ARENA's seconds over ours.

Run alone: ``python benchmarks/_speed_sae.py [--quick]`` prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/peers, run from anywhere
try:  # ARENA's code is not redistributed here (no licence): see benchmarks/peers/README.md
    from peers.arena_sae import ToySAE, ToySAEConfig  # noqa: E402
    ARENA_MISSING = None
except ImportError as err:
    ARENA_MISSING = f"benchmarks/peers/arena_sae.py not found ({err}); see benchmarks/peers/README.md"

from helpers.data import GroundTruthConfig, GroundTruthData  # noqa: E402
from helpers.metrics import mmcs  # noqa: E402
from helpers.sae import SAE, SAEConfig, train_sae  # noqa: E402

H, G, J, B = 256, 512, 512, 256
L1_SWEEP = (0.3, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0)  # alpha of the report's (alpha / J) ||c||_1


def _pool_sampler(pool: torch.Tensor):
    cursor = [0]

    def sample(n: int) -> torch.Tensor:
        start = cursor[0] % (pool.shape[0] - n + 1)
        cursor[0] += n
        return pool[start : start + n]

    return sample


def _cfg(**kw) -> SAEConfig:
    return SAEConfig(d_in=H, d_sae=J, l1_coeffs=L1_SWEEP, batch_size=B, **kw)


def time_ours(pool, steps, **kw) -> float:
    train_sae(SAE(_cfg(**kw), device="cpu"), _pool_sampler(pool), steps=20, progress=False)  # warm up
    log = train_sae(SAE(_cfg(**kw), device="cpu"), _pool_sampler(pool), steps=steps, progress=False)
    return log.seconds


def time_compiled(pool, steps) -> tuple[float | None, float | None, str | None]:
    """(seconds for ``steps``, compile seconds, reason if skipped)."""
    try:
        sae = SAE(_cfg(compile=True), device="cpu")
        first = train_sae(sae, _pool_sampler(pool), steps=5, progress=False).seconds
        again = train_sae(sae, _pool_sampler(pool), steps=5, progress=False).seconds  # cached graph?
        log = train_sae(sae, _pool_sampler(pool), steps=steps, progress=False)
        return log.seconds, max(0.0, first - again), None
    except Exception as err:  # no C++ compiler, unsupported platform, ...
        return None, None, f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"


def time_loop(pool, steps, n_models) -> float:
    """Seconds for one plain single-model SAE per L1 value, extrapolated from ``n_models``."""
    sample, total = _pool_sampler(pool), 0.0
    for alpha in L1_SWEEP[:n_models]:
        gen = torch.Generator().manual_seed(int(alpha * 1000))
        W_dec = torch.nn.Parameter(torch.nn.init.orthogonal_(torch.empty(J, H), generator=gen))
        W_enc = torch.nn.Parameter(W_dec.detach().T.clone())
        b_enc = torch.nn.Parameter(torch.zeros(J))
        opt = torch.optim.Adam([W_enc, b_enc, W_dec], lr=1e-3)
        t0 = time.perf_counter()
        for _ in range(steps):
            x = sample(B)
            c = torch.relu(x @ W_enc + b_enc)
            x_hat = c @ (W_dec / W_dec.norm(dim=-1, keepdim=True))
            loss = (x_hat - x).pow(2).mean() + alpha / J * c.sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        total += time.perf_counter() - t0
    return total * len(L1_SWEEP) / n_models


@torch.no_grad()
def _handwritten_grads(sae: SAE, x: torch.Tensor) -> None:
    """d(loss)/d(param) of the standard SAE without autograd (no decoder bias): the former fast path."""
    I, B_, h, J_ = sae.cfg.n_instances, x.shape[0], sae.cfg.d_in, sae.cfg.d_sae
    x_b = x.expand(I, B_, h)
    acts = torch.baddbmm(sae.b_enc[:, None, :], x_b, sae.W_enc).relu_()              # (I, B, J)
    norms = sae.W_dec.norm(dim=-1, keepdim=True)
    D = sae.W_dec / norms
    err = torch.baddbmm(sae.b_dec[:, None, :], acts, D).sub_(x)                     # (I, B, h)
    k = sae.l1_coeffs / J_
    g_xhat = err.mul_(2.0 / (B_ * h))
    g_pre = torch.baddbmm((k / B_)[:, None, None], g_xhat, D.transpose(1, 2))
    g_pre = torch.ops.aten.threshold_backward(g_pre, acts, 0.0)
    sae.W_enc.grad = torch.bmm(x_b.transpose(1, 2), g_pre)
    sae.b_enc.grad = g_pre.sum(1)
    g_D = torch.bmm(acts.transpose(1, 2), g_xhat)
    sae.W_dec.grad = g_D.addcmul_(D, (g_D * D).sum(-1, keepdim=True), value=-1.0).div_(norms)


def time_handwritten(pool, steps) -> float:
    sae = SAE(_cfg(), device="cpu")
    opt = torch.optim.Adam([p for p in sae.parameters() if p.requires_grad], lr=1e-3, fused=True)
    sample = _pool_sampler(pool)
    for i in range(steps + 20):
        if i == 20:
            t0 = time.perf_counter()
        _handwritten_grads(sae, sample(B))
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def time_arena(pool, steps) -> float:
    coeff = torch.tensor(L1_SWEEP) / J
    ToySAE(ToySAEConfig(len(L1_SWEEP), H, J, sparsity_coeff=coeff)).optimize(_pool_sampler(pool), B, 20)  # warm up
    arena = ToySAE(ToySAEConfig(len(L1_SWEEP), H, J, sparsity_coeff=coeff))
    t0 = time.perf_counter()
    arena.optimize(_pool_sampler(pool), batch_size=B, steps=steps)
    return time.perf_counter() - t0


def equal_quality(arena_steps: int) -> dict:
    """ARENA after ``arena_steps`` on fresh batches vs ours until its best MMCS matches."""
    data_cfg = GroundTruthConfig(n_features=G, d=H)
    arena_data = GroundTruthData(data_cfg, device="cpu")
    arena = ToySAE(ToySAEConfig(len(L1_SWEEP), H, J, sparsity_coeff=torch.tensor(L1_SWEEP) / J))
    t0 = time.perf_counter()
    arena.optimize(arena_data.sample, batch_size=B, steps=arena_steps)
    arena_s = time.perf_counter() - t0
    target = float(mmcs(arena.W_dec_normalized.detach(), arena_data.features).max())

    # Ours on the same batch stream, checked every 100 steps (the check's own time is taken
    # off the clock); training stops once the best instance reaches the target.
    ours_data, every, prefetch = GroundTruthData(data_cfg, device="cpu"), 100, 20
    sae = SAE(_cfg(), device="cpu")
    state = {"calls": 0, "t0": 0.0, "checks": 0.0, "reached": None, "best": 0.0}

    class Reached(Exception):
        pass

    def sample(n: int) -> torch.Tensor:
        step = state["calls"] * prefetch
        if step == 0:
            state["t0"] = time.perf_counter()
        elif step % every == 0:
            t_check = time.perf_counter()
            elapsed = t_check - state["t0"] - state["checks"]  # training seconds so far
            best = float(mmcs(sae.decoder_directions().detach(), ours_data.features).max())
            state["best"] = max(state["best"], best)
            state["checks"] += time.perf_counter() - t_check
            if best >= target:
                state["reached"] = (step, elapsed)
                raise Reached
        state["calls"] += 1
        return ours_data.sample(n)

    max_steps = 2 * arena_steps
    try:
        train_sae(sae, sample, steps=max_steps, progress=False, prefetch=prefetch)
    except Reached:
        pass
    out = {"sae_equal_quality_target_mmcs": round(target, 4), "sae_arena_steps": arena_steps,
           "sae_arena_equal_quality_seconds": round(arena_s, 2)}
    if state["reached"] is None:
        out.update(sae_ours_equal_quality_steps=None, sae_ours_over_arena_equal_quality=None,
                   sae_ours_equal_quality_note=f"not reached in {max_steps} steps (best MMCS {state['best']:.4f})")
    else:
        step, seconds = state["reached"]
        out.update(sae_ours_equal_quality_steps=step, sae_ours_equal_quality_seconds=round(seconds, 2),
                   sae_ours_over_arena_equal_quality=round(arena_s / seconds, 2))
    return out


def bench_sae(steps: int = 600, repeats: int = 3, loop_models: int = 2, arena_steps: int = 3000) -> dict:
    """Time every contender ``repeats`` times, alternating, and report the best of each (seconds)."""
    torch.manual_seed(0)
    pool = GroundTruthData(GroundTruthConfig(n_features=G, d=H), device="cpu").sample(B * 64)  # (16384, h)
    runs: dict[str, list[float]] = {"ours": [], "handwritten": [], "arena": [], "loop": []}
    for _ in range(repeats):  # alternate, so a slow spell of a shared machine hits every side
        runs["ours"].append(time_ours(pool, steps))
        runs["handwritten"].append(time_handwritten(pool, steps))
        if not ARENA_MISSING:
            runs["arena"].append(time_arena(pool, steps))
    runs["loop"].append(time_loop(pool, steps, loop_models))
    compiled, compile_s, skipped = time_compiled(pool, steps)
    best = {k: min(v) for k, v in runs.items() if v}
    result = {
        "sae_work": f"8 stacked {H}->{J} SAEs (L1 sweep), batch {B}, {steps} steps, cpu, {torch.get_num_threads()} threads",
        "sae_seconds_ours": round(best["ours"], 2),
        "sae_seconds_ours_runs": [round(s, 2) for s in runs["ours"]],
        "sae_seconds_loop": round(best["loop"], 2),
        "sae_loop_extrapolated": f"{loop_models} of {len(L1_SWEEP)} models timed, total scaled by {len(L1_SWEEP)}/{loop_models}"
        if loop_models < len(L1_SWEEP) else False,
        "sae_seconds_compiled": None if compiled is None else round(compiled, 2),
        "sae_compile_seconds": None if compile_s is None else round(compile_s, 1),
        "sae_compile_skipped": skipped,
        "sae_seconds_handwritten": round(best["handwritten"], 2),
        "sae_seconds_handwritten_runs": [round(s, 2) for s in runs["handwritten"]],
        "sae_seconds_arena": round(best["arena"], 2) if "arena" in best else None,
        "sae_seconds_arena_runs": [round(s, 2) for s in runs["arena"]],
        "sae_arena_skipped": ARENA_MISSING,
        "sae_ours_over_loop": round(best["loop"] / best["ours"], 2),
        "sae_ours_over_arena": round(best["arena"] / best["ours"], 2) if "arena" in best else None,
        "sae_compiled_over_ours": None if compiled is None else round(best["ours"] / compiled, 2),
        "sae_fast_over_autograd": round(best["ours"] / best["handwritten"], 2),
        "sae_fast_path_kept": False,
    }
    if arena_steps and not ARENA_MISSING:
        result.update(equal_quality(arena_steps))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 steps, 1 repeat, 300 ARENA steps (a smoke test)")
    parser.add_argument("--loop-models", type=int, default=2, help="plain-loop models timed (of 8)")
    args = parser.parse_args()
    if args.quick:
        print(json.dumps(bench_sae(steps=100, repeats=1, loop_models=1, arena_steps=300)))
    else:
        print(json.dumps(bench_sae(loop_models=args.loop_models)))


if __name__ == "__main__":
    main()
