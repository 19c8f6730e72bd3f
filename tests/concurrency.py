"""Run one function in two processes that start at the same moment (for the cache-lock tests)."""
from __future__ import annotations

import multiprocessing


def run_twice_at_once(target, *args, timeout: float = 600) -> list:
    """Start ``target(*args, barrier, results)`` in two spawned processes and return what each
    put on ``results``. The target waits on ``barrier`` so that both ask at the same moment."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, results)) for _ in range(2)]
    for proc in procs:
        proc.start()
    got = [results.get(timeout=timeout) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    return got
