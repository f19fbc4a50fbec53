"""Parts shared by many payloads: a function and the data it captures, sent and stored once.

A payload (:mod:`jupyter_taskq.payload`) normally carries the whole call. When the
function part is big (a notebook function capturing a 50 MB array), ``map()`` would
send and store that part once per task. Instead the client sends it once, as a
*blob*: a payload of its own (the call ``fn()``, made by ``dumps_call``), named by the
sha256 of its bytes. Each task's payload then carries only its arguments (``None``
in the function's place) and names the blob in its header (``"blob": "<sha256>"``).

The server verifies the hash while the blob streams in, keeps one file per blob
(``StateDir.blob``) and removes it with the last task that names it; a worker loads
the function from the blob before the task's own arguments (``worker/runner.py``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import NamedTuple

from .payload import PayloadError, dumps_call

#: A function part at least this big is sent as a blob; a smaller one rides inside each payload,
#: where it costs less than the extra request that asks whether the server has it.
SHARE_AT = 1024 * 1024

HEADER_KEY = "blob"
_KEY = re.compile(r"[0-9a-f]{64}")


class Shared(NamedTuple):
    key: str  # sha256 of ``data``, hex
    data: bytes  # a payload of ``fn()``
    function: str


def key_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_key(value) -> bool:
    return isinstance(value, str) and _KEY.fullmatch(value) is not None


def shared_part(fn: Callable, context: dict, share_at: int = SHARE_AT) -> Shared | None:
    """The function part as a blob when it is big enough to be worth sharing; None otherwise."""
    data = dumps_call(fn, (), {}, context=context)
    if len(data) < share_at:
        return None
    return Shared(key_of(data), data, getattr(fn, "__qualname__", None) or repr(fn))


def dumps_args(shared: Shared, args: tuple, kwargs: dict | None, context: dict) -> bytes:
    """A task's payload that names ``shared`` for its function and carries only its own arguments."""
    return dumps_call(None, tuple(args), kwargs, context={**context, HEADER_KEY: shared.key,
                                                          "shared_function": shared.function})


def blob_of(header: dict) -> str | None:
    """The blob a payload's header names (None: a self-contained payload); a malformed name is refused."""
    key = header.get(HEADER_KEY)
    if key is None:
        return None
    if not is_key(key):
        raise PayloadError(f"payload header field {HEADER_KEY!r} must be a sha256 in hex, got {key!r}")
    return key
