"""Shared-data benchmark: map() and put() of a function that captures a 50 MB numpy array.

    python bench/bench_shared_data.py [--tasks 40] [--mb 50] [--json PATH] [--tmpdir DIR]

W4 submits 40 tasks with ``Client.submit_many`` (what ``fn.map()`` does) whose function
captures a 50 MB array as a global, then waits for all of them; W5 does the same with 40
``Client.submit`` calls in a loop (``fn.put()``). Each measures the submit time, the
Jupyter server process's peak RSS (sampled every 10 ms from before the submit until every
task has finished) and how much the state directory grew. The shared part is sent and
stored once (jupyter_taskq/blobs.py), so the state directory should grow by about the
array's size, not 40 times it. Runs a real server with two CPU workers (bench_engine.Taskq).
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

import numpy as np
import psutil

from bench_engine import TIMEOUT, Taskq, log

# metric: (label, comparison, target) -- targets of W4 (issue 10); W5 is shown beside it
METRICS = {
    "submit_s": ("submit (s)", "<", 3.0),
    "server_rss_peak_mb": ("server RSS peak (MB)", "<", 300.0),
    "state_growth_mb": ("state dir growth (MB)", "<", 100.0),
}

DATA = None  # the captured array, set in main()


def pick(i):
    """Defined in __main__, so dill sends it by value with DATA, as a notebook's function."""
    return float(DATA[i]) + DATA.size


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


class PeakRss(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = self.proc.memory_info().rss
        self.running = True

    def run(self):
        while self.running:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.01)

    def stop(self) -> float:
        self.running = False
        self.join()
        return self.peak / 1e6


def measure(engine: Taskq, how: str, n: int) -> dict:
    state = engine.root / "state"
    before = folder_bytes(state)
    rss = PeakRss(engine.proc.pid)
    rss.start()
    start = time.perf_counter()
    if how == "map":
        handles = engine.client.submit_many(pick, range(n))
    else:
        handles = [engine.client.submit(pick, (i,)) for i in range(n)]
    submitted = time.perf_counter() - start
    grown = folder_bytes(state) - before
    tasks = engine.client.wait([h.id for h in handles], timeout=TIMEOUT)
    done = time.perf_counter() - start
    peak = rss.stop()
    bad = [t for t in tasks if t["status"] != "COMPLETE"]
    if bad:
        raise RuntimeError(f"{len(bad)} of {n} tasks did not complete, e.g. {bad[0]['error']}")
    results = [h.result(timeout=TIMEOUT) for h in handles]
    assert results == [float(DATA[i]) + DATA.size for i in range(n)], "wrong results"
    for handle in handles:
        engine.client.delete(handle.id)
    left = folder_bytes(state / "blobs")
    return {"submit_s": round(submitted, 2), "all_done_s": round(done, 2), "server_rss_peak_mb": round(peak),
            "state_growth_mb": round(grown / 1e6, 1), "blobs_left_after_delete_mb": round(left / 1e6, 1)}


def main(argv=None) -> int:
    global DATA
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--mb", type=int, default=50, help="size of the captured array in MB")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--tmpdir", help="where the state directory goes (default: $TMPDIR or the system's)")
    args = parser.parse_args(argv)
    DATA = np.random.default_rng(0).random(args.mb * 1_000_000 // 8)
    log(f"{args.tasks} tasks capturing a {DATA.nbytes / 1e6:.0f} MB array; "
        f"load {os.getloadavg()[0]:.2f}, python {sys.version.split()[0]}")
    results, failed = {}, False
    with tempfile.TemporaryDirectory(prefix="taskq-bench-shared-", dir=args.tmpdir) as tmp:
        with Taskq(Path(tmp)) as engine:
            for workload, how in (("W4 map", "map"), ("W5 put loop", "put")):
                try:
                    results[workload] = measure(engine, how, args.tasks)
                except Exception as exc:  # noqa: BLE001 - report and go on with the next workload
                    failed = True
                    results[workload] = {"error": f"{type(exc).__name__}: {exc}"}
                log(f"{workload}: {results[workload]}")
    print()
    print(f"| metric | {' | '.join(results)} | target |")
    print(f"|---|{'---|' * len(results)}---|")
    for key, (label, op, target) in METRICS.items():
        cells = []
        for workload, values in results.items():
            value = values.get(key)
            ok = value is not None and (value < target if op == "<" else value > target)
            verdict = f" {'PASS' if ok else 'MISS'}" if workload == "W4 map" else ""  # the targets are map()'s
            cells.append("failed" if value is None else f"{value}{verdict}")
        print(f"| {label} | {' | '.join(cells)} | {op} {target:g} |")
    for key in ("all_done_s", "blobs_left_after_delete_mb"):
        print(f"| {key} | {' | '.join(str(v.get(key)) for v in results.values())} | |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
