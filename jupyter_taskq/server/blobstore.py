"""The server's shelf of blobs: parts shared by many payloads (:mod:`jupyter_taskq.blobs`), one file each.

A blob is reference-counted by the tasks that name it (``TaskStore.blob_refs``: tasks
whose files are still kept), so it goes with the last of them, on delete or at its
TTL clean-up. A blob uploaded but never named (the kernel died between the upload
and the batch) is removed by the clean-up after :data:`UNCLAIMED_FOR` seconds; asking
for a blob (``HEAD``) restarts that clock, so one just confirmed is never swept
before its batch arrives. With an object store, blobs are published there like
payloads, so workers on other machines fetch them the same way.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from ..blobs import is_key
from ..objectstore import ObjectStore
from ..payload import read_header
from ..statedir import StateDir
from ..store import TaskStore

UNCLAIMED_FOR = 600.0


class BlobShelf:
    def __init__(self, state: StateDir, store: TaskStore, objects: ObjectStore):
        self.state = state
        self.store = store
        self.objects = objects
        self.folder = state.files / "blobs"
        self.folder.mkdir(mode=0o700, exist_ok=True)
        # The service runs on a thread pool: a submission naming a blob holds this from its check that the
        # blob is here until its tasks are recorded, so a concurrent delete of the last other task cannot
        # remove the blob in between (release() counts references under it).
        self.lock = threading.RLock()

    def has(self, key: str) -> bool:
        """Whether the blob is here; a yes keeps it from the unclaimed sweep for another while."""
        path = self.state.blob(key)
        try:
            os.utime(path)
        except FileNotFoundError:
            return self.objects.remote and self.objects.fetch(path)  # a server on a new machine
        return True

    def missing(self, keys) -> list[str]:
        """Those of ``keys`` that are neither here nor in the object store (a server on a new machine)."""
        return [key for key in dict.fromkeys(keys) if key and not self.objects.fetch(self.state.blob(key))]

    def put(self, key: str, spooled: Path) -> bool:
        """Take ownership of an uploaded blob whose sha256 the caller checked; False if it was here already.

        Raises :class:`~jupyter_taskq.payload.PayloadError` when the bytes are not a payload."""
        assert is_key(key)
        try:
            with open(spooled, "rb") as stream:
                read_header(stream)  # a blob is a payload of its own: refuse anything else
            path = self.state.blob(key)
            with self.lock:
                if path.exists():
                    os.utime(path)
                    return False
                os.replace(spooled, path)
            self.objects.publish(path)
            return True
        finally:
            spooled.unlink(missing_ok=True)

    def release(self, key: str | None) -> bool:
        """Remove the blob if no task with kept files names it any more."""
        if not key:
            return False
        with self.lock:
            if self.store.blob_refs(key):
                return False
            self._remove(self.state.blob(key))
        return True

    def sweep(self, now: float | None = None) -> int:
        """Remove blobs nobody named within :data:`UNCLAIMED_FOR` seconds of their upload (or last HEAD)."""
        horizon = (now or time.time()) - UNCLAIMED_FOR
        removed = 0
        for path in self.folder.glob("*.blob"):
            try:
                if path.stat().st_mtime >= horizon:
                    continue
            except FileNotFoundError:
                continue
            if is_key(path.stem) and self.release(path.stem):
                removed += 1
        return removed

    def _remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self.objects.remove(path)
