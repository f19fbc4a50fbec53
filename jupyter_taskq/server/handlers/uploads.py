"""Bodies that stream to private spool files as they arrive (payloads, batches, blobs), held to their limits.

Submission streams the payload to a spool file after authentication and before the body is read, so
hundreds of MB never sit in the server's memory.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

from ...storeerrors import is_disk_full
from ..service import bad_request
from .base import TaskqHandler, state_dir_full, too_large

#: Bytes of a streamed body gathered before they go to the thread pool in one hop.
HOP_BYTES = 1024 * 1024


class StreamedBody(TaskqHandler):
    """A body that streams to spool files as it arrives, held to a limit that is answered with a
    ``413`` and a JSON message naming the limit, the size and the option that raises it.

    Tornado resets the connection of a body over its ``max_body_size``, so the client never
    reads why; here the server lets any body arrive (reading and dropping what is over the
    limit) and counts the bytes itself. A body that declares its size is refused before a
    byte of it is stored. Only ``streamed_method``'s body is spooled; any other method's is
    held to Jupyter's limit like every endpoint's (TaskqAuth).
    """

    streamed_method = "POST"
    _gathered: list[bytes]
    _gathered_size = 0

    def initialize(self, *args, **kwargs) -> None:
        super().initialize(*args, **kwargs)
        self._gathered = []

    def streams_body(self) -> bool:
        return self.request.method == self.streamed_method

    async def data_received(self, chunk: bytes) -> None:
        """Each chunk (64 KiB) as it arrives, gathered to :data:`HOP_BYTES` and then consumed on the thread
        pool: writing it to its spool file, and for a batch creating a spool file per task (hundreds in one
        chunk of tiny payloads), is disk I/O that would otherwise hold every other request of the server.
        One hop per chunk cost 0.5 s of a 100 MB upload (1,600 round trips through the pool); one per MiB
        costs 100. Tornado awaits this before it reads the next chunk, so chunks stay in order; the
        streamed method consumes the rest first (:meth:`body_received`)."""
        if not self.streams_body():
            super().data_received(chunk)
            return
        if self.answered_early(chunk):
            return
        self._gathered.append(chunk)
        self._gathered_size += len(chunk)
        if self._gathered_size >= HOP_BYTES:
            await self._consume_gathered()

    async def body_received(self) -> None:
        """The streamed method's first step: what arrived after the last hop, consumed."""
        if self._gathered and not self._answered:
            await self._consume_gathered()

    async def _consume_gathered(self) -> None:
        data = self._gathered[0] if len(self._gathered) == 1 else b"".join(self._gathered)
        self._gathered, self._gathered_size = [], 0
        await self.blocking(self.consume, data)
        if self._refusal is not None:  # over its limit (or malformed): answered as soon as it is known
            self.answer_now(self._refusal)

    def consume(self, chunk: bytes) -> None:
        raise NotImplementedError


class Spool:
    """One upload's private spool file, written as the bytes arrive."""

    def __init__(self, service, limit: int, what: str, digest: bool = False):
        self.path, self.fd = service.open_spool()
        self.size = 0
        self.limit = limit
        self.what = what
        self.hash = hashlib.sha256() if digest else None

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise too_large(self.what, self.size, self.limit)
        try:
            os.write(self.fd, chunk)
        except OSError as exc:
            if is_disk_full(exc):
                raise state_dir_full() from None
            raise
        if self.hash is not None:
            self.hash.update(chunk)

    def close(self) -> Path:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        return self.path

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


def decode_payload(value, limit: int, what: str = "the payload") -> bytes:
    if not isinstance(value, str):
        raise bad_request("'payload' (the base64 of a jupyter-taskq payload) is required")
    if len(value) // 4 * 3 > limit + 2:
        raise too_large(what, len(value) // 4 * 3, limit)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("'payload' is not valid base64") from None
