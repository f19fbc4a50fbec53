"""Launchers: what starts the workers of a queue (issue 20's seam, issue 22's first scheduler).

``c.TaskQueue.launcher_class`` picks one: ``"local"`` (the default: a worker supervisor on the server's
machine, :mod:`.local`), ``"slurm"`` (workers as Slurm batch jobs that grow and shrink with the queue,
:mod:`.slurm`), or the dotted name of any :class:`.base.Launcher` subclass (the short names:
``jupyter_taskq.server.traits.LAUNCHER_NAMES``).
"""

