"""``jupyter taskq worker``: join this machine's GPUs and CPUs to a queue.

The Jupyter server runs exactly this command for its own workers; running it by
hand lets workers outlive server restarts (and, with Redis, live on other machines).
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jupyter taskq", description="jupyter-taskq command line")
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="run a worker supervisor: one process per GPU slot plus CPU workers")
    worker.add_argument("--state-dir", default=None, help="queue state directory (default: under the Jupyter data dir)")
    worker.add_argument("--gpus", default="auto", help='"auto" (NVML or nvidia-smi), a list such as "0,1", or "" for none')
    worker.add_argument("--workers-per-gpu", type=int, default=1)
    worker.add_argument("--cpu-workers", type=int, default=2)
    worker.add_argument("--name", default="", help="prefix for worker names (use the host name when machines share a queue)")
    worker.add_argument("--heartbeat-timeout", type=float, default=10.0,
                        help="seconds without a heartbeat after which a worker's tasks are requeued")
    worker.add_argument("--kill-grace", type=float, default=2.0, help="seconds between SIGTERM and SIGKILL")
    worker.add_argument("--log-max-bytes", type=int, default=10 * 1024 * 1024,
                        help="cap of a task's log; past it the log keeps its tail")
    worker.add_argument("--die-with-parent", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from ..gpus import parse_gpus
    from ..statedir import StateDir
    from .task_process import die_with_parent
    from .supervisor import Supervisor, plan_workers

    if args.die_with_parent:
        die_with_parent()
    logging.basicConfig(level=logging.INFO, format="[taskq supervisor] %(levelname)s %(message)s")
    try:
        gpus = parse_gpus(args.gpus)
    except ValueError as exc:
        parser.error(str(exc))
    if args.workers_per_gpu < 1 or args.cpu_workers < 0:
        parser.error("--workers-per-gpu must be >= 1 and --cpu-workers >= 0")
    prefix = f"{args.name}/" if args.name else ""
    specs = plan_workers(gpus, args.workers_per_gpu, args.cpu_workers, prefix)
    Supervisor(StateDir.create(args.state_dir), specs, args.heartbeat_timeout, args.kill_grace,
               args.log_max_bytes).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
