"""How notebook code and its results are serialised: the rules users rely on.

The rule: **a queued call computes what a plain call in the kernel would compute at the moment it
was submitted, and what comes back is the kernel's own kind of object.** Hence:

* Objects of installed, importable modules (numpy, pandas, scikit-learn, the standard library...)
  go *by reference* (module and name): the worker imports them.
* Notebook objects (``__main__``) and the notebook's own *local modules* (a ``.py`` file or package
  imported from outside the standard library and site-packages, e.g. ``mylib.py`` beside the
  notebook) go *by value*, as the kernel has them in memory: an edited ``mylib.py`` that the kernel
  has not reloaded runs on the worker as the kernel's version (its functions, classes and
  constants all from the kernel, never a mix with the file), so plain call == queued call.
* Coming back, a class or function of the notebook (or of a local module) that the call brought
  is looked up by module and name in the kernel and, when the kernel has it, *is* the kernel's
  object (so ``isinstance`` holds and ``pickle``/``joblib`` can save the value again); a fresh
  kernel gets the shipped definition instead. One the task defined itself (a ``%%task_queue``
  cell that redefines a class) comes back as the task defined it, as if the cell ran in the kernel.
* A local module that cannot travel by value as a whole (a thread pool or database engine at
  module level) goes by reference, with one warning: the worker imports its file.
* Exceptions are rebuilt without calling their ``__init__`` (``BadInput(msg, code)`` comes back as
  ``BadInput``); one whose state cannot travel comes back as its own class with its message.

Why cloudpickle and not dill for this: dill captures a notebook function's globals only with
``recurse=True``, and that walks the globals of every *library* function reachable through
closures with no cycle check; decorated library functions (scikit-learn's ``validate_params``
wrappers, scipy.stats' ``_axis_nan_policy`` wrappers) form cycles, so ``cross_val_score``,
``make_classification`` or ``ttest_ind`` as globals raise RecursionError; with ``recurse=False``
dill ships no globals at all. cloudpickle captures exactly the globals a by-value function names,
sends everything importable by reference, and runs on the C pickler (large results pickle several
times faster than with dill's pure-Python pickler). dill is kept for the few objects plain pickle
cannot handle (locks, open files, weak references), embedded as dill bytes. Any stream loads with
plain :func:`pickle.load`.

This module needs only the standard library, cloudpickle and dill: the task runner may load it by
path in another interpreter (the kernel's conda env).
"""

from __future__ import annotations

import builtins
import functools
import io
import linecache
import os
import pickle
import sys
import sysconfig
import threading
import types
import weakref
from collections.abc import Callable
from typing import Any, BinaryIO, Protocol

import cloudpickle
from cloudpickle import cloudpickle as _cp  # its reducers for by-value functions and classes

PROTOCOL = 5
MAIN = "__main__"
_OWN_PACKAGE = __name__.split(".")[0] if "." in __name__ else "jupyter_taskq"


# -- which modules are the notebook's own ----------------------------------------------------------

_local_cache: dict[str, tuple[object, bool]] = {}
_local_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _library_roots() -> tuple[str, ...]:
    """The standard library and site-packages folders (not the whole prefix: a project may live there)."""
    roots = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        try:
            roots.add(sysconfig.get_paths()[key])
        except (KeyError, ImportError):  # ImportError: sysconfig's data module unreadable to this user
            pass
    try:
        import site

        roots.update(site.getsitepackages())
        roots.add(site.getusersitepackages())
    except (ImportError, AttributeError):  # virtualenv's old site.py
        pass
    return tuple(os.path.join(os.path.realpath(r), "") for r in roots if r)


@functools.lru_cache(maxsize=1)
def _installed_top_levels() -> frozenset:
    """Top-level names that an installed distribution provides (an editable install included)."""
    try:
        from importlib.metadata import packages_distributions

        return frozenset(packages_distributions())
    except Exception:  # noqa: BLE001 - a broken metadata file must not stop a submission
        return frozenset()


def warm_caches() -> None:
    """Learn where the installed libraries are now: a process about to give up root (a task run as its
    owner) may not be allowed to read the interpreter's own files afterwards."""
    _library_roots()
    _installed_top_levels()


def is_local_module(module: types.ModuleType) -> bool:
    """A module of the notebook's own (a file beside it, a folder it put on sys.path), not an installed one.

    Installed means: the standard library, a site-packages folder, or a top-level name that an
    installed distribution declares (an editable install counts as installed)."""
    name = getattr(module, "__name__", None)
    if not isinstance(name, str) or name == MAIN:
        return False
    cached = _local_cache.get(name)
    if cached is not None and cached[0] is module:
        return cached[1]
    top = name.split(".")[0]
    path = getattr(module, "__file__", None)
    local = False
    if (isinstance(path, str) and path.endswith((".py", ".pyc")) and top != _OWN_PACKAGE
            and top not in sys.stdlib_module_names):  # a compiled extension cannot travel by value
        real = os.path.realpath(path)
        parts = real.split(os.sep)
        local = ("site-packages" not in parts and "dist-packages" not in parts
                 and not real.startswith(_library_roots()) and top not in _installed_top_levels())
    with _local_lock:
        _local_cache[name] = (module, local)
    return local


def _local_module_of(obj) -> types.ModuleType | None:
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    return module if module is not None and is_local_module(module) else None


# -- reducers shared by both directions ------------------------------------------------------------

_DILL_TYPES = (type(threading.Lock()), type(threading.RLock()), io.BufferedReader, io.BufferedWriter,
               io.BufferedRandom, io.FileIO, weakref.ReferenceType, weakref.ProxyType, weakref.CallableProxyType)


def _from_dill(data: bytes):
    import dill

    return dill.loads(data)


def _dill_reduce(obj):
    import dill

    return _from_dill, (dill.dumps(obj),)


def _rebuild_exception(cls, args, state):
    """An exception as it was, without calling ``__init__`` (which may want other arguments)."""
    exc = cls.__new__(cls, *args)
    exc.args = args
    for key, value in (state or {}).items():
        try:
            setattr(exc, key, value)
        except (AttributeError, TypeError):
            pass
    return exc


def _exception_reduce(exc: BaseException):
    """Only for exceptions that use BaseException's own pickling (which calls ``cls(*args)``)."""
    kind = type(exc)
    if kind.__reduce__ is not BaseException.__reduce__ or kind.__reduce_ex__ is not BaseException.__reduce_ex__:
        return NotImplemented
    state = dict(getattr(exc, "__dict__", None) or {})
    for key in ("__cause__", "__context__"):
        if getattr(exc, key) is not None:
            state[key] = getattr(exc, key)
    if exc.__suppress_context__:
        state["__suppress_context__"] = True
    return _rebuild_exception, (kind, exc.args, state)


def _code_reduce(code: types.CodeType):
    """cloudpickle's, keeping the file name (it writes "<dynamic-code>"): tracebacks name the cell."""
    rebuild, args = _cp._code_reduce(code)
    return rebuild, tuple(code.co_filename if a == "<dynamic-code>" else a for a in args)


def _make_lru_cache(fn, maxsize, typed):
    return functools.lru_cache(maxsize=maxsize, typed=typed)(fn)


class Writable(Protocol):
    """Where a pickle is written: a file, a buffer, or cell.py's hash that takes the bytes as they come."""

    def write(self, data: bytes, /) -> int: ...


class _Pickler(cloudpickle.Pickler):
    """cloudpickle, plus dill for locks/files/weakrefs, exceptions without ``__init__``, by-value lru_cache."""

    def __init__(self, file: Writable):
        super().__init__(file, protocol=PROTOCOL)

    def reducer_override(self, obj):
        if isinstance(obj, BaseException):
            rv = _exception_reduce(obj)
            if rv is not NotImplemented:
                return rv
        elif isinstance(obj, types.CodeType):
            return _code_reduce(obj)
        elif isinstance(obj, _DILL_TYPES):
            return _dill_reduce(obj)
        elif isinstance(obj, functools._lru_cache_wrapper) and not _importable(obj):
            params = obj.cache_parameters()
            return _make_lru_cache, (obj.__wrapped__, params["maxsize"], params["typed"])
        return super().reducer_override(obj)


def _importable(obj) -> bool:
    """``pickle`` would find this very object again by module and qualified name."""
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    qualname = getattr(obj, "__qualname__", "")
    if module is None or getattr(obj, "__module__", None) == MAIN or "<" in qualname:
        return False
    try:
        return functools.reduce(getattr, qualname.split("."), module) is obj
    except AttributeError:
        return False


# -- kernel to worker: the call --------------------------------------------------------------------

def _imported_local_modules(code: types.CodeType) -> list[types.ModuleType]:
    """Local modules the kernel has loaded that this code imports by name (its names include them)."""
    found = []
    for name in _names_of(code):
        module = sys.modules.get(name)
        if module is not None and is_local_module(module):
            found.append(module)
    return found


def _names_of(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names_of(const)
    return names


def _new_module(name: str) -> types.ModuleType:
    """A local module as the kernel had it; ``import name`` in the task then gives this same module."""
    module = types.ModuleType(name)
    sys.modules[name] = module
    return module


def _module_setstate(module: types.ModuleType, state: dict) -> types.ModuleType:
    module.__dict__.update(state)
    module.__dict__.setdefault("__builtins__", builtins)
    return module


_MODULE_SKIP = frozenset({"__builtins__", "__loader__", "__spec__", "__cached__"})


class CallPickler(_Pickler):
    """The kernel's side: ``__main__`` and local modules by value, the rest by reference.

    Notes the files of the by-value code, so their source lines can travel with the payload
    (a cell's source lives only in the kernel's linecache). Local modules named in ``by_reference``
    go by reference like installed ones (the fallback of :func:`dumps_with_sources`)."""

    def __init__(self, file: Writable, by_reference: frozenset = frozenset()):
        super().__init__(file)
        self.code_files: set[str] = set()
        self.by_reference = by_reference
        self.local_modules: set[str] = set()  # the local modules this pickle carries by value

    def _local(self, module: types.ModuleType | None) -> bool:
        if module is None or module.__name__ in self.by_reference:
            return False
        self.local_modules.add(module.__name__)
        return True

    def reducer_override(self, obj):
        if isinstance(obj, types.FunctionType):
            if self._local(_local_module_of(obj)) or not _cp._should_pickle_by_reference(obj):
                self._note_code(obj.__code__)
                rv = self._dynamic_function_reduce(obj)
                imported = [m for m in _imported_local_modules(obj.__code__) if m.__name__ not in self.by_reference]
                if imported:  # `import mylib` in the body: the kernel's mylib too (loaded before the function)
                    slotstate = rv[2][1]
                    slotstate["_cloudpickle_submodules"] = list(slotstate["_cloudpickle_submodules"]) + imported
                return rv
            return NotImplemented
        if isinstance(obj, type):
            if obj.__module__ != MAIN and self._local(_local_module_of(obj)):
                return _cp._dynamic_class_reduce(obj)
        elif isinstance(obj, types.ModuleType) and is_local_module(obj) and self._local(obj):
            state = {k: v for k, v in vars(obj).items() if k not in _MODULE_SKIP}
            return _new_module, (obj.__name__,), state, None, None, _module_setstate
        return super().reducer_override(obj)

    def _note_code(self, code: types.CodeType) -> None:
        if code.co_filename not in self.code_files:
            self.code_files.add(code.co_filename)
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                self._note_code(const)

    def sources(self) -> dict[str, str]:
        """``{filename: source}`` of by-value code whose file is not on disk (notebook cells)."""
        found = {}
        for filename in sorted(self.code_files):
            if os.path.isfile(filename):
                continue
            lines = linecache.getlines(filename)
            if lines:
                found[filename] = "".join(lines)
        return found


class LocalModulesByReference(UserWarning):
    """A local module could not travel by value, so the worker imports it from its file."""


def dumps_with_sources(obj: Any, warn: bool = True) -> tuple[bytes, dict[str, str]]:
    """The kernel's pickle of ``obj``, and the cell sources its code needs for tracebacks.

    A local module that holds something no pickle can carry (a database engine, a thread pool)
    cannot go by value as a whole; such a module goes by reference, imported from its file on the
    worker (what the file says, even after an edit the kernel has not reloaded), with a warning."""
    buffer = io.BytesIO()
    pickler = CallPickler(buffer)
    try:
        pickler.dump(obj)
    except Exception as exc:
        if not pickler.local_modules:
            raise
        failing = frozenset(name for name in pickler.local_modules if not _whole_module_pickles(name))
        buffer = io.BytesIO()
        fallback = CallPickler(buffer, by_reference=failing or frozenset(pickler.local_modules))
        try:
            fallback.dump(obj)
        except Exception:
            raise exc from None
        if warn and not fallback.by_reference <= _warned_by_reference:  # once per module and kernel
            import warnings

            _warned_by_reference.update(fallback.by_reference)
            warnings.warn(f"jupyter-taskq: local module {', '.join(sorted(fallback.by_reference))} sent by "
                          f"reference (the worker imports its file; an edit the kernel has not reloaded shows "
                          f"there): {type(exc).__name__}: {exc}", LocalModulesByReference, stacklevel=4)
        pickler = fallback
    return buffer.getvalue(), pickler.sources()


_warned_by_reference: set[str] = set()


def _whole_module_pickles(name: str) -> bool:
    module = sys.modules.get(name)
    try:
        CallPickler(io.BytesIO()).dump(module)
    except Exception:  # noqa: BLE001 - that is the question asked
        return False
    return True


def dumps(obj: Any) -> bytes:
    """Serialise a call's part (a function, its arguments) by the kernel's rules."""
    return dumps_with_sources(obj)[0]


# -- worker: the notebook's world inside the task ---------------------------------------------------

def install_sources(sources: dict[str, str] | None) -> None:
    """Cells' source lines into linecache, so a task's traceback shows them."""
    for filename, text in (sources or {}).items():
        lines = text.splitlines(keepends=True)
        linecache.cache[filename] = (len(text), None, lines, filename)


def enter_notebook_main(*values) -> Callable[[], None]:
    """A fresh ``__main__`` holding the notebook's functions, classes and globals the call brought.

    Inside the task, ``pickle``, ``multiprocessing.Pool.map`` and ``ProcessPoolExecutor`` find
    them by reference, as they do in the kernel. Returns the function that puts the previous
    ``__main__`` back (a reused task process must not show one task's names to the next)."""
    main = types.ModuleType(MAIN)
    main.__dict__["__builtins__"] = builtins
    namespace = main.__dict__
    seen: set[int] = set()

    def absorb(value, name: str | None = None, depth: int = 0) -> None:
        if id(value) in seen or depth > 2:
            return
        seen.add(id(value))
        if isinstance(value, functools.partial):  # map() of a method or with keywords: self and keywords too
            for item in (value.func, *value.args, *value.keywords.values()):
                absorb(item, None, depth + 1)
        elif isinstance(value, (types.FunctionType, type, functools._lru_cache_wrapper)):
            if getattr(value, "__module__", None) != MAIN:
                return
            _mark_from_kernel(value)
            qualname = getattr(value, "__qualname__", "")
            if "." not in qualname and "<" not in qualname:
                namespace.setdefault(qualname, value)
            if name and name.isidentifier():
                namespace.setdefault(name, value)
            if isinstance(value, types.FunctionType):
                for key, item in value.__globals__.items():
                    if not key.startswith("__"):
                        namespace.setdefault(key, item)
                        if isinstance(item, (types.FunctionType, type, functools._lru_cache_wrapper)):
                            absorb(item, key, depth + 1)
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str):
                    absorb(item, key, depth + 1)
        elif isinstance(value, (list, tuple)):
            for item in value:
                absorb(item, None, depth + 1)
        elif getattr(type(value), "__module__", None) == MAIN:
            absorb(type(value), None, depth + 1)

    for value in values:
        absorb(value)
    for cls in list(_cp._DYNAMIC_CLASS_TRACKER_BY_CLASS.keys()):  # every class the payload defined by value
        _mark_from_kernel(cls)
    previous = sys.modules.get(MAIN)
    sys.modules[MAIN] = main

    def restore() -> None:
        if previous is not None:
            sys.modules[MAIN] = previous

    return restore


# -- worker to kernel: results and exceptions -------------------------------------------------------

_RESOLVABLE = (type, types.FunctionType, functools._lru_cache_wrapper)


def _resolve(module_name: str, qualname: str, data: bytes, is_class: bool | None = None):
    """The kernel's own class or function of that module and name if it has one (of the same kind);
    else the shipped definition (a fresh kernel, or the name now holds something else)."""
    module = sys.modules.get(module_name)
    if module is not None:
        try:
            found = functools.reduce(getattr, qualname.split("."), module)
        except AttributeError:
            found = None
        if isinstance(found, _RESOLVABLE) and (is_class is None or isinstance(found, type) == is_class):
            return found
    return pickle.loads(data)


_from_kernel: weakref.WeakSet = weakref.WeakSet()


def _mark_from_kernel(value) -> None:
    try:
        _from_kernel.add(value)
    except TypeError:  # not weakly referenceable
        pass


def _came_from_kernel(obj) -> bool:
    """A notebook object the call brought (not one the task defined, such as a class a cell redefines)."""
    return obj in _from_kernel


class ResultPickler(_Pickler):
    """The worker's side: notebook and local-module classes and functions travel as
    ``(module, name, definition)``, resolved in the kernel (see :func:`_resolve`).

    A ``__main__`` class or function that the task itself defined (a ``%%task_queue`` cell that
    redefines a class) travels by value only: the kernel gets the new definition, as if the cell
    had run there."""

    def reducer_override(self, obj):
        if isinstance(obj, _RESOLVABLE):
            module = getattr(obj, "__module__", None)
            qualname = getattr(obj, "__qualname__", None) or ""
            if (isinstance(module, str) and module != "builtins" and qualname and "<" not in qualname
                    and (_came_from_kernel(obj) if module == MAIN else not _importable(obj))):
                buffer = io.BytesIO()
                _Pickler(buffer).dump(obj)
                return _resolve, (module, qualname, buffer.getvalue(), isinstance(obj, type))
        return super().reducer_override(obj)


def dump_result(value: Any, file: Writable) -> None:
    ResultPickler(file).dump(value)


def dumps_result(value: Any) -> bytes:
    buffer = io.BytesIO()
    dump_result(value, buffer)
    return buffer.getvalue()


def dumps_exception(exc: BaseException) -> bytes | None:
    """The exception as the kernel can load it: whole; else its own class with its message only;
    else None (the kernel then raises TaskFailed with the type, message and traceback)."""
    for make in (lambda: exc, lambda: _rebuild_exception(type(exc), (str(exc),), {})):
        try:
            data = dumps_result(make())
            pickle.loads(data)  # only keep what the kernel will be able to load
            return data
        except Exception:  # noqa: BLE001 - try the plainer form
            continue
    return None


# -- comparing pickles -------------------------------------------------------------------------------

_SCALAR_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINBYTES", "BINBYTES",
                         "BINBYTES8", "SHORT_BINSTRING", "BINSTRING", "STRING", "BININT", "BININT1", "BININT2",
                         "INT", "LONG", "LONG1", "LONG4", "BINFLOAT", "FLOAT"})
_MEMO_PUT = frozenset({"MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"})
_MEMO_GET = frozenset({"GET", "BINGET", "LONG_BINGET"})


def identity_free_digest(data: bytes) -> str:
    """A sha256 of a pickle that does not depend on which equal strings happened to be one object.

    A pickler writes an object once and refers back to it when it meets the *same* object again, and
    whether two equal strings are one object depends on interning, which other code changes: once a
    library that has a method ``predict`` is imported, that name is interned, and a notebook function
    ``predict`` unpickled afterwards pickles to other bytes than before. (A warm task process compares
    the function of each attempt with the one it serves: task_process._WarmGuard.) Here a reference
    back to a string or number counts as that value, and memo and framing bookkeeping is left out."""
    import hashlib
    import pickletools

    digest = hashlib.sha256()
    memo: dict[object, tuple] = {}  # keyed by the opcodes' memo index (an int)
    others = 0  # memoised objects that are not scalars, numbered in order
    last: tuple | None = None
    for op, arg, _ in pickletools.genops(data):
        name = op.name
        if name in _MEMO_PUT:
            index = len(memo) if name == "MEMOIZE" else arg
            if last is not None and last[0] in _SCALAR_OPS:
                memo[index] = last
            else:
                memo[index] = ("REF", others)
                others += 1
            continue
        if name == "FRAME":
            continue
        token = memo.get(arg, ("REF?", arg)) if name in _MEMO_GET else (name, arg)
        digest.update(repr(token).encode())
        last = token
    return digest.hexdigest()


# -- loading (either direction) ----------------------------------------------------------------------

def load(stream: BinaryIO) -> Any:
    return pickle.load(stream)


def loads(data: bytes) -> Any:
    return pickle.loads(data)


if __name__ != "jupyter_taskq.pickling":
    # Loaded by path by the task runner in another interpreter: what pickles reference by name must be
    # found as jupyter_taskq.pickling (the runner registers this module under that name too).
    for _fn in (_from_dill, _rebuild_exception, _make_lru_cache, _new_module, _module_setstate, _resolve):
        _fn.__module__ = "jupyter_taskq.pickling"
