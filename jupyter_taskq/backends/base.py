"""The backend contract: where the queue's state lives, and everything a process asks of it.

Every process (server, supervisor, worker) opens a :class:`Backend` (``backends.open_backend``) and asks
it for the task store, the Huey queue of a pool, the work bells, the events ringer and listener and the
schedule records; the server asks it too what its children need to open the same backend, whether it is
healthy enough to start on, and which secrets no payload may carry. Nothing outside ``backends/`` knows
which backend it has: a new backend is one subclass (docs/backends.md), checked by
``tests/test_store_contract.py``.
"""

from __future__ import annotations

import abc
import functools
import json
import os
import select
from pathlib import Path
from typing import ClassVar, TypeVar
from collections.abc import Callable, Mapping

from ..objectstore import ObjectStore, is_url
from ..pools import POOLS, check_pool
from ..statedir import StateDir, default_state_dir

#: The backend a child process opens (a name of the picker's, or a dotted class path): see child_env.
BACKEND_ENV = "JUPYTER_TASKQ_BACKEND"
FILES_OPTIONS_ENV = "JUPYTER_TASKQ_FILES_OPTIONS"  # fsspec options (JSON) of an object store


class BackendError(RuntimeError):
    """A backend cannot do what was asked (the memory backend asked for a worker in another process)."""


class BackendRefused(RuntimeError):
    """The queue must not start on this backend as it is (the message says what to fix): the server exits."""


class Bell(abc.ABC):
    """What wakes a sleeper: rung by anyone, waited on by one or more listeners (one wakes per ring)."""

    @abc.abstractmethod
    def ring(self, message: bytes = b".") -> None: ...

    def ring_times(self, n: int) -> None:
        """Wake up to ``n`` listeners (one per ring)."""
        self.ring(b"." * max(1, n))

    @abc.abstractmethod
    def wait(self, timeout: float):
        """Sleep until rung or ``timeout``; consume one ring; truthy if rung."""


B = TypeVar("B", bound="Backend")


class Backend(abc.ABC):
    """One place the queue lives. Subclasses set :attr:`name` and implement the abstract methods."""

    #: How the picker and ``GET stats`` name it ("sqlite", "redis", ...).
    name: ClassVar[str] = ""
    #: Whether workers on other machines can join it (a Slurm or Kubernetes launcher needs that).
    shared: ClassVar[bool] = False

    def __init__(self, state_root: Path, url: str = "", prefix: str = "jtq:", allow_volatile: bool = False,
                 files_dir: str | os.PathLike | None = None, files_options: dict | None = None):
        self.state_root = Path(state_root)
        self.url = url
        self.prefix = prefix
        self.allow_volatile = allow_volatile
        self._files_dir = files_dir
        self._files_options = files_options

    @classmethod
    def open(cls: type[B], state_dir: str | os.PathLike | None = None, url: str = "",
             files_dir: str | os.PathLike | None = None, files_options: dict | None = None, prefix: str = "jtq:",
             allow_volatile: bool = False) -> B:
        """``state_dir``: this machine's state (default: under the Jupyter data dir); ``url``: where a server
        backend is; ``files_dir``: with a shared backend, where task files live for every machine (a directory
        every machine mounts, or an fsspec URL such as ``s3://bucket/prefix``). Nothing is created on disk
        until :attr:`state` is first asked for, so :meth:`check` sees the state directory as it was."""
        if files_dir and not cls.shared:
            raise ValueError("a separate files directory is for a Redis queue (give a Redis URL too)")
        return cls(Path(state_dir) if state_dir else default_state_dir(), url, prefix, allow_volatile, files_dir,
                   files_options)

    @functools.cached_property
    def _places(self) -> tuple[StateDir, ObjectStore]:
        if is_url(self._files_dir):
            state = StateDir.create(self.state_root, self.state_root / "files")  # this machine's copies
            options = self._files_options
            if options is None:
                options = json.loads(os.environ.get(FILES_OPTIONS_ENV) or "{}")
            return state, ObjectStore(state.files, str(self._files_dir), options)
        state = StateDir.create(self.state_root, self._files_dir if self.shared else None)
        return state, ObjectStore(state.files)

    @property
    def state(self) -> StateDir:
        """The state directory (made on first use): task files, and whatever the backend keeps on this machine."""
        return self._places[0]

    @property
    def objects(self) -> ObjectStore:
        """Where task files are published for other machines (an object store), or this directory alone."""
        return self._places[1]

    @property
    def kind(self) -> str:
        return self.name

    def class_name(self) -> str:
        """What a child is told to open: the picker's name for a built-in backend, else the dotted class path."""
        from . import BACKENDS

        path = f"{type(self).__module__}.{type(self).__qualname__}"
        return self.name if BACKENDS.get(self.name) == path else path

    # -- state --------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def open_store(self):
        """A ``taskstore.TaskStore``: every status change conditional and atomic, across all its processes."""

    @abc.abstractmethod
    def open_queue(self, pool: str):
        """The Huey queue of ``pool`` (``hueyqueue.open_*``): its storage has ``enqueue_many``."""

    def open_queues(self, pools=POOLS) -> QueueMap:
        """The queues of ``pools`` now, and of any other pool (a GPU model's) when first asked for."""
        return QueueMap(self.open_queue, pools)

    @abc.abstractmethod
    def schedule_records(self):
        """The schedules' records (server/schedules.py): ``all``, ``get``, ``add``, ``swap`` (compare-and-set
        of the whole record), ``remove``; shared by every server of the queue."""

    # -- bells --------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def work_bell(self, pool: str) -> Bell:
        """Rung when ``pool`` gets work; its idle workers sleep on it."""

    def work_bells(self) -> BellMap:
        return BellMap(self.work_bell)

    def wait_for_any(self, bells: list, timeout: float) -> bool:
        """Sleep until one of ``bells`` (this backend's work bells) rings, or ``timeout``; consume one ring.
        Here: bells with a ``fileno`` (pipes), slept on together in ``select``."""
        if len(bells) == 1:
            return bool(bells[0].wait(timeout))
        ready, _, _ = select.select([b.fileno() for b in bells], [], [], max(0.0, timeout))
        for bell in bells:
            if bell.fileno() in ready and bell.wait(0):
                return True
        return False

    @abc.abstractmethod
    def events_ringer(self) -> Bell:
        """What a worker rings with the id of a task whose state it changed (``ring(task_id.encode())``)."""

    @abc.abstractmethod
    def events_listener(self):
        """The server's end of the events: ``fileno()`` (its event loop watches it) and ``read_all()`` (the
        task ids rung since, newline-separated); every ring of any ``events_ringer`` arrives here."""

    # -- children -----------------------------------------------------------------------------------------
    def child_args(self) -> list[str]:
        """Command-line flags that make a worker process on this machine open this same backend (with
        :meth:`child_env`); ``jupyter taskq worker`` and ``python -m jupyter_taskq.worker.process`` take them."""
        return ["--state-dir", str(self.state.root)]

    def remote_child_args(self) -> list[str]:
        """The flags for a worker on another machine (its own state directory, this queue's files)."""
        raise BackendError(f"workers on other machines cannot join the {self.name} backend: use Redis "
                           "(c.TaskQueue.redis_url)")

    def child_env(self) -> dict[str, str]:
        """Environment a child needs to open this backend: secrets go here, never on a command line (which
        every user of the machine can read)."""
        env = {BACKEND_ENV: self.class_name()}
        if self.objects.options:
            env[FILES_OPTIONS_ENV] = json.dumps(self.objects.options)  # may hold object-store credentials
        return env

    def close(self) -> None:
        """Stop what this backend started in the process (a relay thread): called when the server stops, so
        an in-process server (tests, a restarted extension) leaves nothing running behind it."""
        return None  # most backends start nothing

    # -- health, secrets, address -------------------------------------------------------------------------
    def check(self) -> list[str]:
        """Called by the server before it opens anything: raise :class:`BackendRefused` (or a more specific
        error) for a backend the queue must not start on; answer warnings to log."""
        return []

    @classmethod
    def secrets_in(cls, env: Mapping[str, str]) -> list[str]:
        """The credentials of this backend that ``env`` (a child's environment) holds; no payload may carry
        them (payload.check_no_secrets)."""
        return []

    def secrets(self) -> list[str]:
        """This backend's credentials, as its children get them."""
        return self.secrets_in(self.child_env())

    def address(self) -> str:
        """Where the backend is, without credentials ("host:port/db"); "" for one on this machine only."""
        return ""

    def host(self) -> str:
        """The host workers connect to; "" for a backend on this machine only."""
        return ""


class QueueMap(dict):
    """Pool name -> its Huey queue, opened the first time a pool is asked for."""

    def __init__(self, opener: Callable[[str], object], pools=POOLS):
        super().__init__()
        self._opener = opener
        for pool in pools:
            self[pool]

    def __missing__(self, pool: str):
        queue = self[pool] = self._opener(check_pool(pool))
        return queue


class BellMap(dict):
    """Pool name -> its work bell, made the first time a pool is rung."""

    def __init__(self, maker):
        super().__init__()
        self._maker = maker

    def __missing__(self, pool: str):
        bell = self[pool] = self._maker(pool)
        return bell
