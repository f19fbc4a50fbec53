"""Server CPU spent on a 2,000-task map while 0, 1 or 3 widgets of it are shown in a kernel.

    python bench/bench_widget_cpu.py [--tasks 2000] [--widgets 0,1,3]

A widget shown where the page cannot reach the queue itself (nbval, a terminal, another
server) follows its tasks from a kernel thread: a ``GroupWidget``'s follower long-polls the change
feed and, on a change to its tasks, asks for the group's state until they have all ended. This starts a real server (SQLite, 2 CPU workers), and for
each count of widgets maps a trivial function over ``--tasks`` items, shows that many
``GroupWidget``s of the group (the real class, its real thread), waits for the map, and reports
the CPU seconds the server process (not its workers) used from the submission to the end.

``--per-poll`` measures one poll alone, where the machine's load cannot blur it: 2,000 tasks
waiting (no worker runs them), and the server CPU of 40 polls of a ``GroupWidget`` (what its thread
does twice a second) against 40 polls that fetch every task (what it did before the change feed).
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
    parser.add_argument("--per-poll", action="store_true")
    args = parser.parse_args()
    if args.per_poll:
        return per_poll(args.tasks)
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
            widgets = [GroupWidget(client, task_ids=ids) for _ in range(count)]
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


def per_poll(tasks: int, polls: int = 40) -> int:
    from jupyter_taskq.notebook.widgets import GroupWidget

    root = Path(tempfile.mkdtemp(prefix="taskq-widget-cpu-"))
    server = TaskqServer(root, gpus=[], cpu_workers=1, start_workers=False).start(wait_workers=False)
    try:
        client = server.client()
        ids = [h.id for h in client.submit_many(tiny, range(tasks))]
        group_id = client._request("POST", "groups", json={"task_ids": ids}).json()["id"]
        widget = GroupWidget(client, task_ids=ids, group_id=group_id)
        widget._finished = lambda: True  # its own thread stops at its next look; we poll by hand
        widget._thread.join(5)
        cursor = client._request("GET", "changes", params={"since": "", "wait": 0}).json()["cursor"]

        def follower_round():  # what the kernel's follower asks per change: the feed, then the group's state
            client._request("GET", "changes", params={"since": cursor, "wait": 0})
            GroupWidget._finished(widget)

        results = {}
        for label, poll in (("every task (before)", lambda: client.tasks_by_id(ids)),
                            ("change feed (after)", follower_round)):
            poll()  # the first look fetches everything either way
            before = cpu_seconds(server.proc.pid)
            for _ in range(polls):
                poll()
            results[label] = round((cpu_seconds(server.proc.pid) - before) / polls * 1000, 2)
        print(json.dumps({"tasks": tasks, "server_cpu_ms_per_poll": results}))
        return 0
    finally:
        server.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
