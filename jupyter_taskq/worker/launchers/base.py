"""The launcher interface: the few methods a way of starting workers implements.

The server owns one launcher. It calls :meth:`Launcher.check` and :meth:`Launcher.start` when it starts,
:meth:`Launcher.tick` from its once-a-second sweep (on a thread pool, never on the event loop: a launcher
may run ``sbatch`` or call a cluster API there), :meth:`Launcher.describe` for ``GET stats``, and
:meth:`Launcher.stop` when it stops. Scaling is the launcher's own business inside ``tick``: it reads the
queue (``app.store``) and the workers that have registered, and starts or ends what it runs. Workers of
every launcher are the same ``jupyter taskq worker`` and join the queue the same way, so requeueing a dead
worker's task, timeouts, retries and checkpoints need nothing from the launcher.
"""

from __future__ import annotations

from traitlets.config import LoggingConfigurable

from ...workerconfig import WorkerConfig


class LauncherConfigError(Exception):
    """A configuration the launcher cannot work with: the message is one line that says what to fix."""


class Launcher(LoggingConfigurable):
    """Starts and ends the workers of one queue. ``parent`` is the server's ``TaskQueue`` app: its options
    (``heartbeat_timeout``, ``kill_grace``...), its backend and store; ``c.<ClassName>.<option>`` configures
    a subclass."""

    #: What ``GET stats`` calls this launcher ("local", "slurm").
    kind = "base"

    @property
    def app(self):
        return self.parent

    def worker_config(self, **changes) -> WorkerConfig:
        """The server's worker traits as the one value its workers get (``--config``); ``changes`` are this
        launcher's own (its CPU workers per job, its idle exit)."""
        app = self.app
        return WorkerConfig(kill_grace=app.kill_grace, log_max_bytes=app.log_max_bytes,
                            run_as_owner=bool(app.runs_tasks_as_owners), heartbeat_timeout=app.heartbeat_timeout,
                            workers_per_gpu=app.workers_per_gpu, cpu_workers=app.cpu_workers).replace(**changes)

    def check(self) -> None:
        """Refuse a configuration that cannot work, before anything starts: raise LauncherConfigError."""

    def start(self) -> None:
        """Start what runs from the start (local workers; a scheduler's ``min_jobs``)."""
        raise NotImplementedError

    def tick(self) -> None:
        """Called about once a second, off the event loop: keep alive what should run, scale to the queue."""

    def stop(self) -> None:
        """End everything this launcher started (blocking; the server waits for it with a deadline)."""
        raise NotImplementedError

    def jobs(self) -> list[dict]:
        """What it runs now, one dict per unit (a process, a batch job, a pod): at least ``id`` and ``state``."""
        return []

    def starts_pool(self, pool: str) -> bool:
        """Whether it starts workers for ``pool`` ("cpu", "gpu") on demand, so a task may wait for one."""
        return False

    def gpu_models(self) -> list[str]:
        """GPU models it can start workers with on demand (tasks may ask for them by name)."""
        return []

    def waiting_note(self, pool: str) -> str | None:
        """Why tasks of ``pool`` still wait, in the launcher's words (e.g. a pending Slurm job), or None."""
        return None

    def describe(self) -> dict:
        """The ``"launcher"`` entry of ``GET stats``."""
        return {"kind": self.kind, "jobs": self.jobs()}
