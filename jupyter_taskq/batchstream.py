"""The streamed body of ``POST tasks/batch``: many payloads in one request, no base64, no JSON around them.

    repeated: options length (4 bytes, big endian) | options JSON object | payload length (8 bytes) | payload

JSON with base64 payloads made one batch of 40 x 50 MB a 2.7 GB body that the server
had to hold, parse and decode whole. In this form the server writes each payload to
its own spool file as the bytes arrive, so its memory stays flat whatever the batch.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Iterator

CONTENT_TYPE = "application/x-jupyter-taskq-batch"
MAX_OPTIONS = 64 * 1024
_OPTIONS_LEN = struct.Struct(">I")
_PAYLOAD_LEN = struct.Struct(">Q")


class BatchFormatError(ValueError):
    """The body is not a well-formed stream of (options, payload) frames."""


def frames(items: Iterable[tuple[dict, bytes]]) -> Iterator[bytes]:
    """The body, piece by piece (``requests`` sends an iterator without copying it into one buffer)."""
    for options, payload in items:
        head = json.dumps(options).encode()
        yield _OPTIONS_LEN.pack(len(head)) + head + _PAYLOAD_LEN.pack(len(payload))
        yield payload


class BatchReader:
    """Parses the body as it streams in; hands each payload's bytes to the sink as they come.

    ``start(index, options, size)`` is called once per task before its payload and returns a
    ``write(bytes)`` callable for it (it may refuse the item by raising). ``end(index)``, if
    given, is called as soon as that payload's last byte is written: the sink closes its file
    there, so a batch of 20,000 tasks holds one open file at a time, not 20,000 (a server's
    descriptor limit is often 1,024).
    """

    def __init__(self, start: Callable[[int, dict, int], Callable[[bytes], object]],
                 end: Callable[[int], object] | None = None):
        self._start = start
        self._end = end
        self._buffer = b""
        self._state = "options_len"
        self._need = _OPTIONS_LEN.size
        self._options: dict | None = None
        self._write: Callable[[bytes], object] | None = None
        self.count = 0

    def feed(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            if self._state == "payload":
                part, view = view[:self._need], view[self._need:]
                assert self._write is not None  # set with the payload's length, by _header_part
                self._write(bytes(part))
                self._need -= len(part)
                if not self._need:
                    self._next_item()
                continue
            take = min(self._need - len(self._buffer), len(view))
            self._buffer += bytes(view[:take])
            view = view[take:]
            if len(self._buffer) == self._need:
                data, self._buffer = self._buffer, b""
                self._header_part(data)

    def _header_part(self, data: bytes) -> None:
        if self._state == "options_len":
            (size,) = _OPTIONS_LEN.unpack(data)
            if not 2 <= size <= MAX_OPTIONS:
                raise BatchFormatError(f"tasks[{self.count}]: options of {size} bytes (a JSON object of at most "
                                       f"{MAX_OPTIONS} bytes expected); is the body {CONTENT_TYPE}?")
            self._state, self._need = "options", size
        elif self._state == "options":
            try:
                options = json.loads(data)
            except ValueError as exc:
                raise BatchFormatError(f"tasks[{self.count}]: options are not JSON: {exc}") from None
            if not isinstance(options, dict):
                raise BatchFormatError(f"tasks[{self.count}]: options must be a JSON object")
            self._options = options
            self._state, self._need = "payload_len", _PAYLOAD_LEN.size
        else:
            (size,) = _PAYLOAD_LEN.unpack(data)
            assert self._options is not None  # read in the state before
            self._write = self._start(self.count, self._options, size)
            self._state, self._need = "payload", size
            if not size:
                self._next_item()

    def _next_item(self) -> None:
        if self._end is not None:
            self._end(self.count)
        self.count += 1
        self._state, self._need, self._write, self._options = "options_len", _OPTIONS_LEN.size, None, None

    def close(self) -> None:
        """At the end of the body: it must end between two frames."""
        if self._state != "options_len" or self._buffer:
            raise BatchFormatError(f"the body ends inside tasks[{self.count}]")


def read_frames(stream) -> Iterator[tuple[dict, bytes]]:
    """The ``(options, payload)`` frames of a body read from a file-like ``stream`` (the answer of
    ``POST tasks/results``), one at a time as they arrive."""
    while True:
        start = _read_frame_start(stream)
        if start is None:
            return
        (size,) = _OPTIONS_LEN.unpack(start)
        if not 2 <= size <= MAX_OPTIONS:
            raise BatchFormatError(f"a frame's head of {size} bytes")
        head = json.loads(_read_exactly(stream, size))
        (size,) = _PAYLOAD_LEN.unpack(_read_exactly(stream, _PAYLOAD_LEN.size))
        yield head, _read_exactly(stream, size) if size else b""


def _read_frame_start(stream) -> bytes | None:
    """The length field that starts the next frame, or None where the stream ends between two frames."""
    first = stream.read(_OPTIONS_LEN.size)
    if not first:
        return None
    return first + _read_exactly(stream, _OPTIONS_LEN.size - len(first))


def _read_exactly(stream, size: int) -> bytes:
    parts, left = [], size
    while left:
        part = stream.read(left)
        if not part:
            raise BatchFormatError("the stream ends inside a frame")
        parts.append(part)
        left -= len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)
