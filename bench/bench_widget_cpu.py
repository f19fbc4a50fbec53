"""Server CPU spent on a 2,000-task map while 0, 1 or 3 widgets of it are shown in a kernel.

    python bench/bench_widget_cpu.py [--tasks 2000] [--widgets 0,1,3]

A widget shown where the page cannot reach the queue itself (nbval, a terminal, another
server) follows its tasks from a kernel thread: a ``GroupWidget`` asks for all its tasks twice
a second until they have all ended. This starts a real server (SQLite, 2 CPU workers), and for
each count of widgets maps a trivial function over ``--tasks`` items, shows that many
``GroupWidget``s of the group (the real class, its real thread), waits for the map, and reports
the CPU seconds the server process (not its workers) used from the submission to the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import TaskqServer  # noqa: E402


def tiny(x):
    return x


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--widgets", default="0,1,3")
    args = parser.parse_args()
    from jupyter_taskq.notebook.widgets import GroupWidget

    root = Path(tempfile.mkdtemp(prefix="taskq-widget-cpu-"))
    server = TaskqServer(root, gpus=[], cpu_workers=2).start()
    results = []
    try:
        client = server.client()
        client.submit_many(tiny, range(50))  # warm up: workers forked, code paths loaded
        time.sleep(2)
        for count in [int(c) for c in args.widgets.split(",")]:
            before, start = cpu_seconds(server.proc.pid), time.monotonic()
            handles = client.submit_many(tiny, range(args.tasks))
            ids = [h.id for h in handles]
            widgets = [GroupWidget(client, task_ids=ids, snapshot=[]) for _ in range(count)]
            client.wait(ids)
            took = time.monotonic() - start
            results.append({"widgets": count, "tasks": args.tasks, "server_cpu_s": round(cpu_seconds(
                server.proc.pid) - before, 2), "map_s": round(took, 1)})
            print(json.dumps(results[-1]), flush=True)
            for widget in widgets:
                widget.close()
            time.sleep(1.5)  # the widgets' threads see the tasks ended and stop
        return 0
    finally:
        server.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
