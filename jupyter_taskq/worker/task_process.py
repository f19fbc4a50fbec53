"""The processes that run attempts: a keeper per attempt, and a fresh task process under it.

    worker --fork--> keeper --fork--> task process --> whatever the task starts

The worker never runs user code or touches CUDA. For each attempt it hands the
paths of the attempt's files to a *keeper* forked from it (one lives as long as
the worker and serves attempt after attempt). The keeper, which runs no user code
either, forks a fresh *task process* for each attempt, which enters the notebook's
world and makes the call (or execs the notebook's own interpreter on
``runner.py``). So no attempt ever sees another's process state: builtins, signal
handlers, umask, nice, recursion limit, patched modules and closed file
descriptors all die with their attempt, at the cost of one fork per attempt.

The keeper is a Linux *child subreaper* in a process group of its own: whatever
the task starts, in a new session (``setsid``) or daemonised, is re-parented to
it once its parent exits. When the attempt ends (returns, raises, crashes, is
cancelled or times out) the keeper kills and reaps everything below it before it
reports the exit code, and it does the same when its worker dies (a parent-death
signal; a SIGKILL of the worker's or the server's process group does not reach
the keeper's group). Cancel and timeout: the worker sends the keeper SIGTERM;
the keeper sends SIGTERM to the whole tree and SIGKILL to what is left after the
grace period.

Where the machine allows, each attempt is also held by cgroups of its own
(:mod:`.cgroups`): its ``memory=`` and ``cpu=``, and a hold on the whole tree that
outlives the keeper, so that a worker and keeper killed together still leave
nothing behind. A fresh task process has a private ``/dev/shm`` (:mod:`.privateshm`).

Warm processes (the task's ``keep_warm_seconds``): after an attempt that returned
normally, and left no thread of its own running and no child alive, the keeper
keeps its task process, still ending whatever the attempt left behind *outside*
it, and passes it the next attempt of the same function and world; the worker
decides which attempts may go there.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import sys
import tempfile
import threading
from typing import Any

from .. import payload
from . import cgroups, limits, privateshm, runner
from .proctree import (become_subreaper, descendants, die_with_parent, end_all_children, has_children, signal_all,
                       wait_exit)

from .warmserve import EXIT_STALE, WarmGuard as _WarmGuard, _dumps, _loads, flush_output, left_behind as _left_behind
from .warmserve import read_message, write_message  # noqa: F401 - the keeper's framing, here since before

PARENT_DIED = signal.SIGHUP  # the keeper's parent-death signal: end the whole tree at once
KEEPER_CRASH = 3  # exit status of a keeper (or task process) that failed outside the task's code
SCRATCH = "/dev/shm"  # tmpfs on Linux: where the warm-up writes its throwaway result


class _Stop(Exception):
    """Raised in the keeper by SIGTERM (end with grace) or its parent's death (end at once)."""

    def __init__(self, graceful: bool):
        super().__init__("stop")
        self.graceful = graceful


class TaskProcess:
    """The worker's handle on one keeper (and, through it, its task process)."""

    def __init__(self, pid: int, request: int, done: int):
        self.pid = pid
        self.pidfd = os.pidfd_open(pid)
        self.request: int | None = request  # write end: attempt requests
        self.done: int | None = done  # read end: one report per attempt
        self.warm_key: str | None = None  # the function and world a warm task process serves (see the worker)
        self.warm_info: dict = {}
        self.keep_warm = 0.0  # seconds it may idle, warm, before it is ended
        self.idle_since: float | None = None
        self.attempts = 0  # attempts handed to this keeper, over all its task processes
        self.task_pid: int | None = None  # the task process that ran the last attempt (its keeper reports it)
        self.task_attempts = 0  # attempts that task process has run: what a warm one has served
        self.busy = False  # an attempt was handed over and its report not read yet
        self.image_fd: int | None = None  # a shared flock on the image a warm process runs in (images.Lease)

    @classmethod
    def fork(cls, cuda_devices: str, kill_grace: float, warm_up: str | None = None) -> TaskProcess:
        """A keeper; ``warm_up``: a payload each fresh task process runs before its attempt comes (see
        :func:`_warm_up`)."""
        request_r, request_w = os.pipe()
        done_r, done_w = os.pipe()
        parent = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the keeper: never returns
            code = 0
            try:
                os.close(request_w)
                os.close(done_r)
                _keeper(request_r, done_w, cuda_devices, kill_grace, parent, warm_up)
            except BaseException:  # noqa: BLE001 - the worker sees the missing report
                code = KEEPER_CRASH
            finally:
                os._exit(code)
        os.close(request_r)
        os.close(done_w)
        return cls(pid, request_w, done_r)

    def dispatch(self, paths: list[str], python: str | None = None, warm: bool = False,
                 owner: dict | None = None, env: dict[str, str] | None = None, devices: str | None = None,
                 parsed: dict | None = None) -> None:
        """Start an attempt: ``python`` names another interpreter to run it in (the notebook's env);
        ``warm``: keep the task process afterwards if the attempt returns normally; ``owner``: the
        account to run it as (:mod:`.owner`; with ``"blob"``, the path of its shared part); ``env``: this
        attempt's own environment entries over the notebook's (its task token: tasktokens.py), through a
        pipe, never a file or a command line; ``devices``: the attempt's GPUs ("2,3" for a gang), over the
        keeper's own; ``parsed``: the payload's header as the worker parsed it and where its body starts
        (``{"header": ..., "body_at": ...}``), so that the task process does not parse it again."""
        assert self.request is not None, "dispatch to a retired keeper"
        write_message(self.request, {"paths": paths, "python": python, "warm": warm, "owner": owner,
                                     "env": env or {}, "devices": devices, "parsed": parsed})
        self.attempts += 1
        self.idle_since = None
        self.busy = True

    def alive(self) -> bool:
        return self.pidfd is not None and not wait_exit(self.pidfd, 0)

    def read_report(self) -> dict | None:
        """After ``done`` is readable: ``{"code", "warm"}`` of the attempt, or None if the keeper died."""
        assert self.done is not None, "read_report of a retired keeper"
        try:
            report = read_message(self.done)
        except (OSError, ValueError):
            return None
        self.busy = report is None
        if report is not None:
            if report.get("pid") != self.task_pid:  # a fresh task process ran it (the keeper outlives many)
                self.task_pid, self.task_attempts = report.get("pid"), 0
            self.task_attempts += 1
        return report

    def hold_image(self, lease) -> None:
        """Keep the image of a warm process in use while the process lives, between attempts too: the
        image cache never evicts an environment an idle warm interpreter runs from (images._evict)."""
        if self.image_fd is None and lease.fd is not None:
            self.image_fd = os.dup(lease.fd)  # the same open file: the same shared flock

    def release_image(self) -> None:
        if self.image_fd is not None:
            os.close(self.image_fd)
            self.image_fd = None

    def retire(self) -> None:
        """Close our ends: an idle keeper reads EOF, ends its tree and exits (reap its pid afterwards)."""
        self.release_image()
        for name in ("request", "done", "pidfd"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)

    def kill(self, grace: float) -> None:
        """End the attempt and everything it started: SIGTERM, SIGKILL after ``grace`` s; reaps the keeper."""
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        if not wait_exit(self.pidfd, grace + 5):  # the keeper itself is stuck: its task process dies with it
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        self.retire()


# -- the keeper ---------------------------------------------------------------
class _Task:
    """The keeper's handle on its task process."""

    def __init__(self, pid: int, request: int, report: int):
        self.pid = pid
        self.pidfd: int | None = os.pidfd_open(pid)
        self.request: int | None = request  # its attempts
        self.report: int | None = report  # (code, reusable) per attempt

    def wait(self, group: cgroups.AttemptGroup | None = None) -> tuple[int, str]:
        """The attempt's exit code, and what became of the process: "kept" (warm, for the next attempt),
        "exiting" (it reported and is on its way out) or "gone" (exited or died, and reaped).
        ``group``: at the first out-of-memory kill in the attempt's cgroup, the whole attempt is ended."""
        pidfd, report_fd = self.pidfd, self.report
        assert pidfd is not None and report_fd is not None  # (closed by reap, which ends the wait)
        watch = [pidfd, report_fd]
        oom_r, oom_x = group.oom_watch() if group is not None else ([], [])
        while True:
            ready, _, exceptional = select.select(watch + oom_r, [], oom_x)
            if oom_r and oom_r[0] in ready or exceptional:
                assert group is not None  # (only its watches are there)
                _clear_event(bool(oom_r) and oom_r[0] in ready, (oom_r or oom_x)[0])
                if group.oom_killed():  # the kernel killed one process of it: end them all (then "gone")
                    group.kill()
                    oom_r = oom_x = []
                continue
            if report_fd in ready:
                report = read_message(report_fd)
                if report is not None:
                    return report["code"], "kept" if report["reusable"] else "exiting"
                watch = [pidfd]  # closed without a word: it died
                continue
            if pidfd in ready:
                return self.reap(), "gone"

    def reap(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        self.close()
        return os.waitstatus_to_exitcode(status)

    def close(self) -> None:
        for fd in (self.pidfd, self.request, self.report):
            if fd is not None:
                os.close(fd)
        self.pidfd = self.request = self.report = None


def _clear_event(eventfd: bool, fd: int) -> None:
    """Rearm an out-of-memory watch: read the v1 eventfd, or re-read v2's memory.events."""
    try:
        os.read(fd, 8) if eventfd else os.pread(fd, 4096, 0)
    except OSError:
        pass


def _contain(pid: int, message: dict) -> cgroups.AttemptGroup:
    """The attempt's cgroups (:mod:`.cgroups`), with its ``memory=`` and ``cpu=`` cores, ``pid`` moved in."""
    spec = {}
    try:
        with open(limits.spec_path(message["paths"][4])) as f:
            spec = _loads(f.read())
    except (OSError, ValueError, IndexError):
        pass
    return cgroups.AttemptGroup.create(pid, spec.get("memory"), spec.get("cores") if spec.get("cpu") else None)


def _keeper(request_fd: int, done_fd: int, cuda_devices: str, grace: float, parent: int,
            warm_up: str | None = None) -> None:
    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(PARENT_DIED, signal.SIG_IGN)
        raise _Stop(graceful=signum == signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(PARENT_DIED, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.setpgid(0, 0)  # out of the worker's group: a kill of that group must leave us to clean up
    become_subreaper()
    die_with_parent(PARENT_DIED)
    task: _Task | None = None  # the task process of the attempt in flight, or the one kept warm
    ready: _Task | None = None  # a fresh task process, forked ahead, waiting for its attempt
    group: cgroups.AttemptGroup | None = None  # the attempt's cgroups: its whole tree, wherever it went
    try:
        if os.getppid() != parent:
            return  # the worker died before we could ask to hear of it
        while True:
            if task is None and ready is None:
                # On a busy queue the next attempt is often waiting already: the warm-up would only delay
                # it and cost the CPU of one more run (it takes faults off an idle queue's latency).
                queued = bool(select.select([request_fd], [], [], 0)[0])
                ready = _fork_task(cuda_devices, (request_fd, done_fd), None if queued else warm_up)
            idle = task or ready
            assert idle is not None and idle.pidfd is not None
            if select.select([request_fd, idle.pidfd], [], [])[0] == [idle.pidfd]:
                if idle is task:
                    return  # the warm task process died while idle: the worker sees us go
                os.waitpid(idle.pid, 0)  # the ready one died (killed from outside?): fork another,
                idle.close()            # without the warm-up, in case that is what killed it
                ready = None
                warm_up = None
                continue
            message = read_message(request_fd)
            if message is None:
                return  # retired by the worker
            if task is None:
                task, ready = idle, None
            group = _contain(task.pid, message)
            assert task.request is not None  # (closed only when it is reaped, and then dropped)
            write_message(task.request, message)
            code, fate = task.wait(group)
            report = {"code": code, "warm": fate == "kept", "pid": task.pid, "memory": group.memory_report()}
            if fate == "kept":
                end_all_children(keep=frozenset({task.pid}))  # what the attempt orphaned
                group.remove(keep_pid=task.pid)  # and whatever else of it is left, wherever it went
                write_message(done_fd, report)
            elif fate == "exiting":  # done: say so now, then clear up (before taking the next attempt)
                _kill_group(task.pid)
                write_message(done_fd, report)
                task.reap()
                task = None
                end_all_children()
                group.remove()
            else:
                task = None
                end_all_children()
                group.remove()
                write_message(done_fd, report)
            group = None
            # Then the next attempt: in a fresh task process (forked ahead now), or in the one kept warm.
    except _Stop as stopped:
        if stopped.graceful and task is not None and task.pidfd is not None:
            signal_all(descendants(os.getpid()), signal.SIGTERM)
            wait_exit(task.pidfd, grace)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(PARENT_DIED, signal.SIG_IGN)
        end_all_children()
        if group is not None:
            group.remove()


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _fork_task(cuda_devices: str, keeper_fds: tuple[int, int], warm_up: str | None = None) -> _Task:
    """A fresh task process, waiting for its attempt on a pipe (forked ahead, off the attempt's path)."""
    request_r, request_w = os.pipe()
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the task process: never returns
        code = KEEPER_CRASH
        try:
            for fd in (*keeper_fds, request_w, report_r):
                os.close(fd)
            os.setpgid(0, 0)
            die_with_parent(signal.SIGKILL)
            privateshm.enter()  # while single-threaded and root: its own /dev/shm (privateshm.py)
            for sig in (signal.SIGTERM, signal.SIGINT, PARENT_DIED):
                signal.signal(sig, signal.SIG_DFL)
            code = _run_task(cuda_devices, request_r, report_w, warm_up)
        finally:
            os._exit(code)
    os.close(request_r)
    os.close(report_w)
    return _Task(pid, request_w, report_r)


def _run_task(cuda_devices: str, requests: int, reports: int, warm_up: str | None = None) -> int:
    """Attempts, as the keeper passes them: one, or (warm) more of the same function while they return."""
    base_path = list(sys.path)
    guard = _WarmGuard()
    served = 0
    if warm_up and not select.select([requests], [], [], 0)[0]:  # (an attempt already here: it goes first)
        _warm_up(warm_up, cuda_devices)
    while True:
        message = read_message(requests)
        if message is None:
            return runner.EXIT_OK  # the keeper ended
        paths = message["paths"]
        devices = message.get("devices")
        devices = cuda_devices if devices is None else devices  # a gang's GPUs: this attempt's own
        runner.set_attempt_env(message.get("env") or {})  # before _exec_runner: the other interpreter inherits it
        as_owner: dict[str, Any] = {}
        if message.get("owner"):
            try:
                paths, as_owner = _as_owner(paths, message["owner"], message.get("parsed"))
            except BaseException as exc:  # noqa: BLE001 - the attempt cannot start as its owner: say why
                runner._write_error(paths[2], exc, exc.__traceback__, setup=True)
                write_message(reports, {"code": runner.EXIT_SETUP, "reusable": False})
                return runner.EXIT_SETUP
        warm = bool(message.get("warm"))
        if message.get("python"):  # another interpreter (an image): warm, it serves the next attempts there too
            _exec_runner(message["python"], paths, devices, as_owner, (requests, reports) if warm else None)
        sys.path[:] = base_path
        if served:
            privateshm.renew()  # the last attempt's /dev/shm files go with it
        served += 1
        threads = set(threading.enumerate())
        if warm and guard.modules_changed():
            code = EXIT_STALE
        else:
            given = {**as_owner, "parsed": message.get("parsed")}  # the header, parsed by the worker
            payload_path, result_path, error_path, log_path, attempt_dir = paths
            code = runner.run_attempt(payload_path, result_path, error_path, log_path, attempt_dir, devices, payload,
                                      guard.before_call if warm else None, **given)
        flush_output()
        # Never after the task raised or crashed, nor when it left a thread running or a child alive: they
        # would write into the next attempt's log and outlive their attempt (the keeper ends them with it).
        reusable = warm and code == runner.EXIT_OK and not _left_behind(threads, has_children)
        if reusable:
            guard.remember_modules()
        write_message(reports, {"code": code, "reusable": reusable})
        if not reusable:
            return code


def _warm_up(payload_path: str, cuda_devices: str) -> None:
    """Run a do-nothing payload while no attempt waits: a forked process pays (in copied pages) for its
    first touch of each page of its parent's memory, and every attempt touches the same ones (reading
    a payload, unpickling a notebook's function, the runner). Here that is done off the attempt's clock.
    What it changes (environment, working directory, ``__main__``) every attempt sets anew.

    Its output goes to /dev/null and its result to a private scratch folder on tmpfs (/dev/shm) where
    there is one: every fresh task process runs this, and creating and deleting files in the state
    directory (a disk) cost more CPU than the warm-up's Python on a busy queue."""
    scratch = None
    try:
        scratch = _scratch_dir(os.path.dirname(payload_path))
        runner.run_attempt(payload_path, os.path.join(scratch, "result"), os.path.join(scratch, "error"),
                           os.devnull, scratch, cuda_devices, payload)
    except BaseException:  # noqa: BLE001 - only a head start
        pass
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _scratch_dir(fallback: str) -> str:
    """A new private folder (mode 0700, a name nobody else can take) in memory if possible."""
    try:
        return tempfile.mkdtemp(prefix="taskq-warmup-", dir=SCRATCH)
    except OSError:  # no /dev/shm here (or it is full)
        return tempfile.mkdtemp(prefix="warmup-", dir=fallback)


def _as_owner(paths: list[str], who: dict, parsed: dict | None = None) -> tuple[list[str], dict]:
    """Become the attempt's owner before anything of the payload but its JSON header is read (unpickling
    runs the owner's code). A fresh process, still root, first opens the payload and its shared part: the
    owner cannot read the queue's files. A warm one is the owner already, and the worker handed it copies."""
    from . import owner

    blob = who.get("blob")
    if os.geteuid() == 0:
        state_payload = paths[0]
        fd = os.open(state_payload, os.O_RDONLY)
        os.set_inheritable(fd, True)  # for the notebook's own interpreter too
        if parsed is not None:  # the worker parsed the header already
            key = parsed["header"].get("blob")
        else:
            with open(fd, "rb", closefd=False) as stream:
                key = payload.read_header(stream).get("blob")
            os.lseek(fd, 0, os.SEEK_SET)
        paths = [f"fd:{fd}", *paths[1:]]
        if key is not None:  # beside the payloads, as runner._shared_function finds it
            blob_fd = os.open(os.path.join(os.path.dirname(os.path.dirname(state_payload)), "blobs",
                                           f"{key}.blob"), os.O_RDONLY)
            os.set_inheritable(blob_fd, True)
            blob = f"fd:{blob_fd}"
    # What the warm guard asks after the attempt (pickling.is_local_module) reads the interpreter's own
    # files (sysconfig's data module), which the owner may not be allowed to read: learn it while root.
    payload.pickling.warm_caches()
    env = owner.become(who)
    die_with_parent(signal.SIGKILL)  # a change of credentials clears the parent-death signal
    return paths, {"owner_env": env, "blob_path": blob}


def _exec_runner(python: str, paths: list[str], cuda_devices: str, as_owner: dict | None = None,
                 pipes: tuple[int, int] | None = None) -> None:
    """Become the notebook's own interpreter (or an image's) running ``runner.py`` (its packages, our
    runner). ``pipes``: this process's request and report pipes, kept open across the exec so that, warm,
    the runner serves the next attempts (:func:`.warmserve.serve`). An image's interpreter does not get
    the worker's ``PYTHONPATH``/``PYTHONHOME``: its packages are the image's (the notebook's own folders
    come from the payload)."""
    env = dict(os.environ)
    if env.get(runner.IMAGE_ENV):
        env.pop("PYTHONPATH", None)
        env.pop("PYTHONHOME", None)
    serve = []
    if pipes is not None:
        for fd in pipes:
            os.set_inheritable(fd, True)
        serve = [_dumps({"requests": pipes[0], "reports": pipes[1], "private_shm": privateshm.is_private()})]
    try:
        os.execve(python, [python, runner.__file__, *paths, cuda_devices, _dumps(as_owner or {}), *serve], env)
    except OSError as exc:
        runner._write_error(paths[2], exc, exc.__traceback__, setup=True)
        os._exit(runner.EXIT_SETUP)
