"""Where the queue keeps its files, all user-only, because payloads are code.

One state directory holds the SQLite database (Huey's queue and our task table),
the payloads, results, pickled exceptions and logs of tasks, the upload spool and
the doorbell FIFOs that wake workers and the server. With a Redis queue spanning
machines, the task files live apart (``files``): in a directory every machine
mounts, while the state directory keeps only what is this machine's own (the
supervisor lock, the doorbells).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
OWNERS_DIR_MODE = 0o711  # on the way to attempt folders, where tasks run as their owners (open_for_owners)


def default_state_dir() -> Path:
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "taskq"


def make_private_dir(path: Path | str) -> Path:
    """Make ``path`` and every missing folder above it user-only (``mkdir(parents=True)`` and
    ``os.makedirs`` give the folders above the last one the umask's mode, e.g. 0755).

    An existing folder that a hub service opened for its tasks' owners (mode 0711, enter but never
    list: :func:`open_for_owners`) stays so: a process that opens the state later (a worker starting
    beside others, a server) must not shut running tasks out of their attempt folders."""
    path = Path(path)
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:  # made by another process meanwhile
            pass
        os.chmod(folder, DIR_MODE)
    target = missing[0] if missing else path
    if missing or os.stat(target).st_mode & 0o777 != OWNERS_DIR_MODE:
        os.chmod(target, DIR_MODE)
    return target


def create_private_file(path: Path) -> int:
    """Open a new file for writing that only its owner can read (returns an fd)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)


@dataclass(frozen=True)
class StateDir:
    root: Path
    files_root: Path | None = None  # the task files; None: inside ``root``

    @classmethod
    def create(cls, root: str | os.PathLike | None = None, files: str | os.PathLike | None = None) -> StateDir:
        state = cls(Path(root) if root else default_state_dir(), Path(files) if files else None)
        make_private_dir(state.root)
        make_private_dir(state.bells)
        for sub in ("payloads", "blobs", "results", "logs", "outputs", "spool"):
            make_private_dir(state.files / sub)
        if state.files_root is None and not state.db.exists():
            os.close(os.open(state.db, os.O_WRONLY | os.O_CREAT, FILE_MODE))
        return state

    @property
    def files(self) -> Path:
        return self.files_root or self.root

    @property
    def db(self) -> Path:
        return self.root / "taskq.db"

    @property
    def spool(self) -> Path:
        return self.files / "spool"

    @property
    def bells(self) -> Path:
        return self.root / "bells"

    def payload(self, task_id: str) -> Path:
        return self.files / "payloads" / f"{task_id}.payload"

    def blob(self, key: str) -> Path:
        """A part shared by many payloads (a map()'s function and the data it captures), named by its sha256."""
        return self.files / "blobs" / f"{key}.blob"

    def result(self, task_id: str) -> Path:
        return self.files / "results" / f"{task_id}.result"

    def error(self, task_id: str) -> Path:
        """The last attempt's error as JSON; its pickled exception sits beside it (``.pickle``)."""
        return self.files / "results" / f"{task_id}.error"

    def error_pickle(self, task_id: str) -> Path:
        return self.files / "results" / f"{task_id}.error.pickle"

    def display(self, task_id: str) -> Path:
        """The result's rich representation (a MIME bundle as JSON), so a front end shows it without a kernel."""
        return self.files / "results" / f"{task_id}.display"

    def log(self, task_id: str) -> Path:
        """The one log of a task written before logs were kept per attempt (read as its latest attempt's)."""
        return self.files / "logs" / f"{task_id}.log"

    def attempt_log(self, task_id: str, attempt: int) -> Path:
        """Attempt ``attempt``'s own log: in its attempt folder, so it is published and removed with it."""
        return self.attempt_dir(task_id, attempt) / "log"

    def outputs(self, task_id: str) -> Path:
        return self.files / "outputs" / task_id

    def attempt_dir(self, task_id: str, attempt: int) -> Path:
        """Where attempt ``attempt`` saves its outputs and progress: a failed attempt's stay apart."""
        return self.outputs(task_id) / str(attempt)

    def task_files(self, task_id: str) -> list[Path]:
        return [self.payload(task_id), self.result(task_id), self.error(task_id), self.error_pickle(task_id),
                self.log(task_id), self.display(task_id)]


def open_for_owners(state: StateDir) -> None:
    """A hub service that runs tasks as their owners (issue 15): let each owner's task process pass
    through to its own attempt folder (``files/outputs/<task>/<n>``, the owner's): the folders on the way
    get mode 0711 (enter, never list; every file in them stays 0600). Raises PermissionError saying which
    folder above the state directory its users cannot pass (e.g. /root: put the state elsewhere)."""
    for folder in (state.root, state.files, state.files / "outputs"):
        os.chmod(folder, OWNERS_DIR_MODE)
    for folder in (state.files / "outputs").resolve().parents:
        if not os.stat(folder).st_mode & 0o001:
            raise PermissionError(
                f"the queue's state directory {state.files} is under {folder}, which other users cannot enter "
                f"(mode {oct(os.stat(folder).st_mode & 0o777)}): tasks run as their owners could not reach their "
                "attempt folders. Put TaskQueue.state_dir elsewhere (e.g. /var/lib/jupyter-taskq)")
