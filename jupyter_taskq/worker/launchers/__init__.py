"""Launchers: what starts the workers of a queue (issue 20's seam, issue 22's first scheduler).

``c.TaskQueue.launcher_class`` picks one: ``"local"`` (the default: a worker supervisor on the server's
machine, :mod:`.local`), ``"slurm"`` (workers as Slurm batch jobs that grow and shrink with the queue,
:mod:`.slurm`), or the dotted name of any :class:`.base.Launcher` subclass.
"""

from __future__ import annotations

#: Short names accepted by ``c.TaskQueue.launcher_class``.
SHORT_NAMES = {
    "local": "jupyter_taskq.worker.launchers.local.LocalLauncher",
    "slurm": "jupyter_taskq.worker.launchers.slurm.SlurmLauncher",
}


def full_name(name: str) -> str:
    """The dotted class name for a short name (or the name itself)."""
    return SHORT_NAMES.get(name.strip().lower(), name) if isinstance(name, str) else name
