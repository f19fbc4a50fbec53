"""What every attempt uses, imported by the worker once, before it forks any keeper or task process.

Each attempt runs in a fresh task process forked from its keeper, itself forked from the worker. A
module the attempt's runner needs but the worker has not imported is imported again in every task
process (its code compiled again too where no bytecode cache is written): seeds, depresults,
kernelstate and taskhooks cost a fresh process about 2.5 ms of CPU per attempt that way (issue 21).
Importing this module in the worker makes them part of what every fork inherits. This is the one
list of them; add a module here when the runner starts using one.

(A keeper exec'ed as a fresh, lean interpreter holding only these modules forks task processes about
1.5 ms cheaper, but the first attempt after a worker starts then waits for that interpreter's start
and imports: see bench/README.md, issue 21.)
"""

from __future__ import annotations

import dill  # noqa: F401 - unpickling a notebook's function

from .. import depresults, kernelstate, payload, seeds  # noqa: F401 - what every attempt's runner uses
from . import cgroups, display, limits, owner, privateshm, runner, task_process, taskhooks  # noqa: F401
