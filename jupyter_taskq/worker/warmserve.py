"""What a warm task process needs in any interpreter: the keeper's message framing, the warm guard,
and the loop an image's interpreter runs to serve several attempts (``keep_warm_seconds`` with ``image=``).

A task process in the worker's own interpreter runs its attempts in :func:`.task_process._run_task`.
One whose attempt asks for another interpreter (an image) execs ``runner.py`` there; asked to stay
warm, it passes its two pipes to the keeper along, and :func:`serve` (loaded by path: this file needs
only the standard library and cloudpickle) runs the first attempt and, while they return normally,
the next ones of the same function, exactly as the worker's interpreter does: a new ``/dev/shm`` each,
the warm guard before each call, no reuse after a failure or a thread or child left behind. The
keeper cannot tell the two apart: same pid, same pipes, same reports.
"""

from __future__ import annotations

import hashlib
import os
import struct
import sys
import threading

# Bound now: a task process runs user code that may patch the json module (issue 12 saw its dumps
# replaced) before it reports to its keeper.
from json import dumps as _dumps, loads as _loads  # noqa: E402

_LEN = struct.Struct(">I")
EXIT_STALE = 4  # a warm process holding other code than the attempt's: the worker runs it in a fresh one


def write_message(fd: int, message: dict) -> None:
    data = _dumps(message).encode()
    data = _LEN.pack(len(data)) + data
    while data:
        data = data[os.write(fd, data):]


def read_message(fd: int) -> dict | None:
    """The next message on ``fd``; None at end of file (the writer is gone)."""
    prefix = _read_exact(fd, _LEN.size)
    if prefix is None:
        return None
    body = _read_exact(fd, _LEN.unpack(prefix)[0])
    return None if body is None else _loads(body)


def _read_exact(fd: int, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _pickling():
    """jupyter_taskq.pickling: imported by the worker, or registered under that name by runner.py."""
    return sys.modules["jupyter_taskq.pickling"]


def left_behind(threads_before: set, has_children) -> bool:
    """Whether the attempt left a thread of its own running, or a child process alive."""
    if any(t.is_alive() for t in threading.enumerate() if t not in threads_before):
        return True
    return has_children()


class WarmGuard:
    """In a warm task process: never run an attempt with stale code. The process serves one function
    (the fingerprint of its pickle, taken in this process) and must not have imported a local module
    (a file of the notebook's own) that has changed on disk since."""

    def __init__(self):
        self.served = False  # an attempt has returned normally in this process
        self.fingerprint: str | None = None
        self.stable: str | None = None  # the same, blind to which equal strings are one object
        self.modules: dict[str, int] = {}

    def before_call(self, fn) -> int | None:
        try:  # plain cloudpickle: the code, defaults, closure and globals, not the local modules it imported
            import cloudpickle

            data = cloudpickle.dumps(fn)
        except Exception:  # noqa: BLE001 - cannot tell: never reuse
            return None if not self.served else EXIT_STALE
        fingerprint = hashlib.sha256(data).hexdigest()
        if not self.served:
            self.fingerprint = fingerprint  # the function this process will serve
            self.stable = _pickling().identity_free_digest(data)
            return None
        if fingerprint == self.fingerprint:
            return None
        # The same code can pickle to other bytes once a name in it was interned by something the process
        # imported since (a library with a method "predict": an on_start that loads a model, say).
        return None if _pickling().identity_free_digest(data) == self.stable else EXIT_STALE

    def remember_modules(self) -> None:
        pickling = sys.modules.get("jupyter_taskq.pickling")
        modules = {}
        for module in list(sys.modules.values()):
            path = getattr(module, "__file__", None)
            if isinstance(path, str) and pickling is not None and pickling.is_local_module(module):
                try:
                    modules[path] = os.stat(path).st_mtime_ns
                except OSError:
                    modules[path] = -1
        self.modules = modules
        self.served = True

    def modules_changed(self) -> bool:
        for path, mtime in self.modules.items():
            try:
                if os.stat(path).st_mtime_ns != mtime:
                    return True
            except OSError:
                return True
        return False


def flush_output() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - the task may have closed or replaced them
            pass


def _owner_env(who: dict) -> dict:
    """A later attempt's owner: this process took that account for good before the first one
    (worker/owner.py ``become``, in the worker's interpreter); it only checks it still is that account."""
    uid, gid = who["uid"], who["gid"]
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise PermissionError(f"this warm task process does not run as {who['name']!r}")
    return {"HOME": who["home"], "USER": who["name"], "LOGNAME": who["name"]}


def serve(runner, payload_module, paths: list[str], cuda_devices: str, as_owner: dict, pipes: dict) -> int:
    """In an image's interpreter (``runner.py`` as a script): the first attempt (``paths``), then, while
    each returns normally, the attempts the keeper passes on ``pipes["requests"]``; one report each on
    ``pipes["reports"]``. Returns the exit status of the last one (the process then exits)."""
    requests, reports = pipes["requests"], pipes["reports"]
    shm = runner._worker_module("privateshm")
    shm._state["private"] = bool(pipes.get("private_shm"))  # the namespace outlived the exec; its flag did not
    has_children = runner._worker_module("proctree").has_children
    base_path = list(sys.path)
    guard = WarmGuard()
    served = 0
    while True:
        if served:
            message = read_message(requests)
            if message is None:
                return runner.EXIT_OK  # the keeper ended
            paths = message["paths"]
            if message.get("devices") is not None:  # a gang's GPUs (the warm key holds them: the same set)
                cuda_devices = message["devices"]
            runner.set_attempt_env(message.get("env") or {})
            if message.get("owner"):
                try:
                    as_owner = {"owner_env": _owner_env(message["owner"]), "blob_path": message["owner"].get("blob")}
                except BaseException as exc:  # noqa: BLE001 - say why, and go
                    runner._write_error(paths[2], exc, exc.__traceback__, setup=True)
                    write_message(reports, {"code": runner.EXIT_SETUP, "reusable": False})
                    return runner.EXIT_SETUP
            sys.path[:] = base_path
            shm.renew()  # the last attempt's /dev/shm files go with it
        served += 1
        threads = set(threading.enumerate())
        if served > 1 and guard.modules_changed():
            code = EXIT_STALE
        else:
            code = runner.run_attempt(*paths, cuda_devices, payload_module, guard.before_call, **as_owner)
        flush_output()
        reusable = code == runner.EXIT_OK and not left_behind(threads, has_children)
        if reusable:
            guard.remember_modules()
        write_message(reports, {"code": code, "reusable": reusable})
        if not reusable:
            return code
