"""``jupyter taskq``: one entry point for the queue's commands.

``worker`` and ``hub-service`` run parts of the queue (:mod:`jupyter_taskq.worker.cli`); every other
command is the task CLI (:mod:`jupyter_taskq.taskcli`), which only talks to a server over REST. Kept
apart so the task CLI imports nothing of the server or the workers.
"""

from __future__ import annotations

import sys

QUEUE_COMMANDS = ("worker", "hub-service")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] and args[0] in QUEUE_COMMANDS:
        from .worker.cli import main as queue_main

        return queue_main(args)
    from .taskcli.main import main as task_main

    return task_main(args)


if __name__ == "__main__":
    sys.exit(main())
