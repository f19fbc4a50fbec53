"""Finding the taskq server from a kernel, or starting a private one.

In a task: the URL and per-attempt token its worker gave it (:func:`in_task_credentials`). Elsewhere,
in order: ``connect(url, token)``; ``$JUPYTER_TASKQ_URL`` / ``$JUPYTER_TASKQ_TOKEN``
(the extension puts them in the environment of every kernel it starts); the
runtime file of the Jupyter server that started this kernel (``JPY_PARENT_PID``);
a private server already started for this user; and last, a new private server,
started in the background and announced in one line. A private server is detached
(tasks outlive the kernel) and shuts itself down after ``PRIVATE_IDLE_SHUTDOWN``
seconds with no client requests and no work in flight.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

PRIVATE_IDLE_SHUTDOWN = 600
PRIVATE_FILE = "jupyter-taskq-private.json"


def _runtime_dir() -> Path:
    from jupyter_core.paths import jupyter_runtime_dir

    return Path(jupyter_runtime_dir())


def from_environment() -> tuple[str, str] | None:
    url = os.environ.get("JUPYTER_TASKQ_URL")
    return (url, os.environ.get("JUPYTER_TASKQ_TOKEN", "")) if url else None


def in_task_credentials() -> tuple[str, str] | None:
    """In a task: the (url, token) its worker gave this attempt (jupyter_taskq/tasktokens.py); None elsewhere.

    A task reaches the queue as its owner with a token of its own, good while this attempt runs. Its
    worker must know the server's URL (a worker on another machine: ``jupyter taskq worker --server-url``);
    without it a task cannot reach the queue, and says so rather than start a server of its own."""
    if os.environ.get("JUPYTER_TASKQ_IN_TASK") != "1":
        return None
    found = from_environment()
    if found is None or not found[1]:
        raise RuntimeError("this task cannot reach the task queue: its worker does not know the server's URL. "
                           "Start the worker with `jupyter taskq worker --server-url URL` (the Jupyter server's "
                           "URL, e.g. http://host:8888/), or pass jupyter_taskq.connect(url, token)")
    return found


def from_parent_server() -> tuple[str, str] | None:
    """The server that started this kernel wrote ``jpserver-<its pid>.json``; never take just any one."""
    pid = os.environ.get("JPY_PARENT_PID")
    if not pid:
        return None
    path = _runtime_dir() / f"jpserver-{pid}.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info["url"], info.get("token", "")


def _answers(url: str, token: str) -> bool:
    try:
        response = requests.get(url.rstrip("/") + "/taskq/api/stats", headers={"Authorization": f"token {token}"},
                                timeout=2)
    except requests.RequestException:
        return False
    return response.status_code == 200


def existing_private_server() -> tuple[str, str] | None:
    try:
        info = json.loads((_runtime_dir() / PRIVATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return (info["url"], info["token"]) if _answers(info["url"], info["token"]) else None


def start_private_server(timeout: float = 60.0) -> tuple[str, str]:
    """Start `jupyter server` with the extension on a free local port, detached from this kernel."""
    runtime = _runtime_dir()
    runtime.mkdir(parents=True, exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = secrets.token_hex(24)
    url = f"http://127.0.0.1:{port}/"
    log_path = runtime / "jupyter-taskq-private.log"
    cmd = [sys.executable, "-m", "jupyter_server", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={os.getcwd()}",
           f"--ServerApp.shutdown_no_activity_timeout={PRIVATE_IDLE_SHUTDOWN}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER_TASKQ_", "JPY_"))}
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True)
    os.close(log)
    deadline = time.monotonic() + timeout
    while not _answers(url, token):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"could not start a private jupyter-taskq server; see {log_path}")
        time.sleep(0.1)
    info_path = runtime / PRIVATE_FILE
    fd = os.open(info_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url, "token": token, "pid": proc.pid}, f)
    print(f"jupyter-taskq: no Jupyter server with the task queue found; started a private one at {url} "
          f"(pid {proc.pid}, stops after {PRIVATE_IDLE_SHUTDOWN // 60} idle minutes)", file=sys.stderr)
    return url, token


def find_server(start_private: bool = True) -> tuple[str, str]:
    in_task = in_task_credentials()  # a task: its own credentials, or a clear error; never a private server
    if in_task is not None:
        return in_task
    for source in (from_environment, from_parent_server, existing_private_server):
        found = source()
        if found:
            return found
    if not start_private:
        raise RuntimeError("no jupyter-taskq server found: call jupyter_taskq.connect(url, token) "
                           "or set JUPYTER_TASKQ_URL and JUPYTER_TASKQ_TOKEN")
    return start_private_server()
