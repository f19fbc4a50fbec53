"""Notebook workload: a 40-configuration SVC sweep on load_digits, in the kernel and on the queue, in one run.

    python bench/bench_notebook.py [--quick] [--json PATH] [--tmpdir DIR] [--workers 2]

The sweep is what issue 10 calls everyday code: ``cross_val_score`` imported by name and used as a
global of a notebook-style function, with the notebook's data (``X``, ``y``) as globals too.

- kernel: a plain loop, ``[fit_one(p) for p in params]``, in this process.
- queue: ``task_queue(fit_one).map(params)`` then ``.results()`` against a real ``jupyter server``
  with the extension and two CPU workers (started here, stopped on exit), timed from the call to
  ``map`` to the last result; the time ``map`` itself takes (serialise and submit) is shown apart.

Both must give the same 40 results (checked). With 2 CPU workers the queue's best case is half
the kernel's time plus the submit and the per-task start; on a 2-core machine shared with other
work it is less. Speed depends on the machine, so it is measured and reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench_engine import TOKEN, Taskq, log

from sklearn.datasets import load_digits
from sklearn.model_selection import cross_val_score  # by name, as issue 10's notebook does
from sklearn.svm import SVC

X, y = load_digits(return_X_y=True)

C_VALUES = (0.1, 1.0, 10.0, 100.0)
GAMMAS = (0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05)


def fit_one(p: dict) -> dict:
    """One configuration: the mean 3-fold accuracy. Defined in __main__, like a notebook's function."""
    return {**p, "acc": float(cross_val_score(SVC(**p), X, y, cv=3).mean())}


def configurations(quick: bool) -> list[dict]:
    params = [{"C": c, "gamma": g} for c in C_VALUES for g in GAMMAS]
    return params[::5] if quick else params  # 40, or 8 for a smoke run


def in_kernel(params: list[dict]) -> tuple[float, list[dict]]:
    start = time.perf_counter()
    rows = [fit_one(p) for p in params]
    return time.perf_counter() - start, rows


def on_queue(engine: Taskq, params: list[dict], **options) -> tuple[float, float, float, list[dict]]:
    """(wall seconds, seconds in map(), the tasks' own run times summed, results)."""
    import jupyter_taskq
    from jupyter_taskq import task_queue

    jupyter_taskq.connect(engine.client.url, TOKEN)
    start = time.perf_counter()
    group = task_queue(max_retries=0, timeout=600, **options)(fit_one).map(params)
    submitted = time.perf_counter() - start
    rows = group.results(timeout=1800)
    wall = time.perf_counter() - start
    runs = sum(_seconds(i["ended_at"]) - _seconds(i["started_at"]) for i in group.infos())
    return wall, submitted, runs, rows


def _seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _has_option(name: str) -> bool:
    try:
        from jupyter_taskq.options import OPTIONS
    except ImportError:
        return False
    return any(getattr(option, "name", None) == name for option in OPTIONS)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 configurations instead of 40 (a smoke run)")
    parser.add_argument("--json", metavar="PATH", help="also write the numbers as JSON")
    parser.add_argument("--tmpdir", help="where the server's state directory goes (default: $TMPDIR or the system's)")
    parser.add_argument("--workers", type=int, default=2, help="CPU workers of the queue (default 2)")
    args = parser.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):  # unwind like ^C, so the server is stopped
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))

    params = configurations(args.quick)
    load = os.getloadavg()[0]
    log(f"kernel: {len(params)} configurations, 3-fold cross_val_score each")
    kernel_s, kernel_rows = in_kernel(params)
    with tempfile.TemporaryDirectory(prefix="taskq-bench-nb-", dir=args.tmpdir) as tmp:
        log(f"queue: starting a server with {args.workers} CPU workers")
        with Taskq(Path(tmp), cpu_workers=args.workers) as engine:
            queue_s, submit_s, runs_s, queue_rows = on_queue(engine, params)
            warm = None
            if _has_option("keep_warm_seconds"):  # issue 11: task processes that keep their imports
                log("queue: again with keep_warm_seconds=60")
                warm = on_queue(engine, params, keep_warm_seconds=60)
    same = queue_rows == kernel_rows and (warm is None or warm[3] == kernel_rows)

    print(f"\nSVC sweep on load_digits ({len(params)} configurations x 3-fold cross_val_score), "
          f"{os.cpu_count()} CPUs, load {load:.2f} at start, Python {platform.python_version()}")
    print(f"  kernel (plain loop)          {kernel_s:8.2f} s")
    print(f"  queue ({args.workers} CPU workers, map)  {queue_s:8.2f} s   (map() itself: {submit_s:.2f} s)")
    print(f"  kernel / queue               {kernel_s / queue_s:8.2f} x")
    print(f"  task run time, summed        {runs_s:8.2f} s   (per task, beyond the kernel's own time for it: "
          f"{(runs_s - kernel_s) / len(params):.2f} s: process start and imports)")
    if warm is not None:
        print(f"  queue, keep_warm_seconds=60  {warm[0]:8.2f} s   (map() itself: {warm[1]:.2f} s; "
              f"per-task start-up {(warm[2] - kernel_s) / len(params):.2f} s)")
    print(f"  same results                 {'yes' if same else 'NO'}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "configurations": len(params), "workers": args.workers, "kernel_s": kernel_s, "queue_s": queue_s,
            "submit_s": submit_s, "task_run_s_summed": runs_s, "speedup": kernel_s / queue_s, "same_results": same,
            "warm": None if warm is None else {"queue_s": warm[0], "submit_s": warm[1], "task_run_s_summed": warm[2]},
            "machine": {"cpus": os.cpu_count(), "load_at_start": load, "python": platform.python_version()},
        }, indent=2))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
