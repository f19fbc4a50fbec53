"""``%%task_queue``: run a whole cell on the queue; ``%task_pull``: bring its variables back.

The cell's free names are captured from the notebook namespace (what cannot be
serialised is named before anything is sent); the names it assigns, and the captured
mutable objects it changed in place (``results.append(x)``, ``model.fit(X, y)``), come
back as the task's result, a dict that ``handle.pull()`` puts into the notebook (it rebinds
the names: another reference to the old object still sees the old value).

IPython syntax (``!cmd``, ``x = !cmd``, ``%time``) is made Python in the kernel by IPython's
own transformers; ``get_ipython()`` on the worker is :class:`.cell.WorkerShell`. A line the
worker cannot run (another magic, ``obj?``) refuses the cell before sending, naming the line.
"""

from __future__ import annotations

import ast
import builtins
import re

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import magic_arguments, parse_argstring

from ..options import from_magic_args, magic_flags
from ..payload import PayloadError, describe_unpicklable
from .cell import run_cell
from .client import TaskHandle, connect

_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit"}


class CellRefused(ValueError):
    """A ``%%task_queue`` cell that cannot run on a worker, refused before anything is sent."""


#: What ``get_ipython()`` offers on a worker (jupyter_taskq.notebook.cell.WorkerShell).
_WORKER_SHELL = {"system", "getoutput", "var_expand", "user_ns", "run_line_magic"}
_WORKER_MAGICS = {"time"}
_SHELL_VARS = re.compile(r"\$(\w+)|\{\s*([A-Za-z_]\w*)")


def prepare_cell(cell: str, shell) -> str:
    """The cell as plain Python, made by IPython's own input transformers (``x = !ls`` ->
    ``x = get_ipython().getoutput('ls')``), keeping the notebook cell's line numbers (line 1 is
    the ``%%task_queue`` line). What a worker cannot run is refused here, naming the line."""
    source = "\n" + shell.transform_cell(cell)
    written = ["%%task_queue"] + cell.splitlines()

    def refuse(lineno: int, reason: str) -> CellRefused:
        text = written[lineno - 1] if 0 < lineno <= len(written) else source.splitlines()[lineno - 1]
        return CellRefused(f"not sent: line {lineno} of the cell, `{text.strip()}`: {reason}")

    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise refuse(exc.lineno or 1, exc.msg) from None
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        attr = _shell_attribute(node)
        if isinstance(node, ast.Attribute) and attr is not None:
            parent = parents.get(node)
            if attr == "run_cell_magic" and isinstance(parent, ast.Call):
                raise refuse(node.lineno, f"%%{_constant_args(parent)[0]} runs only in the kernel; "
                                          "a cell on a worker can use %time on a line, !cmd and x = !cmd")
            if attr not in _WORKER_SHELL:
                raise refuse(node.lineno, f"get_ipython().{attr} exists only in the kernel; on a worker "
                                          "get_ipython() has system, getoutput and run_line_magic('time', ...)")
        if isinstance(node, ast.Call) and _shell_attribute(node.func) == "run_line_magic":
            magic, line = _constant_args(node)
            if magic not in _WORKER_MAGICS:
                what = "?-help" if magic in ("pinfo", "pinfo2", "psearch") else f"%{magic}"
                raise refuse(node.lineno, f"{what} runs only in the kernel; a cell on a worker can use "
                                          "%time, !cmd and x = !cmd")
            try:
                ast.parse(line or "")
            except SyntaxError as exc:
                raise refuse(node.lineno, f"%{magic}: {exc.msg}") from None
    return source


def _shell_attribute(node) -> str | None:
    """``attr`` when ``node`` is ``get_ipython().attr``."""
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name) and node.value.func.id == "get_ipython"):
        return node.attr
    return None


def _constant_args(call: ast.Call) -> list:
    values = [a.value if isinstance(a, ast.Constant) else None for a in call.args[:2]]
    return values + [None] * (2 - len(values))


def cell_names(source: str) -> tuple[list[str], list[str]]:
    """(names the cell reads, names it assigns at any level), in first-seen order; the code of a
    ``%time`` line and the ``{name}``/``$name`` of a ``!cmd`` count as the cell's own."""
    tree = ast.parse(source)
    loaded: dict[str, None] = {}
    assigned: dict[str, None] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (assigned if isinstance(node.ctx, (ast.Store, ast.Del)) else loaded)[node.id] = None
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            assigned[node.name] = None
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                assigned[(alias.asname or alias.name).split(".")[0]] = None
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and _shell_attribute(node.func):
            first, second = _constant_args(node)
            if node.func.attr == "run_line_magic" and first in _WORKER_MAGICS and isinstance(second, str):
                inner_loaded, inner_assigned = cell_names(second)
                loaded.update(dict.fromkeys(inner_loaded))
                assigned.update(dict.fromkeys(inner_assigned))
            elif node.func.attr in ("system", "getoutput") and isinstance(first, str):
                loaded.update(dict.fromkeys(a or b for a, b in _SHELL_VARS.findall(first)))
    return list(loaded), list(assigned)


def capture(source: str, namespace: dict) -> tuple[dict, list[str]]:
    """The notebook values the cell needs, and the names whose values come back."""
    loaded, assigned = cell_names(source)
    free = {name: namespace[name] for name in loaded
            if name in namespace and name not in _IPYTHON_NAMES and not name.startswith("_")
            and not (hasattr(builtins, name) and namespace[name] is getattr(builtins, name))}
    return free, assigned


class CellTaskHandle(TaskHandle):
    """A queued cell: ``result()`` is the dict of names it assigned or changed; ``pull()`` sets them here."""

    def __init__(self, *args, shell=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._shell = shell

    def pull(self, timeout: float | None = None) -> dict:
        values = self.result(timeout=timeout)
        (self._shell or _current_shell()).user_ns.update(values)
        return values


def _current_shell():
    from IPython import get_ipython

    return get_ipython()


@magics_class
class TaskQueueMagics(Magics):
    @magic_arguments()
    @magic_flags  # one flag per task option (jupyter_taskq.options): --gpu, --retries, --timeout, --name, ...
    @cell_magic
    def task_queue(self, line, cell):
        """Run this cell on the task queue: %%task_queue --gpu 1 --retries 2 --timeout 600 --name exp1"""
        args = parse_argstring(self.task_queue, line)
        if args.name is not None and not args.name.isidentifier():
            raise ValueError(f"--name must be a Python identifier, got {args.name!r}")
        try:
            cell = prepare_cell(cell, self.shell)  # IPython syntax made Python, or refused with the line and why
        except CellRefused as refused:
            raise UsageError(str(refused)) from None  # IPython shows this one line, not the magic's traceback
        namespace, assigned = capture(cell, self.shell.user_ns)
        _check_serialisable(namespace)
        client = connect()
        options = from_magic_args(args, self.shell.user_ns)
        options["name"] = args.name or "cell"
        plain = client.submit(run_cell, (cell, namespace, assigned), **options)
        handle = CellTaskHandle(plain.id, client=client, info=plain._info, shell=self.shell)
        if args.name:
            self.shell.user_ns[args.name] = handle
        return handle

    @line_magic
    def task_pull(self, line):
        """%task_pull exp1 — put the variables the queued cell assigned into the notebook."""
        name = line.strip()
        handle = self.shell.user_ns.get(name)
        if not isinstance(handle, CellTaskHandle):
            raise NameError(f"{name!r} is not a %%task_queue task in this notebook")
        return sorted(handle.pull())


def _check_serialisable(namespace: dict) -> None:
    from ..pickling import dumps  # the payload's own rules (dill's recurse=True fails on scikit-learn helpers)

    try:
        dumps(namespace)
    except Exception as exc:
        for name, value in namespace.items():
            try:
                dumps(value)
            except Exception as inner:
                raise PayloadError(
                    f"cannot serialise notebook variable {name!r} (a {type(value).__name__}) used by this cell: "
                    f"{type(inner).__name__}: {inner}") from None
        raise PayloadError(describe_unpicklable(run_cell, (namespace,), {}, exc)) from None


def load_ipython_extension(ipython) -> None:
    ipython.register_magics(TaskQueueMagics)
