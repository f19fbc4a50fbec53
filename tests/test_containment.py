"""Process containment (issue 25 items 5-7, issue 19 item 8): an attempt's whole tree is held by cgroups
of its own (jupyter_taskq/worker/cgroups.py) where the machine has them, as this one and CI do.

Each escape that ``memory=`` and ``cpu=`` once let through is stopped: a shared mapping, children,
/dev/shm, a task widening its own affinity; nothing outlives its attempt when the worker and the keeper
die together, or when a warm process is kept; no attempt cgroup is left behind.
"""

from __future__ import annotations

import os
import random
import signal

import psutil
import pytest

from conftest import TaskqServer, wait_for
from jupyter_taskq.worker import cgroups

pytestmark = pytest.mark.skipif(cgroups.probe().memory is None or cgroups.probe().cpuset is None,
                                reason="needs a writable memory and cpuset cgroup (root on a cgroup v1 or v2 host)")


def notebook_function(source: str):
    """A function defined as in a notebook (module __main__), so it travels by value."""
    namespace = {"__name__": "__main__"}
    exec(source, namespace)  # noqa: S102 - test-only
    return next(v for k, v in namespace.items() if callable(v) and not k.startswith("__"))


shared_mapping = notebook_function(
    "def shared_mapping(mib):\n"
    "    import mmap\n"
    "    m = mmap.mmap(-1, mib * 1024 * 1024, flags=mmap.MAP_SHARED)\n"
    "    for i in range(0, len(m), 4096):\n"
    "        m[i] = 1\n"
    "    return mib\n")
children_allocate = notebook_function(
    "def children_allocate(n, mib):\n"
    "    import subprocess, sys\n"
    "    code = f'b = bytearray({mib} * 1024 * 1024)\\nfor i in range(0, len(b), 4096): b[i] = 1\\nimport time; time.sleep(30)'\n"
    "    procs = [subprocess.Popen([sys.executable, '-c', code]) for _ in range(n)]\n"
    "    return [p.wait() for p in procs]\n")
raise_rlimit = notebook_function(
    "def raise_rlimit(mib):\n"
    "    import resource\n"
    "    resource.setrlimit(resource.RLIMIT_DATA, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))\n"
    "    b = bytearray(mib * 1024 * 1024)\n"
    "    for i in range(0, len(b), 4096):\n"
    "        b[i] = 1\n"
    "    return mib\n")
shm_file = notebook_function(
    "def shm_file(name, mib):\n"
    "    import os\n"
    "    path = os.path.join('/dev/shm', name)\n"
    "    with open(path, 'wb') as f:\n"
    "        f.write(b'x' * (mib * 1024 * 1024))\n"
    "    return os.path.exists(path)\n")
widen_affinity = notebook_function(
    "def widen_affinity():\n"
    "    import os\n"
    "    try:\n"
    "        os.sched_setaffinity(0, range(os.cpu_count()))\n"
    "    except OSError:\n"
    "        pass\n"
    "    return sorted(os.sched_getaffinity(0))\n")
leave_behind = notebook_function(
    "def leave_behind(mode, token):\n"
    "    import os, subprocess, threading, time\n"
    "    if mode == 'thread':\n"
    "        def talk():\n"
    "            while True:\n"
    "                print('from a leftover thread', flush=True)\n"
    "                time.sleep(0.02)\n"
    "        threading.Thread(target=talk, daemon=True).start()\n"
    "        time.sleep(0.1)\n"
    "    if mode == 'child':\n"
    "        subprocess.Popen(['sleep', token])\n"
    "    print('attempt', mode, flush=True)\n"
    "    return os.getpid()\n")


def setsid_sleepers(token, started):
    """Ten sleepers in new sessions (their own process groups), then wait for ever."""
    import subprocess
    import time

    for _ in range(10):
        subprocess.Popen(["sleep", token], start_new_session=True)
    open(started, "w").close()
    time.sleep(600)


def sleepers(token) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline", "status"])
            if p.info["cmdline"] == ["sleep", token] and p.info["status"] != psutil.STATUS_ZOMBIE]


def attempt_groups() -> set[str]:
    """Attempt cgroups on this machine whose keeper is one of this test's processes' children."""
    found = set()
    for parent in cgroups.probe().dirs():
        found |= {name for name in os.listdir(parent) if name.startswith(cgroups.PREFIX) and "probe" not in name}
    return found


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    server = TaskqServer(tmp_path_factory.mktemp("containment"), gpus=[], cpu_workers=1).start()
    yield server
    server.close()


def failed(client, task) -> dict:
    [done] = client.wait([task.id], timeout=90)
    assert done["status"] == "FAILED", done
    return done


def assert_memory_exceeded(done, mib):
    assert done["error"]["type"] == "MemoryLimitExceeded", done["error"]
    assert f"exceeded memory={mib} MiB (peak " in done["error"]["message"], done["error"]
    assert done["attempt"] == 1  # max_retries=0: not retried


def test_a_shared_mapping_past_memory_fails_with_memory_limit_exceeded(one_worker):
    client = one_worker.client()
    done = failed(client, client.submit(shared_mapping, (1536,), memory=256, max_retries=0))
    assert_memory_exceeded(done, 256)
    assert done["limits"] == {"memory": f"cgroup {cgroups.probe().memory[0]}", "enforced": True}
    assert client.submit(shared_mapping, (64,), memory=256).result(timeout=60) == 64  # within it: fine


def test_children_count_against_the_attempts_memory(one_worker):
    client = one_worker.client()
    done = failed(client, client.submit(children_allocate, (4, 200), memory=256, max_retries=0))
    assert_memory_exceeded(done, 256)


def test_raising_its_own_rlimit_does_not_lift_memory(one_worker):
    client = one_worker.client()
    assert_memory_exceeded(failed(client, client.submit(raise_rlimit, (600,), memory=256, max_retries=0)), 256)


def test_a_tasks_dev_shm_files_go_with_it(one_worker):
    client = one_worker.client()
    name = f"taskq-test-{random.random():.9f}"
    assert client.submit(shm_file, (name, 8)).result(timeout=60) is True  # the task saw its file
    assert not os.path.exists(os.path.join("/dev/shm", name))
    # And past memory=, a /dev/shm file counts like any memory of the attempt.
    done = failed(client, client.submit(shm_file, (name, 512), memory=256, max_retries=0))
    assert_memory_exceeded(done, 256)
    assert not os.path.exists(os.path.join("/dev/shm", name))


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_cpu_1_cannot_widen_its_cpuset(one_worker):
    client = one_worker.client()
    task = client.submit(widen_affinity, cpu=1)
    cores = task.result(timeout=60)
    assert len(cores) == 1
    assert client.get(task.id)["limits"] == {"cpu": f"cpuset cgroup {cgroups.probe().cpuset[0]}", "enforced": True}
    assert client.submit(widen_affinity).result(timeout=60) == sorted(os.sched_getaffinity(0))  # no cpu=: all


def test_setsid_children_die_when_worker_and_keeper_are_killed_together(make_server, tmp_path):
    server = make_server(gpus=[], cpu_workers=1)
    client = server.client()
    token = f"{5000 + random.random() * 1000:.6f}"
    started = tmp_path / "started"
    client.submit(setsid_sleepers, (token, str(started)), max_retries=0)
    wait_for(started.exists, 60, message="the task started its children")
    wait_for(lambda: len(sleepers(token)) == 10, 30, message="10 children running")
    worker = psutil.Process(server.worker_pids()["cpu0"])
    together = [worker, *worker.children()]  # the worker and its keepers
    for proc in together:
        proc.send_signal(signal.SIGKILL)
    wait_for(lambda: not sleepers(token), 20, 0.1, message=f"every child gone (left: {len(sleepers(token))})")


def test_a_warm_processs_leftover_thread_never_writes_into_the_next_attempts_log(one_worker):
    client = one_worker.client()
    first = client.submit(leave_behind, ("thread", "0"), keep_warm_seconds=60)
    pid = first.result(timeout=60)
    second = client.submit(leave_behind, ("none", "0"), keep_warm_seconds=60)
    assert second.result(timeout=60) != pid  # the process that still runs the thread is not reused
    assert "attempt none" in second.logs() and "leftover thread" not in second.logs()
    assert client.submit(leave_behind, ("none", "0"), keep_warm_seconds=60).result(timeout=60) == second.result()


def test_a_warm_attempts_child_does_not_outlive_it(one_worker):
    client = one_worker.client()
    token = f"{6000 + random.random() * 1000:.6f}"
    client.submit(leave_behind, ("child", token), keep_warm_seconds=60).result(timeout=60)
    wait_for(lambda: not sleepers(token), 10, 0.1, message="the warm attempt's child gone")


def test_no_attempt_cgroup_is_left_behind(one_worker):
    client = one_worker.client()
    for mib in (32, 300):
        task = client.submit(shared_mapping, (mib,), memory=256, cpu=1, max_retries=0)
        client.wait([task.id], timeout=60)
    worker = psutil.Process(one_worker.worker_pids()["cpu0"])
    keepers = {str(p.pid) for p in worker.children()}
    wait_for(lambda: not {g for g in attempt_groups() if g[len(cgroups.PREFIX):].split(".")[0] in keepers}, 10,
             message="no attempt cgroup of this worker's keepers left once its attempts ended")


def test_numpys_memory_error_on_the_rlimit_path_is_memory_limit_exceeded():
    """Without a memory cgroup, RLIMIT_DATA makes numpy raise its own MemoryError subclass."""
    from jupyter_taskq.worker import limits

    error = {"type": "numpy.core._exceptions._ArrayMemoryError", "message": "Unable to allocate 1.5 GiB",
             "traceback": "...", "peak_mib": 250,
             "mro": ["numpy.core._exceptions._ArrayMemoryError", "MemoryError", "Exception", "BaseException"]}
    failure = limits.memory_failure({"memory": 256}, error, None)
    assert failure["type"] == "MemoryLimitExceeded"
    assert failure["message"].startswith("exceeded memory=256 MiB (peak 250 MiB)")
    assert failure["final"], "the same call needs the same memory: not retried unless asked"
    asked = limits.memory_failure({"memory": 256, "retry_for": ["MemoryLimitExceeded"]}, error, None)
    assert "final" not in asked and asked["message"] == "exceeded memory=256 MiB (peak 250 MiB)"
    assert limits.memory_failure({"memory": None}, error, None) is None
    assert limits.memory_failure({"memory": 256}, {**error, "mro": ["ValueError", "Exception"]}, None) is None


def test_a_v2_oom_event_at_the_same_time_as_the_exit_ends_the_attempt():
    """cgroup v2 watches ``memory.events`` through select's exceptional list only: an out-of-memory event
    seen together with a readable descriptor (the killed process's pidfd) once raised IndexError."""
    import socket

    from jupyter_taskq.worker.task_process import _Task

    class Group:
        killed = False

        def oom_watch(self):
            return [], [sender.fileno()]

        def oom_killed(self):
            return True

        def kill(self):
            self.killed = True

    listener = socket.create_server(("127.0.0.1", 0))
    receiver = socket.create_connection(listener.getsockname())
    sender, _ = listener.accept()
    receiver.send(b"!", socket.MSG_OOB)  # urgent data: the sender's end is "exceptional" for select
    request_r, request_w = os.pipe()
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    task = _Task(pid, request_w, report_r)
    wait_for(lambda: os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None)
    group = Group()
    assert task.wait(group) == (7, "gone")
    assert group.killed
    for fd in (request_r, report_w):
        os.close(fd)
    for s in (listener, receiver, sender):
        s.close()
