"""The Slurm launcher: workers are Slurm batch jobs that come and go with the queue.

Each job runs ``jupyter taskq worker`` against the shared (Redis) queue, pinned to the GPUs Slurm gave it
(``CUDA_VISIBLE_DEVICES`` as Slurm sets it). From the server's sweep, :meth:`SlurmLauncher.tick`:

* lists this queue's jobs with ``squeue`` (they are named ``taskq-<user>-<queue id>-<shape>``, so a
  restarted server adopts the jobs of its queue and ``squeue`` says whose queue each one serves);
* submits jobs while tasks wait and no idle worker or starting job can take them, up to ``max_jobs``
  (the GPUs a task needs come from :func:`task_gpus`, the one place that counts them);
* fails the waiting tasks when Slurm refuses their job for good (e.g. more GPUs than any node has),
  with Slurm's own words, instead of leaving them to wait forever.

Scaling down is the job's own: its supervisor exits after ``idle_timeout`` seconds without a task (the
hysteresis: a notebook's next step a minute later finds the job still there). A job near its time limit
takes no task whose ``timeout`` exceeds the time left and ends; a job that Slurm ends (time limit,
``scancel``, preemption, node failure) stops heartbeating, so the server's recovery sweep requeues its
task as a new attempt, exactly as for any dead worker, and the next tick submits a replacement.
"""

from __future__ import annotations

import getpass
import hashlib
import math
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from traitlets import Dict, Float, Int, List, Unicode, validate
from traitlets import TraitError

from ...pools import CPU_POOL, GPU_POOL, pool_model
from ...status import WAITING, TaskStatus
from .base import Launcher, LauncherConfigError

#: squeue states, as the API shows them.
PENDING_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
RUNNING_STATES = {"RUNNING", "SUSPENDED"}
ENDING_STATES = {"COMPLETING", "STAGE_OUT", "SIGNALING", "STOPPED", "RESIZING"}
FAILED_STATES = {"FAILED", "BOOT_FAIL", "NODE_FAIL", "OUT_OF_MEMORY"}
#: Reasons for which a PENDING job will never start: its tasks are failed with the reason, not left waiting.
NEVER_STARTS = {"BadConstraints", "PartitionConfig", "PartitionNodeLimit", "InvalidAccount", "InvalidQOS",
                "QOSMaxGRESPerJob", "QOSMaxCpuPerJobLimit", "QOSMaxMemoryPerJob", "AccountNotAllowed"}
#: sbatch refusals that no retry can cure (the others, e.g. slurmctld not answering, are retried).
PERMANENT_REFUSALS = ("Requested node configuration is not available", "Invalid partition", "Invalid account",
                      "Invalid qos", "Invalid generic resource", "Invalid feature specification",
                      "More processors requested than permitted", "Memory specification can not be satisfied",
                      "Job violates accounting/QOS policy", "Invalid Trackable RESource")
TIME_LIMIT = re.compile(r"^(?:(\d+)-)?(\d{1,3}):([0-5]\d):([0-5]\d)$")
SUBMIT_BACKOFF_MAX = 60.0
START_FAILURES = 3  # worker jobs in a row that fail to start before their waiting tasks FAIL


def task_gpus(task: dict) -> int:
    """How many GPUs a waiting task needs: its ``gpu`` count (``gpu=N``, ``"MODEL:N"``; at least 1) for a
    GPU task, 0 for a CPU task. The one place that counts them, for the job shapes and the demand."""
    if (task.get("pool") or CPU_POOL) == CPU_POOL:
        return 0
    return max(1, int(task.get("gpu") or 1))


def parse_time_limit(text: str) -> int:
    """Seconds in a Slurm time limit ``[D-]HH:MM:SS``; ValueError otherwise."""
    found = TIME_LIMIT.match(text.strip())
    if not found:
        raise ValueError(f"{text!r} is not a Slurm time limit [D-]HH:MM:SS")
    days, hours, minutes, seconds = (int(g or 0) for g in found.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def parse_time_left(text: str) -> float | None:
    """squeue's %L ("1:02", "1:02:03", "2-01:02:03", "INVALID", "UNLIMITED") in seconds, or None."""
    found = re.match(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)$", text.strip())
    if not found:
        return None
    days, hours, minutes, seconds = (int(g or 0) for g in found.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


class SlurmLauncher(Launcher):
    """Workers as Slurm batch jobs, submitted when tasks wait and ended when idle (``docs/slurm.md``)."""

    kind = "slurm"

    max_jobs = Int(4, config=True, help="Most worker jobs of this queue at once (pending and running).")
    min_jobs = Int(0, config=True, help="GPU jobs kept even with the queue empty (they never end idle).")
    idle_timeout = Float(300.0, config=True,
                         help="Seconds a job's workers may be idle before the job ends itself: long enough that "
                              "a notebook's next step finds the job still there.")
    partition = Unicode("", config=True, help="Partition of the jobs (default: the cluster's default partition).")
    partitions_by_gpu_model = Dict(
        config=True, help='Partition per GPU model: tasks with gpu="A100" run on jobs in partitions_by_gpu_model'
                          '["A100"] (a value "constraint:a100" asks for that node feature with --constraint instead).')
    gpus_per_job = Int(1, config=True, help="GPUs each job asks for (--gres=gpu:N); one worker per GPU.")
    cpu_workers_per_job = Int(0, config=True,
                              help="CPU workers in each GPU job (CPU tasks otherwise run on the server's own "
                                   "CPU workers: TaskQueue.cpu_workers).")
    cpus_per_job = Int(0, config=True, help="--cpus-per-task of a job (0: Slurm's default, or what the waiting "
                                            "tasks' cpu= asks for, whichever is larger).")
    mem_per_job = Int(0, config=True, help="--mem of a job in MiB (0: Slurm's default, or the waiting tasks' "
                                           "largest memory=, whichever is larger).")
    time_limit = Unicode("01:00:00", config=True, help="Each job's time limit, [D-]HH:MM:SS (--time).")
    account = Unicode("", config=True, help="--account of the jobs.")
    qos = Unicode("", config=True, help="--qos of the jobs.")
    signal_seconds = Int(120, config=True,
                         help="Seconds before the time limit when Slurm warns the job (--signal=B:USR1@N): the "
                              "running task is asked to checkpoint (jupyter_taskq.checkpoint_requested()).")
    sbatch_lines = List(Unicode(), config=True, help='More "#SBATCH ..." lines, verbatim (e.g. "--exclusive").')
    python = Unicode(sys.executable, config=True,
                     help="The Python interpreter the job runs (of an environment every node sees, with "
                          "jupyter-taskq installed). Default: the server's.")
    setup = Unicode("", config=True, help="Shell lines the job runs first (module load ..., source venv/bin/activate).")
    workdir = Unicode("", config=True, help="Working directory of the jobs (default: the server's).")
    job_dir = Unicode("", config=True,
                      help="Where job scripts and their output go (default: <state_dir>/slurm);"
                           " on a shared filesystem.")
    poll_interval = Float(2.0, config=True, help="Seconds between squeue polls.")
    sbatch = Unicode("sbatch", config=True, help="The sbatch command.")
    squeue = Unicode("squeue", config=True, help="The squeue command.")
    scancel = Unicode("scancel", config=True, help="The scancel command.")
    scontrol = Unicode("scontrol", config=True, help="The scontrol command.")

    # -- every number from configuration, checked here ---------------------------------------------------
    @validate("max_jobs", "min_jobs", "gpus_per_job", "cpu_workers_per_job", "cpus_per_job", "mem_per_job",
              "signal_seconds")
    def _check_int(self, proposal):
        limits = {"max_jobs": (1, 10000), "min_jobs": (0, 10000), "gpus_per_job": (0, 64),
                  "cpu_workers_per_job": (0, 256), "cpus_per_job": (0, 100000), "mem_per_job": (0, 1 << 30),
                  "signal_seconds": (0, 86400)}
        name, value = proposal["trait"].name, proposal["value"]
        low, high = limits[name]
        if not low <= value <= high:
            raise TraitError(f"SlurmLauncher.{name} must be from {low} to {high}, got {value}")
        return value

    @validate("idle_timeout", "poll_interval")
    def _check_seconds(self, proposal):
        name, value = proposal["trait"].name, proposal["value"]
        low = 0.0 if name == "idle_timeout" else 0.1
        if not (math.isfinite(value) and low <= value <= 7 * 86400):
            raise TraitError(f"SlurmLauncher.{name} must be a number of seconds from {low:g} to 604800, got {value}")
        return value

    @validate("time_limit")
    def _check_time_limit(self, proposal):
        try:
            parse_time_limit(proposal["value"])
        except ValueError as exc:
            raise TraitError(f"SlurmLauncher.time_limit: {exc}") from None
        return proposal["value"].strip()

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.user = getpass.getuser()
        self.queue_id = self._queue_id()
        self.name_prefix = f"taskq-{re.sub(r'[^A-Za-z0-9_.]', '_', self.user)}-{self.queue_id}-"
        self._jobs: list[dict] = []  # the last squeue listing, as jobs() shows it
        self._keep: set[str] = set()  # ids of jobs submitted for min_jobs (no idle exit)
        self._seen_workers: set[str] = set()  # job ids whose workers have registered (started, not "failed to start")
        self._next_poll = 0.0
        self._next_submit = 0.0
        self._backoff = 0.0
        self._refused: dict[str, str] = {}  # shape -> Slurm's reason, while it refuses that shape
        self._error = ""  # the last transient error, shown in stats
        self._failed_seen: set[str] = set()
        self._start_failures = 0  # jobs in a row that ended before a worker of theirs registered
        self._local = None

    def _queue_id(self) -> str:
        """Six hex digits naming this queue (its Redis URL without password, and its state directory)."""
        app = self.app
        return hashlib.sha256(f"{app.backend.address()}|{app.state.root}".encode()).hexdigest()[:6]

    # -- start-up --------------------------------------------------------------------------------------------
    def check(self) -> None:
        app = self.app
        if not app.backend.shared:
            raise LauncherConfigError("the Slurm launcher needs the Redis backend (workers on the compute nodes "
                                      "join through it): set c.TaskQueue.redis_url")
        for command in (self.sbatch, self.squeue, self.scancel, self.scontrol):
            if not shutil.which(command):
                raise LauncherConfigError(f"`{command}` is not on PATH: install Slurm's client commands on the "
                                          "server's machine (apt-get install slurm-client), or set c.SlurmLauncher."
                                          f"{command.rsplit('/', 1)[-1]} to its path")
        partitions = {self.partition} | {p for p in self.partitions_by_gpu_model.values()
                                         if isinstance(p, str) and not p.startswith("constraint:")}
        for name in sorted(p for p in partitions if p):
            out = self._run([self.scontrol, "show", "partition", name], check=False)
            if out.returncode != 0:
                raise LauncherConfigError(f"Slurm has no partition {name!r} ({_one_line(out.stderr or out.stdout)}): "
                                          "fix c.SlurmLauncher.partition or partitions_by_gpu_model")
        host = app.backend.host()
        if host in ("localhost", "127.0.0.1", "::1"):
            nodes = self._nodes()
            here = {socket.gethostname(), socket.getfqdn(), "localhost"}
            away = [n for n in nodes if n not in here]
            if away:
                raise LauncherConfigError(
                    f"c.TaskQueue.redis_url points at {host}, which the compute nodes ({', '.join(away[:3])}) cannot "
                    "reach: use an address of this machine they can reach (and bind Redis to it)")
        if not Path(self.python).exists():
            raise LauncherConfigError(f"c.SlurmLauncher.python {self.python!r} does not exist")

    def _nodes(self) -> list[str]:
        cmd = ["sinfo", "-h", "-o", "%N", "-N"] + (["-p", self.partition] if self.partition else [])
        if not shutil.which("sinfo"):
            return []
        out = self._run(cmd, check=False)
        return sorted({line.strip() for line in out.stdout.splitlines() if line.strip()})

    def start(self) -> None:
        self.jobdir = Path(self.job_dir or (self.app.state.root / "slurm"))
        self.jobdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.jobdir, 0o700)
        if self.app.cpu_workers:  # CPU tasks: the server's own CPU workers, as with the local launcher
            from .local import LocalLauncher

            self._local = LocalLauncher(parent=self.app, gpus=[], cpu_workers=self.app.cpu_workers)
            self._local.start()
        self.log.info("jupyter-taskq: Slurm launcher for jobs %s* (at most %d, job script in %s)",
                      self.name_prefix, self.max_jobs, self.jobdir)

    # -- the sweep -------------------------------------------------------------------------------------------
    def tick(self) -> None:
        if self._local is not None:
            self._local.tick()
        now = time.monotonic()
        if now < self._next_poll:
            return
        self._next_poll = now + self.poll_interval
        try:
            self._jobs = self._list_jobs()
        except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
            self._error = f"squeue failed: {exc}"
            self.log.warning("jupyter-taskq: %s", self._error)
            return
        self._fail_hopeless()
        self._count_start_failures()
        self._scale()

    def _list_jobs(self) -> list[dict]:
        out = self._run([self.squeue, "-h", "-u", self.user, "-t", "all", "-o", "%i|%j|%T|%r|%N|%L|%b"])
        workers = self._workers_by_job()
        jobs = []
        for line in out.stdout.splitlines():
            parts = line.split("|")
            if len(parts) < 7 or not parts[1].startswith(self.name_prefix):
                continue
            job_id, name, state, reason, node, left, gres = (p.strip() for p in parts[:7])
            mine = workers.get(job_id, [])
            if mine:
                self._seen_workers.add(job_id)
            shape = name[len(self.name_prefix):]
            jobs.append({
                "id": job_id, "name": name, "shape": shape, "model": _shape_model(shape),
                "state": self._state(state, job_id, left), "slurm_state": state,
                "reason": None if reason in ("None", "") else reason,
                "node": node or None, "time_left": parse_time_left(left),
                "gpus": sorted(w["device"] for w in mine if w.get("device") is not None) or _gres_count(gres),
                "workers": [w["name"] for w in mine], "busy": sum(1 for w in mine if w.get("current_task")),
                "idle": sum(1 for w in mine if not w.get("current_task") and w["alive"]),
            })
        return jobs

    def _state(self, slurm_state: str, job_id: str, left: str) -> str:
        if slurm_state in PENDING_STATES:
            return "pending"
        if slurm_state in RUNNING_STATES:
            left_s = parse_time_left(left)
            return "ending" if left_s is not None and left_s <= self.signal_seconds else "running"
        if slurm_state in ENDING_STATES:
            return "ending"
        if slurm_state in FAILED_STATES or (slurm_state == "COMPLETED" and job_id not in self._seen_workers):
            return "failed" if job_id not in self._seen_workers else "ended"
        return "ended"

    def _workers_by_job(self) -> dict[str, list[dict]]:
        now = time.time()
        running = {t["worker"]: t["id"] for t in self.app.store.running()}
        found: dict[str, list[dict]] = {}
        for w in self.app.store.workers():
            match = re.match(r"^slurm-(\d+)/", w["name"])
            if match:
                alive = (w.get("heartbeat_at") or 0) >= now - self.app.heartbeat_timeout
                found.setdefault(match.group(1), []).append(
                    {**w, "alive": alive, "current_task": running.get(w["name"])})
        return found

    def _waiting(self) -> list[dict]:
        limit = max(100, self.max_jobs * max(1, self.gpus_per_job) * 4)
        return [t for t in self.app.store.list(statuses=list(WAITING), limit=limit)
                if task_gpus(t) > 0]

    def _scale(self) -> None:
        """Submit the jobs the waiting GPU tasks need, beyond the idle workers and the jobs still starting."""
        active = [j for j in self._jobs if j["state"] in ("pending", "running")]
        room = self.max_jobs - len(active)
        if room <= 0 or time.monotonic() < self._next_submit:
            return
        need: dict[str | None, int] = {}
        biggest: dict[str | None, tuple[float, float]] = {}
        gang: dict[str | None, int] = {}  # the most GPUs one waiting task needs: a job must hold them all
        for task in self._waiting():
            key = pool_model(task.get("pool") or GPU_POOL)
            need[key] = need.get(key, 0) + task_gpus(task)
            gang[key] = max(gang.get(key, 0), task_gpus(task))
            cpu, mem = biggest.get(key, (0.0, 0.0))
            biggest[key] = (max(cpu, float(task.get("cpu") or 0)), max(mem, float(task.get("memory") or 0)))
        free: dict[str | None, int] = {}
        for job in active:
            slots = job["idle"] if job["workers"] else job["gpus"]  # a starting job's GPUs are on the way
            free[job["model"]] = free.get(job["model"], 0) + slots
        spare = 0
        for key in [k for k in need if k is not None]:
            covered = min(need[key], free.get(key, 0))
            spare += free.get(key, 0) - covered
            need[key] -= covered
        if None in need:
            need[None] = max(0, need[None] - free.get(None, 0) - spare)
        keep = self.min_jobs - sum(1 for j in active if j["model"] is None)
        plan = [(key, math.ceil(n / max(1, self.gpus_per_job, gang.get(key, 0))), False)
                for key, n in need.items() if n > 0]
        if keep > 0 and not plan:
            plan = [(None, keep, True)]
        for key, count, kept in plan:
            if key is not None and key not in self.partitions_by_gpu_model:
                continue  # no partition for that model: its tasks wait for a worker that has it
            for _ in range(min(count, room)):
                if not self._submit(key, biggest.get(key, (0.0, 0.0)), kept, gang.get(key, 0)):
                    return
                room -= 1

    def _count_start_failures(self) -> None:
        """A job that ended before any of its workers registered failed to start (a wrong ``python``, a
        ``setup`` line that fails, a node without the files): submissions back off, and after
        START_FAILURES in a row the waiting tasks of that shape FAIL with the job's last output line."""
        for job in self._jobs:
            if job["id"] in self._failed_seen:
                continue
            if job["state"] == "failed":
                self._failed_seen.add(job["id"])
                self._start_failures += 1
                self._backoff = min(SUBMIT_BACKOFF_MAX, max(2.0, self._backoff * 2))
                self._next_submit = time.monotonic() + self._backoff
                said = _last_line(self.jobdir / f"{job['id']}.out")
                self._error = (f"Slurm job {job['id']} failed to start ({job['slurm_state']}"
                               f"{', ' + job['reason'] if job['reason'] else ''}){': ' + said if said else ''}")
                self.log.error("jupyter-taskq: %s", self._error)
                if self._start_failures >= START_FAILURES:
                    self._fail_waiting(job["model"], f"{START_FAILURES} worker jobs in a row failed to start; "
                                                     f"the last: {self._error}")
                    self._start_failures = 0
            elif job["id"] in self._seen_workers:
                self._start_failures = 0

    def _fail_hopeless(self) -> None:
        """Jobs Slurm will never start: cancel them and fail the tasks that wait for their shape."""
        for job in self._jobs:
            if job["state"] == "pending" and job["reason"] in NEVER_STARTS:
                self._cancel([job["id"]])
                self._fail_waiting(job["model"], f"Slurm will not start job {job['id']}: {job['reason']}")
                job["state"] = "failed"

    # -- sbatch -----------------------------------------------------------------------------------------------
    def script(self, model: str | None, cpu: float = 0.0, memory: float = 0.0, keep: bool = False,
               gpus: int | None = None) -> str:
        """The batch script of one worker job, asking for ``gpus`` GPUs (default ``gpus_per_job``)."""
        gpus = self.gpus_per_job if gpus is None else gpus
        app = self.app
        shape = f"gpu-{_safe(model)}" if model else "gpu"
        lines = ["#!/bin/bash", f"#SBATCH --job-name={self.name_prefix}{shape}",
                 f"#SBATCH --output={self.jobdir}/%j.out", f"#SBATCH --time={self.time_limit}"]
        if gpus:
            lines.append(f"#SBATCH --gres=gpu:{gpus}")
        where = self.partitions_by_gpu_model.get(model) if model else None
        if isinstance(where, str) and where.startswith("constraint:"):
            lines.append(f"#SBATCH --constraint={where[len('constraint:'):]}")
            where = None
        partition = where or self.partition
        if partition:
            lines.append(f"#SBATCH --partition={partition}")
        if self.account:
            lines.append(f"#SBATCH --account={self.account}")
        if self.qos:
            lines.append(f"#SBATCH --qos={self.qos}")
        cpus = max(self.cpus_per_job, math.ceil(cpu))
        if cpus:
            lines.append(f"#SBATCH --cpus-per-task={cpus}")
        mem = max(self.mem_per_job, math.ceil(memory))
        if mem:
            lines.append(f"#SBATCH --mem={mem}M")
        if self.signal_seconds:
            lines.append(f"#SBATCH --signal=B:USR1@{self.signal_seconds}")
        lines += [line if line.startswith("#SBATCH") else f"#SBATCH {line}" for line in self.sbatch_lines]
        env = {**app.backend.child_env(),
               "JUPYTER_TASKQ_SERVER_URL": os.environ.get("JUPYTER_TASKQ_SERVER_URL") or app.serverapp.connection_url,
               "PYTHONUNBUFFERED": "1"}
        if os.environ.get("PYTHONPATH"):
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        lines += ["set -e", self.setup or ":", f"cd {shlex.quote(self.workdir or os.getcwd())}"]
        lines += [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
        # When Slurm ends the job: its start plus the time limit (the worker takes no task that would outlast it).
        lines.append(f"export JUPYTER_TASKQ_JOB_ENDS_AT=$(( $(date +%s) + {parse_time_limit(self.time_limit)} ))")
        # Its own state directory on the node (one supervisor per state directory); the files are shared.
        lines.append('export JUPYTER_TASKQ_JOB_STATE="${TMPDIR:-/tmp}/taskq-slurm-${SLURM_JOB_ID}"')
        cmd = [self.python, "-m", "jupyter_taskq.worker", *app.backend.remote_child_args(),
               "--config", self.worker_config(  # one worker per GPU of the job (--gres); never as owners
                   cpu_workers=self.cpu_workers_per_job, workers_per_gpu=1, run_as_owner=False,
                   idle_exit=0.0 if keep else float(self.idle_timeout)).to_json()]
        if model:
            cmd += ["--gpu-model", model]
        if app.redis_allow_volatile:
            cmd.append("--redis-allow-volatile")
        command = " ".join(shlex.quote(c) for c in cmd)
        lines.append(f'exec {command} --state-dir "$JUPYTER_TASKQ_JOB_STATE"'
                     ' --gpus "${CUDA_VISIBLE_DEVICES-}" --name "slurm-$SLURM_JOB_ID"')
        return "\n".join(lines) + "\n"

    def _submit(self, model: str | None, biggest: tuple[float, float], keep: bool, gang: int = 0) -> bool:
        gpus = max(self.gpus_per_job, gang)  # a gpu=N task is gang-allocated: its job holds all N (--gres=gpu:N)
        path = self.jobdir / f"job-{_safe(model) if model else 'gpu'}.sh"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the Redis URL
        with os.fdopen(fd, "w") as f:
            f.write(self.script(model, *biggest, keep=keep, gpus=gpus))
        out = self._run([self.sbatch, "--parsable", str(path)], check=False)
        shape = model or ""
        if out.returncode != 0:
            reason = _one_line(out.stderr or out.stdout).replace("sbatch: error: ", "")
            if any(p.lower() in reason.lower() for p in PERMANENT_REFUSALS):
                self._refused[shape] = reason
                self.log.error("jupyter-taskq: Slurm refuses the worker job: %s", reason)
                self._fail_waiting(model, f"Slurm refused the worker job: {reason}")
                return False
            self._error = f"sbatch failed: {reason}"
            self._backoff = min(SUBMIT_BACKOFF_MAX, max(2.0, self._backoff * 2))
            self._next_submit = time.monotonic() + self._backoff
            self.log.warning("jupyter-taskq: %s; trying again in %g s", self._error, self._backoff)
            return False
        job_id = out.stdout.strip().split(";")[0]
        self._refused.pop(shape, None)
        self._error, self._backoff = "", 0.0
        if keep:
            self._keep.add(job_id)
        self._jobs.append({"id": job_id, "name": "", "shape": "", "model": model, "state": "pending",
                           "slurm_state": "PENDING", "reason": "submitted", "node": None, "time_left": None,
                           "gpus": gpus, "workers": [], "busy": 0, "idle": 0})
        self.log.info("jupyter-taskq: submitted Slurm job %s%s", job_id, f" for GPU model {model}" if model else "")
        return True

    def _fail_waiting(self, model: str | None, message: str) -> None:
        """FAIL the waiting GPU tasks a refused job was for (a task of another model keeps waiting)."""
        store = self.app.store
        error = {"type": "LauncherError", "message": message, "traceback": None}
        for task in self._waiting():
            if pool_model(task.get("pool") or GPU_POOL) == model:
                if store.transition(task["id"], TaskStatus.FAILED, list(WAITING), error=error):
                    self.app.changes.notify(task["id"])

    # -- stop ---------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Cancel every job of this queue (also those submitted since the last squeue)."""
        if self._local is not None:
            self._local.stop()
        try:
            jobs = self._list_jobs()
        except (OSError, subprocess.SubprocessError, RuntimeError):
            jobs = self._jobs
        ids = [j["id"] for j in jobs if j["state"] not in ("ended", "failed")]
        ids += [j["id"] for j in self._jobs if j["id"] not in ids and j["state"] in ("pending", "running")]
        if ids:
            self._cancel(ids)
            self.log.info("jupyter-taskq: cancelled Slurm jobs %s", ", ".join(ids))

    def _cancel(self, ids: list[str]) -> None:
        self._run([self.scancel, *ids], check=False)

    # -- what it shows ---------------------------------------------------------------------------------------
    def jobs(self) -> list[dict]:
        return [{k: j[k] for k in ("id", "name", "state", "slurm_state", "reason", "node", "gpus", "time_left",
                                   "workers", "busy", "model")} for j in self._jobs if j["state"] != "ended"]

    def describe(self) -> dict:
        found = super().describe()
        found.update(max_jobs=self.max_jobs, min_jobs=self.min_jobs, idle_timeout=self.idle_timeout,
                     error=self._error or None, refused={k or "gpu": v for k, v in self._refused.items()})
        return found

    def starts_pool(self, pool: str) -> bool:
        return pool == GPU_POOL and self.gpus_per_job > 0

    def gpu_models(self) -> list[str]:
        return sorted(self.partitions_by_gpu_model) if self.gpus_per_job > 0 else []

    def waiting_note(self, pool: str) -> str | None:
        if pool == CPU_POOL:
            return None
        model = pool_model(pool)
        if (model or "") in self._refused:
            return f"Slurm refused the worker job: {self._refused[model or '']}"
        for job in self._jobs:
            if job["model"] == model and job["state"] == "pending":
                return f"waiting for Slurm job {job['id']}, {job['slurm_state']}: {job['reason'] or 'None'}"
        for job in self._jobs:
            if job["model"] == model and job["state"] == "failed":
                return (f"Slurm job {job['id']} failed to start ({job['slurm_state']});"
                        f" see {self.jobdir}/{job['id']}.out")
        return None

    def _run(self, cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        if check and out.returncode != 0:
            raise RuntimeError(f"{cmd[0]} exited with {out.returncode}: {_one_line(out.stderr)}")
        return out


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return _one_line(lines[-1]) if lines else ""


def _one_line(text: str) -> str:
    return " ".join((text or "").split())[:300]


def _safe(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", model)


def _shape_model(shape: str) -> str | None:
    return shape[len("gpu-"):] if shape.startswith("gpu-") else None


def _gres_count(gres: str) -> int:
    found = re.search(r"gpu(?::[^:]+)?:(\d+)", gres or "")
    return int(found.group(1)) if found else 0
