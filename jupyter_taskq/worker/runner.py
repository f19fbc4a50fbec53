"""Runs one attempt of a task, in its own process, in the submitting notebook's world.

The worker forks a child that calls :func:`run_attempt` (fast, same interpreter),
or, when the notebook's kernel runs another Python (a conda env), starts that
interpreter on this file as a script. So this module needs only the standard
library, cloudpickle and dill; as a script it loads ``payload.py`` and ``pickling.py``
by path, so it does not import a possibly different jupyter_taskq installed in that
interpreter.

In the task, ``__main__`` is a fresh module holding the notebook's functions, classes
and globals that the call brought (so process pools and ``pickle`` find them by
reference, as in the kernel), and the notebook cells' source lines are in linecache
(so tracebacks show them); the worker's own ``__main__`` is put back afterwards.

Exit status: 0 the call returned (result written), 1 it raised (error written),
2 the attempt could not start (error written). Anything else is a crash.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import json
import os
import sys
import traceback
from typing import Any

EXIT_OK, EXIT_RAISED, EXIT_SETUP = 0, 1, 2


ATTEMPT_DIR_ENV = "JUPYTER_TASKQ_ATTEMPT_DIR"  # as jupyter_taskq.taskio reads it
GPUS_ENV = "JUPYTER_TASKQ_GPUS"  # the attempt's GPUs, as jupyter_taskq.gpus() reads them
#: matplotlib backends that ipykernel sets in the kernel's environment, which a worker cannot show: the
#: task gets Agg instead (a backend the user chose, such as "pdf" or "svg", is kept).
KERNEL_BACKENDS = ("module://matplotlib_inline", "module://ipykernel")
#: The attempt's own entries (its task token, the server's URL: jupyter_taskq/tasktokens.py, which names
#: them; this file needs only the standard library). The worker sets them in this process's environment
#: before the attempt, and they outlive _enter_world's switch to the notebook's environment.
ATTEMPT_ENV = ("JUPYTER_TASKQ_URL", "JUPYTER_TASKQ_TOKEN", "JUPYTER_TASKQ_IN_TASK", "JUPYTER_TASKQ_IMAGE")
#: The attempt's image (worker/images.py ``Lease.run_env``, as JSON): its prefix, variables, runner libraries.
IMAGE_ENV = "JUPYTER_TASKQ_IMAGE"
#: The batch job a worker runs in (the Slurm launcher's), as the scheduler set it: the task sees its job
#: and the GPUs the job was given (SLURM_JOB_GPUS, beside CUDA_VISIBLE_DEVICES), not the notebook's.
JOB_ENV = ("SLURM_JOB_ID", "SLURM_JOB_NAME", "SLURM_JOB_GPUS", "SLURM_JOB_NODELIST", "SLURM_JOB_PARTITION",
           "SLURM_CLUSTER_NAME", "GPU_DEVICE_ORDINAL")
_JOB = {k: os.environ[k] for k in JOB_ENV if k in os.environ}  # read once: each attempt replaces os.environ


def set_attempt_env(env: dict) -> None:
    """This attempt's entries, and none of a previous attempt's (a warm process runs many)."""
    for name in ATTEMPT_ENV:
        os.environ.pop(name, None)
    os.environ.update({k: v for k, v in env.items() if k in ATTEMPT_ENV})


def run_attempt(payload_path: str, result_path: str, error_path: str, log_path: str, attempt_dir: str,
                cuda_devices: str, payload_module, before_call=None, owner_env: dict | None = None,
                blob_path: str | None = None, parsed: dict | None = None) -> int:
    """``before_call(fn)``, if given, may return an exit status to stop before the call (a warm process
    that finds it holds stale code for ``fn``: see :mod:`.task_process`).

    Run as its owner (:mod:`.owner`): ``payload_path`` (and ``blob_path``, a map()'s shared part) may be
    ``"fd:N"``, a descriptor opened before this process gave up root; ``owner_env`` names the owner
    (HOME, USER, LOGNAME) over the notebook's environment. ``parsed``: the payload's header as the worker
    parsed it and where its body starts (``{"header", "body_at"}``); without it the header is read here."""
    _redirect_output(log_path)
    _reset_progress()
    own = {k: os.environ[k] for k in ATTEMPT_ENV if k in os.environ}
    try:
        with _open_input(payload_path) as stream:
            if parsed is not None:  # parsed once, by the worker: skip to the body
                header = parsed["header"]
                stream.seek(parsed["body_at"])
            else:
                header = payload_module.read_header(stream)
            image = json.loads(own.pop(IMAGE_ENV)) if own.get(IMAGE_ENV) else None
            _enter_world(header, cuda_devices, attempt_dir, image)
            os.environ.update(_JOB)
            if owner_env:
                os.environ.update(owner_env)
            if own:  # the notebook's URL (its server's, maybe on another machine) gives way to the worker's
                set_attempt_env(own)
            try:
                # first: as the kernel made them
                shared = _shared_function(header, payload_path, payload_module, blob_path)
                fn, args, kwargs = payload_module.load_body(stream, header)
            except (OSError, MemoryError):  # a shared part missing here, memory=: another attempt may do better
                raise
            except BaseException as exc:  # noqa: BLE001 - the same bytes fail the same way on every retry
                _write_error(error_path, exc, exc.__traceback__, setup=True,
                             final="the call could not be unpickled on the worker")
                return EXIT_SETUP
            if shared is not None:
                fn = shared
            _pickling().install_sources(header.get("sources"))
            on_start = payload_module.load_on_start(header)  # (name, sha256, function) or None
            leave_main = _pickling().enter_notebook_main(fn, args, kwargs, *(on_start[2:] if on_start else ()))
    except BaseException as exc:  # noqa: BLE001 - report whatever stops the set-up
        _write_error(error_path, exc, exc.__traceback__, setup=True)
        return EXIT_SETUP
    if before_call is not None and (stop := before_call(fn)) is not None:
        leave_main()
        return stop
    try:
        if on_start is not None and not _run_on_start(on_start[0], on_start[1], on_start[2], error_path):
            return EXIT_RAISED
        _as_in_the_kernel(header)
        return _call(fn, args, kwargs, result_path, error_path)
    finally:
        leave_main()


#: The on_start this task process has run: (its sha256, its return value). A process serves one on_start
#: (it is part of the warm key), so this is set once; a fresh process starts without it.
_on_start_done: tuple[str, object] | None = None


def _run_on_start(name: str, sha256: str, on_start, error_path: str) -> bool:
    """Run the task's ``on_start`` unless this process already has (a warm one); its value is then what
    ``jupyter_taskq.on_start_value()`` answers in the task. False: it raised (error written, labelled)."""
    global _on_start_done
    if _on_start_done is None or _on_start_done[0] != sha256:
        try:
            value = on_start()
        except BaseException as exc:  # noqa: BLE001 - the attempt fails with on_start's own traceback
            _flush_progress()
            exc.add_note(f"(raised by on_start {name}, which runs before the task in each fresh task process)")
            _write_error(error_path, exc, exc.__traceback__.tb_next if exc.__traceback__ else None, on_start=name)
            return False
        _on_start_done = (sha256, value)
    _taskio_set_on_start(_on_start_done[1])
    return True


def _as_in_the_kernel(header: dict) -> None:
    """Right before the call: the kernel's log level, format and warning filters, the task's seeds (one rule:
    jupyter_taskq/seeds.py), and the hooks for plt.show() and tqdm (:mod:`.taskhooks`). Best effort: none
    of these may stop the task."""
    for apply in (lambda: _root_module("kernelstate").apply(header),
                  lambda: _root_module("seeds").apply(header.get("seed")),
                  lambda: _worker_module("taskhooks").install()):
        try:
            apply()
        except Exception:  # noqa: BLE001
            traceback.print_exc()


def _taskio_set_on_start(value) -> None:
    """Hand the value to :mod:`jupyter_taskq.taskio` (what the task imports); in another interpreter without
    jupyter_taskq installed the task cannot import it either, so there is nobody to hand it to."""
    taskio = sys.modules.get("jupyter_taskq.taskio")
    if taskio is None:
        try:
            import jupyter_taskq.taskio as taskio
        except ImportError:
            return
    setter = getattr(taskio, "set_on_start_value", None)  # another installed version may lack it
    if setter is not None:
        setter(value)


def _call(fn, args, kwargs, result_path: str, error_path: str) -> int:
    try:  # a dependency's result passed as an argument (jupyter_taskq/depresults.py), fetched here
        args, kwargs = _root_module("depresults").resolve(args, kwargs)
    except BaseException as exc:  # noqa: BLE001 - reported as the attempt's failure, as the task's own would be
        exc.add_note("(raised while fetching the result of a task passed as an argument)")
        _write_error(error_path, exc, exc.__traceback__)
        return EXIT_RAISED
    problem = _binding_problem(fn, args, kwargs)
    if problem is not None:
        _write_error(error_path, problem, None, final="the arguments do not fit the function's signature")
        return EXIT_RAISED
    try:
        value = fn(*args, **kwargs)
        if inspect.iscoroutine(value):  # an async def: run it to its end here (the kernel's plain call returns it)
            value = asyncio.run(value)
    except BaseException as exc:  # noqa: BLE001 - the task's own failure, reported to its owner
        _flush_progress()
        _write_error(error_path, exc, exc.__traceback__.tb_next if exc.__traceback__ else None)
        return EXIT_RAISED
    _flush_progress()
    try:
        _dump_private(result_path, value)
    except BaseException as exc:  # noqa: BLE001
        exc.add_note("(raised while serialising the task's return value)")
        _write_error(error_path, exc, exc.__traceback__)
        return EXIT_RAISED
    if value is not None:  # None has nothing to show: no work at all on that path
        _display().write(os.path.splitext(result_path)[0] + ".display", value)  # best effort, never raises
    return EXIT_OK


def _binding_problem(fn, args, kwargs) -> TypeError | None:
    """The ``TypeError`` of a call whose arguments cannot bind (the kernel refuses those at submission;
    a payload from elsewhere may still hold one). Not through ``__wrapped__``: a decorator's wrapper may
    take other arguments than the function it wraps."""
    try:
        signature = inspect.signature(fn, follow_wrapped=False)
    except (TypeError, ValueError):  # not introspectable: the call itself will tell
        return None
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        return TypeError(f"{getattr(fn, '__qualname__', None) or repr(fn)}() {exc}")
    return None


def _pickling():
    """:mod:`jupyter_taskq.pickling`: imported with payload.py, or loaded by path (script mode)."""
    return sys.modules.get("jupyter_taskq.pickling") or sys.modules["_jupyter_taskq_pickling"]


def _reset_progress() -> None:
    """A reused process must not report the previous attempt's progress."""
    taskio = sys.modules.get("jupyter_taskq.taskio")
    if taskio is not None:
        taskio.reset()


def _flush_progress() -> None:
    """The last progress() value is what the task JSON shows, even if it came in under the rate limit."""
    taskio = sys.modules.get("jupyter_taskq.taskio")
    if taskio is not None:
        try:
            taskio.flush_progress()
        except Exception:  # noqa: BLE001 - progress is best effort
            pass


def _redirect_output(log_path: str) -> None:
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    null = os.open(os.devnull, os.O_RDONLY)  # a subprocess of the task reads EOF, never the worker's stdin
    os.dup2(null, 0)
    os.close(null)
    sys.stdin = _NoStdin()


class _NoStdin(io.TextIOBase):
    """``sys.stdin`` in a task: nobody is there to type, so ``input()`` fails at once, saying why."""

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> str:
        raise EOFError("a task has no standard input: input() and sys.stdin cannot be read on a worker; "
                       "pass the value to the task as an argument")

    readline = read  # type: ignore[assignment]  # str, as io.TextIOBase's own (typeshed's _IOBase: bytes)


def _enter_world(header: dict, cuda_devices: str, attempt_dir: str, image: dict | None = None) -> None:
    """The notebook's environment, working directory and sys.path; the worker's GPU. In an image (``image``),
    the notebook's own folders stay on sys.path but not its installed packages (site-packages, the standard
    library): the image's packages are found by reference, not the kernel's."""
    os.environ.clear()
    os.environ.update(header["env"])
    os.environ["CUDA_VISIBLE_DEVICES"] = cuda_devices  # exactly the attempt's GPUs, in order ("2,3")
    os.environ[GPUS_ENV] = cuda_devices  # jupyter_taskq.gpus(): their physical ids
    os.environ[ATTEMPT_DIR_ENV] = attempt_dir
    if os.environ.get("MPLBACKEND", "").startswith(KERNEL_BACKENDS) or not os.environ.get("MPLBACKEND"):
        os.environ["MPLBACKEND"] = "Agg"  # no display here: plt.show() saves the figure (see taskhooks.py)
    cwd = header["cwd"]
    try:
        os.chdir(cwd)
    except PermissionError:  # run as its owner (a hub service), who cannot enter a folder of someone else's
        raise PermissionError(f"the notebook's working directory {cwd!r} cannot be entered by the account this "
                              f"task runs as (uid {os.getuid()})") from None
    except OSError:
        raise FileNotFoundError(f"the notebook's working directory {cwd!r} does not exist on this worker") from None
    present = set(sys.path)
    extra = [("" if p == "" else p) for p in header["sys_path"] if p not in present]
    if image is not None:
        extra = [p for p in extra if not _installed_folder(p, header)]
        _enter_image(image)
    sys.path[:0] = extra
    _limits().apply_for_attempt(attempt_dir)  # cpu= and memory= (or undo a previous attempt's)


def _installed_folder(path: str, header: dict) -> bool:
    """A folder of the kernel's installation (its site-packages, standard library, .pth additions)."""
    if "site-packages" in path or "dist-packages" in path:
        return True
    prefixes = [p for p in (header.get("prefix"), header.get("base_prefix")) if p]
    real = os.path.realpath(path) if path else path
    return any(path.startswith(p.rstrip("/") + "/lib") or real.startswith(os.path.realpath(p) + "/lib")
               for p in prefixes)


def _enter_image(image: dict) -> None:
    """The image's variables, and its environment activated for the task's subprocesses (VIRTUAL_ENV, PATH)."""
    os.environ.update(image.get("env_vars") or {})
    prefix = image.get("prefix")
    if prefix:
        os.environ["VIRTUAL_ENV"] = prefix
        os.environ["PATH"] = os.path.join(prefix, "bin") + os.pathsep + os.environ.get("PATH", "")
    else:
        os.environ.pop("VIRTUAL_ENV", None)


def _display():
    """:mod:`.display` (the result's MIME bundle)."""
    return _worker_module("display")


def _limits():
    """:mod:`.limits` (cpu= and memory=)."""
    return _worker_module("limits")


def _worker_module(name: str):
    """``jupyter_taskq.worker.<name>``, imported by the worker before it forked us, or loaded by path
    in another interpreter (the notebook's conda env need not have jupyter_taskq)."""
    module = sys.modules.get(f"jupyter_taskq.worker.{name}") or sys.modules.get(f"_jupyter_taskq_{name}")
    if module is None:
        module = _load_by_path(f"_jupyter_taskq_{name}", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                       f"{name}.py"))
    return module


def _root_module(name: str):
    """``jupyter_taskq.<name>`` (a standard-library-only module), or loaded by path as :func:`_worker_module` does."""
    module = sys.modules.get(f"jupyter_taskq.{name}") or sys.modules.get(f"_jupyter_taskq_{name}")
    if module is None:
        try:
            import importlib

            module = importlib.import_module(f"jupyter_taskq.{name}") if __name__ != "__main__" else None
        except ImportError:
            module = None
    if module is None:
        module = _load_by_path(f"_jupyter_taskq_{name}",
                               os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), f"{name}.py"))
    return module


def _load_by_path(name: str, path: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None  # a .py file: the source loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _write_error(error_path: str, exc: BaseException, tb, setup: bool = False, on_start: str | None = None,
                 final: str | None = None) -> None:
    """``on_start``: the name of the on_start function that raised (the message and traceback say so).
    ``final``: why no retry can fix this failure; the worker then fails the task without retrying it."""
    if final is not None:
        exc.add_note(f"(not retried: {final})")
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    if on_start is not None:
        text = f"on_start {on_start} failed (run before the task, in a fresh task process):\n{text}"
    error: dict[str, Any] = {
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins."),
        "message": f"in on_start {on_start}: {exc}" if on_start is not None else str(exc),
        "traceback": text,
        # The class and its bases, for retry_for (subclasses count); the worker drops it before storing.
        "mro": [f"{k.__module__}.{k.__qualname__}".removeprefix("builtins.") for k in type(exc).__mro__[:-1]],
    }
    if isinstance(exc, MemoryError):
        error["peak_mib"] = _limits().peak_mib()  # for "exceeded memory=N MiB (peak P MiB)"
    if setup:
        error["phase"] = "setup"
    if on_start is not None:
        error["phase"] = "on_start"
    if final is not None:
        error["message"] += f" (not retried: {final})"
        error["final"] = final  # read (and dropped) by the worker: no retry
    try:
        pickled = _pickling().dumps_exception(exc)  # its own class, even if __init__ wants other arguments
        if pickled is not None:
            _write_private(error_path + ".pickle", pickled)
    except Exception:  # noqa: BLE001 - the JSON error is enough
        pass
    _write_private(error_path, json.dumps(error).encode())
    print(text, file=sys.stderr)


def _dump_private(path: str, value) -> None:
    """Pickled straight into the file: a 100 MB result is never held twice."""
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            _pickling().dump_result(value, f)
    except BaseException:
        os.unlink(tmp)
        raise
    os.replace(tmp, path)


def _write_private(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _open_input(path: str):
    """A payload or shared part by path, or ``"fd:N"``: a descriptor this process inherited or opened."""
    return open(int(path[3:]), "rb") if path.startswith("fd:") else open(path, "rb")


def _shared_function(header: dict, payload_path: str, payload_module, blob_path: str | None = None):
    """The function of a payload that names a shared part (``"blob"``: jupyter_taskq/blobs.py) instead of
    carrying it: loaded from that part, kept beside the payloads (StateDir.blob: files/blobs/<sha256>.blob)."""
    key = header.get("blob")
    if key is None:
        return None
    path = blob_path or os.path.join(os.path.dirname(os.path.dirname(payload_path)), "blobs", f"{key}.blob")
    with _open_input(path) as stream:
        shared_header, fn, _, _ = payload_module.load_call(stream)
    _pickling().install_sources(shared_header.get("sources"))
    return fn


def _load_payload_module():
    """payload.py and pickling.py of this installation, by path, in the kernel's interpreter.

    pickling.py also answers to ``jupyter_taskq.pickling``: pickles name its rebuild functions so."""
    import types

    def load(name: str, filename: str):
        return _load_by_path(name, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), filename))

    pickling = load("_jupyter_taskq_pickling", "pickling.py")
    try:
        import jupyter_taskq  # noqa: F401 - the parent that "jupyter_taskq.pickling" needs
    except ImportError:
        package = types.ModuleType("jupyter_taskq")
        package.__path__ = []
        sys.modules["jupyter_taskq"] = package
    sys.modules["jupyter_taskq.pickling"] = pickling
    return load("_jupyter_taskq_payload", "payload.py")


if __name__ == "__main__":
    if os.environ.get(IMAGE_ENV):  # after the interpreter's own packages: the runner's libraries (an existing
        _image = json.loads(os.environ[IMAGE_ENV])  # interpreter) and the task-side jupyter_taskq (taskside.py)
        sys.path.extend(p for p in (_image.get("runner_path"), _image.get("taskside_path")) if p)
    # python runner.py PAYLOAD RESULT ERROR LOG ATTEMPT_DIR CUDA_DEVICES [AS_OWNER_JSON [PIPES_JSON]]
    sys.path.pop(0)  # this file's folder is not the notebook's
    as_owner = json.loads(sys.argv[7]) if len(sys.argv) > 7 else {}
    _payload_module = _load_payload_module()
    if len(sys.argv) > 8:  # warm: this process serves the next attempts of the function too
        sys.exit(_worker_module("warmserve").serve(sys.modules[__name__], _payload_module, sys.argv[1:6],
                                                   sys.argv[6], as_owner, json.loads(sys.argv[8])))
    _args = sys.argv[1:7]  # PAYLOAD RESULT ERROR LOG ATTEMPT_DIR CUDA_DEVICES
    sys.exit(run_attempt(_args[0], _args[1], _args[2], _args[3], _args[4], _args[5], _payload_module, **as_owner))
