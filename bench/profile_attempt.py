"""Where one attempt's time goes in the worker: each step of :class:`jupyter_taskq.worker.attempt.Attempt`, timed.

One real worker (SQLite, a fresh process per attempt, the same code the server's workers run) in this
process, N trivial tasks queued by the in-process ``TaskService``, no Jupyter server. Prints the mean
wall time of each attempt step in the worker (the worker's side only: the task process runs between
"start process" and the end of "supervise"), the worker's CPU per attempt, and, with ``--cprofile``,
the worker loop's top functions by own time.

    python bench/profile_attempt.py --tasks 300 --tmpdir /var/tmp [--cprofile]
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import functools
import os
import pstats
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jupyter_taskq import payload  # noqa: E402
from jupyter_taskq.backend import Backend  # noqa: E402
from jupyter_taskq.queue import QueueMap, open_queue  # noqa: E402
from jupyter_taskq.server.service import TaskService  # noqa: E402
from jupyter_taskq.worker import attempt as attempt_module  # noqa: E402
from jupyter_taskq.worker.process import Worker  # noqa: E402
from jupyter_taskq.workerconfig import WorkerConfig  # noqa: E402

STEPS = ["run", "_claim", "_start_token", "_read_header", "_start_process", "_supervise", "_collect_owner_files",
         "_end_token", "_publish_files", "_record_outcome"]


def f(x):
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--tmpdir", default=None)
    parser.add_argument("--cprofile", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="taskq-profile-", dir=args.tmpdir))
    try:
        run(root, args.tasks, args.cprofile)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(root: Path, count: int, profile: bool) -> None:
    backend = Backend.open(root / "state")
    service = TaskService(backend.state, backend.open_store(), QueueMap(lambda pool: open_queue(backend.state, pool)),
                          gpus=[], workers_per_gpu=1, cpu_workers=1, max_retries=0, retry_delay=0,
                          retry_backoff=1, result_ttl=3600)
    spent: dict[str, list[float]] = collections.defaultdict(list)
    for name in STEPS:  # time each step of the attempt (a bench's patch, never the worker's code)
        original = getattr(attempt_module.Attempt, name)

        def timed(self, *a, _original=original, _name=name, **k):
            start = time.perf_counter()
            try:
                return _original(self, *a, **k)
            finally:
                spent[_name].append(time.perf_counter() - start)

        setattr(attempt_module.Attempt, name, functools.wraps(original)(timed))
    worker = Worker(backend, "cpu0", "cpu", None, WorkerConfig())
    spool = root / "spool"
    spool.mkdir()

    def submit(n: int) -> list[str]:
        items = []
        for i in range(n):
            path = spool / f"{i}.payload"
            path.write_bytes(payload.dumps_call(f, (i,)))
            items.append((path, service.validate_options({})))
        return [t["id"] for t in service.submit_many(items)]

    def stop_when_done(ids: list[str]) -> None:
        while not worker.stopping:
            statuses = worker.store.statuses(ids)
            if len(statuses) == len(ids) and all(s in ("COMPLETE", "FAILED") for s in statuses.values()):
                worker.stopping = True
            time.sleep(0.05)

    warm = submit(5)  # the first attempts (the spare's first fork, imports) are not what is measured
    threading.Thread(target=stop_when_done, args=(warm,), daemon=True).start()
    worker.run()
    spent.clear()
    worker.stopping = False
    ids = submit(count)
    threading.Thread(target=stop_when_done, args=(ids,), daemon=True).start()
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    worker.run()
    if profiler:
        profiler.disable()
    wall = time.perf_counter() - start
    after, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / count * 1000
    faults = (after.ru_minflt - before.ru_minflt) / count
    kids = (children.ru_utime + children.ru_stime - children_before.ru_utime - children_before.ru_stime) / count * 1000
    statuses = collections.Counter(worker.store.statuses(ids).values())
    print(f"{count} tasks in {wall:.2f} s ({count / wall:.0f} tasks/s), {dict(statuses)}; "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"worker process (and its threads): {cpu:.2f} ms CPU and {faults:.0f} page faults per attempt; "
          f"reaped children (keepers) {kids:.2f} ms CPU per attempt")
    print(f"{'step':24} {'mean ms':>8} {'calls':>6}")
    for name in STEPS:
        times = spent.get(name, [])
        if times:
            print(f"{name:24} {sum(times) / len(times) * 1000:8.3f} {len(times):6}")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
