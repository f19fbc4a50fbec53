"""The payload format: a function call serialised with dill, behind a small JSON header.

    MAGIC (8 bytes) | header length (4 bytes, big endian) | JSON header | dill body

The header says, in plain JSON, what the server and the worker need to know
without unpickling user code: the submitting interpreter, its working directory,
its ``sys.path`` and environment. The body, ``dill.dumps((fn, args, kwargs))``, is
only ever loaded inside the task's own process.
"""

from __future__ import annotations

import io
import json
import os
import struct
import sys
from typing import Any, BinaryIO, Callable

MAGIC = b"JTQPAY1\n"
_LEN = struct.Struct(">I")
PREFIX_SIZE = len(MAGIC) + _LEN.size
MAX_HEADER = 4 * 1024 * 1024

#: Environment variables of the kernel that must not follow the task to a worker.
ENV_DENYLIST = frozenset(
    {"CUDA_VISIBLE_DEVICES", "JPY_PARENT_PID", "JPY_SESSION_NAME", "JPY_INTERRUPT_EVENT", "PYDEVD_USE_FRAME_EVAL"}
)


class PayloadError(ValueError):
    """The bytes are not a jupyter-taskq payload, or a call cannot be serialised."""


def calling_context() -> dict[str, Any]:
    """The submitting process's world, which the task will run in."""
    return {
        "python": sys.executable,
        "prefix": sys.prefix,
        "python_version": "%d.%d.%d" % sys.version_info[:3],
        "cwd": os.getcwd(),
        "sys_path": [p for p in sys.path],
        "env": {k: v for k, v in os.environ.items() if k not in ENV_DENYLIST},
    }


def dumps_call(fn: Callable, args: tuple = (), kwargs: dict | None = None, *, context: dict | None = None) -> bytes:
    """Serialise ``fn(*args, **kwargs)``; an unserialisable part is named before anything is sent."""
    import dill

    kwargs = dict(kwargs or {})
    try:
        body = dill.dumps((fn, tuple(args), kwargs), recurse=True)
    except Exception as exc:
        raise PayloadError(describe_unpicklable(fn, args, kwargs, exc)) from exc
    header = dict(context or calling_context())
    header["function"] = getattr(fn, "__qualname__", None) or repr(fn)
    return encode(header, body)


def encode(header: dict, body: bytes) -> bytes:
    head = json.dumps(header).encode()
    return MAGIC + _LEN.pack(len(head)) + head + body


def read_header(stream: BinaryIO) -> dict:
    """Read and check the header, leaving ``stream`` at the start of the dill body."""
    prefix = stream.read(PREFIX_SIZE)
    if len(prefix) < PREFIX_SIZE or not prefix.startswith(MAGIC):
        raise PayloadError("not a jupyter-taskq payload (bad magic bytes); build payloads with jupyter_taskq.payload.dumps_call")
    (size,) = _LEN.unpack(prefix[len(MAGIC):])
    if size > MAX_HEADER:
        raise PayloadError(f"payload header too large ({size} bytes)")
    raw = stream.read(size)
    try:
        header = json.loads(raw)
    except ValueError as exc:
        raise PayloadError(f"payload header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise PayloadError("payload header must be a JSON object")
    for key, kind in (("python", str), ("cwd", str), ("sys_path", list), ("env", dict)):
        if not isinstance(header.get(key), kind):
            raise PayloadError(f"payload header lacks {key!r} ({kind.__name__})")
    return header


def read_header_bytes(data: bytes) -> dict:
    return read_header(io.BytesIO(data))


def load_call(stream: BinaryIO) -> tuple[dict, Callable, tuple, dict]:
    """Header and the call itself; only the task's own process should do this."""
    import dill

    header = read_header(stream)
    fn, args, kwargs = dill.load(stream)
    return header, fn, args, kwargs


def describe_unpicklable(fn: Callable, args: tuple, kwargs: dict, exc: Exception) -> str:
    """Name the argument, global or closure variable that cannot be serialised."""
    for label, value in _parts_of_call(fn, args, kwargs):
        problem = _pickle_problem(value)
        if problem:
            return f"cannot serialise {label} (a {_type_name(value)}): {problem}"
    return f"cannot serialise the call to {getattr(fn, '__qualname__', fn)!r}: {type(exc).__name__}: {exc}"


def _parts_of_call(fn: Callable, args: tuple, kwargs: dict):
    for i, value in enumerate(args):
        yield f"argument {i} of the call", value
    for key, value in kwargs.items():
        yield f"keyword argument {key!r}", value
    code = getattr(fn, "__code__", None)
    fn_globals = getattr(fn, "__globals__", {}) or {}
    if code is not None:
        for name in _global_names(code):
            if name in fn_globals:
                yield f"global variable {name!r} used by {fn.__qualname__}", fn_globals[name]
        for name, cell in zip(code.co_freevars, getattr(fn, "__closure__", None) or ()):
            try:
                value = cell.cell_contents
            except ValueError:
                continue
            yield f"closure variable {name!r} of {fn.__qualname__}", value
    yield f"the function {getattr(fn, '__qualname__', fn)!r}", fn


def _global_names(code) -> list[str]:
    names = list(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names.extend(_global_names(const))
    return list(dict.fromkeys(names))


def _pickle_problem(value: Any) -> str | None:
    import dill

    try:
        dill.dumps(value, recurse=True)
    except Exception as exc:  # dill raises many types: TypeError, PicklingError, ...
        return f"{type(exc).__name__}: {exc}"
    return None


def _type_name(value: Any) -> str:
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
