"""Following a running attempt's outputs, progress and log, from its worker.

The task writes files (see :mod:`jupyter_taskq.taskio`); the worker, which wakes
four times a second anyway, copies what changed into the store, so the API reads
only the database. It also keeps the log bounded: past the cap it frees the log's
head without moving a byte (see :mod:`..tasklog`), after recording exactly how many
bytes were dropped.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from typing import Any

from .. import tasklog
from ..objectstore import ObjectStore
from ..statedir import StateDir
from ..status import TaskStatus
from ..backends.taskstore import TaskStore
from ..taskio import MANIFEST, PROGRESS, read_manifest_checked, read_progress


def _mtime(path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return None


LOG_PUBLISH_INTERVAL = 2.0  # how often a growing log is copied to an object store
log = logging.getLogger("jupyter_taskq.worker")
_cannot_punch_warned = False


class AttemptWatcher:
    def __init__(self, state: StateDir, task: dict, log_max_bytes: int, objects: ObjectStore | None = None):
        self.task_id = task["id"]
        self.attempt = task["attempt"]
        self._fenced = False  # a write was refused: the task went on without this attempt
        self.directory = state.attempt_dir(task["id"], task["attempt"])
        self.log_path = state.attempt_log(task["id"], task["attempt"])
        self.log_max_bytes = log_max_bytes
        # Each attempt has its own log, offsets from 0; the record's count was the previous attempt's.
        # (A log already here is an uncounted attempt's, handed back at a shutdown: it goes on from it.)
        self.log_dropped = tasklog.read_dropped(self.log_path)
        self._dropped_recorded = self.log_dropped == (task.get("log_dropped") or 0)
        self._seen: dict[str, int | None] = {PROGRESS: None, MANIFEST: None}
        self._manifest_noted: set[tuple[int, str]] = set()  # bad manifest lines already said in the log
        self.objects = objects
        self._log_published: tuple[int | None, float] = (None, 0.0)
        if objects is not None:  # one attempt at a time per worker: forget the last one's log
            objects.log_dropped.clear()
            objects.log_dropped[self.log_path] = self.log_dropped

    def sync(self, store: TaskStore) -> bool:
        """Copy new progress, outputs and log truncation into the store; True if anything changed."""
        changed: dict[str, Any] = {}
        for name in (PROGRESS, MANIFEST):
            mtime = _mtime(self.directory / name)
            if mtime != self._seen[name]:
                self._seen[name] = mtime
                if name == PROGRESS:
                    changed["progress"] = read_progress(self.directory)
                else:
                    changed["outputs"], problems = read_manifest_checked(self.directory)
                    self._note_manifest_problems(problems)
        if self._cap_log(store) or not self._dropped_recorded:
            changed["log_dropped"] = self.log_dropped
            self._dropped_recorded = True
        if changed:
            self._write(store, **changed)
        self._publish_log()
        return bool(changed)

    def _note_manifest_problems(self, problems: list[tuple[int, str]]) -> None:
        """Say in the attempt's log (where its owner looks) which manifest lines were ignored, once each: the
        attempt goes on and keeps its valid outputs. Appended only to the log as a regular file with one
        name (with tasks run as their owners the folder is the owner's while the attempt runs)."""
        new = [p for p in problems if p not in self._manifest_noted]
        if not new:
            return
        self._manifest_noted.update(new)
        text = "".join(f"[jupyter-taskq: outputs manifest line {n} ignored: {why}]\n" for n, why in new[:20])
        if len(new) > 20:
            text += f"[jupyter-taskq: {len(new) - 20} more bad outputs manifest lines ignored]\n"
        log.warning("task %s: %d bad outputs manifest line(s) ignored, e.g. line %d: %s",
                    self.task_id, len(new), *new[0])
        try:
            fd = tasklog.open_regular(self.log_path, os.O_WRONLY | os.O_APPEND)
        except OSError:
            return
        try:
            if os.fstat(fd).st_nlink == 1:
                os.write(fd, text.encode("utf-8", "replace"))
        except OSError:
            pass
        finally:
            os.close(fd)

    def _write(self, store: TaskStore, **fields) -> None:
        """Only while this attempt is the task's RUNNING one: the fence that keeps a superseded attempt (its
        worker was stopped and the task requeued or cancelled) from writing over its successor's progress,
        outputs or log count. Its worker sees that within a second and ends it (worker/process.py)."""
        if not store.transition(self.task_id, TaskStatus.RUNNING, [TaskStatus.RUNNING], attempt=self.attempt,
                                **fields) and not self._fenced:
            self._fenced = True
            log.warning("task %s: attempt %d is no longer the running one; its progress and outputs are discarded",
                        self.task_id, self.attempt)

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

    def _cap_log(self, store: TaskStore) -> bool:
        """Past the cap, drop the log's head down to half the cap (from a line start); True if it did.

        The count is recorded before the hole is punched, so a reader never reads into the hole."""
        global _cannot_punch_warned
        try:
            info = os.lstat(self.log_path)  # not through a link the task may have put in its place
        except FileNotFoundError:
            return False
        size = info.st_size
        if not stat.S_ISREG(info.st_mode) or size - self.log_dropped <= self.log_max_bytes or _cannot_punch_warned:
            return False
        try:
            cut = tasklog.line_start_after(self.log_path, size - self.log_max_bytes // 2)
            tasklog.record_dropped(self.log_path, cut)  # for reading this attempt's log once a later one runs
        except OSError:  # swapped for a link or FIFO meanwhile (tasklog opens only regular files)
            return False
        self._write(store, log_dropped=cut)
        self.log_dropped = cut
        if self.objects is not None:
            self.objects.log_dropped[self.log_path] = cut
        try:
            punched = tasklog.punch_head(self.log_path, cut)
        except OSError:  # no longer a regular file: nothing of ours to free
            return True
        if not punched:
            _cannot_punch_warned = True
            log.warning("the filesystem of %s cannot punch holes (fallocate): task logs are not capped",
                        self.log_path)
        return True
