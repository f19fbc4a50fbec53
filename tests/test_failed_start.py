"""A queue that cannot start says why where users look, starts nothing, and never stops its server stopping.

Real servers: a corrupt database, an empty or missing one beside task files, a bad option value.
Each answers ``taskq/api/*`` with 503 and the reason as JSON, logs one CRITICAL line, starts no worker,
and stops at once on SIGTERM. And every traitlets form of a list option starts a working queue.
"""

from __future__ import annotations

import signal
import subprocess
import time

import psutil
import pytest
import requests

from conftest import TOKEN, TaskqServer
from jupyter_taskq.notebook.client import TaskqError

AUTH = {"Authorization": f"token {TOKEN}"}


def echo(x):
    return x


class RefusingServer(TaskqServer):
    """A server whose queue must not start: it is up once ``taskq/api`` answers at all."""

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log_path.read_text()[-4000:]}")
        try:
            requests.get(self.url + "taskq/api/stats", headers=AUTH, timeout=1)
        except requests.RequestException:
            return False
        return True


@pytest.fixture
def refused(tmp_path):
    servers = []

    def start(prepare_state=None, **kwargs) -> RefusingServer:
        root = tmp_path / f"server{len(servers)}"
        root.mkdir()
        server = RefusingServer(root, cpu_workers=1, **kwargs)
        if prepare_state:
            server.state_dir.mkdir(mode=0o700)
            prepare_state(server.state_dir)
        servers.append(server)
        return server.start(wait_workers=False)

    yield start
    for server in servers:
        server.close()


def assert_refused(server: RefusingServer, *expected: str) -> str:
    """503 with the reason on every path, one CRITICAL line, no worker; then SIGTERM stops it at once."""
    answers = [requests.get(server.url + "taskq/api/" + path, headers=AUTH, timeout=10)
               for path in ("stats", "tasks", "tasks/nonexistent/result")]
    answers.append(requests.post(server.url + "taskq/api/tasks", headers=AUTH, data=b"x" * 100_000, timeout=10))
    for response in answers:
        assert response.status_code == 503, (response.request.url, response.text[:300])
        assert response.headers["Content-Type"].startswith("application/json")
    message = answers[0].json()["message"]
    for text in expected:
        assert text in message, message
    assert requests.get(server.url + "taskq/api/stats", timeout=10).status_code == 403  # still needs a token

    started = time.monotonic()  # the kernel client raises the server's message at once (no 60 s of retries)
    with pytest.raises(TaskqError) as raised:
        server.client().stats()
    assert time.monotonic() - started < 5
    assert raised.value.status_code == 503 and raised.value.server_message == message

    critical = [line for line in server.log_path.read_text().splitlines()
                if "jupyter-taskq: not starting" in line]
    assert len(critical) == 1 and critical[0].startswith("[C "), critical  # Jupyter's mark of CRITICAL
    assert all(text in critical[0] for text in expected), critical
    children = [" ".join(child.cmdline()) for child in psutil.Process(server.proc.pid).children(recursive=True)]
    assert not [c for c in children if "jupyter_taskq" in c], children  # no supervisor, no worker

    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    try:
        server.proc.wait(10)
    except subprocess.TimeoutExpired:
        pytest.fail("SIGTERM did not stop a server whose queue did not start")
    assert time.monotonic() - started < 5
    log = server.log_path.read_text()
    assert "Traceback" not in log and "has no attribute" not in log, log[-3000:]
    return message


def test_a_corrupt_database_is_refused_and_kept(refused):
    garbage = b"this is no SQLite database " * 400

    def corrupt(state):
        (state / "taskq.db").write_bytes(garbage)

    server = refused(corrupt)
    db = server.state_dir / "taskq.db"
    assert_refused(server, str(db), "cannot be opened", "Restore it from a backup", "move the state directory aside")
    assert db.read_bytes() == garbage


@pytest.mark.parametrize("database", ["empty", "missing"])
def test_an_empty_database_beside_task_files_is_refused(refused, database):
    def orphaned(state):
        if database == "empty":
            (state / "taskq.db").touch(mode=0o600)
        (state / "payloads").mkdir(mode=0o700)
        (state / "payloads" / "abc123.payload").write_bytes(b"a task's payload")

    server = refused(orphaned)
    db = server.state_dir / "taskq.db"
    assert_refused(server, str(db), f"is {database}", "abc123.payload", "Restore the database from a backup")
    assert (server.state_dir / "payloads" / "abc123.payload").read_bytes() == b"a task's payload"
    assert db.exists() == (database == "empty") and (database == "missing" or db.stat().st_size == 0)


@pytest.mark.parametrize("option, value, expected", [
    ("webhook_allowed_networks", "nonsense", "'nonsense' does not appear to be an IPv4 or IPv6 network"),
    ("webhook_allowed_networks", "['10.0.0.0/8'", "is not a list"),
    ("workers_per_gpu", "many", "expected an int"),
])
def test_a_bad_option_value_answers_503_naming_it(refused, option, value, expected):
    server = refused(extra_args=[f"--TaskQueue.{option}={value}"])
    assert_refused(server, f"TaskQueue.{option}", expected)


@pytest.mark.parametrize("form", ["repeated", "python", "json"])
def test_every_list_option_form_starts_the_queue(make_server, form):
    networks = {  # (the config value, arguments before it): conftest writes a str value verbatim
        "repeated": ("127.0.0.0/8", ["--TaskQueue.webhook_allowed_networks=10.0.0.0/8"]),
        "python": ("['127.0.0.0/8', '10.0.0.0/8']", []),
        "json": ('["127.0.0.0/8", "10.0.0.0/8"]', []),
    }[form]
    # conftest passes --TaskQueue.gpus=[] (JSON) first; repeated arguments add to a list, as in traitlets.
    gpus = {"repeated": ["--TaskQueue.gpus=0", "--TaskQueue.gpus=1"], "python": ["--TaskQueue.gpus=(0, 1)"],
            "json": ["--TaskQueue.gpus=[0, 1]"]}[form]
    server = make_server(cpu_workers=0, start_workers=False, webhook_allowed_networks=networks[0],
                         extra_args=networks[1] + gpus)
    client = server.client()
    assert client.stats()["gpus"] == [0, 1]
    client.submit(echo, (1,), gpu=1, callback_url="http://10.1.2.3/hook")  # allowed by the second network
    with pytest.raises(TaskqError) as refused_url:
        client.submit(echo, (1,), gpu=1, callback_url="http://192.168.1.1/hook")
    assert refused_url.value.status_code == 400
