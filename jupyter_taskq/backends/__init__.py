"""Where the queue's state lives: the one place that picks a backend class (docs/backends.md).

``c.TaskQueue.backend_class`` names it ("sqlite", "redis", "memory" or a dotted class path); left empty,
the scheme of a URL picks it (any ``c.TaskQueue.redis_url`` picks Redis), and no URL picks SQLite. A
child process (a worker) is told its parent's choice in its environment (``Backend.child_env``) and opens
it through :func:`open_child_backend`. The contract every backend keeps is ``base.Backend``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from .base import BACKEND_ENV, Backend, BackendError, BackendRefused

__all__ = ["BACKENDS", "Backend", "BackendError", "BackendRefused", "backend_class", "environment_secrets",
           "open_backend", "open_child_backend", "pick_backend"]

#: The built-in backends by name (imported when first picked: a kernel asking for secrets imports no Huey).
BACKENDS = {
    "sqlite": "jupyter_taskq.backends.sqlite.SqliteBackend",
    "redis": "jupyter_taskq.backends.redis.RedisBackend",
    "memory": "jupyter_taskq.backends.memory.MemoryBackend",
}
#: A URL's scheme -> the backend it picks; any other non-empty URL picks Redis (as redis_url always did).
URL_SCHEMES = {"redis": "redis", "rediss": "redis", "unix": "redis"}
DEFAULT = "sqlite"


def backend_class(name: str) -> type[Backend]:
    """The class a name of :data:`BACKENDS` or a dotted path ("package.module.Class") names."""
    path = BACKENDS.get(name, name)
    module_name, _, class_name = path.rpartition(".")
    if not module_name:
        raise ValueError(f"unknown backend {name!r}: use one of {', '.join(BACKENDS)} or a dotted class path")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"backend {name!r} cannot be imported: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise ValueError(f"backend {name!r} is not a jupyter_taskq.backends.base.Backend")
    return cls


def pick_backend(name: str = "", url: str = "") -> type[Backend]:
    """``name`` if given, else the backend ``url``'s scheme picks, else SQLite."""
    if name:
        return backend_class(name)
    if url:
        scheme = urlsplit(url).scheme if "://" in url else ""
        return backend_class(URL_SCHEMES.get(scheme, "redis"))
    return backend_class(DEFAULT)


def open_backend(name: str = "", url: str = "", **options) -> Backend:
    """Pick (:func:`pick_backend`) and open a backend; ``options``: ``Backend.open``'s (``state_dir``,
    ``files_dir``, ``files_options``, ``prefix``, ``allow_volatile``)."""
    return pick_backend(name, url).open(url=url, **options)


def open_child_backend(state_dir=None, url: str = "", files_dir=None, env: Mapping[str, str] = os.environ,
                       **options) -> Backend:
    """The backend a worker's parent named in its environment (``Backend.child_env``), or the one its
    ``--redis`` URL picks when it was started by hand."""
    return open_backend(env.get(BACKEND_ENV, ""), url, state_dir=state_dir, files_dir=files_dir, **options)


def environment_secrets(env: Mapping[str, str] = os.environ) -> list[str]:
    """The credentials of any backend that ``env`` holds (a worker's, a task's): payload.py refuses a
    payload carrying one."""
    names = {*BACKENDS, env.get(BACKEND_ENV, "")} - {""}
    secrets: list[str] = []
    for name in sorted(names):
        try:
            secrets += backend_class(name).secrets_in(env)
        except ValueError:
            continue  # a custom backend this process cannot import has no secrets here
    return secrets
