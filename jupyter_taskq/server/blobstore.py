"""The server's shelf of blobs: parts shared by many payloads (:mod:`jupyter_taskq.blobs`), one file each.

A blob is reference-counted by the tasks that name it (``TaskStore.blob_refs``: tasks
whose files are still kept), so it goes with the last of them, on delete or at its
TTL clean-up. A blob uploaded but never named (the kernel died between the upload
and the batch) is removed by the clean-up after :data:`UNCLAIMED_FOR` seconds; asking
for a blob (``HEAD``) restarts that clock, so one just confirmed is never swept
before its batch arrives. With an object store, blobs are published there like
payloads, so workers on other machines fetch them the same way.

A blob belongs to whoever uploaded it, as a payload does (issue 25): the store keeps one record per
(blob, owner) (``TaskStore.add_blob_owner``), and only an owner may ask for it (``HEAD``) or name it in
a task. Someone uploading the same bytes again becomes an owner too, sharing the one file. With no
record there is no access: a blob's bytes carry another user's function and the data it captured,
and even a yes to ``HEAD`` would tell someone that this content was uploaded.
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
from ..backends.taskstore import TaskStore

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

    def has(self, key: str, owner: str) -> bool:
        """Whether the blob is here as ``owner``'s; a yes keeps it from the unclaimed sweep for another while."""
        if not self.store.blob_owned(key, owner):
            return False
        path = self.state.blob(key)
        try:
            os.utime(path)
        except FileNotFoundError:
            return self.objects.remote and self.objects.fetch(path)  # a server on a new machine
        return True

    def missing(self, wanted) -> list[str]:
        """Of ``wanted`` ((key, owner) pairs), the keys not here as that owner's: not uploaded by them, or
        neither here nor in the object store (a server on a new machine)."""
        return list(dict.fromkeys(key for key, owner in dict.fromkeys(wanted) if key and not (
            owner is not None and self.store.blob_owned(key, owner) and self.objects.fetch(self.state.blob(key)))))

    def put(self, key: str, spooled: Path, owner: str) -> bool:
        """Keep an uploaded blob whose sha256 the caller checked, as ``owner``'s; False if it was theirs
        already (the same bytes from someone else: one file, and a record that it is ``owner``'s too).

        Raises :class:`~jupyter_taskq.payload.PayloadError` when the bytes are not a payload."""
        assert is_key(key)
        try:
            with open(spooled, "rb") as stream:
                read_header(stream)  # a blob is a payload of its own: refuse anything else
            path = self.state.blob(key)
            with self.lock:  # (release() removes the records and the file under it)
                if path.exists():
                    os.utime(path)
                    return self.store.add_blob_owner(key, owner)
                os.replace(spooled, path)
                self.store.add_blob_owner(key, owner)
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
            self.store.forget_blob(key)  # first: a file without records is no one's; records without it, nothing
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
