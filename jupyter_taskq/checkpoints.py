"""Checkpoints: a task saves its state, and the next attempt (after any worker death) starts from it.

``checkpoint(obj)`` pickles ``obj`` into the task's own folder (``files/outputs/<task id>/checkpoint``,
beside its attempts' folders, so it is removed with the task's files), atomically: a job killed mid-write
leaves the previous checkpoint whole. ``last_checkpoint()`` in any later attempt of the same task, on any
machine that mounts the files directory, returns it. A worker whose batch job is about to end (Slurm's
``--signal`` warning) asks its running task to checkpoint now: ``checkpoint_requested()`` turns True.

Only the standard library and cloudpickle (a task's environment has both); outside a task all three are
harmless (a plain call in the kernel, for debugging): nothing is saved, and there is no last checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

ATTEMPT_DIR_ENV = "JUPYTER_TASKQ_ATTEMPT_DIR"  # as jupyter_taskq.taskio reads it
CHECKPOINT = "checkpoint"
REQUESTED = "checkpoint.requested"
_NONE = object()


def _task_dir() -> Path | None:
    path = os.environ.get(ATTEMPT_DIR_ENV)
    return Path(path).parent if path else None  # outputs/<task id>/<attempt> -> outputs/<task id>


def checkpoint(obj) -> None:
    """Save ``obj`` as this task's latest checkpoint (replacing the previous one); a no-op outside a task."""
    import cloudpickle

    folder = _task_dir()
    if folder is None:
        return
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = cloudpickle.dumps(obj)
    tmp = folder / f".{CHECKPOINT}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / CHECKPOINT)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    (folder / REQUESTED).unlink(missing_ok=True)  # asked for, and done


def last_checkpoint(default=None):
    """The value of this task's last ``checkpoint()``, from any earlier attempt; ``default`` if none."""
    import pickle

    folder = _task_dir()
    if folder is None:
        return default
    try:
        with open(folder / CHECKPOINT, "rb") as f:
            return pickle.load(f)
    except FileNotFoundError:
        return default


def checkpoint_requested() -> bool:
    """Whether the worker asked this task to checkpoint now (its batch job ends soon)."""
    folder = _task_dir()
    return folder is not None and (folder / REQUESTED).exists()


def request_checkpoint(task_folder: Path) -> None:
    """Called by a worker supervisor warned that its job ends: make checkpoint_requested() True there."""
    task_folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(task_folder / REQUESTED, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
