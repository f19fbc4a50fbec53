"""Two "machines" share one queue: each is a `jupyter taskq worker --redis ...` with its own state
directory, working directory and GPU list, sharing only Redis and the files directory. One
machine is killed mid-run; every task still ends COMPLETE (once) or FAILED with its reason."""

from __future__ import annotations

import collections
import os
import signal
import time

import pytest

from conftest import TaskqServer, start_worker_machine, stop_processes, wait_for

pytestmark = pytest.mark.slow

N_TASKS = 500


def make_record():
    def record(n, ledger):
        """Appends its input to a ledger when it finishes, so a task that ran twice shows."""
        import os
        import time

        time.sleep(2 if n % 50 == 25 else 0.05)  # a few slow ones: a machine is surely mid-task when it dies
        with open(ledger, "a") as f:
            f.write(f"{n} {os.environ.get('CUDA_VISIBLE_DEVICES', '')}\n")
        return n * 2

    return record  # a local function travels by value: the workers need not import this test module


def make_sleeper():
    def sleeper(seconds):
        import time

        time.sleep(seconds)

    return sleeper


def test_two_machines_share_the_queue_and_survive_one_dying(tmp_path):
    files = tmp_path / "shared-files"
    server = TaskqServer(tmp_path, gpus=[0, 1], cpu_workers=0, backend="redis", start_workers=False,
                         heartbeat_timeout=3, files_dir=str(files))
    server.start(wait_workers=False)
    machines = {}
    try:
        for name, gpus in (("alpha", "0"), ("beta", "1")):
            machines[name] = start_worker_machine(tmp_path, name, server.redis.url, files, "--gpus", gpus,
                                                  "--cpu-workers", "2", "--heartbeat-timeout", "3")
        client = server.client()
        wait_for(lambda: sum(w["alive"] for w in client.stats()["workers"]) == 6, 60, 0.1, "6 workers on 2 machines")
        hosts = {w["name"].split("/")[0] for w in client.stats()["workers"]}
        assert hosts == {"alpha", "beta"}

        ledger = tmp_path / "ledger.txt"
        record = make_record()
        started = time.monotonic()
        cpu = client.submit_many(record, [(n, str(ledger)) for n in range(N_TASKS - 20)], max_retries=3)
        gpu = [client.submit(record, (n, str(ledger)), gpu=1, max_retries=3) for n in range(N_TASKS - 20, N_TASKS)]
        handles = cpu + gpu

        def finished() -> int:
            return sum(client.list(status=s, limit=1)["total"] for s in ("COMPLETE", "FAILED"))

        slow = {h.id for n, h in enumerate(handles) if n % 50 == 25}

        def alpha_on_a_slow_task() -> bool:
            return any(w["current_task"] in slow for w in client.stats()["workers"] if w["name"].startswith("alpha/"))

        wait_for(lambda: finished() >= 100 and alpha_on_a_slow_task(), 120, 0.05,
                 "100 tasks done and alpha running one of the slow ones")
        os.killpg(machines["alpha"].pid, signal.SIGKILL)  # the machine, workers and all, is gone
        machines["alpha"].wait()
        killed_at = time.monotonic() - started

        done = client.wait([h.id for h in handles], timeout=240)
        all_done_at = time.monotonic() - started
        statuses = collections.Counter(t["status"] for t in done)
        assert statuses["COMPLETE"] + statuses["FAILED"] == N_TASKS, statuses
        for task in done:
            if task["status"] == "FAILED":
                assert task["error"]["message"], f"{task['id']} failed without a reason"
        assert client.stats()["counts"]["RUNNING"] == 0

        ran = collections.Counter(int(line.split()[0]) for line in ledger.read_text().splitlines())
        for n, task in enumerate(done):
            if task["status"] == "COMPLETE":
                assert client.result(task["id"]) == n * 2
                if task["attempt"] == 1:
                    assert ran[n] == 1, f"task {n} ran to the end {ran[n]} times in one attempt"
        devices = {line.split()[1] for line in ledger.read_text().splitlines()
                   if int(line.split()[0]) >= N_TASKS - 20 and len(line.split()) > 1}
        assert devices <= {"0", "1"} and devices, "GPU tasks ran pinned to a machine's GPU"
        reruns = sum(1 for t in done if t["attempt"] > 1)
        assert reruns >= 1, "alpha's running tasks were re-run elsewhere"
        wait_for(lambda: {w["name"].split("/")[0] for w in client.stats()["workers"] if w["alive"]} == {"beta"},
                 20, 0.2, "the stats to show only beta's workers alive")
        # Cancelling a task that runs on the other machine kills it there within 5 s.
        sleeper = client.submit(make_sleeper(), (120,))
        wait_for(lambda: client.get(sleeper.id)["status"] == "RUNNING", 30, 0.05, "the sleeper running on beta")
        asked = time.monotonic()
        assert client.cancel([sleeper.id])["cancelled"] == [sleeper.id]
        wait_for(lambda: client.get(sleeper.id)["status"] == "CANCELLED", 5, 0.05, "CANCELLED within 5 s")
        cancel_seconds = time.monotonic() - asked
        print(f"\ncancel across machines took {cancel_seconds:.2f} s")

        print(f"\ntwo machines: {statuses['COMPLETE']} COMPLETE, {statuses['FAILED']} FAILED; "
              f"{reruns} re-run after alpha died; alpha killed at "
              f"{killed_at:.1f} s, all finished at {all_done_at:.1f} s")
    finally:
        stop_processes(machines.values())
        server.close()
