"""Held tasks in the metrics and the task CLI (issue 24): a task's queue wait counts from when it could start
(its last dependency's end, its start time), not from its submission; ``ls`` and ``top`` say what a PENDING
task waits for."""

from __future__ import annotations

import datetime

import jupyter_taskq
from jupyter_taskq import task_queue

from conftest import TOKEN, wait_for
from test_metrics import scrape, total
from test_task_cli import taskq

BACKENDS = ["sqlite", "redis"]


@task_queue(max_retries=0)
def hold(path):
    import os
    import time

    while not os.path.exists(path):
        time.sleep(0.05)
    return "released"


@task_queue(max_retries=0)
def after_it(x):
    return x


def at(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def row_of(out: str, task_id: str) -> str:
    rows = [line for line in out.splitlines() if line.startswith(task_id[:8])]
    assert len(rows) == 1, out
    return rows[0]


def test_queue_wait_counts_from_release_and_the_cli_says_why_a_task_waits(make_server, tmp_path):
    server = make_server(gpus=[], cpu_workers=1)
    jupyter_taskq.connect(server.url, TOKEN)
    release = tmp_path / "release"
    first = hold.put(str(release))
    wait_for(lambda: first.info()["status"] == "RUNNING", 30, 0.1, "the first task running")
    second = after_it.put(1, after=[first])
    later = after_it.put(2, delay=3600)

    rc, out, err = taskq("ls", url=server.url)
    assert rc == 0, err
    header = out.splitlines()[0]
    assert "WAITING FOR" in header
    column = header.index("WAITING FOR")
    assert row_of(out, second.id)[column:].startswith("1 task ")
    start = datetime.datetime.fromtimestamp(at(later.info()["start_at"])).strftime("%H:%M")
    assert row_of(out, later.id)[column:].startswith("start ") and start in row_of(out, later.id)
    assert row_of(out, first.id)[column:].startswith("- ")  # running: waits for nothing
    rc, out, err = taskq("top", "--once", url=server.url)
    assert rc == 0 and "1 task" in row_of(out.split("WAITING FOR", 1)[1], second.id), out

    release.write_text("go")
    assert second.result(timeout=60) == 1
    a, b = first.info(), second.info()
    # What the wait histogram must hold: each task from when it could start. The second could start when the
    # first ended; from its submission it waited the whole run of the first as well.
    expected = (at(a["started_at"]) - at(a["created_at"])) + (at(b["started_at"]) - at(a["ended_at"]))
    from_submission = (at(a["started_at"]) - at(a["created_at"])) + (at(b["started_at"]) - at(b["created_at"]))
    assert from_submission - expected > 0.5  # the first ran for the seconds the CLI took

    families = wait_for(lambda: (f := scrape(server)) and total(f["taskq_task_wait_seconds"],
                                                                 "taskq_task_wait_seconds_count") == 2 and f,
                        30, 0.2, "both waits counted")
    measured = total(families["taskq_task_wait_seconds"], "taskq_task_wait_seconds_sum", pool="cpu")
    assert abs(measured - expected) < 0.01, (measured, expected, from_submission)
    later.cancel()
