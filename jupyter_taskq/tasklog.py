"""A task's log: what it printed, capped to its tail honestly, and read back by offset.

The task appends to its log file itself (``O_APPEND``, so its own subprocesses'
output lands in order); the worker caps it without ever moving a byte: past the cap
it *punches a hole* over the head of the file (``fallocate(PUNCH_HOLE)``: the blocks
are freed, the file keeps its size). So an offset always means the same byte, the
kept part is exactly bytes ``[dropped, size)`` of everything printed, contiguous, and
``dropped`` is exact. Rewriting the file instead (copy the tail, truncate, write it
back) loses whatever the task appends meanwhile, which is how logs used to miss lines.

``dropped`` travels in the task's record (``log_dropped``), written *before* the hole
is punched: a reader that sees a count never reads into the hole. A reader that saw
an older count lands in the hole (zeros) and asks again. In an object store the
log is published compacted: a fixed-width header with ``dropped`` and then the kept
bytes (:func:`compact`), so no hole travels.

Bytes come back exactly as printed, a progress bar's ``\\r`` frames too: offsets stay exact and a follow
appends what came next. Drawing ``\\r`` in place is the reader's job, in one place for the Lab's log
views (``labextension/src/logscreen.ts``); a notebook or terminal that prints ``h.logs()`` draws it itself.
"""

from __future__ import annotations

import ctypes
import os
import re
import secrets
import stat
from pathlib import Path

BLOCK = 4096
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_HEADER_FORMAT = b"\0jupyter-taskq log; dropped=%020d\n"  # starts with NUL: no task prints this by chance
HEADER_LEN = len(_HEADER_FORMAT % 0)
_HEADER = re.compile(rb"\0jupyter-taskq log; dropped=(\d{20})\n")


def open_regular(path: Path | str, flags: int = os.O_RDONLY) -> int:
    """An fd of ``path`` only if it is a regular file itself, not a link to one, nor a FIFO or device.

    With tasks running as their owners (the hub service), an attempt's folder belongs to the task's
    owner while root reads and trims its log: a task that swaps its log for a link (to a file of
    another user) or a FIFO (to hang the reader) must get nothing. ``O_NONBLOCK`` keeps the open of a
    FIFO from blocking; it is cleared again for a regular file."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FileNotFoundError(f"{path} is not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def marker(dropped: int) -> str:
    """The line shown where output was dropped (never stored: the reader adds it)."""
    return f"[jupyter-taskq: {dropped} bytes of earlier output dropped; the log keeps its tail]\n"


def dropped_path(log: Path) -> Path:
    """Where a per-attempt log's ``dropped`` is kept (the task record holds only the latest attempt's)."""
    return Path(log).with_name(Path(log).name + ".dropped")


def record_dropped(log: Path, dropped: int) -> None:
    """Write ``dropped`` beside the log (atomically), before the hole is punched, like the record's."""
    target = dropped_path(log)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(8)}")  # a name the task cannot plant a link at
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(str(dropped))
    os.replace(tmp, target)


def read_dropped(log: Path) -> int:
    """The ``dropped`` of a per-attempt log; 0 for a log never capped (or a file that says nothing sensible)."""
    try:
        with os.fdopen(open_regular(dropped_path(log)), "r") as f:
            return max(0, int(f.read(64) or 0))
    except (OSError, ValueError):
        return 0


def line_start_after(path: Path, offset: int) -> int:
    """The start of the first whole line at or after ``offset`` (``offset`` if none starts within 4 KiB)."""
    with os.fdopen(open_regular(path), "rb") as f:
        f.seek(offset)
        newline = f.read(BLOCK).find(b"\n")
    return offset + newline + 1 if newline >= 0 else offset


_fallocate = None


def punch_head(path: Path, upto: int) -> bool:
    """Free the blocks of ``path`` before ``upto`` (whole blocks; the size stays). False if unsupported."""
    global _fallocate
    if _fallocate is None:
        libc = ctypes.CDLL(None, use_errno=True)
        _fallocate = libc.fallocate
        _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        _fallocate.restype = ctypes.c_int
    length = upto // BLOCK * BLOCK
    if length <= 0:
        return True
    fd = open_regular(path, os.O_WRONLY)
    try:
        return _fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, 0, length) == 0
    finally:
        os.close(fd)


def compact(path: Path, dropped: int) -> bytes:
    """The published form of a log: the header, then the kept bytes (no hole)."""
    header = _HEADER_FORMAT % dropped
    with os.fdopen(open_regular(path), "rb") as f:
        f.seek(dropped)
        return header + f.read()


def parse_header(head: bytes) -> int | None:
    match = _HEADER.match(head)
    return int(match.group(1)) if match else None


def utf8_safe_end(data: bytes) -> int:
    """How much of ``data`` to hand out so a chunk never ends inside a UTF-8 character (the rest comes next)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return len(data)  # ASCII: complete
        if byte >= 0xC0:  # the lead byte of the last character
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) if back >= need else len(data) - back
    return len(data)
