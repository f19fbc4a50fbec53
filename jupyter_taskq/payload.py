"""The payload format: a function call serialised by :mod:`jupyter_taskq.pickling`, behind a small JSON header.

    MAGIC (8 bytes) | header length (4 bytes, big endian) | JSON header | pickle body

The header says, in plain JSON, what the server and the worker need to know
without unpickling user code: the submitting interpreter, its working directory,
its ``sys.path`` and environment (never the queue's own credentials), and the source
of the notebook cells the call's code comes from (for tracebacks). The body,
``pickling.dumps((fn, args, kwargs))`` (the serialisation rules are in
:mod:`jupyter_taskq.pickling`), is only ever loaded inside the task's own process.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import struct
import sys
from collections.abc import Callable
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

try:
    from . import pickling
except ImportError:  # loaded by path by the task runner in another interpreter (worker/runner.py)
    import _jupyter_taskq_pickling as pickling  # type: ignore[no-redef]

MAGIC = b"JTQPAY1\n"
_LEN = struct.Struct(">I")
PREFIX_SIZE = len(MAGIC) + _LEN.size
MAX_HEADER = 4 * 1024 * 1024

#: Environment variables of the kernel that must not follow the task to a worker: the kernel's
#: own process plumbing, and the credentials of the queue (its token, the Jupyter server's
#: tokens that also open the queue's API, the Redis URL with its password). Payload files stay
#: in the state directory (or a bucket) for a day; a task that needs a secret reads its own.
ENV_DENYLIST = frozenset(
    {"CUDA_VISIBLE_DEVICES", "JPY_PARENT_PID", "JPY_SESSION_NAME", "JPY_INTERRUPT_EVENT", "PYDEVD_USE_FRAME_EVAL",
     "JUPYTER_TASKQ_TOKEN", "JUPYTER_TASKQ_REDIS_URL", "JUPYTER_TOKEN", "JPY_API_TOKEN", "JUPYTERHUB_API_TOKEN"}
)
#: Variables kept with their credentials removed (user:password@ and token= query parameters).
ENV_STRIP_CREDENTIALS = frozenset({"JUPYTER_TASKQ_URL"})
_SECRET_QUERY_KEYS = {"token", "access_token", "password"}


class PayloadError(ValueError):
    """The bytes are not a jupyter-taskq payload, or a call cannot be serialised."""


def calling_context() -> dict[str, Any]:
    """The submitting process's world, which the task will run in."""
    return {
        "python": sys.executable,
        "prefix": sys.prefix,
        "base_prefix": sys.base_prefix,  # whose standard library the kernel's sys.path holds (runner.py, images)
        "python_version": "{}.{}.{}".format(*sys.version_info[:3]),
        "cwd": os.getcwd(),
        "sys_path": [p for p in sys.path],
        "env": {k: (_without_credentials(v) if k in ENV_STRIP_CREDENTIALS else v)
                for k, v in os.environ.items() if k not in ENV_DENYLIST},
        **_kernel_settings(),  # "logging" and "warnings": the task logs and warns as the kernel would
    }


def _kernel_settings() -> dict:
    from . import kernelstate  # the kernel's side only (the runner never builds a context)

    return kernelstate.capture()


def _without_credentials(url: str) -> str:
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                           if k.lower() not in _SECRET_QUERY_KEYS])
        return urlunsplit((parts.scheme, host, parts.path, query, parts.fragment))
    except ValueError:
        return ""


def queue_secrets() -> list[str]:
    """The queue's credentials as this process knows them, which no payload may carry."""
    from .backends import environment_secrets  # the backends say which of their credentials a process holds

    secrets = [os.environ.get(k, "") for k in ENV_DENYLIST if "TOKEN" in k] + environment_secrets()
    return [s for s in secrets if len(s) >= 16]  # a short one would refuse innocent payloads


def dumps_call(fn: Callable | None, args: tuple = (), kwargs: dict | None = None, *,
               context: dict | None = None) -> bytes:
    """Serialise ``fn(*args, **kwargs)``; an unserialisable part is named before anything is sent."""
    return b"".join(dumps_call_parts(fn, args, kwargs, context=context))


def dumps_call_parts(fn: Callable | None, args: tuple = (), kwargs: dict | None = None, *,
                     context: dict | None = None) -> tuple[bytes, bytes]:
    """:func:`dumps_call` as its two parts, the prefix with the header and the pickled body, so a sender
    can write them one after the other: joining them copies the body (0.15 s for 100 MB here)."""
    kwargs = dict(kwargs or {})
    try:
        body, sources = pickling.dumps_with_sources((fn, tuple(args), kwargs))
    except Exception as exc:
        raise PayloadError(describe_unpicklable(fn, args, kwargs, exc)) from exc
    check_no_secrets(body)
    header = dict(context or calling_context())
    header["function"] = getattr(fn, "__qualname__", None) or repr(fn)
    if sources:
        header["sources"] = sources
    return encode_parts(header, body)


#: The most an ``on_start`` function may weigh pickled: it rides in the JSON header (see :func:`with_on_start`);
#: one that captures a model or a data set should load it instead.
MAX_ON_START = 1024 * 1024


def with_on_start(context: dict, on_start: Callable | None) -> dict:
    """The header ``context`` with ``on_start`` (the task option: run once per task process, before its first
    attempt) pickled by value into it, with the source of its cells for tracebacks.

    In the header rather than the body so that the worker's warm key (a hash of the header) changes with it:
    a warm process never serves an attempt whose on_start differs from the one it ran; and a function sent
    once as a shared part (blobs.py) stays shared, since the header of every payload carries its own."""
    if on_start is None:
        return context
    name = getattr(on_start, "__qualname__", None) or repr(on_start)
    try:
        data, sources = pickling.dumps_with_sources(on_start)
    except Exception as exc:
        raise PayloadError("on_start: " + describe_unpicklable(on_start, (), {}, exc)) from exc
    check_no_secrets(data)
    if len(data) > MAX_ON_START:
        raise PayloadError(f"on_start {name!r} is {len(data):,} bytes pickled, over {MAX_ON_START:,}: it captures "
                           "large data; let it load that data (from a file, a URL) when it runs instead")
    return {**context, "on_start": {"name": name, "sha256": hashlib.sha256(data).hexdigest(),
                                    "pickle": base64.b64encode(data).decode("ascii"), "sources": sources}}


def load_on_start(header: dict) -> tuple[str, str, Callable] | None:
    """(name, sha256, function) of the payload's ``on_start``, or None; only the task's own process does this."""
    spec = header.get("on_start")
    if not spec:
        return None
    if not isinstance(spec, dict) or not isinstance(spec.get("pickle"), str):
        raise PayloadError("payload header field 'on_start' is malformed")
    pickling.install_sources(spec.get("sources"))
    return spec.get("name") or "on_start", spec.get("sha256") or "", pickling.loads(base64.b64decode(spec["pickle"]))


def check_no_secrets(body: bytes) -> None:
    """Refuse a call that would carry the queue's token (a captured client or handle, say)."""
    for secret in queue_secrets():
        if secret.encode() in body:
            raise PayloadError("the call would carry the task queue's credentials (a captured Client, TaskHandle "
                               "or token string?); pass task ids, not handles, and let the task connect itself")


def encode(header: dict, body: bytes) -> bytes:
    return b"".join(encode_parts(header, body))


def encode_parts(header: dict, body: bytes) -> tuple[bytes, bytes]:
    head = json.dumps(header).encode()
    return MAGIC + _LEN.pack(len(head)) + head, body


def read_header(stream: BinaryIO) -> dict:
    """Read and check the header, leaving ``stream`` at the start of the body."""
    prefix = stream.read(PREFIX_SIZE)
    if len(prefix) < PREFIX_SIZE or not prefix.startswith(MAGIC):
        raise PayloadError("not a jupyter-taskq payload (bad magic bytes); "
                           "build payloads with jupyter_taskq.payload.dumps_call")
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
    header = read_header(stream)
    fn, args, kwargs = load_body(stream, header)
    return header, fn, args, kwargs


def load_body(stream: BinaryIO, header: dict) -> tuple[Callable, tuple, dict]:
    """The call, from a stream positioned after the header."""
    fn, args, kwargs = pickling.load(stream)
    return fn, args, kwargs


def describe_unpicklable(fn: Callable | None, args: tuple, kwargs: dict, exc: Exception) -> str:
    """Name the argument, global or closure variable that cannot be serialised."""
    for label, value in _parts_of_call(fn, args, kwargs):
        problem = _pickle_problem(value)
        if problem:
            return f"cannot serialise {label} (a {_type_name(value)}): {problem}"
    return f"cannot serialise the call to {getattr(fn, '__qualname__', fn)!r}: {type(exc).__name__}: {exc}"


def _parts_of_call(fn: Callable | None, args: tuple, kwargs: dict):
    for i, value in enumerate(args):
        yield f"argument {i} of the call", value
    for key, value in kwargs.items():
        yield f"keyword argument {key!r}", value
    code = getattr(fn, "__code__", None)
    fn_globals = getattr(fn, "__globals__", {}) or {}
    if fn is not None and code is not None:  # no code without a function (dumps_args sends None)
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
    try:
        pickling.dumps_with_sources(value, warn=False)  # only looking for the culprit
    except Exception as exc:  # pickling raises many types: TypeError, PicklingError, ...
        return f"{type(exc).__name__}: {exc}"
    return None


def _type_name(value: Any) -> str:
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
