"""A lean keeper: a fresh interpreter holding only what attempts use, so forking a task process is cheap.

Every attempt's task process is forked from its keeper (:mod:`.task_process`), and a fork costs in
proportion to the parent's memory: its page tables are copied, and each page the attempt touches
is copied on its first write. A keeper forked from the worker carries the worker's whole process
(the queue's and store's libraries, SQLite or Redis connections, 38 MiB). So the keepers made ahead
while the worker is idle (:meth:`.taskprocs.TaskProcesses.ensure_spare`) exec this module instead: a
new interpreter that imports :data:`what attempts use` and nothing of the worker (about a third less
memory to copy), with the worker's ``sys.path`` and cgroup probe, then runs the same keeper loop.
A keeper needed on an attempt's path (none was ready) is still forked from the worker: an exec and
its imports would cost that attempt far more than the fork does.

The worker imports this module too, so the modules listed here are the one list of what an attempt
uses, imported once before any fork either way (not in each task process).
"""

from __future__ import annotations

import json

import dill  # noqa: F401 - unpickling a notebook's function

from .. import depresults, kernelstate, payload, seeds  # noqa: F401 - what every attempt's runner uses
from . import cgroups, display, limits, owner, privateshm, runner, task_process, taskhooks  # noqa: F401


def main(spec: str) -> None:
    """Run a keeper as ``task_process.TaskProcess.fork`` asked (its JSON ``spec``); never returns."""
    given = json.loads(spec)  # (its sys_path is in place already: task_process._LEAN_KEEPER)
    cgroups.adopt(given["cgroups"])
    task_process.run_keeper(given["request"], given["done"], given["cuda_devices"], given["grace"],
                            given["parent"], given["warm_up"])
