"""Issue 25: a worker that hangs (not dies) never means a second running copy, and a cancel is final.

A stopped worker misses its heartbeat: its supervisor kills it with its keeper and task process
before recovery requeues the attempt. A stopped keeper or task process leaves the worker
heartbeating: nothing is requeued. A cancel that came while the worker was stopped ends the task
CANCELLED, never requeued. Each task copy notes in a ledger when it starts, which earlier copies
were still alive at that moment (none, ever), and when it finishes.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import psutil
import pytest

from conftest import TaskqServer, start_worker_machine, stop_processes, wait_for

BACKENDS = ["sqlite", "redis"]
HEARTBEAT_TIMEOUT = 4  # seconds: short, yet not missed by a live worker on two busy cores


def runs_once(ledger, gate):
    """Note this copy's start and the earlier copies still alive now, wait for the gate, note the finish."""
    import os
    import time

    def alive(pid):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            return False
        return stat[stat.rfind(b")") + 2:][:1] not in (b"Z", b"X")

    earlier = []
    if os.path.exists(ledger):
        earlier = [int(line.split()[1]) for line in open(ledger).read().splitlines() if line.startswith("start")]
    with open(ledger, "a") as f:
        f.write(f"start {os.getpid()} {' '.join(str(p) for p in earlier if alive(p)) or '-'}\n")
    while not os.path.exists(gate):
        time.sleep(0.01)
    with open(ledger, "a") as f:
        f.write(f"finished {os.getpid()}\n")
    return "done"


def lines(ledger, kind):
    return [line.split() for line in ledger.read_text().splitlines() if line.startswith(kind)] \
        if ledger.exists() else []


def no_overlap(ledger):
    """No copy started while an earlier one was alive (stopped counts as alive)."""
    return all(line[2] == "-" for line in lines(ledger, "start"))


def attempt_tree(client, task_id, ledger) -> dict[str, int]:
    """The pids of the worker running the task, its keeper and its task process."""
    wait_for(lambda: lines(ledger, "start"), 60, message="the task started")
    task_pid = int(lines(ledger, "start")[0][1])
    worker = wait_for(lambda: [w["pid"] for w in client.stats()["workers"] if w["current_task"] == task_id], 10,
                      message="the worker running it")[0]
    keeper = psutil.Process(task_pid).ppid()
    assert psutil.Process(keeper).ppid() == worker
    return {"worker": worker, "keeper": keeper, "task": task_pid}


def gone(pid):
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def stays(condition, seconds, message):
    """``condition`` holds all along the next ``seconds`` (what must not happen while a process is stopped)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert condition(), message
        time.sleep(0.1)


def test_a_stopped_worker_is_killed_before_its_attempt_runs_again(make_server, tmp_path):
    server = make_server(gpus=[], cpu_workers=2, heartbeat_timeout=HEARTBEAT_TIMEOUT)
    client = server.client()
    ledger, gate = tmp_path / "ledger", tmp_path / "gate"
    handle = client.submit(runs_once, (str(ledger), str(gate)), max_retries=1)
    tree = attempt_tree(client, handle.id, ledger)
    os.kill(tree["worker"], signal.SIGSTOP)
    wait_for(lambda: len(lines(ledger, "start")) == 2, 30, message="the second attempt started")
    assert no_overlap(ledger), f"two copies ran at once: {ledger.read_text()}"
    wait_for(lambda: all(gone(pid) for pid in tree.values()), 10, message="the stopped worker's tree gone")
    gate.touch()
    assert handle.result(timeout=30) == "done"
    assert len(lines(ledger, "finished")) == 1, ledger.read_text()
    assert [a["reason"] for a in client.attempts(handle.id)] == ["worker lost", "complete"]
    wait_for(lambda: len(server.worker_pids()) == 2, 30, message="the killed worker restarted")


@pytest.mark.parametrize("which", ["keeper", "task"])
def test_a_stopped_keeper_or_task_process_is_not_run_twice(make_server, tmp_path, backend, which):
    """The worker still heartbeats: its attempt is not lost, only slow; it completes once continued."""
    if backend == "redis":
        pytest.skip("the worker's own processes: the same on both stores")
    client = make_server(gpus=[], cpu_workers=2, heartbeat_timeout=HEARTBEAT_TIMEOUT).client()
    ledger, gate = tmp_path / "ledger", tmp_path / "gate"
    handle = client.submit(runs_once, (str(ledger), str(gate)), max_retries=1)
    tree = attempt_tree(client, handle.id, ledger)
    os.kill(tree[which], signal.SIGSTOP)
    gate.touch()
    try:
        stays(lambda: len(lines(ledger, "start")) == 1 and client.get(handle.id)["attempt"] == 1,
              2 * HEARTBEAT_TIMEOUT + 1, f"the task ran again while its {which} was stopped")
    finally:
        os.kill(tree[which], signal.SIGCONT)
    assert handle.result(timeout=30) == "done"
    assert client.get(handle.id)["attempt"] == 1 and len(lines(ledger, "finished")) == 1


def test_a_cancel_while_the_worker_is_stopped_is_final(make_server, tmp_path):
    client = make_server(gpus=[], cpu_workers=2, heartbeat_timeout=HEARTBEAT_TIMEOUT).client()
    ledger, gate = tmp_path / "ledger", tmp_path / "gate"
    handle = client.submit(runs_once, (str(ledger), str(gate)), max_retries=3)
    tree = attempt_tree(client, handle.id, ledger)
    os.kill(tree["worker"], signal.SIGSTOP)
    assert client.cancel(handle.id)["cancelled"] == [handle.id]
    wait_for(lambda: client.get(handle.id)["status"] == "CANCELLED", 30, message="CANCELLED")
    wait_for(lambda: all(gone(pid) for pid in tree.values()), 10, message="the stopped worker's tree gone")
    try:
        os.kill(tree["worker"], signal.SIGCONT)
    except ProcessLookupError:
        pass
    gate.touch()
    stays(lambda: client.get(handle.id)["status"] == "CANCELLED" and len(lines(ledger, "start")) == 1,
          HEARTBEAT_TIMEOUT + 2, "a cancelled task ran again")
    assert lines(ledger, "finished") == []
    task = client.get(handle.id)
    assert task["attempt"] == 1 and task["error"]["type"] == "Cancelled"
    assert [a["reason"] for a in client.attempts(handle.id)] == ["cancelled"]


@pytest.mark.slow
def test_a_worker_whose_store_writes_block_does_not_make_a_second_copy(make_server, tmp_path, backend):
    """The test holds SQLite's write lock past the heartbeat timeout: every heartbeat blocks. Whatever
    recovery does once it can write, the task never runs twice at once, and completes once."""
    if backend == "redis":
        pytest.skip("SQLite's write lock")
    server = make_server(gpus=[], cpu_workers=2, heartbeat_timeout=HEARTBEAT_TIMEOUT)
    client = server.client()
    ledger, gate = tmp_path / "ledger", tmp_path / "gate"
    handle = client.submit(runs_once, (str(ledger), str(gate)), max_retries=2)
    attempt_tree(client, handle.id, ledger)
    db = sqlite3.connect(server.state_dir / "taskq.db", timeout=30, isolation_level=None)
    db.execute("begin exclusive")
    try:
        time.sleep(2 * HEARTBEAT_TIMEOUT + 1)  # the point is the lock held this long: nothing to wait on
    finally:
        db.execute("rollback")
        db.close()
    gate.touch()
    wait_for(lambda: client.get(handle.id)["status"] == "COMPLETE", 60, message="COMPLETE")
    assert no_overlap(ledger), f"two copies ran at once: {ledger.read_text()}"
    assert len(lines(ledger, "finished")) == 1, ledger.read_text()


@pytest.mark.slow
def test_another_machines_stopped_worker_is_fenced(tmp_path, backend):
    """A worker on another machine (its own hostname: ``unshare -u``) cannot be killed from the server. When
    it stops answering, its attempt is requeued on a machine that answers, and the attempt number fences the
    stopped one: once continued, its worker finds the task went on without it and ends its copy, which
    never records anything; the task stays COMPLETE from the second attempt."""
    if backend == "sqlite":
        pytest.skip("machines share a queue through Redis")
    files = tmp_path / "shared-files"
    server = TaskqServer(tmp_path, gpus=[], cpu_workers=0, backend="redis", start_workers=False,
                         heartbeat_timeout=HEARTBEAT_TIMEOUT, files_dir=str(files))
    server.start(wait_workers=False)
    machines = []
    try:
        home = tmp_path / "far"
        home.mkdir()
        worker_cmd = (f"hostname far-machine && exec {sys.executable} -m jupyter_taskq.worker --files-dir {files} "
                      f"--state-dir {home / 'state'} --name far --cpu-workers 1 --heartbeat-timeout {HEARTBEAT_TIMEOUT}")
        machines.append(subprocess.Popen(
            ["unshare", "-u", "sh", "-c", worker_cmd], cwd=home, stdout=open(home / "worker.log", "ab"),
            stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ, JUPYTER_TASKQ_REDIS_URL=server.redis.url)))
        client = server.client()
        wait_for(lambda: any(w["alive"] for w in client.stats()["workers"]), 60, 0.1, "the far machine's worker")
        ledger, gate = tmp_path / "ledger", tmp_path / "gate"
        handle = client.submit(runs_once, (str(ledger), str(gate)), max_retries=1)
        tree = attempt_tree(client, handle.id, ledger)
        os.killpg(machines[0].pid, signal.SIGSTOP)  # its supervisor and worker; the keeper's group runs on
        machines.append(start_worker_machine(tmp_path, "near", server.redis.url, files, "--cpu-workers", "1",
                                             "--heartbeat-timeout", str(HEARTBEAT_TIMEOUT)))
        wait_for(lambda: len(lines(ledger, "start")) == 2, 60, message="the second attempt started on near")
        os.kill(tree["worker"], signal.SIGCONT)  # the worker alone: its supervisor cannot kill it meanwhile
        wait_for(lambda: gone(tree["task"]), 10, message="the far worker ended its superseded copy")
        wait_for(lambda: "the task went on without it" in (home / "worker.log").read_text(), 20,
                 message="the far worker saying why it ended its copy")  # written after the kill: not at once
        gate.touch()
        assert handle.result(timeout=30) == "done"
        os.killpg(machines[0].pid, signal.SIGCONT)
        stays(lambda: client.get(handle.id)["status"] == "COMPLETE" and client.get(handle.id)["attempt"] == 2,
              2, "the superseded attempt changed the task")
        assert len(lines(ledger, "finished")) == 1, ledger.read_text()
        assert [a["reason"] for a in client.attempts(handle.id)] == ["worker lost", "complete"]
    finally:
        for proc in machines:
            try:
                os.killpg(proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        stop_processes(machines)
        server.close()
