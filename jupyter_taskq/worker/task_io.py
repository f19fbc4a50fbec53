"""Following a running attempt's outputs, progress and log, from its worker.

The task writes files (see :mod:`jupyter_taskq.taskio`); the worker, which wakes
four times a second anyway, copies what changed into the store, so the API reads
only the database. It also keeps the log bounded: past the cap it keeps the tail
and says how much was dropped.
"""

from __future__ import annotations

import os
import time

from ..objectstore import ObjectStore
from ..statedir import StateDir
from ..store import TaskStore
from ..taskio import MANIFEST, PROGRESS, read_manifest, read_progress


def _mtime(path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return None


LOG_PUBLISH_INTERVAL = 2.0  # how often a growing log is copied to an object store


class AttemptWatcher:
    def __init__(self, state: StateDir, task: dict, log_max_bytes: int, objects: ObjectStore | None = None):
        self.task_id = task["id"]
        self.directory = state.attempt_dir(task["id"], task["attempt"])
        self.log_path = state.log(task["id"])
        self.log_max_bytes = log_max_bytes
        self.log_dropped = task.get("log_dropped") or 0
        self._seen: dict[str, int | None] = {PROGRESS: None, MANIFEST: None}
        self.objects = objects
        self._log_published: tuple[int | None, float] = (None, 0.0)

    def sync(self, store: TaskStore) -> bool:
        """Copy new progress, outputs and log truncation into the store; True if anything changed."""
        changed = {}
        for name in (PROGRESS, MANIFEST):
            mtime = _mtime(self.directory / name)
            if mtime != self._seen[name]:
                self._seen[name] = mtime
                if name == PROGRESS:
                    changed["progress"] = read_progress(self.directory)
                else:
                    changed["outputs"] = read_manifest(self.directory)
        if self._cap_log():
            changed["log_dropped"] = self.log_dropped
        if changed:
            store.update_fields(self.task_id, **changed)
        self._publish_log()
        return bool(changed)

    def _publish_log(self) -> None:
        """Followers on another machine read the log from the object store: keep it near-live there."""
        if self.objects is None or not self.objects.remote:
            return
        size, when = _mtime(self.log_path), time.monotonic()
        if size != self._log_published[0] and when - self._log_published[1] >= LOG_PUBLISH_INTERVAL:
            self._log_published = (size, when)
            try:
                self.objects.publish(self.log_path)
            except Exception:  # noqa: BLE001 - a flaky store must not fail the task; the final copy retries
                pass

    def _cap_log(self) -> bool:
        try:
            size = os.stat(self.log_path).st_size
        except FileNotFoundError:
            return False
        if size <= self.log_max_bytes:
            return False
        keep = self.log_max_bytes // 2
        with open(self.log_path, "r+b") as log:
            log.seek(size - keep)
            tail = log.read()
            newline = tail.find(b"\n", 0, 4096)
            if newline >= 0:
                tail = tail[newline + 1:]
            dropped = size - len(tail)
            self.log_dropped += dropped
            marker = (f"[jupyter-taskq: {self.log_dropped} bytes of earlier output dropped; "
                      f"the log keeps its last {self.log_max_bytes // 2} bytes]\n").encode()
            log.seek(0)
            log.truncate()
            log.write(marker + tail)  # the task appends (O_APPEND) after this
        return True
