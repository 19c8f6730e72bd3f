"""How long each notebook takes at one TUTORIAL_SCALE, how much memory it needs, which claims held.

Runs every notebook of ``notebooks/`` (sorted) in a fresh kernel with nbclient, at
``TUTORIAL_SCALE=S``, in the notebook's own folder so that relative paths work. The notebook
is executed in memory: the committed file is only read (``--save-executed DIR`` keeps the
executed copies). Per notebook it measures

* ``wall_seconds``: kernel start to last cell;
* ``slowest_cells``: the five slowest cells (index in the notebook, first line, seconds);
* ``peak_rss_mb``: the largest resident memory of the kernel and its child processes,
  polled every 0.1 s, or the kernel's own high-water mark (``VmHWM``) when that is larger;
* the claims (``helpers.course.claims``) that held, failed or were skipped, read from the file the
  kernel appends them to (``COURSE_CLAIMS_FILE``).

A cell that raises is recorded (``error``: cell index, error name) and the run goes on with
the next notebook. Prints one JSON object as its last line.

Run: ``python benchmarks/course_runtime.py --scale laptop [--notebooks 01 02] [--timeout 3600]
[--claims-json claims.json] [--virtual-cuda]``
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from queue import Empty

import nbformat
from jupyter_core.utils import ensure_async
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]

try:
    import psutil
except ImportError:  # the /proc fallback below works on Linux
    psutil = None


def _proc_status_mb(pid: int, field: str) -> float:
    """``VmRSS`` or ``VmHWM`` of one process from /proc, in MB (0 where unreadable)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return 0.0


def _proc_children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids + [g for k in kids for g in _proc_children(k)]


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB."""
    if psutil is not None:
        try:
            proc = psutil.Process(pid)
            procs = [proc] + proc.children(recursive=True)
        except psutil.Error:
            return 0.0
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:  # a child that ended between the two calls
                pass
        return total / 2**20
    return sum(_proc_status_mb(p, "VmRSS") for p in [pid] + _proc_children(pid))


class MemoryWatch:
    """Polls the resident memory of a process tree on a background thread; keeps the peak."""

    def __init__(self, pid: int, every: float = 0.1):
        self.pid, self.every, self.peak_mb = pid, every, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, tree_rss_mb(self.pid))
            self._stop.wait(self.every)

    def stop(self) -> float:
        """Stop polling (the kernel must still run); the peak, or the kernel's VmHWM if larger."""
        self._stop.set()
        self._thread.join()
        return max(self.peak_mb, tree_rss_mb(self.pid), _proc_status_mb(self.pid, "VmHWM"))


def _first_line(source: str) -> str:
    lines = [l.strip() for l in source.splitlines() if l.strip() and not l.strip().startswith("# NBVAL")]
    return lines[0][:80] if lines else ""


def _kernel_pid(client: NotebookClient) -> int:
    prov = client.km.provisioner
    return getattr(prov, "pid", None) or prov.process.pid


def _patient(get_msg):
    """``get_msg`` that waits in slices of at most 2 s instead of one long wait.

    nbclient waits for a cell's reply with a single ``get_msg(timeout=T)``; after a cell that
    opens ipywidgets that wait has been seen to miss a reply that did arrive, so the run hung
    with the kernel idle (jupyter/nbclient#312). A fresh call finds the waiting message.
    """
    async def get(timeout=None, **kwargs):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = 2.0 if deadline is None else max(0.0, min(2.0, deadline - time.monotonic()))
            try:
                return await ensure_async(get_msg(timeout=step, **kwargs))
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
    return get


# Run before the first cell with --virtual-cuda: the kernel then believes it has a CUDA GPU
# (tests/virtual_cuda.py), so every cell runs the course's CUDA path and a tensor left on the
# CPU where the GPU path needs it raises, as on a real card.
VIRTUAL_CUDA_SETUP = (f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
                      "from virtual_cuda import virtual_cuda as _virtual_cuda\n"
                      "_virtual_cuda_block = _virtual_cuda(); _virtual_cuda_block.__enter__()")


def run_notebook(path: Path, scale: str, timeout: int, save_dir: Path | None = None,
                 virtual_cuda: bool = False) -> tuple[dict, list[dict]]:
    """Execute one notebook; return its record for the JSON and the claims it made."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    with tempfile.TemporaryDirectory() as tmp:
        claims_file = Path(tmp) / "claims.jsonl"
        env = {**os.environ, "TUTORIAL_SCALE": scale, "COURSE_CLAIMS_FILE": str(claims_file),
               "COURSE_NOTEBOOK": path.name}
        if virtual_cuda:
            env["COURSE_DEVICE"] = "cuda"
        cell_seconds, error, peak_mb = [], None, 0.0
        start = time.perf_counter()
        try:
            with client.setup_kernel(env=env):
                for channel in (client.kc.shell_channel, client.kc.iopub_channel):
                    channel.get_msg = _patient(channel.get_msg)
                watch = MemoryWatch(_kernel_pid(client))
                try:
                    if virtual_cuda:
                        client.execute_cell(nbformat.v4.new_code_cell(VIRTUAL_CUDA_SETUP), 0)
                    for index, cell in enumerate(nb.cells):
                        if cell.cell_type != "code":
                            continue
                        t0 = time.perf_counter()
                        try:
                            client.execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
                        finally:
                            cell_seconds.append((time.perf_counter() - t0, index, _first_line(cell.source)))
                finally:
                    peak_mb = watch.stop()
        except Exception as err:  # a failing cell, a timeout, a dead kernel: record it, go on
            failed_at = cell_seconds[-1][1] if cell_seconds else None
            message = (str(getattr(err, "evalue", "")) or str(err)).strip().splitlines()
            error = {"index": failed_at, "name": getattr(err, "ename", None) or type(err).__name__,
                     "message": message[-1][:200] if message else ""}
        wall = time.perf_counter() - start
        claims = [json.loads(l) for l in claims_file.read_text().splitlines()] if claims_file.exists() else []
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, save_dir / path.name)
    slowest = sorted(cell_seconds, reverse=True)[:5]
    record = {
        "name": path.stem,
        "wall_seconds": round(wall, 1),
        "slowest_cells": [{"index": i, "first_line": line, "seconds": round(s, 2)} for s, i, line in slowest],
        "peak_rss_mb": round(peak_mb),
        "claims_held": sum(c["held"] is True for c in claims),
        "claims_failed": [f"{c['claim']} (measured {c['measured']}; expected {c['expected']})"
                          for c in claims if c["held"] is False],
        "claims_skipped": sum(c["held"] is None for c in claims),
        "error": error,
    }
    return record, claims


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", required=True, choices=("ci", "laptop", "full"), help="TUTORIAL_SCALE of the run")
    ap.add_argument("--notebooks", nargs="*", default=None,
                    help="only notebooks whose name starts with one of these (e.g. 01 03)")
    ap.add_argument("--notebooks-dir", type=Path, default=ROOT / "notebooks", help="where the notebooks are")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds one cell may run")
    ap.add_argument("--claims-json", type=Path, default=None, help="also write every claim made, as JSON")
    ap.add_argument("--save-executed", type=Path, default=None, help="also write the executed notebooks here")
    ap.add_argument("--virtual-cuda", action="store_true",
                    help="run every notebook on a virtual CUDA GPU (tests/virtual_cuda.py): the GPU path, on a CPU")
    args = ap.parse_args(argv)

    paths = sorted(args.notebooks_dir.glob("[0-9]*.ipynb"))
    if args.notebooks:
        paths = [p for p in paths if p.name.startswith(tuple(args.notebooks))]
    if not paths:
        ap.error(f"no notebook in {args.notebooks_dir} matches {args.notebooks}")

    start, records, all_claims = time.perf_counter(), [], []
    for path in paths:
        record, claims = run_notebook(path.resolve(), args.scale, args.timeout, args.save_executed,
                                      virtual_cuda=args.virtual_cuda)
        records.append(record)
        all_claims += [{"notebook": path.stem, "claim": c["claim"], "scale": c["scale"],
                        "measured": c["measured"], "expected": c["expected"], "held": c["held"]} for c in claims]
        status = "ok" if record["error"] is None else f"{record['error']['name']} in cell {record['error']['index']}"
        print(f"{path.stem}: {record['wall_seconds']} s, {record['peak_rss_mb']} MB, "
              f"{record['claims_held']} claims held, {len(record['claims_failed'])} failed, {status}",
              file=sys.stderr, flush=True)
    result = {"scale": args.scale, "virtual_cuda": args.virtual_cuda, "notebooks": records, "total_seconds": round(time.perf_counter() - start, 1)}
    if args.claims_json is not None:
        args.claims_json.write_text(json.dumps(all_claims, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(result, ensure_ascii=False))
    return result


if __name__ == "__main__":
    main()
