"""Fixtures that start real parts: a `jupyter server` subprocess with the extension,
its supervisor and worker processes, and a SQLite state directory of its own."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from jupyter_taskq.notebook.client import Client

TOKEN = "taskq-test-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float = 20.0, interval: float = 0.02, message: str = "condition"):
    """Poll ``condition`` until it returns something truthy; fail with ``message`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def run_coroutine(coroutine):
    """``asyncio.run`` in a thread of its own: the browser tests' sync Playwright keeps a running event
    loop in the main thread for the whole session, where ``asyncio.run`` refuses to start."""
    import asyncio
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


class TaskqServer:
    """A real `jupyter server` with jupyter-taskq, on a free port, with its own state directory."""

    def __init__(self, root: Path, gpus=(), cpu_workers: int = 2, app: str = "jupyter_server",
                 extra_args=(), backend: str = "sqlite", fd_limit: int | None = None, **config):
        self.root = root
        self.fd_limit = fd_limit  # the server's soft RLIMIT_NOFILE (None: inherited), e.g. a desktop's 1,024
        self.backend = backend
        self.redis: RedisServer | None = None  # with backend="redis": its own redis-server, outliving restarts
        self.app = app  # "jupyter_server", or "jupyterlab" for browser tests
        self.extra_args = list(extra_args)
        self.state_dir = root / "state"
        self.gpus = list(gpus)
        self.cpu_workers = cpu_workers
        config.setdefault("webhook_allowed_networks", ["127.0.0.0/8"])  # the tests' webhook receivers
        self.config = config
        self.proc: subprocess.Popen | None = None
        self.port = free_port()
        self.log_path = root / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def client(self, token: str | None = TOKEN) -> Client:
        return Client(self.url, token)

    def start(self, wait_workers: bool = True) -> "TaskqServer":
        if self.backend == "redis" and self.redis is None and "redis_url" not in self.config:  # else: the one given
            self.redis = RedisServer(self.root).start()
            self.config.setdefault("redis_url", self.redis.url)
        args = [
            sys.executable, "-m", self.app, "--no-browser", f"--port={self.port}", "--ip=127.0.0.1",
            f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={self.root}",
            "--ServerApp.port_retries=0", f"--TaskQueue.state_dir={self.state_dir}",
            f"--TaskQueue.gpus={json.dumps(self.gpus)}", f"--TaskQueue.cpu_workers={self.cpu_workers}",
        ]
        if os.geteuid() == 0:
            args.append("--allow-root")
        if self.fd_limit:  # or Jupyter Server raises the soft limit to its min_open_files_limit (4,096)
            args.append(f"--ServerApp.min_open_files_limit={self.fd_limit}")
        args += self.extra_args
        args += [f"--TaskQueue.{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in self.config.items()]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=self._limit_fds if self.fd_limit else None)
        wait_for(self._answers, 60, 0.1, f"the server on port {self.port} (log: {self.log_path})")
        if wait_workers and self.config.get("start_workers", True):
            expected = len(self.gpus) * self.config.get("workers_per_gpu", 1) + self.cpu_workers
            wait_for(lambda: sum(w["alive"] for w in self.client().stats()["workers"]) >= expected, 60, 0.1,
                     f"{expected} live workers")
        return self

    def _limit_fds(self) -> None:
        import resource

        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.fd_limit, hard))

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log_path.read_text()[-4000:]}")
        try:
            return requests.get(self.url + "taskq/api/stats", headers={"Authorization": f"token {TOKEN}"},
                                timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        """SIGTERM: Jupyter's clean shutdown (workers drain, state is saved) in about a second.

        Not SIGINT: Jupyter only handles SIGINT with a terminal on stdin, and a background run
        inherits SIGINT ignored, so every stop would wait out its timeout."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._kill_group()

    def close(self) -> None:
        """Stop the server and what the test started beside it."""
        self.stop()
        if self.redis is not None:
            self.redis.stop()

    def kill(self) -> None:
        """SIGKILL the server process alone; its workers die with it (parent-death signal)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def _kill_group(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def worker_pids(self) -> dict[str, int]:
        return {w["name"]: w["pid"] for w in self.client().stats()["workers"] if w["alive"]}


# -- pytest-xdist (`-n 4 --dist loadgroup` in pyproject's addopts) --------------------------------------------
# Which tests run together on one worker is decided here, from the test ids, by the scheduler below: xdist 3.8's
# own xdist_group marker does nothing under pytest 9.2 (it renames item._nodeid, which pytest 9.2 no longer
# reads), and tests sharing a module-scoped server or kernel (shared_server, a notebook's kernel) must run in
# order on one worker. A unit (one group) runs on one worker, in collection order.
#: Modules whose tests must not overlap each other's: a group runs on one worker, one test at a time.
XDIST_GROUPS = {
    "test_slurm.py": "slurm",  # the one-node Slurm cluster: slurmd is NodeName=localhost with the host's Gres
    "test_containment.py": "cgroups",  # the machine's cgroup tree, /dev/shm, memory limits, CPU affinity
    "test_hub.py": "unix-accounts",  # useradd/userdel of real accounts; the proxy installed in .hub-node/
    "test_run_as_owner.py": "unix-accounts",
    "test_failed_start.py": "timing",  # wall-clock upper bounds ("answers within 5 s")
    "test_client_restart.py": "timing",
    "test_outside_input.py": "timing",  # 500 connections held at once; an idle upload closed within IDLE + 5 s
    "test_big_batch.py": "cpu-heavy",  # 2,000 task processes: two such at once ran past the 300 s timeout
    "test_corpus.py": "cpu-heavy",  # a task process per corpus entry importing scikit-learn, pandas, scipy
}
#: Modules whose tests each start their own servers (no module-scoped fixture): spread one test per unit.
XDIST_SPREAD = {"test_faults.py", "test_inprocess_service.py", "test_inprocess_api.py"}


def xdist_unit(nodeid: str) -> str:
    """The unit of work ``nodeid`` belongs to: a group of XDIST_GROUPS; ``browser`` for the browser tests (one
    Chromium and JupyterLab at a time, screenshots in test-artifacts/); ``notebooks`` for every tutorial
    notebook's cells (one kernel per notebook, one server for all, as without xdist); the test alone for a
    module of XDIST_SPREAD; else its module (a module-scoped server starts once, not once per worker)."""
    path = nodeid.split("::")[0]
    name = path.rsplit("/", 1)[-1]
    if name in XDIST_GROUPS:
        return XDIST_GROUPS[name]
    if name.startswith("test_browser_"):
        return "browser"
    if name.endswith(".ipynb"):
        return "notebooks"
    if name in XDIST_SPREAD:
        return nodeid
    return path


def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") not in ("loadgroup", "loadscope"):
        return None
    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_unit(nodeid)

    return UnitScheduling(config, log)


def pytest_generate_tests(metafunc):
    """A module that sets ``BACKENDS = ["sqlite", "redis"]`` runs its server tests on each."""
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", getattr(metafunc.module, "BACKENDS", ["sqlite"]), scope="module")


@pytest.fixture
def make_server(tmp_path, backend):
    servers: list[TaskqServer] = []

    def make(**kwargs) -> TaskqServer:
        root = tmp_path / f"server{len(servers)}"
        root.mkdir()
        kwargs.setdefault("backend", backend)
        server = TaskqServer(root, **kwargs)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def server(make_server) -> TaskqServer:
    """A server with two simulated GPUs (0 and 1) and two CPU workers."""
    return make_server(gpus=[0, 1], cpu_workers=2)


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory, backend) -> TaskqServer:
    """One server for a whole module of tests that do not disturb each other."""
    server = TaskqServer(tmp_path_factory.mktemp("shared"), gpus=[0, 1], cpu_workers=2, backend=backend).start()
    yield server
    server.close()


@pytest.fixture
def client(server) -> Client:
    return server.client()


#: Every redis-server a test started: those still running when the session ends are stopped then (a test
#: that stops its TaskqServer with stop(), not close(), left its redis-server running after the suite).
_REDIS_STARTED: list["RedisServer"] = []


def pytest_sessionfinish(session, exitstatus):
    for server in _REDIS_STARTED:
        server.stop()


class RedisServer:
    """A real `redis-server` (Debian's) on 127.0.0.1 and a free port, persisted with AOF in ``root``
    (the server refuses a Redis without persistence); ``persistent=False``: none at all."""

    def __init__(self, root: Path, persistent: bool = True):
        self.port = free_port()
        self.root = root
        self.persistent = persistent
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "RedisServer":
        import shutil

        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.persistent else "no", "--appendfsync", "everysec",
             "--dir", str(self.root), "--protected-mode", "yes"],
            stdout=open(self.root / "redis.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True)
        _REDIS_STARTED.append(self)
        import redis

        conn = redis.Redis.from_url(self.url)

        def answers():
            if self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited: {(self.root / 'redis.log').read_text()[-2000:]}")
            try:
                return conn.ping()
            except redis.ConnectionError:
                return False

        wait_for(answers, 20, 0.05, f"redis-server on port {self.port}")
        return self

    def flush(self) -> None:
        import redis

        redis.Redis.from_url(self.url).flushall()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> RedisServer:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


def start_worker_machine(root: Path, name: str, redis_url: str, files, *args: str,
                         env: dict | None = None) -> subprocess.Popen:
    """`jupyter taskq worker` as another machine: its own state and working directories, sharing
    only Redis and ``files`` (a directory or an object-store URL) with the server."""
    home = root / name
    home.mkdir()
    return subprocess.Popen(
        [sys.executable, "-m", "jupyter_taskq.worker", "--files-dir", str(files), "--state-dir", str(home / "state"),
         "--name", name, *args],
        cwd=home, env=dict(os.environ, JUPYTER_TASKQ_REDIS_URL=redis_url, **(env or {})),
        stdout=open(home / "worker.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True)


def stop_processes(procs) -> None:
    """SIGTERM each process group still running, SIGKILL what does not stop in 20 s."""
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


#: The backends the in-process layer runs over (``service_over``, the ``backend_service`` fixture and
#: tests/test_inprocess_*.py): every backend of the picker (jupyter_taskq.backends.BACKENDS).
SERVICE_BACKENDS = ["sqlite", "redis", "memory"]


@pytest.fixture(params=SERVICE_BACKENDS)
def backend_service(request, tmp_path):
    """A TaskService in this process, no workers, no server: one test per entry of SERVICE_BACKENDS."""
    yield from service_over(request, tmp_path)


def service_over(request, tmp_path, gpus=()):
    """A TaskService in this process over the backend ``request.param`` names (Redis: a real server), with no
    workers: the domain API as each hub user sees it, without a server. Yields the service and closes its store."""
    from jupyter_taskq.backends import backend_class, open_backend
    from jupyter_taskq.server.service import TaskService

    url = request.getfixturevalue("redis_server").url if backend_class(request.param).shared else ""
    backend = open_backend(request.param, url, state_dir=tmp_path / "state", prefix=f"test-{uuid.uuid4().hex[:8]}:")
    store = backend.open_store()
    yield TaskService(backend.state, store, backend.open_queues(), gpus=list(gpus), workers_per_gpu=1, cpu_workers=1,
                      max_retries=0, retry_delay=0, retry_backoff=1, result_ttl=3600, work_bells=backend.work_bells(),
                      objects=backend.objects)
    store.close()


def as_user(service, name, admin=False):
    """``service`` as hub user ``name`` sees it (an admin sees everyone's)."""
    from jupyter_taskq.hub.hubtenancy import HubTenancy
    from jupyter_taskq.hub.options import HubSettings
    from jupyter_taskq.hub.tenancy import Identity

    return HubTenancy(HubSettings()).scope(service, Identity(name, sees_all=admin))
