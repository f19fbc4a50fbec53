"""A log past its cap keeps a contiguous tail and says exactly how much it dropped; ``logs()`` returns
all that is kept; a follower that falls behind is told how many bytes it missed."""

from __future__ import annotations

import re

import pytest

from conftest import TaskqServer
from test_object_store import BUCKET, s3  # noqa: F401 - the moto fixture

CAP = 10 * 1024 * 1024  # the default c.TaskQueue.log_max_bytes


def print_numbered(total_bytes):
    """Numbered lines of 64 bytes, written as fast as Python can, 1,000 lines per write."""
    import sys

    n = written = 0
    while written < total_bytes:
        block = "".join(f"line {i:012d} {'x' * 45}\n" for i in range(n, n + 1000))
        sys.stdout.write(block)
        written += len(block)
        n += 1000
    sys.stdout.flush()
    return written, n


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = TaskqServer(tmp_path_factory.mktemp("logcap"), gpus=[], cpu_workers=1).start()
    yield server
    server.close()


def check_contiguous_tail(text: str, total: int, lines: int) -> int:
    """The kept text is one marker line, then whole numbered lines up to the last, none missing."""
    first, _, kept = text.partition("\n")
    match = re.fullmatch(r"\[jupyter-taskq: (\d+) bytes of earlier output dropped; the log keeps its tail\]", first)
    assert match, first[:200]
    dropped = int(match.group(1))
    numbers = [int(line[5:17]) for line in kept.splitlines()]
    assert numbers == list(range(numbers[0], lines)), "a line is missing from the kept part"
    assert all(len(line) == 63 for line in kept.splitlines())
    assert dropped == total - len(kept.encode())  # exact, to the byte
    assert dropped == numbers[0] * 64  # the kept part starts at a line start
    return dropped


def test_a_50_mb_log_keeps_a_contiguous_tail_and_an_exact_dropped_count(server):
    client = server.client()
    handle = client.submit(print_numbered, (50 * 1024 * 1024,))
    total, lines = handle.result(timeout=300)
    text = handle.logs()
    dropped = check_contiguous_tail(text, total, lines)
    kept = total - dropped
    assert CAP // 2 - 4096 <= kept <= CAP  # all of the kept part came back, not just its first page
    assert client.get(handle.id)["log"]["dropped"] == dropped


def test_a_follower_that_falls_behind_is_told_what_it_missed(server):
    client = server.client()
    handle = client.submit(print_numbered, (30 * 1024 * 1024,))
    first = client.logs(handle.id, 0)  # read the first page, then fall behind
    assert first["skipped"] == 0
    total, lines = handle.result(timeout=300)
    chunk = client.logs(handle.id, first["next_offset"])
    assert chunk["skipped"] == chunk["offset"] - first["next_offset"] > 0
    assert chunk["data"].startswith(f"[jupyter-taskq: {chunk['skipped']} bytes of earlier output dropped")
    pages, offset = [chunk], chunk["next_offset"]
    while offset < chunk["size"]:
        chunk = client.logs(handle.id, offset)
        assert chunk["skipped"] == 0 and chunk["offset"] == offset  # contiguous pages
        pages.append(chunk)
        offset = chunk["next_offset"]
    assert offset == total
    kept = "".join(p["data"] for p in pages).partition("\n")[2]
    numbers = [int(line[5:17]) for line in kept.splitlines()]
    assert numbers == list(range(numbers[0], lines))


@pytest.mark.slow
def test_a_capped_log_on_another_machine_reads_the_same_through_s3(tmp_path, s3):  # noqa: F811
    """The far worker publishes the log compacted (no hole travels); the server reads it back the same."""
    from conftest import start_worker_machine, stop_processes, wait_for

    endpoint, fs = s3
    url = f"s3://{BUCKET}/queue"
    server = TaskqServer(tmp_path, gpus=[], cpu_workers=0, backend="redis", start_workers=False,
                         files_dir=url, files_options={"endpoint_url": endpoint})
    server.start(wait_workers=False)
    worker = start_worker_machine(tmp_path, "far", server.redis.url, url, "--gpus", "", "--cpu-workers", "1",
                                  "--log-max-bytes", "200000",
                                  env={"JUPYTER_TASKQ_FILES_OPTIONS": f'{{"endpoint_url": "{endpoint}"}}'})
    try:
        client = server.client()
        wait_for(lambda: any(w["alive"] for w in client.stats()["workers"]), 60, 0.1, "the far worker")
        handle = client.submit(print_numbered, (3 * 1024 * 1024,))
        total, lines = handle.result(timeout=120)
        dropped = check_contiguous_tail(handle.logs(), total, lines)
        assert total - dropped <= 200_000
        assert client.get(handle.id)["log"]["dropped"] == dropped
    finally:
        stop_processes([worker])
        server.close()
