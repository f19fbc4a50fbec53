"""A batch of any size works on a server with a desktop-sized descriptor limit.

The streamed batch used to keep one open spool file per queued payload until the batch
ended, so a batch with more tasks than the process's soft ``RLIMIT_NOFILE`` (1,024 on a
typical desktop) reset the connection. Here the server runs with a soft limit of 256 and
takes a batch of 2,000 tasks in one request.
"""

from __future__ import annotations

import pytest

from conftest import TaskqServer, wait_for

FD_LIMIT = 256
TASKS = 2_000


@pytest.fixture
def low_fd_server(tmp_path):
    server = TaskqServer(tmp_path, gpus=[], cpu_workers=2, fd_limit=FD_LIMIT).start()
    yield server
    server.close()


def test_a_batch_larger_than_the_descriptor_limit_is_accepted_and_runs(low_fd_server):
    limits = open(f"/proc/{low_fd_server.proc.pid}/limits").read()
    assert any(line.startswith("Max open files") and line.split()[3] == str(FD_LIMIT) for line in limits.splitlines()), \
        "the low limit applies to the server"
    client = low_fd_server.client()
    handles = client.submit_many(abs, [-i for i in range(TASKS)])
    assert len(handles) == TASKS and len({h.id for h in handles}) == TASKS
    wait_for(lambda: client.stats()["counts"].get("COMPLETE", 0) == TASKS, timeout=600, interval=0.5,
             message=f"all {TASKS} tasks COMPLETE")
    assert [handles[i].result() for i in (0, 1, TASKS - 1)] == [0, 1, TASKS - 1]
