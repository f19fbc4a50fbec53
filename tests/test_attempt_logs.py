"""Each attempt keeps its own log: a retry starts a new one instead of appending to (or replacing) the last
attempt's; ``GET tasks/<id>/logs?attempt=N`` and ``handle.logs(attempt=N)`` read attempt N's, the latest by
default, and the attempt history gives each attempt's log size. On both queues."""

from __future__ import annotations

import io
import threading

from jupyter_taskq.notebook.client import TaskHandle

BACKENDS = ["sqlite", "redis"]


def fails_twice(folder):
    """Attempt n prints its number; the first two fail, the third returns n."""
    import os

    n = len(os.listdir(folder)) + 1
    open(os.path.join(folder, str(n)), "w").close()
    print(f"attempt {n} starts")
    if n < 3:
        raise ValueError(f"attempt {n} fails")
    print(f"attempt {n} done")
    return n


def test_each_attempt_keeps_its_own_log(shared_server, tmp_path):
    client = shared_server.client()
    handle = TaskHandle(client.submit(fails_twice, (str(tmp_path),), max_retries=2).id, client=client)
    assert handle.result(timeout=90) == 3
    logs = {n: handle.logs(attempt=n) for n in (1, 2, 3)}
    for n in (1, 2):
        assert logs[n].startswith(f"attempt {n} starts\n")
        assert f"ValueError: attempt {n} fails" in logs[n]  # its own traceback, in its own log
    assert logs[3] == "attempt 3 starts\nattempt 3 done\n"
    for n, text in logs.items():
        others = {1, 2, 3} - {n}
        assert not any(f"attempt {m} " in text for m in others), f"attempt {n}'s log holds another's lines"
    assert handle.logs() == logs[3]  # the latest attempt's by default
    sizes = [entry["log_size"] for entry in handle.attempts()]
    assert sizes == [len(logs[n].encode()) for n in (1, 2, 3)]
    assert client.logs(handle.id, 0, 1)["attempt"] == 1 and client.logs(handle.id)["attempt"] == 3


def test_a_follower_reads_each_attempt_from_its_start(shared_server, tmp_path):
    client = shared_server.client()
    handle = TaskHandle(client.submit(fails_twice, (str(tmp_path),), max_retries=2).id, client=client)
    out = io.StringIO()
    follower = threading.Thread(target=handle.logs, kwargs={"follow": True, "file": out}, daemon=True)
    follower.start()
    follower.join(90)
    assert not follower.is_alive()
    text = out.getvalue()
    assert "attempt 3 starts\nattempt 3 done\n" in text
    # whichever attempts the follower saw, each began at its own first line
    assert "[log truncated to its tail]" not in text


def test_asking_for_an_attempt_that_does_not_exist_is_a_clear_error(shared_server):
    client = shared_server.client()
    handle = TaskHandle(client.submit(sorted, ([2, 1],)).id, client=client)
    handle.wait(60)
    logs = f"{shared_server.url}taskq/api/tasks/{handle.id}/logs"
    missing = client.session.get(logs, params={"attempt": 2})
    assert missing.status_code == 404 and "no attempt 2" in missing.json()["message"]
    bad = client.session.get(logs, params={"attempt": "latest"})
    assert bad.status_code == 400 and "attempt" in bad.json()["message"]
    assert client.session.get(logs, params={"attempt": 1}).json()["attempt"] == 1


def floods_then_fails(folder, total_bytes):
    """Attempt 1 prints ``total_bytes`` of numbered 64-byte lines (past the cap) and fails; attempt 2 prints one line."""
    import os
    import sys

    n = len(os.listdir(folder)) + 1
    open(os.path.join(folder, str(n)), "w").close()
    if n == 1:
        for i in range(total_bytes // 64):
            sys.stdout.write(f"line {i:012d} {'x' * 45}\n")
        sys.stdout.flush()
        raise ValueError("flooded")
    print("second attempt")
    return n


def test_a_capped_attempt_keeps_its_tail_and_the_next_attempt_starts_clean(make_server, tmp_path):
    server = make_server(gpus=[], cpu_workers=1, log_max_bytes=200_000)
    client = server.client()
    total = 64 * 20_000  # 1.28 MB, past the 200 kB cap
    (tmp_path / "marks").mkdir()
    handle = TaskHandle(client.submit(floods_then_fails, (str(tmp_path / "marks"), total), max_retries=1).id,
                        client=client)
    assert handle.result(timeout=90) == 2
    assert handle.logs(attempt=2) == "second attempt\n"  # no marker: attempt 1's dropped count is its own
    first = handle.logs(attempt=1)
    marker, _, kept = first.partition("\n")
    dropped = int(marker.split()[1])
    assert marker == f"[jupyter-taskq: {dropped} bytes of earlier output dropped; the log keeps its tail]"
    lines = kept.splitlines()
    start = dropped // 64
    assert lines[:3] == [f"line {i:012d} {'x' * 45}" for i in range(start, start + 3)]  # contiguous from the cut
    assert f"line {total // 64 - 1:012d}" in kept and "ValueError: flooded" in kept
    assert [entry["log_size"] for entry in handle.attempts()] == [dropped + len(kept.encode()), 15]
