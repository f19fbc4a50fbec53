"""One attempt of one task, from its claim to its recorded outcome: the object that owns it.

Before (issue 20) an attempt was a relay of ``Worker`` methods and their return values (27 stops in
9 files) and its payload header was parsed at four points. An :class:`Attempt` holds what belongs
to the attempt (its task row, its parsed header, its token, its GPUs, its task process, its report)
and goes through its steps in order:

    claim -> header (parsed once, here) -> task token -> image -> start or reuse a task process
    -> supervise (cancel, timeout, fencing, log and outputs) -> publish files -> record outcome -> ring

The :class:`~.process.Worker` loop hands each claimed queue message to a new ``Attempt``; the
worker's shared parts (its store, its task processes, its writes that must happen) are used through
it. Whatever fails, the attempt ends in a final or retry status: :meth:`Attempt.run` never raises.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import select
import shutil
import signal
import sys
import time
import traceback

from .. import payload, tasktokens
from ..options import retry_for_matches
from ..recovery import requeue_attempt, retry_or_fail
from ..statedir import make_private_dir
from ..status import WAITING, TaskStatus
from . import limits, owner, runner
from .imagestep import ImageStep, run_env as image_run_env
from .task_io import AttemptWatcher
from .task_process import EXIT_STALE, TaskProcess

log = logging.getLogger("jupyter_taskq.worker")

HEARTBEAT_INTERVAL = 1.0  # how often a running attempt checks that the task is still at it (fencing)
POLL_INTERVAL = 0.25  # how often a running attempt checks for cancel and timeout
DRAIN_MARGIN = 15.0  # seconds: a task is not started in the last seconds of a job, nor one that would need them
PER_TASK_HEADER = frozenset({"seed"})  # payload header fields that differ between calls of one function


class Attempt:
    def __init__(self, worker, huey, message):
        self.worker = worker
        self.huey = huey  # the pool's queue the message came from (a retry goes back there)
        self.message = message
        self.task_id: str = message.args[0]
        self.task: dict = {}  # its row, as the claim returned it
        self.header: dict = {}  # the payload's header, parsed once (_read_header)
        self.body_at = 0  # where the payload's body starts (the task process skips the header)
        self.devices = worker.cuda_devices  # its GPUs ("2,3" for a gang)
        self.env: dict[str, str] = tasktokens.attempt_env(None, None)  # its token and the server's URL
        self.token_digest: str | None = None
        self.owner: owner.Owner | None = None  # run_as_owner: the account it runs as
        self.memory: dict | None = None  # the keeper's report of its memory cgroup (cgroups.py)
        self.pid: int | None = None

    # -- the steps ------------------------------------------------------------
    def run(self) -> None:
        """Claim, run and record. Never raises: whatever goes wrong, the attempt ends in a final or retry
        status (the worker waits, taking no work, until it can record it)."""
        w, task_id = self.worker, self.task_id
        if w.ends_at is not None and self._outlasts_job():
            # A batch job near its time limit: the message goes back for a job with time, and this worker ends.
            self._give_back()
            w.drain()
            return
        if w.gangs is not None:
            devices = w.gangs.devices_for(task_id)
            if devices is None:  # no GPUs taken for it: never run; a waiting task keeps its message (a turn)
                if w.store.statuses([task_id]).get(task_id) in {s.value for s in WAITING}:
                    self._give_back()
                return  # (a message of a task no longer waiting is dropped, as a claim would find nothing)
            self.devices = ",".join(map(str, devices))
        if not self._claim():
            return
        self._start_token()
        try:
            outcome, error = self._execute()
            if outcome == "failed":
                error = limits.memory_failure(self.task, error, self.memory) or error  # memory= ran out
        except Exception as exc:  # noqa: BLE001 - the worker's own failure ends the attempt, never the task
            log.exception("worker error around attempt %d of task %s", self.task["attempt"], task_id)
            outcome, error = "failed", _worker_error(exc)
        finally:
            self._end_token()
        try:
            if outcome != "superseded":  # a superseded attempt's files are not the task's
                self._publish_files()  # before the new status: whoever sees it can fetch them
        except Exception:  # noqa: BLE001
            log.exception("could not publish the files of task %s", task_id)
        self._record_outcome(outcome, error)

    def _give_back(self) -> None:
        self.worker.until_written(f"the queue entry of task {self.task_id}",
                                  lambda: self.huey.enqueue(self.message) or True)

    def _claim(self) -> bool:
        w, task_id = self.worker, self.task_id
        task = w.until_written(f"the start of task {task_id}", lambda: w.store.claim(task_id, w.name, w.instance) or {})
        if not task:
            if task is None and w.stopping:  # stopping before the claim could be written: keep the message
                self._give_back()
            w.changed(task_id)  # a claim may have ended it CANCELLED (a cancel asked while it ran is final)
            return False  # cancelled, expired or deleted while it waited (or its row cannot be claimed: logged)
        self.task = task
        w.changed(task_id)
        if w.gangs is not None:
            w.heartbeat_now()  # stats show which task holds which GPUs now, not in a second
        return True

    def _outlasts_job(self) -> bool:
        """Whether this worker's batch job (``JUPYTER_TASKQ_JOB_ENDS_AT``, set by the Slurm launcher's job
        script) ends before the task could reach its ``timeout``, or within DRAIN_MARGIN anyway."""
        left = self.worker.ends_at - time.time()
        if left <= DRAIN_MARGIN:
            log.info("the job ends in %.0f s: taking no task", left)
            return True
        timeout = (self.worker.store.get(self.task_id) or {}).get("timeout")
        if timeout and timeout > left - DRAIN_MARGIN:
            log.info("task %s may run %g s, more than the %.0f s this job has left: leaving it to another job",
                     self.task_id, timeout, left)
            return True
        return False

    def _start_token(self) -> None:
        """Mint this attempt's task token (tasktokens.py): the attempt reaches the queue as its owner with
        it. Not stored (a full disk, the store down): the attempt runs anyway, and a connect() in it says
        it has no credential. The token dies with the attempt (:meth:`_end_token`)."""
        w = self.worker
        if not w.server_url:
            return
        token, digest = tasktokens.mint()
        try:
            w.store.add_task_token(digest, self.task_id, self.task["attempt"], self.task.get("owner"))
        except Exception:  # noqa: BLE001
            log.warning("could not store the task token of task %s; it cannot reach the queue", self.task_id,
                        exc_info=True)
            return
        self.env = tasktokens.attempt_env(token, w.server_url)
        self.token_digest = digest

    def _end_token(self) -> None:
        self.env = tasktokens.attempt_env(None, None)
        if self.token_digest is None:
            return
        try:
            self.worker.store.delete_task_token(self.token_digest)
        except Exception:  # noqa: BLE001 - refused anyway once its attempt is not RUNNING (tasktokens.owner_of)
            log.warning("could not delete a task token (refused anyway once its attempt has ended)", exc_info=True)

    def _read_header(self) -> None:
        """The payload's header, parsed once for the whole attempt (image step, warm key, task process)."""
        w = self.worker
        if w.objects.remote and not w.objects.fetch(w.state.payload(self.task_id)):
            raise FileNotFoundError(f"the payload of task {self.task_id} is not in the object store")
        with open(w.state.payload(self.task_id), "rb") as stream:
            self.header = payload.read_header(stream)
            self.body_at = stream.tell()
        w.fetch_blob(self.header)

    def _execute(self) -> tuple[str, dict | None]:
        w, task = self.worker, self.task
        for stale in (w.state.error(self.task_id), w.state.error_pickle(self.task_id), w.state.display(self.task_id)):
            stale.unlink(missing_ok=True)
        try:
            self._read_header()
        except Exception as exc:  # noqa: BLE001 - e.g. unreadable payload: fail the attempt
            return "failed", {"type": type(exc).__name__, "message": f"could not start the task: {exc}",
                              "traceback": None}
        lease = None
        if task.get("image"):  # image=: built (or waited for) first, its log and progress the task's own
            lease, ended = ImageStep(w, task, self.header).run()
            if ended is not None:
                return ended
        try:
            return self._run_in_process(lease)
        finally:
            if lease is not None:
                lease.release()

    def _run_in_process(self, lease) -> tuple[str, dict | None]:
        w = self.worker
        try:
            proc = self._start_process(image=lease)
        except Exception as exc:  # noqa: BLE001 - e.g. no such owner: fail the attempt
            return "failed", {"type": type(exc).__name__, "message": f"could not start the task: {exc}",
                              "traceback": None}
        while True:
            w.processes.current = proc
            try:
                outcome = self._supervise(proc)
            finally:  # whatever went wrong around it, the attempt's processes end with it
                w.processes.current = None
                if proc.pidfd is not None and proc.busy:
                    proc.kill(w.config.kill_grace)
                self._collect_owner_files()
            if outcome[0] != "stale":
                return outcome
            # A warm process found its code stale (an edited function or local module): start afresh.
            proc = self._start_process(reuse=False, image=lease)

    def _start_process(self, reuse: bool = True, image=None) -> TaskProcess:
        w, task, task_id, header = self.worker, self.task, self.task_id, self.header
        attempt_dir = w.state.attempt_dir(task_id, task["attempt"])
        if limits.write_spec(task, attempt_dir, w.name):  # cpu= and memory=, applied by the keeper and task process
            w.say_enforcement(task)
        make_private_dir(attempt_dir)  # holds the attempt's own log from its first byte
        paths = [str(w.state.payload(task_id)), str(w.state.result(task_id)), str(w.state.error(task_id)),
                 str(w.state.attempt_log(task_id, task["attempt"])), str(attempt_dir)]
        python = None if _same_interpreter(header) else header["python"]
        attempt_env = self.env
        if image is not None:  # the image's interpreter runs runner.py (warm there too: warmserve.py)
            python, attempt_env = image.python, {**self.env, **image_run_env(image)}
        keep_warm = float(task.get("keep_warm_seconds") or 0) if python is None or image is not None else 0.0
        # A warm process serves one owner's tasks only (what on_start loaded is theirs), run as them or not,
        # and one image (its interpreter and packages are the process's for good);
        # ... and one GPU set: a process that touched CUDA sees only the devices it started with.
        key = f"{_warm_key(header)}:{task.get('owner')}:{self.devices}" if keep_warm > 0 else None
        if key is not None and image is not None:
            key = f"{key}:image:{image.environment.get('hash')}"
        who = None
        if w.config.run_as_owner:
            self.owner = owner.lookup(task.get("owner"))
            key = key and f"{key}:{self.owner.name}"  # a warm process is its owner's for good
            warm_too = key is not None and reuse and key in w.processes.warm
            copies = {}
            if warm_too:  # the warm process is the owner already: it reads copies, not the queue's files
                copies["payload"] = w.state.payload(task_id)
                if header.get("blob"):
                    copies["blob"] = w.state.blob(header["blob"])
            run = owner.prepare(attempt_dir, self.owner, copies)
            paths[1:3] = [str(run / "result"), str(run / "error")]
            who = self.owner.message()
            if warm_too:
                who["blob"] = str(run / "blob") if header.get("blob") else None
        # The header travels with the paths: the task process does not parse it again.
        parsed = {"header": header, "body_at": self.body_at}
        if key is not None:
            warm = w.processes.take_warm(key)
            if warm is not None and reuse:
                try:
                    warm.dispatch([str(run / "payload"), *paths[1:]] if who else paths, None, warm=True, owner=who,
                                  env=attempt_env, devices=self.devices, parsed=None if who else parsed)
                    warm.keep_warm = keep_warm
                    return warm
                except OSError:
                    pass
            if warm is not None:
                w.processes.retire(warm)
        proc = w.processes.take_spare()
        if proc is not None:
            try:
                proc.dispatch(paths, python, warm=key is not None, owner=who, env=attempt_env, devices=self.devices,
                              parsed=parsed)
            except OSError:  # it died while waiting
                w.processes.retire(proc)
                proc = None
        if proc is None:
            proc = w.processes.fork()
            proc.dispatch(paths, python, warm=key is not None, owner=who, env=attempt_env, devices=self.devices,
                          parsed=parsed)
        proc.warm_key, proc.keep_warm = key, keep_warm
        if key is not None and image is not None:
            proc.hold_image(image)
        # owner: stats show a hub user only their own warm processes, and DELETE warm drops only those
        proc.warm_info = {"function": header.get("function"), "cwd": header.get("cwd"), "owner": task.get("owner")}
        if image is not None:
            proc.warm_info["image"] = image.environment.get("hash")
        return proc

    def _supervise(self, proc: TaskProcess) -> tuple[str, dict | None]:
        w, task, task_id = self.worker, self.task, self.task_id
        grace = w.config.kill_grace
        deadline = time.monotonic() + task["timeout"] if task.get("timeout") else None
        io = AttemptWatcher(w.state, task, w.config.log_max_bytes, w.objects)
        next_fence_check = time.monotonic() + HEARTBEAT_INTERVAL
        done = proc.done
        assert done is not None  # a keeper just dispatched to: its report pipe is open
        while True:
            wait = POLL_INTERVAL if deadline is None else max(0.0, min(POLL_INTERVAL, deadline - time.monotonic()))
            if select.select([done, proc.pidfd], [], [], wait)[0]:
                report = proc.read_report()
                if report is None:  # the keeper died without a word: its tree may come to us
                    code = w.processes.keeper_died(proc)
                else:
                    code = report["code"]
                    self.pid, self.memory = report.get("pid"), report.get("memory")
                    if code == EXIT_STALE:
                        w.processes.retired_itself(proc)
                        return "stale", None
                    w.processes.after_report(proc, bool(report.get("warm")), w.stopping)
                self._collect_owner_files()
                io.sync(w.store)
                return self._outcome(code)
            w.housekeeping(task_id)
            if io.sync(w.store):
                w.changed(task_id)
            if w.stopping:
                proc.kill(grace)
                return "interrupted", None
            if deadline is not None and time.monotonic() >= deadline:
                proc.kill(grace)
                return "timeout", {"type": "Timeout", "message": f"exceeded its timeout of {task['timeout']:g} s",
                                   "traceback": None}
            if w.store.cancel_requested(task_id):
                proc.kill(grace)
                return "cancelled", {"type": "Cancelled", "message": "cancelled while running", "traceback": None}
            if time.monotonic() >= next_fence_check:
                next_fence_check = time.monotonic() + HEARTBEAT_INTERVAL
                if self._superseded():
                    proc.kill(grace)
                    return "superseded", None

    def _superseded(self) -> bool:
        """Whether the task went on without this attempt: recovery took it back while this worker did not
        answer (stopped, or cut off from the store), so another copy may run now. This one must end."""
        current = self.worker.store.get(self.task_id)
        return (current is None or current["status"] != TaskStatus.RUNNING
                or current["attempt"] != self.task["attempt"] or current.get("worker_instance") != self.worker.instance)

    def _outcome(self, code: int) -> tuple[str, dict | None]:
        state = self.worker.state
        if code == runner.EXIT_OK and state.result(self.task_id).exists():
            return "complete", None
        error_path = state.error(self.task_id)
        if code in (runner.EXIT_RAISED, runner.EXIT_SETUP) and error_path.exists():
            return "failed", json.loads(error_path.read_text())
        if code < 0:
            name = signal.Signals(-code).name
            hint = " (out of memory?)" if -code == signal.SIGKILL else ""
            message = f"the task's process was killed by {name}{hint}"
        else:
            message = f"the task's process exited with status {code} before finishing"
        return "failed", {"type": "Crashed", "message": message, "traceback": None}

    # -- after it -------------------------------------------------------------
    def _collect_owner_files(self) -> None:
        """Run as its owner, the attempt wrote its result and error into a run folder of theirs: move them
        to where the server reads them (worker/owner.py)."""
        if self.owner is None:
            return
        state, task_id = self.worker.state, self.task_id
        owner.collect(state.attempt_dir(task_id, self.task["attempt"]), self.owner, {
            "result": state.result(task_id), "result.display": state.display(task_id),
            "error": state.error(task_id), "error.pickle": state.error_pickle(task_id)})

    def _publish_files(self) -> None:
        w, task_id = self.worker, self.task_id
        if not w.objects.remote:
            return
        try:
            superseded = self._superseded()
        except Exception:  # noqa: BLE001 - the store cannot say now: publish (the outcome's write is fenced)
            superseded = False
        if superseded:  # it ran on while this worker was stopped: its files must not replace its successor's
            log.warning("not publishing the files of attempt %d of task %s: the task went on without it",
                        self.task["attempt"], task_id)
            return
        for path in (w.state.result(task_id), w.state.display(task_id), w.state.error(task_id),
                     w.state.error_pickle(task_id), w.state.attempt_dir(task_id, self.task["attempt"])):
            try:
                w.objects.publish(path)
            except Exception:  # noqa: BLE001 - the attempt's outcome still counts; say what was not kept
                log.exception("could not copy %s of task %s to the object store", path.name, task_id)
        # The object store has them now: this machine's copies would only pile up.
        for path in w.state.task_files(task_id):
            path.unlink(missing_ok=True)
        shutil.rmtree(w.state.outputs(task_id), ignore_errors=True)

    def _record_outcome(self, outcome: str, error: dict | None) -> None:
        w, task, task_id = self.worker, self.task, self.task_id
        attempt = task["attempt"]
        what = f"the end of attempt {attempt} of task {task_id}"
        running = [TaskStatus.RUNNING]
        if outcome == "superseded":
            log.warning("ended attempt %d of task %s: the task went on without it (cancelled, or requeued while "
                        "this worker did not answer); nothing of it is recorded", attempt, task_id)
            return
        if outcome == "complete":
            try:
                size = w.state.result(task_id).stat().st_size
            except OSError:
                size = None
            moved = w.until_written(what, lambda: w.store.transition(
                task_id, TaskStatus.COMPLETE, running, attempt=attempt, result_size=size, error=None))
        elif outcome in ("cancelled", "timeout"):
            status = TaskStatus.CANCELLED if outcome == "cancelled" else TaskStatus.TIMEOUT
            moved = w.until_written(what, lambda: w.store.transition(
                task_id, status, running, attempt=attempt, error=error))
        else:
            if outcome == "interrupted":
                error = {"type": "Interrupted", "traceback": None,
                         "message": f"interrupted: worker {w.name} stopped during attempt {attempt}"}
                retry = True
            else:
                assert error is not None  # "failed": its error always comes with it
                raised = error.pop("mro", None)  # the exception's class and bases (None: no exception, e.g. a crash)
                error.pop("peak_mib", None)
                final = error.pop("final", None)  # runner.py: the call cannot unpickle or bind, on any retry
                retry = final is None and retry_for_matches(task.get("retry_for"), raised)

            def end_attempt():
                if w.store.cancel_requested(task_id):  # a cancel is final, even for an interrupted attempt
                    cancelled = {"type": "Cancelled", "message": "cancelled while running", "traceback": None}
                    moved = w.store.transition(task_id, TaskStatus.CANCELLED, running, attempt=attempt,
                                               error=cancelled)
                    return TaskStatus.CANCELLED if moved else None
                return retry_or_fail(w.store, task, error, retry, keep_place=outcome == "interrupted")

            moved = w.until_written(what, end_attempt)
            if moved is TaskStatus.RETRY:
                def requeue() -> bool:
                    requeue_attempt(self.huey, task, keep_place=outcome == "interrupted")
                    return True

                w.until_written(f"the next attempt of task {task_id}", requeue)
                w.ring_pool(self.huey)
        if moved:
            w.changed(task_id)
        elif not w.stopping:  # the fence: the task is no longer at this attempt (or is no longer RUNNING)
            log.warning("discarded the end (%s) of attempt %d of task %s: the task went on without it (cancelled, "
                        "or requeued while this worker did not answer)", outcome, attempt, task_id)


def _worker_error(exc: BaseException) -> dict:
    """The error of an attempt ended by a failure of its worker, not of the task."""
    return {"type": "WorkerError",
            "message": f"the worker failed around this attempt ({type(exc).__name__}: {exc}); the attempt was ended",
            "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))}


def _warm_key(header: dict) -> str:
    """What a warm process may serve: attempts of the same function from the same notebook world
    (interpreter, working directory, sys.path, environment, cell sources), as the payload header says.
    What is each task's own (its seeds: jupyter_taskq/seeds.py) is no part of it: the function is the same."""
    defining = {k: v for k, v in header.items() if k not in PER_TASK_HEADER}
    return hashlib.sha256(json.dumps(defining, sort_keys=True, default=str).encode()).hexdigest()


@functools.lru_cache(maxsize=64)
def _real(path: str) -> str:
    """``realpath`` costs a dozen ``lstat`` calls; the same few interpreters come back every attempt."""
    return os.path.realpath(path)


def _same_interpreter(header: dict) -> bool:
    """Same binary and same environment (a venv's python is a symlink to its base's)."""
    same_binary = _real(header["python"]) == _real(sys.executable)
    return same_binary and _real(header.get("prefix", sys.prefix)) == _real(sys.prefix)
