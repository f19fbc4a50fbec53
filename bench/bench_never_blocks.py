"""The server never blocks: `GET stats` latency while a big object-store upload and a big batch run.

    python bench/bench_never_blocks.py [--payload-mb 1024] [--batch 20000] [--backend redis|sqlite]

Starts moto's S3 server (``moto_server``, from the test extra), a ``redis-server`` and a real
``jupyter server`` with the extension whose task files live in the bucket (``files_dir=s3://...``),
then, at the same time: submits one payload of ``--payload-mb`` MB (streamed from a file; the
server publishes it to S3), submits ``--batch`` tiny tasks with ``Client.submit_many`` (each
payload published to S3), and asks ``GET stats`` every 20 ms. Reports the latency percentiles
of those stats requests while the work ran. Target: p99 < 50 ms.

``--backend sqlite`` runs them on the SQLite queue with the task files on local disk (no object store).
No worker runs: nothing is executed, only submitted. Everything runs in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import TOKEN, TaskqServer, free_port, wait_for  # noqa: E402

AUTH = {"Authorization": f"token {TOKEN}"}


def tiny(x):
    return x


def start_moto(root: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)], stdout=open(root / "moto.log", "ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"

    def answers():
        try:
            return requests.get(endpoint, timeout=1).status_code < 500
        except requests.RequestException:
            return False

    wait_for(answers, 30, 0.1, "moto's S3 server")
    import s3fs

    s3fs.S3FileSystem(endpoint_url=endpoint).mkdir("bench")
    return proc, endpoint


def make_payload(path: Path, megabytes: int) -> None:
    from jupyter_taskq.payload import dumps_call

    path.write_bytes(dumps_call(len, (b"x" * (megabytes * 1024 * 1024),), None))


def run_upload(url: str, payload: Path) -> tuple[str, float]:
    start = time.monotonic()
    with open(payload, "rb") as body:
        response = requests.post(url + "taskq/api/tasks", data=body, headers={
            **AUTH, "Content-Type": "application/octet-stream"}, timeout=3600)
    assert response.status_code == 201, response.text
    return "upload_s", time.monotonic() - start


def run_batch(client, size: int) -> tuple[str, float]:
    start = time.monotonic()
    handles = client.submit_many(tiny, range(size))
    assert len(handles) == size
    return "batch_s", time.monotonic() - start


def recorded(fn, done, *args) -> None:
    """A load process: report its time, or its error (the run then counts as failed)."""
    try:
        done.put(fn(*args))
    except BaseException as exc:  # noqa: BLE001 - reported by the parent
        done.put(("error", f"{fn.__name__}: {type(exc).__name__}: {exc}"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--payload-mb", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=20000)
    parser.add_argument("--backend", choices=["redis", "sqlite"], default="redis")
    parser.add_argument("--json", help="also write the numbers here")
    parser.add_argument("--timeline", action="store_true", help="print the worst latency of each 2 s")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (server.log)")
    args = parser.parse_args()
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        os.environ[name] = value
    root = Path(tempfile.mkdtemp(prefix="taskq-never-blocks-"))
    moto = None
    server = None
    try:
        config = dict(gpus=[], cpu_workers=1, start_workers=False)
        upload = args.payload_mb > 0
        if args.backend == "redis":
            moto, endpoint = start_moto(root)
            config.update(backend="redis", files_dir="s3://bench/queue", files_options={"endpoint_url": endpoint})
        config["max_payload_size"] = (args.payload_mb + 64) * 1024 * 1024
        server = TaskqServer(root, **config).start(wait_workers=False)
        client = server.client()
        payload = root / "big.payload"
        if upload:
            make_payload(payload, args.payload_mb)

        # The load runs in processes of its own, as a kernel's submissions do: in this process
        # their pickling and streaming would hold the prober's GIL and count against the server.
        context = multiprocessing.get_context("fork")
        done = context.Queue()
        work = [context.Process(target=recorded, args=(run_batch, done, client, args.batch), name="batch")]
        if upload:
            work.append(context.Process(target=recorded, args=(run_upload, done, server.url, payload), name="upload"))
        latencies = []
        for process in work:
            process.start()
        session = requests.Session()
        session.trust_env = False
        timeline = []
        slow = []  # (seconds since the start, ms) of answers over 200 ms: when did the loop stall?
        began = time.perf_counter()
        while any(p.is_alive() for p in work):
            start = time.perf_counter()
            response = session.get(server.url + "taskq/api/stats", headers=AUTH, timeout=600)
            latencies.append((time.perf_counter() - start) * 1000)
            timeline.append((start - began, latencies[-1]))
            if latencies[-1] > 200:
                slow.append((round(start - began, 1), round(latencies[-1])))
            assert response.status_code == 200
            time.sleep(0.02)
        timings: dict[str, float] = {}
        errors: list[str] = []
        for process in work:
            process.join()
        while not done.empty():
            name, value = done.get()
            if name == "error":
                errors.append(value)
            else:
                timings[name] = value
        if len(timings) < len(work) and not errors:
            errors.append("a load process ended without reporting")
        if args.timeline:  # the worst answer of each 2-second window, to see which phase is slow
            windows: dict[int, float] = {}
            for at, ms in timeline:
                windows[int(at // 2) * 2] = max(windows.get(int(at // 2) * 2, 0), ms)
            print(" ".join(f"{t}s:{ms:.0f}" for t, ms in sorted(windows.items())), file=sys.stderr)
        latencies.sort()
        q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) >= 2 else latencies * 99
        result = {"backend": args.backend, "payload_mb": args.payload_mb if upload else 0, "batch": args.batch,
                  **{k: round(v, 1) for k, v in timings.items()}, "stats_requests": len(latencies),
                  "p50_ms": round(q[49], 1), "p99_ms": round(q[98], 1), "max_ms": round(latencies[-1], 1),
                  "target": "p99 < 50 ms", "met": q[98] < 50 and not errors, "errors": errors, "slow": slow[:20]}
        print(json.dumps(result, indent=1))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
        return 1 if errors else 0
    finally:
        if server is not None:
            server.close()
        if moto is not None:
            os.killpg(moto.pid, signal.SIGKILL)
            moto.wait()
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
