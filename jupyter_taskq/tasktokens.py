"""Task tokens: how code running in a task reaches the queue as the task's owner (issue 19).

A task may submit tasks (a fan-out) with a bare ``f.put()`` or ``jupyter_taskq.connect()``. It cannot
use its notebook's credentials: the payload check refuses them (a payload is a file on disk, read by
workers on other machines). So the worker mints a random token for each attempt, stores only its
sha256 in the store (shared by the server and every worker, also across machines on Redis), and
hands the token to the attempt's process in its environment. The server's taskq handlers (and no
other Jupyter handler) accept it as the task's owner while that attempt runs; the worker deletes it
when the attempt ends, and a token whose attempt is over is refused even if that delete never
happened (a worker killed mid-attempt).
"""

from __future__ import annotations

import hashlib
import secrets

from .status import TaskStatus

#: Task tokens start with this, so the server tells them from Jupyter's own without a store look-up.
PREFIX = "jtqt_"
#: The worker's environment: the URL of the server that holds the queue (the server sets it for its own
#: workers; ``jupyter taskq worker --server-url`` for workers on other machines).
SERVER_URL_ENV = "JUPYTER_TASKQ_SERVER_URL"
#: What an attempt's process gets: the server's URL and its token, as the kernel client reads them
#: (notebook/discovery.py), and a mark that it is a task (so a task with no URL says so, and never
#: starts a private server of its own).
URL_ENV, TOKEN_ENV, IN_TASK_ENV = "JUPYTER_TASKQ_URL", "JUPYTER_TASKQ_TOKEN", "JUPYTER_TASKQ_IN_TASK"
TASK_ENV = (URL_ENV, TOKEN_ENV, IN_TASK_ENV)


def mint() -> tuple[str, str]:
    """A new token and the digest the store keeps of it."""
    token = PREFIX + secrets.token_urlsafe(32)
    return token, digest(token)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def is_task_token(token: str) -> bool:
    return token.startswith(PREFIX) and 20 < len(token) < 200


def attempt_env(token: str | None, server_url: str | None) -> dict[str, str]:
    """The environment entries an attempt gets (none of them are written into its payload or log)."""
    env = {IN_TASK_ENV: "1"}
    if token and server_url:
        env.update({URL_ENV: server_url, TOKEN_ENV: token})
    return env


def owner_of(store, token: str) -> str | None:
    """The owner of the running attempt ``token`` was minted for, or None: unknown, or its attempt is over
    (then its record goes, in case the worker could not delete it). Blocking: store reads."""
    key = digest(token)
    record = store.task_token(key)
    if record is None:
        return None
    task = store.get(record["task_id"])
    if task is None or task["status"] != TaskStatus.RUNNING.value or task["attempt"] != record["attempt"]:
        try:
            store.delete_task_token(key)
        except Exception:  # noqa: BLE001 - refused either way; a full disk keeps a dead record a while
            pass
        return None
    return task.get("owner") or record.get("owner")
