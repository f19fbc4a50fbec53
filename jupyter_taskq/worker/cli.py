"""``jupyter taskq worker``: join this machine's GPUs and CPUs to a queue.

The Jupyter server runs exactly this command for its own workers; running it by
hand lets workers outlive server restarts (and, with Redis, live on other machines).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

from ..workerconfig import WorkerConfig


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    if given[:1] == ["hub-service"]:  # the hub-wide queue is a server (jupyter_taskq/server/hub.py), not a worker
        os.execv(sys.executable, [sys.executable, "-m", "jupyter_taskq.server.hub", *given[1:]])
    parser = argparse.ArgumentParser(prog="jupyter taskq", description="jupyter-taskq command line")
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="run a worker supervisor: one process per GPU slot plus CPU workers")
    worker.add_argument("--state-dir", default=None, help="queue state directory (default: under the Jupyter data dir)")
    worker.add_argument("--redis", default=os.environ.get("JUPYTER_TASKQ_REDIS_URL", ""), metavar="URL",
                        help="join the shared queue on this Redis server (redis://[:password@]host:port/db; "
                             "rediss:// for TLS) instead of the SQLite file in --state-dir. Default: "
                             "$JUPYTER_TASKQ_REDIS_URL (keeps a password out of the process list)")
    worker.add_argument("--redis-allow-volatile", action="store_true",
                        help="with --redis: start even when that Redis keeps nothing on disk (neither AOF nor RDB), "
                             "with a warning; a restart of Redis then loses every task. Without it the worker "
                             "refuses such a Redis, as the server does (TaskQueue.redis_allow_volatile)")
    worker.add_argument("--files-dir", default=None,
                        help="with --redis: the directory for payloads, results, logs and outputs that every "
                             "machine mounts (default: --state-dir)")
    worker.add_argument("--gpus", default="auto",
                        help='"auto" (NVML or nvidia-smi), a list such as "0,1", or "" for none')
    worker.add_argument("--gpu-model", default=None, metavar="NAME",
                        help='model name of these GPUs (default: as the driver reports it, e.g. '
                             '"NVIDIA A100-SXM4-80GB"); tasks asking for gpu="A100" run only on a matching GPU')
    # The settings a WorkerConfig holds: no default here (None: not given), WorkerConfig has the one default.
    worker.add_argument("--workers-per-gpu", type=int, default=None)
    worker.add_argument("--cpu-workers", type=int, default=None)
    worker.add_argument("--name", default=None,
                        help='prefix for worker names ("NAME/cpu0"); default with --redis: the host name, '
                             "so machines sharing a queue never clash; otherwise none")
    worker.add_argument("--heartbeat-timeout", type=float, default=None,
                        help="seconds without a heartbeat after which a worker's tasks are requeued (default 10)")
    worker.add_argument("--kill-grace", type=float, default=None,
                        help="seconds between SIGTERM and SIGKILL (default 2)")
    worker.add_argument("--log-max-bytes", type=int, default=None,
                        help="cap of a task's log; past it the log keeps its tail (default 10 MiB)")
    worker.add_argument("--run-as-owner", action="store_true", default=None,
                        help="run each task as its owner's Unix account (the hub service; needs root)")
    worker.add_argument("--server-url", default=os.environ.get("JUPYTER_TASKQ_SERVER_URL", ""), metavar="URL",
                        help="the Jupyter server that holds the queue (http://host:8888/): tasks that submit tasks "
                             "reach it there (default: $JUPYTER_TASKQ_SERVER_URL; a server's own workers get it)")
    worker.add_argument("--image-dir", default=os.environ.get("JUPYTER_TASKQ_IMAGE_DIR", ""), metavar="DIR",
                        help="where task images (image=) are built and cached; a directory the machines share "
                             "builds each image once for all of them (default: STATE_DIR/images)")
    worker.add_argument("--image-cache-bytes", default=os.environ.get("JUPYTER_TASKQ_IMAGE_CACHE_BYTES", ""),
                        metavar="N", help="size limit of the image cache (default 20 GiB); least recently used "
                                          "images go first")
    worker.add_argument("--idle-exit", type=float, default=None, metavar="SECONDS",
                        help="end after this many seconds in which no worker ran a task (0: never); a batch "
                             "job's scale-down (the Slurm launcher sets it)")
    worker.add_argument("--config", default="{}", metavar="JSON", help=argparse.SUPPRESS)  # a launcher's WorkerConfig
    worker.add_argument("--die-with-parent", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        config = worker_config(args)
    except ValueError as exc:
        parser.error(str(exc))

    from ..gpus import gpu_models, parse_gpus
    from ..backends import open_child_backend
    from .proctree import die_with_parent
    from .supervisor import Supervisor, plan_workers

    if args.die_with_parent:
        die_with_parent()
    logging.basicConfig(level=logging.INFO, format="[taskq supervisor] %(levelname)s %(message)s")
    try:
        gpus = parse_gpus(args.gpus)
    except ValueError as exc:
        parser.error(str(exc))
    if args.server_url:
        if not args.server_url.startswith(("http://", "https://")):
            parser.error(f"--server-url must be an http:// or https:// URL, got {args.server_url!r}")
        os.environ["JUPYTER_TASKQ_SERVER_URL"] = args.server_url  # the workers', and so their tasks'
    from ..imagecache import CACHE_BYTES_ENV, IMAGE_DIR_ENV, check_cache_bytes

    if args.image_cache_bytes:
        try:
            os.environ[CACHE_BYTES_ENV] = str(check_cache_bytes(args.image_cache_bytes))  # the workers read it
        except ValueError as exc:
            parser.error(str(exc))
    if args.image_dir:
        os.environ[IMAGE_DIR_ENV] = os.path.abspath(args.image_dir)
    if args.files_dir and not args.redis:
        parser.error("--files-dir needs --redis (with SQLite every file is in --state-dir)")
    if args.redis:  # a server's own workers too: it passes --redis-allow-volatile when it allows it
        refusal = check_redis(args.redis, args.redis_allow_volatile)
        if refusal:
            print(refusal, file=sys.stderr, flush=True)
            return 1
    # machines sharing a queue need distinct names
    name = args.name if args.name is not None else (socket.gethostname() if args.redis else "")
    models = gpu_models(gpus, args.gpu_model)
    specs = plan_workers(gpus, config.workers_per_gpu, config.cpu_workers, f"{name}/" if name else "", models)
    backend = open_child_backend(args.state_dir, args.redis, args.files_dir)
    if config.run_as_owner:
        from .owner import check_can_run_as_owners

        check_can_run_as_owners(backend.state)  # exits saying why (not root, state under /root)
    Supervisor(backend, specs, config).run()
    return 0


def worker_config(args: argparse.Namespace) -> WorkerConfig:
    """The one WorkerConfig of these workers: a launcher's ``--config``, then the flags given by hand.
    A ValueError says what is wrong, in the flags' words."""
    given = {name: getattr(args, name) for name in WorkerConfig.names() if getattr(args, name, None) is not None}
    try:
        return WorkerConfig.from_json(args.config).replace(**given)
    except ValueError as exc:
        text = str(exc)
        for name in given:
            text = text.replace(name, "--" + name.replace("_", "-"))
        raise ValueError(text) from None


def check_redis(url: str, allow_volatile: bool) -> str:
    """The server's check (``check_persistence``) for a worker machine: the line that refuses to start
    on a Redis that keeps nothing on disk, or "" to go on. Waits for a Redis that does not answer yet
    (a machine booting before it), saying so once; a wrong password or URL refuses at once."""
    import time

    import redis

    from ..backends.redis_store import VolatileRedis, check_persistence

    log = logging.getLogger("jupyter_taskq.supervisor")
    waiting = False
    while True:
        try:
            found = check_persistence(url, allow_volatile)
            break
        except VolatileRedis as exc:
            fix = "start this worker with --redis-allow-volatile"
            message = str(exc).replace("set c.TaskQueue.redis_allow_volatile = True", fix)
            if fix not in message:
                message += f" (for `jupyter taskq worker`: {fix})"
            return f"jupyter taskq worker: not starting: {message}"
        except redis.AuthenticationError as exc:
            return f"jupyter taskq worker: not starting: Redis at {_where(url)} refused the login: {exc}"
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if not waiting:
                log.warning("waiting for Redis at %s to answer (%s)", _where(url), exc)
                waiting = True
            time.sleep(1.0)
        except Exception as exc:  # noqa: BLE001 - a malformed URL, a Redis that refuses INFO: say which
            return (f"jupyter taskq worker: not starting: cannot check Redis at {_where(url)}: "
                    f"{type(exc).__name__}: {exc}")
    if not (found["aof"] or found["rdb"]):
        log.warning("the Redis server at %s has no persistence (--redis-allow-volatile): a restart of Redis "
                    "loses every task", _where(url))
    return ""


def _where(url: str) -> str:
    """The URL without its password."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return f"unix://{parts.path}"
        return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"
    except ValueError:
        return "the given URL"


if __name__ == "__main__":
    sys.exit(main())
