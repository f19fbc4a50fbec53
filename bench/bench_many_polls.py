"""Many Lab panels: one change reaches every long poll of the change feed as the ids that changed.

    python bench/bench_many_polls.py [--polls 10000] [--backend sqlite|redis]

Starts a real ``jupyter server`` with the extension (one CPU worker), opens ``--polls`` connections
that each long-poll ``GET changes?since=<cursor>&wait=60`` (what every open Lab panel holds), then
submits one task. Reports how many polls were answered with the task's id, how many were told to
refetch everything (``changed: null``, which only a real gap in the feed may cause), how many
connections failed (reset, closed, timed out), and the time from the submit to the last answer.

Each connection is one file descriptor in this process and one in the server: the soft
RLIMIT_NOFILE is raised to the hard limit here (the server inherits it; Jupyter only ever raises
its own), so 10,000 polls need a hard limit above about 10,100.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


async def _poll(host: str, port: int, path: str, token: str, connects: asyncio.Semaphore,
                sent: list, timeout: float) -> tuple[str, object]:
    """One long poll on its own connection: ("ok", answer) or ("failed", why)."""
    try:
        async with connects:  # a few hundred connects at a time: the server's listen backlog is 128
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: token {token}\r\n"
                     "Connection: close\r\n\r\n".encode())
        await writer.drain()
        sent.append(1)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        status = int(head.split(b" ", 2)[1])
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        body = await asyncio.wait_for(reader.readexactly(length), timeout)
        writer.close()
        if status != 200:
            return "failed", f"HTTP {status}: {body[:200]!r}"
        return "ok", json.loads(body)
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, asyncio.LimitOverrunError, ValueError,
            StopIteration) as exc:
        return "failed", f"{type(exc).__name__}: {exc}"


async def hold_polls(url: str, token: str, cursor: str, polls: int, change, timeout: float = 90.0) -> dict:
    """Open ``polls`` long polls since ``cursor``, call ``change()`` (blocking, in a thread) once every
    request is sent; returns ``{"answers": [...], "failures": [...], "changed": change's value,
    "last_answer_s": seconds from the change to the last answer}``."""
    parts = urlsplit(url)
    path = f"{parts.path.rstrip('/')}/taskq/api/changes?since={cursor}&wait=60"
    connects, sent = asyncio.Semaphore(200), []
    tasks = [asyncio.ensure_future(_poll(parts.hostname, parts.port, path, token, connects, sent, timeout))
             for _ in range(polls)]
    deadline = time.monotonic() + timeout
    while len(sent) + sum(t.done() for t in tasks) < polls and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    changed = await asyncio.get_running_loop().run_in_executor(None, change)
    changed_at = time.monotonic()
    results = await asyncio.gather(*tasks)
    return {"answers": [a for kind, a in results if kind == "ok"],
            "failures": [a for kind, a in results if kind == "failed"],
            "changed": changed, "last_answer_s": time.monotonic() - changed_at}


def raise_fd_limit(wanted: int) -> int:
    """The soft RLIMIT_NOFILE raised towards ``wanted`` (at most the hard limit); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return max(soft, target)


def tiny(x):
    return x


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--polls", type=int, default=10_000)
    parser.add_argument("--backend", choices=["sqlite", "redis"], default="sqlite")
    args = parser.parse_args()
    limit = raise_fd_limit(2 * args.polls + 1000)
    if limit < args.polls + 500:
        print(f"the fd limit is {limit}: too low for {args.polls} polls (raise the hard limit: ulimit -Hn)")
        return 2
    import requests

    from conftest import TOKEN, TaskqServer

    with tempfile.TemporaryDirectory() as tmp:
        server = TaskqServer(Path(tmp), gpus=[], cpu_workers=1, backend=args.backend,
                             extra_args=[f"--ServerApp.min_open_files_limit={limit}"]).start()
        try:
            client = server.client()
            cursor = requests.get(server.url + "taskq/api/changes", headers={"Authorization": f"token {TOKEN}"},
                                  timeout=30).json()["cursor"]
            started = time.monotonic()
            outcome = asyncio.run(hold_polls(server.url, TOKEN, cursor, args.polls,
                                             lambda: client.submit(tiny, (1,), name="bench-many-polls").id))
            task_id = outcome["changed"]
            answers = outcome["answers"]
            named = sum(1 for a in answers if a["changed"] and task_id in a["changed"])
            null = sum(1 for a in answers if a["changed"] is None)
            print(f"{args.polls} long polls ({args.backend}), one task submitted: "
                  f"{named} answered with its id ({100 * named / args.polls:.1f}%), {null} told to refetch "
                  f"everything, {len(outcome['failures'])} failed; last answer {outcome['last_answer_s']:.2f} s "
                  f"after the submit ({time.monotonic() - started:.1f} s in all)")
            for why in sorted(set(outcome["failures"]))[:5]:
                print("  failure:", why)
        finally:
            server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
