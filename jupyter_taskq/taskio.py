"""What a running task uses to hand things back: ``Output(path).save()`` and ``progress()``.

The worker runs each attempt with ``JUPYTER_TASKQ_ATTEMPT_DIR`` set to a private
directory of that attempt; files saved there (and a progress file) are picked up by
the worker and served by the server. Called outside a task (a plain call in the
kernel, for debugging) both are harmless no-ops.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

ATTEMPT_DIR_ENV = "JUPYTER_TASKQ_ATTEMPT_DIR"
GPUS_ENV = "JUPYTER_TASKQ_GPUS"
PROGRESS_INTERVAL = 0.25  # seconds between progress writes: a tight loop may call it a million times
MANIFEST = "manifest.jsonl"
PROGRESS = "progress.json"
FILES = "files"
MAX_PROGRESS = 1e15  # done and total: any real count fits; 1e308 or inf would only break readers
MAX_MESSAGE = 500
MAX_OUTPUT_NAME = 255  # what a file system takes as one name, and what a URL of the output can carry

_monotonic = time.monotonic
_last_write = float("-inf")
_latest: tuple | None = None


def attempt_dir() -> Path | None:
    """This attempt's private folder (made on first use: most tasks never need one)."""
    path = os.environ.get(ATTEMPT_DIR_ENV)
    if not path:
        return None
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)  # outputs/<task id>: makedirs gives
    os.makedirs(path, mode=0o700, exist_ok=True)  # the mode to the last folder only, the others 0755
    return Path(path)


def progress(done: float, total: float | None = None, message: str = "") -> None:
    """Report progress; cheap in a tight loop (it writes at most four times a second).

    ``done`` and ``total`` must be finite numbers from 0 to 1e15 (a ValueError says so at once, in the task,
    where the bad value came from, rather than a task list that no browser can parse)."""
    global _last_write, _latest
    _latest = (_progress_number("done", done), _optional_progress_number("total", total), message)
    now = _monotonic()
    if now - _last_write >= PROGRESS_INTERVAL:
        _last_write = now
        _write_progress(_latest)


_on_start_value = None


def gpus() -> list[int]:
    """Inside a task: the physical ids of the GPUs it holds, in order (``[2, 3]`` for a gpu=2 task on GPUs
    2 and 3); ``CUDA_VISIBLE_DEVICES`` lists the same, so the task sees them as ``cuda:0``, ``cuda:1``, and
    ``len(gpus())`` is the ``WORLD_SIZE`` of a one-process-per-GPU launch. ``[]`` outside a task or for a
    CPU task."""
    return [int(g) for g in os.environ.get(GPUS_ENV, "").split(",") if g.strip().isdigit()]


def on_start_value():
    """The return value of the task's ``on_start`` (the task option), run once in this task process before
    its first attempt: with ``keep_warm_seconds`` the same object every warm attempt sees, e.g. a model
    already on the GPU. None without an on_start, and outside a task (a plain call in the kernel)."""
    return _on_start_value


def set_on_start_value(value) -> None:
    """Set by the runner (jupyter_taskq/worker/runner.py) before each attempt that has an on_start."""
    global _on_start_value
    _on_start_value = value


def reset() -> None:
    global _last_write, _latest
    _last_write, _latest = float("-inf"), None


def flush_progress() -> None:
    """Write the last reported value (the runner calls this when the task returns)."""
    if _latest is not None:
        _write_progress(_latest)


def _optional_progress_number(name: str, value) -> float | int | None:
    """None, or ``value`` checked as :func:`_progress_number` does."""
    return None if value is None else _progress_number(name, value)


def _progress_number(name: str, value) -> float | int:
    """``value`` if it is a finite number within [0, MAX_PROGRESS], else ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)  # numpy scalars, Decimal, Fraction
        except (TypeError, ValueError):
            raise ValueError(f"progress(): {name} must be a number, got {value!r}") from None
    if not ((isinstance(value, int) or math.isfinite(value)) and 0 <= value <= MAX_PROGRESS):  # an int may
        # be too big for a float (math.isfinite(10**400) raises); the range holds it
        raise ValueError(f"progress(): {name} must be a finite number from 0 to {MAX_PROGRESS:g}, got {value!r}")
    return value


def clean_progress(record) -> dict | None:
    """The one check of a progress record, wherever it comes from: the task's progress.json (read by the
    worker: a task may write it by hand), or the store (a record from before this check). A record with
    a number that is not finite and in range is refused (None); the fraction is always recomputed."""
    if not isinstance(record, dict):
        return None
    try:
        done = _progress_number("done", record.get("done"))
        total = _optional_progress_number("total", record.get("total"))
    except ValueError:
        return None
    at = record.get("at")
    if isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at):
        at = None
    message = record.get("message")
    return {"done": done, "total": total, "message": (message if isinstance(message, str) else "")[:MAX_MESSAGE],
            "fraction": (done / total) if total else None, "at": at}


def _write_progress(value: tuple) -> None:
    directory = attempt_dir()
    if directory is None:
        return
    done, total, message = value
    record = {"done": done, "total": total, "message": str(message)[:MAX_MESSAGE],
              "fraction": (done / total) if total else None, "at": time.time()}
    _write_atomic(directory / PROGRESS, json.dumps(record, allow_nan=False).encode())


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class Output:
    """A file or folder the task produced, offered for download once saved (a folder as a zip)."""

    def __init__(self, path: str | os.PathLike, name: str | None = None):
        self.path = Path(path)
        self.name = name

    def save(self) -> str:
        """Snapshot the file (or folder) into the task's output store; returns the name it is offered under.

        A copy, never a link: the task (or the notebook) may rewrite the same file later, and
        what this attempt saved must not change with it; the user's file is left untouched."""
        if not self.path.exists():
            raise FileNotFoundError(f"Output path {str(self.path)!r} does not exist")
        folder = self.path.is_dir()
        base = self.name or self.path.resolve().name or "output"
        if folder and not base.endswith(".zip"):
            base += ".zip"
        problem = output_name_problem(base)
        if problem:
            raise ValueError(f"invalid output name {base!r}: {problem}")
        directory = attempt_dir()
        if directory is None:
            return base  # not running on the queue: nothing to register
        files = directory / FILES
        files.mkdir(mode=0o700, exist_ok=True)
        name = _unique(files, base)
        target = files / name
        if folder:  # the zip is made now, so it is a snapshot of the folder as it is at save()
            archive = shutil.make_archive(str(target.with_suffix("")) + ".tmp", "zip", root_dir=self.path)
            os.chmod(archive, 0o600)
            os.replace(archive, target)
        else:
            snapshot(self.path, target)
        entry = {"name": name, "size": target.stat().st_size, "kind": "folder" if folder else "file"}
        fd = os.open(directory / MANIFEST, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, (json.dumps(entry) + "\n").encode())
        finally:
            os.close(fd)
        return name


FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)


def snapshot(source: Path, target: Path) -> None:
    """Copy ``source`` to a new user-only file ``target``: a copy-on-write clone where the filesystem
    can (btrfs, XFS: instant, no space used until either side changes), else a kernel-side copy."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    with open(source, "rb") as src:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as dst:
                _clone_or_copy(src, dst)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    os.replace(tmp, target)


def _clone_or_copy(src, dst) -> None:
    try:
        import fcntl

        fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
        return
    except (OSError, ImportError):
        pass  # not a reflink filesystem (ext4, tmpfs), or another filesystem than the source's
    size = os.fstat(src.fileno()).st_size
    try:
        copied = 0
        while copied < size:  # may still clone on filesystems that support it; in-kernel copy otherwise
            n = os.copy_file_range(src.fileno(), dst.fileno(), size - copied)
            if n == 0:
                break
            copied += n
        if copied == size and os.fstat(src.fileno()).st_size == size:
            return
    except (OSError, AttributeError):
        pass
    src.seek(0)
    dst.seek(0)
    dst.truncate()
    shutil.copyfileobj(src, dst, 1024 * 1024)


def _unique(directory: Path, name: str) -> str:
    if not (directory / name).exists():
        return name
    stem, dot, suffix = name.partition(".")
    for i in range(1, 10_000):
        candidate = f"{stem}-{i}{dot}{suffix}"
        if not (directory / candidate).exists():
            return candidate
    raise FileExistsError(name)


def _read_regular(path: Path, limit: int = 16 * 1024 * 1024) -> str:
    """The text of ``path`` if it is a regular file: the worker and server read these from a folder the
    task controls (its owner's, in the hub service), so never through a link or from a FIFO."""
    from .tasklog import open_regular

    with os.fdopen(open_regular(path), "rb") as f:
        return f.read(limit).decode("utf-8", errors="replace")


def output_name_problem(name) -> str | None:
    """Why ``name`` cannot name an output (None: it can): one name in the attempt's ``files`` folder, no
    path. The one check for names, whether :meth:`Output.save` or a task's own manifest line gives them:
    the server serves ``outputs/<name>`` and advertises its URL, so a ``/`` or ``..`` would point elsewhere."""
    if not isinstance(name, str) or not name:
        return "it must be a non-empty string"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_OUTPUT_NAME:
        return f"it is longer than {MAX_OUTPUT_NAME} bytes"
    if any(c in name for c in "/\\\0"):
        return "it must be one name, without '/', '\\' or NUL"
    if name.startswith("."):
        return "it must not start with '.' (no '.', '..' or hidden names)"
    return None


def check_manifest_entry(entry) -> tuple[dict | None, str | None]:
    """One line of the outputs manifest, validated like any input: ``(entry, None)`` or ``(None, why)``."""
    if not isinstance(entry, dict):
        return None, "not a JSON object"
    name, size, kind = entry.get("name"), entry.get("size", 0), entry.get("kind") or "file"
    problem = output_name_problem(name)
    if problem:
        return None, f"name {str(name)[:80]!r}: {problem}"
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < 2 ** 63:
        return None, f"output {name!r}: size {str(size)[:80]!r} is not a whole number of bytes"
    if kind not in ("file", "folder"):
        return None, f"output {name!r}: kind {str(kind)[:80]!r} is neither 'file' nor 'folder'"
    return {"name": name, "size": size, "kind": kind}, None


def read_manifest_checked(directory: Path) -> tuple[list[dict], list[tuple[int, str]]]:
    """The valid outputs of the attempt's manifest (a name given twice: its last line) and, for each bad
    line, ``(line number, why)``: a bad line is skipped, never the attempt's other outputs."""
    try:
        lines = _read_regular(directory / MANIFEST).splitlines()
    except OSError:
        return [], []
    entries: dict[str, dict] = {}
    problems: list[tuple[int, str]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry, problem = check_manifest_entry(json.loads(line))
        except (ValueError, RecursionError):
            entry, problem = None, "not valid JSON"
        if entry is None:
            problems.append((number, problem or "not a valid entry"))
        else:
            entries.pop(entry["name"], None)
            entries[entry["name"]] = entry
    return list(entries.values()), problems


def read_manifest(directory: Path) -> list[dict]:
    return read_manifest_checked(directory)[0]


def read_progress(directory: Path) -> dict | None:
    """The attempt's last progress, checked (:func:`clean_progress`): the task may have written the file itself."""
    try:
        return clean_progress(json.loads(_read_regular(directory / PROGRESS, 64 * 1024)))
    except (OSError, ValueError, RecursionError):
        return None
