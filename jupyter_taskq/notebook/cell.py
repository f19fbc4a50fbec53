"""What a ``%%task_queue`` cell becomes on the worker: run the source, return what it changed.

Kept apart from the magic so the worker needs nothing of IPython to run a cell. The kernel has
already turned IPython syntax into Python (``files = !ls`` -> ``files = get_ipython().getoutput('ls')``)
with IPython's own input transformers; here ``get_ipython()`` is a :class:`WorkerShell`, a small
stand-in that runs shell commands and ``%time`` the way IPython does, with IPython's own utilities
when the worker has IPython.

What comes back (the task's result, which ``pull()`` puts into the notebook):

* every name the cell assigns, and
* every captured notebook variable holding a mutable object that the cell changed in place
  (``results.append(x)``, ``model.fit(X, y)``): the worker pickles each such variable before
  and after the cell (into a hash, never a copy) and returns those whose pickle changed.
  Numbers, strings, tuples of them, modules, functions and classes are never sent back.
"""

from __future__ import annotations

import linecache
import os
import re
import subprocess
import sys
import time
import types

from ..taskio import ATTEMPT_DIR_ENV

CELL_FILE = "<task_queue cell>"


def run_cell(source: str, namespace: dict, assigned: list[str]) -> dict:
    scope = _task_main()
    scope.update(namespace)
    scope.setdefault("__name__", "__main__")
    global _shell
    _shell = WorkerShell(scope)
    scope["get_ipython"] = get_ipython
    before = {name: _digest(value) for name, value in namespace.items() if _may_change(value)}
    # The source in linecache: a remote traceback shows the cell's lines, as a kernel's does.
    linecache.cache[CELL_FILE] = (len(source), None, source.splitlines(True), CELL_FILE)
    try:
        exec(compile(source, CELL_FILE, "exec"), scope)  # noqa: S102 - the user's own cell
    finally:
        _shell = None
    values = {name: scope[name] for name in assigned if name in scope}
    for name, digest in before.items():
        if name not in values and digest is not None and scope.get(name) is namespace[name] \
                and _digest(namespace[name]) != digest:
            values[name] = namespace[name]
    return _picklable(values)


def _picklable(values: dict) -> dict:
    """Leave out what cannot travel back (``with Pool() as pool``, an open file), saying so in one line
    of the task's log, instead of failing the whole cell after it ran. Arrays and frames are not tried."""
    left = {name: type(value) for name, value in values.items()
            if not hasattr(value, "__array__") and _may_change(value) and _digest(value) is None}
    if left:
        names = ", ".join(f"{name} ({kind.__module__}.{kind.__qualname__})" for name, kind in left.items())
        print(f"jupyter-taskq: not brought back, cannot be pickled: {names}")
    return {name: value for name, value in values.items() if name not in left}


_shell: WorkerShell | None = None


def _task_main() -> dict:
    """In a task, the task's own fresh ``__main__`` (the runner made it), so functions and classes the
    cell defines are found by reference there, as in a kernel: ``multiprocessing.Pool.map(f, ...)``
    and ``pickle.dumps`` work on them. Called anywhere else, a namespace of its own."""
    main = sys.modules.get("__main__")
    if os.environ.get(ATTEMPT_DIR_ENV) and main is not None:
        return vars(main)
    return {}


def get_ipython():
    """The cell's shell on a worker. A function the cell defined keeps this name as a global; back in the
    kernel (pulled, or pickled by reference) it is IPython's own ``get_ipython()``."""
    if _shell is not None:
        return _shell
    try:
        from IPython import get_ipython as ipython_shell
    except ImportError:
        return None
    return ipython_shell()


_IMMUTABLE = (int, float, complex, str, bytes, bool, type(None), range, frozenset, types.ModuleType, type,
              types.FunctionType, types.BuiltinFunctionType, types.MethodType)


def _may_change(value) -> bool:
    if isinstance(value, tuple):
        return any(_may_change(v) for v in value)
    return not isinstance(value, _IMMUTABLE)


class _HashWriter:
    def __init__(self):
        import hashlib

        self.hash = hashlib.blake2b(digest_size=16)

    def write(self, data) -> int:  # bytes, or a PickleBuffer of an array's memory (protocol 5)
        self.hash.update(data)
        return memoryview(data).nbytes


def _digest(value) -> bytes | None:
    """A hash of the value's pickle, written straight into the hash: a big array is not copied."""
    from ..pickling import dump_result  # the rules the result itself is pickled by

    out = _HashWriter()
    try:
        dump_result(value, out)
    except Exception:  # noqa: BLE001 - then we cannot tell whether it changed; it stays on the worker
        return None
    return out.hash.digest()


class WorkerShell:
    """``get_ipython()`` in a queued cell: ``system`` (``!cmd``), ``getoutput`` (``x = !cmd``),
    ``%time``, ``user_ns`` and ``var_expand``. Anything else of IPython's shell lives in the kernel,
    and the magic refuses a cell that uses it before sending it."""

    MAGICS = ("time",)

    def __init__(self, user_ns: dict):
        self.user_ns = user_ns

    def var_expand(self, cmd: str, depth: int = 0) -> str:
        """``{expr}`` and ``$name`` from the cell's variables, as IPython expands them in ``!cmd``."""
        frame = sys._getframe(depth + 1)
        ns = {**self.user_ns, **frame.f_locals}
        try:
            from IPython.utils.text import DollarFormatter
        except ImportError:
            return _expand(cmd, ns)
        try:
            return DollarFormatter().vformat(cmd, args=[], kwargs=ns)
        except Exception:  # noqa: BLE001 - IPython also leaves the command as written
            return cmd

    def system(self, cmd: str) -> None:
        """``!cmd``: run in the shell, its output straight into the task's log; ``_exit_code`` is set."""
        cmd = self.var_expand(cmd, depth=1)
        sys.stdout.flush()
        sys.stderr.flush()
        code = subprocess.call(cmd, shell=True, executable=os.environ.get("SHELL") or None)
        self.user_ns["_exit_code"] = -(code - 128) if code > 128 else code

    def getoutput(self, cmd: str, split: bool = True, depth: int = 0):
        """``x = !cmd``: the command's output (stdout and stderr), as IPython's ``SList`` of lines."""
        cmd = self.var_expand(cmd, depth=depth + 1)
        try:
            from IPython.utils.process import getoutput
            from IPython.utils.text import LSString, SList as IPythonSList
        except ImportError:
            out = subprocess.run(cmd, shell=True, executable=os.environ.get("SHELL") or None, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT).stdout.decode(errors="replace")
            return SList(out.splitlines()) if split else out
        out = getoutput(cmd)
        return IPythonSList(out.splitlines()) if split else LSString(out)

    def run_line_magic(self, magic_name: str, line: str, _stack_depth: int = 1):
        if magic_name != "time":
            raise NotImplementedError(f"%{magic_name} runs only in the kernel; on a worker: %time, !cmd, x = !cmd")
        frame = sys._getframe(_stack_depth)
        return _time(line, frame.f_globals, frame.f_locals)

    def __getattr__(self, name: str):
        raise AttributeError(f"get_ipython() on a worker has only system, getoutput, run_line_magic('time', ...), "
                             f"var_expand and user_ns, not {name!r}")


def _time(code: str, globals_: dict, locals_: dict):
    """``%time``: run the statement(s), print CPU and wall time as IPython does; an expression's value is returned."""
    import ast

    tree = ast.parse(code)
    last = tree.body[-1] if tree.body else None
    expr = last if isinstance(last, ast.Expr) else None
    if expr is not None:
        tree.body.pop()
    cpu0, wall0 = _cpu_times(), time.perf_counter()
    exec(compile(tree, "<timed exec>", "exec"), globals_, locals_)  # noqa: S102
    value = eval(compile(ast.Expression(expr.value), "<timed eval>", "eval"), globals_, locals_) if expr else None
    cpu1, wall = _cpu_times(), time.perf_counter() - wall0
    user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    print(f"CPU times: user {_format_time(user)}, sys: {_format_time(system)}, total: {_format_time(user + system)}")
    print(f"Wall time: {_format_time(wall)}")
    return value


def _cpu_times() -> tuple[float, float]:
    """(user, system) CPU seconds of this process, to the microsecond where ``resource`` exists (as IPython)."""
    try:
        import resource
    except ImportError:
        times = os.times()
        return times.user, times.system
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def _format_time(seconds: float) -> str:
    if seconds >= 60:
        minutes, s = divmod(seconds, 60)
        return f"{int(minutes)}min {s:.0f}s"
    for unit, scale in (("s", 1), ("ms", 1e3), ("µs", 1e6)):
        if seconds >= 1 / scale:
            return f"{seconds * scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


class SList(list):
    """IPython's ``SList`` where the worker has no IPython: the lines, plus ``.s``, ``.n``, ``.l``."""

    @property
    def s(self) -> str:
        return " ".join(self)

    @property
    def n(self) -> str:
        return "\n".join(self)

    @property
    def l(self) -> list:  # noqa: E743 - IPython's name
        return list(self)


_DOLLAR = re.compile(r"\$(\w+)")


def _expand(cmd: str, ns: dict) -> str:
    """``$name`` and ``{expr}`` where IPython's DollarFormatter is not installed; as written on error."""
    try:
        cmd = _DOLLAR.sub(lambda m: str(ns[m.group(1)]) if m.group(1) in ns else m.group(0), cmd)
        return re.sub(r"\{([^{}]+)\}", lambda m: str(eval(m.group(1), {}, ns)), cmd)  # noqa: S307 - the cell's own
    except Exception:  # noqa: BLE001
        return cmd
