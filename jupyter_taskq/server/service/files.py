"""A task's files as the API hands them out: shared payload parts (blobs), results, exceptions, outputs, logs.

Part of :class:`~.TaskService` (a mixin of it: its methods use the service's state directory and object store).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Any

from ... import tasklog, taskio
from ... import options as options_module
from ...payload import PayloadError
from ...status import FINAL, TaskStatus
from .base import ServiceParts
from ...serviceerrors import ServiceError, bad_request, conflict, lost

#: ``POST tasks/results``: a result up to this size rides in the bulk answer; a bigger one is fetched on its own.
INLINE_RESULT = 1024 * 1024
#: ``POST tasks/results``: the most result bytes one answer holds (the server reads them into memory).
RESULTS_BUDGET = 32 * 1024 * 1024


def _open_beneath(root: Path, steps: list[str]) -> int:
    """Open ``root/steps[0]/.../steps[-1]`` read-only, following no symbolic link below ``root``."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for step in steps[:-1]:
            inner = os.open(step, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = inner
        # O_NONBLOCK: a FIFO planted as an output must not hang the server on open
        return os.open(steps[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)


class TaskFiles(ServiceParts):
    """Blobs, results, exception pickles, outputs (by fd, never by a path looked up again), logs, disk usage."""

    def has_blob(self, key: str, owner: str) -> bool:
        """Whether ``owner`` uploaded the blob and it is here (someone else's reads as absent)."""
        return self.blobs.has(key, owner)

    def put_blob(self, key: str, spooled: Path, owner: str) -> bool:
        """Keep an uploaded blob (its sha256 checked by the handler) as ``owner``'s; False if it was theirs
        already."""
        try:
            return self.blobs.put(key, spooled, owner)
        except PayloadError as exc:
            raise bad_request(f"a blob must be a jupyter-taskq payload: {exc}") from None

    def result_path(self, task_id: str) -> Path:
        task = self.get_task(task_id)
        if task["status"] != TaskStatus.COMPLETE:
            raise conflict(f"task {task_id} is {task['status']}; its result is available once it is COMPLETE")
        path = self.state.result(task_id)
        if task["result_expired"] or not self.objects.fetch(path):
            raise ServiceError(410, f"the result of task {task_id} has expired (result TTL)", "gone")
        return path

    def results_many(self, task_ids: list[str], owner: str | None = None,
                     budget: int = RESULTS_BUDGET) -> list[tuple[dict, bytes]]:
        """Finished tasks' outcomes in one answer (``POST tasks/results``): ``(head, bytes)`` per id, in order.

        ``head["kind"]`` says what the bytes are: ``result`` (a COMPLETE task's pickled value), ``exception``
        (a FAILED task's pickled exception, when there is one), ``none`` (a final task with nothing to hand
        back: its ``task`` JSON says why), ``pending`` (not finished yet), ``big`` (a result over
        ``INLINE_RESULT`` or past ``budget``, or of a task that ran in an image: fetched on its own with
        ``GET tasks/<id>/result``, which streams it without a copy and marks an image's result), ``gone``
        (expired). One store read for every id, so a map of 2,000 tasks costs
        a few requests instead of 2,000. ``owner``: someone else's task is reported as one that does not
        exist, as ``GET tasks/<id>`` answers 404 for it."""
        found = {t["id"]: t for t in self.store.list(None, limit=len(task_ids) or 1, ids=task_ids)}
        out: list[tuple[dict, bytes]] = []
        for task_id in task_ids:
            task = found.get(task_id)
            if task is not None and owner is not None and task.get("owner") != owner:
                task = None
            if task is None:
                out.append(({"id": task_id, "kind": "none", "task": lost(task_id)}, b""))
                continue
            status = task["status"]
            head = {"id": task_id, "status": status}
            if status not in FINAL:
                out.append((dict(head, kind="pending"), b""))
            elif status == TaskStatus.COMPLETE:
                data, head["kind"] = b"", "big"
                path = self.state.result(task_id)
                if task["result_expired"] or not self.objects.fetch(path):
                    head["kind"] = "gone"
                elif (task.get("environment") or {}).get("hash"):
                    pass  # ran in an image: fetched alone, where the kernel compares the image's packages with its own
                else:
                    with contextlib.suppress(OSError):
                        if path.stat().st_size <= min(INLINE_RESULT, budget):
                            data, head["kind"] = path.read_bytes(), "result"
                            budget -= len(data)
                out.append((head, data))
            else:
                data = b""
                if status == TaskStatus.FAILED:
                    path = self.state.error_pickle(task_id)
                    with contextlib.suppress(OSError):
                        if self.objects.fetch(path, refresh=True) and path.stat().st_size <= min(INLINE_RESULT, budget):
                            data = path.read_bytes()
                            budget -= len(data)
                out.append((dict(head, kind="exception" if data else "none", task=self.to_json(task)), data))
        return out

    def error_pickle_path(self, task_id: str) -> Path:
        self.get_task(task_id)
        path = self.state.error_pickle(task_id)
        if not self.objects.fetch(path, refresh=True):  # each failed attempt writes its own
            raise ServiceError(404, f"task {task_id} has no pickled exception", "not found")
        return path

    def open_output(self, task_id: str, name: str) -> tuple[int, str]:
        """A read-only fd of a registered output of the task's last attempt, and the output's name; nothing
        else is ever served. A saved folder is offered as ``<name>.zip`` and found by its own name too.

        The file is reached from the state directory's ``outputs`` folder one step at a time,
        refusing a symbolic link at every step (``O_NOFOLLOW``), and must be a regular file: a
        task that swaps its output folder (or a file) for a link to ``/etc`` gets nothing served,
        and a swap after the check changes nothing, since what is served is what was opened."""
        task = self.get_task(task_id)
        registered = {o["name"]: o for o in task.get("outputs") or []}
        if name not in registered and (registered.get(f"{name}.zip") or {}).get("kind") == "folder":
            name = f"{name}.zip"  # Output("results").save() is offered as results.zip
        if name not in registered or taskio.output_name_problem(name):
            offered = ", ".join(sorted(registered)[:20]) or "none"
            raise ServiceError(404, f"task {task_id} has no output named {name!r} (its outputs: {offered})",
                               "not found")
        if task["result_expired"]:
            raise ServiceError(410, f"the outputs of task {task_id} have expired (result TTL)", "gone")
        steps = [task_id, str(task["attempt"]), "files", name]
        self.objects.fetch(self.state.files / "outputs" / Path(*steps))
        try:
            fd = _open_beneath(self.state.files / "outputs", steps)
        except FileNotFoundError:
            raise ServiceError(404, f"output {name!r} of task {task_id} is gone", "not found") from None
        except OSError:  # ELOOP, ENOTDIR: a link or a non-folder on the way
            fd = None
        if fd is not None and stat.S_ISREG(os.fstat(fd).st_mode):
            return fd, name
        if fd is not None:
            os.close(fd)
        raise ServiceError(403, f"output {name!r} of task {task_id} is not a regular file in its output folder",
                           "forbidden")

    def _log_of(self, task: dict, attempt: Any = None) -> tuple[Path, int, int]:
        """(path, dropped, attempt) of attempt ``attempt``'s own log (None: the latest attempt's).

        A task from before logs were kept per attempt has one log, read as its latest attempt's."""
        latest = task["attempt"] or 0
        if attempt is None:
            attempt = latest
        try:
            attempt = options_module.check_int("attempt", attempt, 0, options_module.MAX_OFFSET)
        except options_module.OptionError as exc:
            raise bad_request(str(exc).replace("option ", "", 1)) from None
        if attempt > latest or (attempt == 0 and latest):
            raise ServiceError(404, f"task {task['id']} has no attempt {attempt} (it has {latest})", "not found")
        path = self.state.attempt_log(task["id"], attempt)
        if self.objects.remote:
            return path, 0, attempt  # the object store's copy says its own count in its header
        if attempt == latest and not path.exists() and self.state.log(task["id"]).exists():
            return self.state.log(task["id"]), task.get("log_dropped") or 0, attempt
        return path, tasklog.read_dropped(path), attempt

    def log_size(self, task: dict, attempt: int) -> int:
        """Bytes attempt ``attempt`` printed (a capped log counts what it dropped too)."""
        path, dropped, _ = self._log_of(task, attempt)
        return self.objects.read_log(path, 0, 0, dropped)[1]

    def log_chunk(self, task_id: str, offset: int, limit: int = 1024 * 1024, attempt: Any = None) -> dict:
        """The log from byte ``offset`` (clients follow a running task by passing back ``next_offset``).

        Offsets count every byte the task printed. A capped log keeps bytes ``[dropped, size)``,
        contiguous (see :mod:`..tasklog`); asked for bytes before ``dropped``, the answer starts
        at ``dropped`` with a line saying how many bytes were skipped (``skipped``). Answers hold
        at most ``limit`` bytes, never end inside a UTF-8 character, and ``next_offset < size``
        means there is more: page on from ``next_offset``. Each attempt has its own log (``attempt``:
        its number; the latest attempt's by default): a retry starts a new log, at offset 0."""
        task = self.get_task(task_id)
        try:
            offset = options_module.check_int("offset", offset, 0, options_module.MAX_OFFSET)
        except options_module.OptionError as exc:
            raise bad_request(str(exc).replace("option ", "", 1)) from None
        path, dropped, attempt = self._log_of(task, attempt)
        dropped, size, start, data = self.objects.read_log(path, offset, limit, dropped)
        if data[:1] == b"\0" and not self.objects.remote:  # landed in a hole punched since we read the count
            task = self.get_task(task_id)
            dropped, size, start, data = self.objects.read_log(path, offset, limit, self._log_of(task, attempt)[1])
        reset = offset > size  # an offset from another log (the file was replaced): start again from its top
        if reset:
            offset = 0
            dropped, size, start, data = self.objects.read_log(path, 0, limit, dropped)
        if start + len(data) < size:
            data = data[:tasklog.utf8_safe_end(data)]
        skipped = start - offset
        text = (tasklog.marker(skipped) if skipped else "") + data.decode("utf-8", errors="replace")
        return {"offset": start, "next_offset": start + len(data), "size": size, "reset": reset,
                "skipped": skipped, "dropped": dropped, "expired": bool(task["result_expired"]),
                "status": task["status"], "attempt": attempt, "data": text}

    def disk_usage(self) -> int:
        """Bytes of task files and state (computed at most once per clean-up interval)."""
        if self._disk_usage is None:
            total = blobs = 0
            blob_folder = str(self.blobs.folder)
            for top in {self.state.root, self.state.files}:
                for root, _dirs, files in os.walk(top):
                    for name in files:
                        try:
                            size = os.lstat(os.path.join(root, name)).st_blocks * 512  # a capped log is sparse
                        except FileNotFoundError:
                            continue
                        total += size
                        if root == blob_folder:
                            blobs += size
            self._disk_usage, self._blob_usage = total, blobs
        return self._disk_usage

    def blob_usage(self) -> int:
        """Bytes of the shared payload parts (blobs): measured by the same walk as :meth:`disk_usage`."""
        self.disk_usage()
        return self._blob_usage
