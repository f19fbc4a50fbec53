"""Where task files live for good: a directory, or an object store named by an fsspec URL.

A directory (the state directory, or one every machine mounts) needs nothing: every
process reads and writes the files in place. With a URL such as ``s3://bucket/taskq``
each process works on its own copy under its state directory and the object store
holds the truth: the server publishes a payload when it is submitted, a worker
fetches it before an attempt and publishes the result, error, log and outputs after
it (the log also while it grows), and the server fetches what a client asks for.
A file's key is its path relative to the files directory, the same on every machine.
"""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path

from . import tasklog
from .statedir import FILE_MODE


def is_url(location: str | os.PathLike | None) -> bool:
    return isinstance(location, str) and "://" in location and not location.startswith("file://")


class ObjectStore:
    def __init__(self, files_root: Path, url: str | None = None, options: dict | None = None):
        self.files_root = Path(files_root)
        self.url = url.rstrip("/") if url else None
        self.options = dict(options or {})
        self._fs = None
        #: Logs this process's attempts are writing, and the bytes dropped from their head so far
        #: (set by the worker's watcher): they are published compacted (see :mod:`.tasklog`).
        self.log_dropped: dict[Path, int] = {}

    @property
    def remote(self) -> bool:
        return self.url is not None

    @property
    def fs(self):
        if self._fs is None:
            import fsspec  # only an object store needs it

            self._fs = fsspec.filesystem(self.url.split("://", 1)[0], **self.options)
        return self._fs

    def key(self, path: Path) -> str:
        return f"{self.url}/{Path(path).relative_to(self.files_root).as_posix()}"

    def publish(self, path: Path) -> None:
        """Copy a file (or a folder, recursively) this process wrote to the object store."""
        if not self.remote or not path.exists() or path.is_symlink():
            return
        if path.is_dir():
            for root, _dirs, files in os.walk(path):  # a linked folder is listed, never entered
                for name in files:
                    file = Path(root) / name
                    if file in self.log_dropped:  # an attempt's log, in its attempt folder: compacted
                        self.fs.pipe_file(self.key(file), tasklog.compact(file, self.log_dropped[file]))
                    elif stat.S_ISREG(os.lstat(file).st_mode):  # a task's link to elsewhere is not its output
                        self.fs.put_file(str(file), self.key(file))
        elif Path(path) in self.log_dropped:
            self.fs.pipe_file(self.key(path), tasklog.compact(path, self.log_dropped[Path(path)]))
        else:
            self.fs.put_file(str(path), self.key(path))

    def fetch(self, path: Path, refresh: bool = False) -> bool:
        """Make sure ``path`` is here (downloading it, user-only); False if the store has no such file."""
        if not self.remote:
            return path.exists()
        if path.exists() and not refresh:
            return True
        _private_parents(path)
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE))
        try:
            self.fs.get_file(self.key(path), str(partial))
        except FileNotFoundError:
            partial.unlink(missing_ok=True)
            return False
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, path)
        return True

    def read_range(self, path: Path, start: int, limit: int) -> tuple[int, bytes]:
        """(size, bytes from ``start``) of a file that may still be growing; (0, b"") if absent."""
        if not self.remote:
            try:
                with os.fdopen(tasklog.open_regular(path), "rb") as f:  # never through a link the task planted
                    size = os.fstat(f.fileno()).st_size
                    f.seek(min(start, size))
                    return size, f.read(limit)
            except FileNotFoundError:
                return 0, b""
        key = self.key(path)
        try:
            size = self.fs.size(key)
        except FileNotFoundError:
            return 0, b""
        if start >= size:
            return size, b""
        return size, self.fs.cat_file(key, start=start, end=min(size, start + limit))

    def read_log(self, path: Path, offset: int, limit: int, dropped: int) -> tuple[int, int, int, bytes]:
        """``(dropped, size, start, data)``: up to ``limit`` bytes of a log from byte ``start`` =
        ``max(offset, dropped)``; offsets count everything the task printed. Here ``dropped`` is the
        caller's (the task record's); an object store's copy says its own in its header."""
        if not self.remote:
            try:
                with os.fdopen(tasklog.open_regular(path), "rb") as f:  # never through a link the task planted
                    size = os.fstat(f.fileno()).st_size
                    start = max(offset, dropped)
                    f.seek(min(start, size))
                    return dropped, size, start, f.read(limit)
            except OSError:  # gone, or not a regular file (a link or FIFO a task put there): nothing to read
                return dropped, 0, 0, b""
        key = self.key(path)
        for _ in range(3):  # the worker may publish a newer copy between our reads: read again then
            try:
                stored = self.fs.size(key)
                head = self.fs.cat_file(key, start=0, end=min(stored, tasklog.HEADER_LEN))
            except FileNotFoundError:
                return 0, 0, 0, b""
            parsed = tasklog.parse_header(head)
            header = 0 if parsed is None else tasklog.HEADER_LEN
            dropped = parsed or 0
            size = dropped + stored - header
            start = max(offset, dropped)
            if start >= size:
                return dropped, size, start, b""
            begin = header + start - dropped
            data = self.fs.cat_file(key, start=begin, end=min(stored, begin + limit))
            if header == 0 or self.fs.cat_file(key, start=0, end=header) == head:
                return dropped, size, start, data
        return dropped, size, start, data

    def remove(self, path: Path) -> None:
        """Delete a file or folder here and in the object store."""
        if self.remote:
            try:
                self.fs.rm(self.key(path), recursive=True)
            except FileNotFoundError:
                pass


def _private_parents(path: Path) -> None:
    """Make the missing folders above ``path`` user-only, each one (``mkdir(parents=True)`` gives the
    mode only to the last, the others get the umask's 0755)."""
    missing = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
