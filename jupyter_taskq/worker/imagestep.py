"""The image step of an attempt: get the task's image ready before its process starts, and say so.

The build (:mod:`.images`) runs on a thread while the worker goes on with its duties: heartbeats (a
build of minutes must not look like a lost worker), cancel requests, and copying the build's log into
the attempt's log as it grows (live in the widget and panel), with the task's progress reading
"building image 3f2a…". A cancelled task stops waiting; the build goes on for the others that want it.
"""

from __future__ import annotations

import json
import os
import threading
import time

from .. import image as image_spec
from .. import tasklog
from ..statedir import make_private_dir
from ..status import TaskStatus
from . import images
from .runner import IMAGE_ENV

POLL = 0.25


class ImageStep:
    def __init__(self, worker, task: dict, header: dict):
        self.worker, self.task, self.header = worker, task, header  # header: the payload's, parsed by the attempt
        self.directory = images.image_dir(worker.state.root)
        self.log_path = worker.state.attempt_log(task["id"], task["attempt"])
        self._lease: images.Lease | None = None
        self._error: BaseException | None = None
        self._abandoned = False
        self._lock = threading.Lock()

    def run(self) -> tuple[images.Lease | None, tuple[str, dict | None] | None]:
        """(the lease, None) when the image is ready; (None, outcome) when the attempt ends here."""
        task, worker = self.task, self.worker
        make_private_dir(worker.state.attempt_dir(task["id"], task["attempt"]))
        spec = task["image"]
        built = image_spec.is_built(spec)
        digest = images.image_hash(spec) if built else None
        build_log = self.directory / f"{digest}.log" if built else None
        copied = 0
        if digest is not None and not images._ready(self.directory, digest):  # (digest: built)
            self._progress(f"building image {digest[:12]}…")
        thread = threading.Thread(target=self._prepare, args=(spec,), daemon=True, name="image-build")
        thread.start()
        while True:
            thread.join(POLL)
            if build_log is not None and self._building_seen:
                copied = self._copy(build_log, copied)
            if not thread.is_alive():
                break
            worker.housekeeping(task["id"])
            if worker.stopping or worker.store.cancel_requested(task["id"]):
                with self._lock:
                    self._abandoned = True
                if worker.stopping:
                    return None, ("interrupted", None)
                return None, ("cancelled", {"type": "Cancelled", "message": "cancelled while its image was built",
                                            "traceback": None})
        if self._error is not None:
            message = str(self._error)
            self._say(f"[jupyter-taskq: image failed: {message}]\n")
            # final: the same spec fails the same way on every retry (images.FAILED_FOR keeps the answer)
            return None, ("failed", {"type": "ImageBuildError", "message": message, "traceback": None,
                                     "final": "the image could not be built"})
        lease = self._lease
        assert lease is not None  # the thread ended without an error, and we did not abandon it
        problem = image_spec.version_problem(self._pickled_version(), lease.environment.get("python") or "",
                                             f"the image's interpreter {lease.python}")
        if problem and lease.environment.get("python"):
            lease.release()
            self._say(f"[jupyter-taskq: {problem}]\n")
            return None, ("failed", {"type": "ImageBuildError", "message": problem, "traceback": None,
                                     "final": "the image's Python cannot load the call"})
        try:
            worker.store.update_fields(task["id"], environment=lease.environment)
        except Exception:  # noqa: BLE001 - the task still runs; its record lacks the package list
            pass
        if built:
            self._progress(None)
        return lease, None

    _building_seen = False

    def _prepare(self, spec: dict) -> None:
        try:
            lease = images.prepare(spec, self.directory, self._say_building, no_build=self.worker.config.run_as_owner)
        except BaseException as exc:  # noqa: BLE001 - reported by run()
            self._error = exc if isinstance(exc, images.ImageBuildError) else images.ImageBuildError(
                f"{type(exc).__name__}: {exc}")
            return
        with self._lock:
            if self._abandoned:
                lease.release()
            else:
                self._lease = lease

    def _say_building(self, text: str) -> None:
        self._building_seen = True
        self._say(text)

    def _pickled_version(self) -> str:
        return str(self.header.get("python_version") or "")

    def _copy(self, build_log, offset: int) -> int:
        """New bytes of the image's build log, appended to the attempt's log."""
        try:
            with open(build_log, "rb") as f:
                f.seek(offset)
                data = f.read()
        except OSError:
            return offset
        if data:
            self._say(data.decode("utf-8", "replace"))
        return offset + len(data)

    def _say(self, text: str) -> None:
        try:
            if not os.path.lexists(self.log_path):  # the attempt's log, private as the task process makes it
                os.close(os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
            fd = tasklog.open_regular(self.log_path, os.O_WRONLY | os.O_APPEND)
        except OSError:
            return
        try:
            os.write(fd, text.encode("utf-8", "replace"))
        except OSError:
            pass
        finally:
            os.close(fd)

    def _progress(self, message: str | None) -> None:
        """The task's progress while its image builds (cleared once it is ready; the task sets its own)."""
        task = self.task
        record = None if message is None else {"done": 0, "total": None, "message": message, "fraction": None,
                                               "at": time.time()}
        try:
            if self.worker.store.transition(task["id"], TaskStatus.RUNNING, [TaskStatus.RUNNING],
                                            attempt=task["attempt"], progress=record):
                self.worker.changed(task["id"])
        except Exception:  # noqa: BLE001 - progress is only shown
            pass


def run_env(lease) -> dict[str, str]:
    return {IMAGE_ENV: json.dumps(lease.run_env)}
