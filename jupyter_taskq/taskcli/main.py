"""``jupyter taskq ls|show|logs|cancel|retry|outputs|download|stats|top``: the queue from a terminal.

It speaks REST only, through the kernel's own client (:mod:`jupyter_taskq.notebook.client`), never
importing server or worker code, so it works over SSH against a server elsewhere exactly as here.
Where: ``--url``/``--token``, else ``$JUPYTER_TASKQ_URL``/``$JUPYTER_TASKQ_TOKEN``, else a Jupyter
server running on this machine as this user that has the task queue (its runtime file, as
``jupyter server list`` finds it), else this user's private queue server. It never starts a server.

Exit status (``jupyter`` subcommand conventions): 0 on success; 1 when the server refused, could not
be reached or some of the work was not done (one line on stderr saying why); 2 for a bad command line
(one line, with ``--help`` for more); 130 on Ctrl-C, except in ``top`` and ``logs -f`` where Ctrl-C is
how one leaves (0).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable

import requests

from ..status import TaskStatus
from . import render

PROG = "jupyter taskq"
MAX_PAGE = 1000  # the server's largest page (options.MAX_LIMIT)
STATUSES = [s.value for s in TaskStatus if s is not TaskStatus.LOST]
WAITING = ["PENDING", "RETRY"]


class CliError(Exception):
    """One line for stderr, and the exit status."""

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        raise CliError(f"{self.prog}: {message} (see {self.prog} --help)", 2)


# -- connecting -------------------------------------------------------------------------------------
def _local_server() -> tuple[str, str] | None:
    """A Jupyter server of this user on this machine that answers the task queue's API."""
    from ..notebook import discovery

    try:
        runtime = discovery._runtime_dir()
        infos = sorted(runtime.glob("jpserver-*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        infos = []
    for path in infos:
        try:
            info = json.loads(path.read_text())
            url, token = info["url"], info.get("token", "")
        except (OSError, ValueError, KeyError):
            continue
        if discovery._answers(url, token):
            return url, token
    return discovery.existing_private_server()


def connect(args, reconnect_for: float = 0.0):
    from ..notebook.client import Client

    url = args.url or os.environ.get("JUPYTER_TASKQ_URL")
    token = args.token if args.token is not None else os.environ.get("JUPYTER_TASKQ_TOKEN", "")
    if not url:
        found = _local_server()
        if found is None:
            raise CliError(f"{PROG}: no task queue server found: pass --url and --token (or set JUPYTER_TASKQ_URL "
                           "and JUPYTER_TASKQ_TOKEN); no Jupyter server with jupyter-taskq runs here as this user")
        url, found_token = found
        token = token or found_token
    if not url.startswith(("http://", "https://")):
        raise CliError(f"{PROG}: --url must be an http:// or https:// URL, got {url!r}", 2)
    return Client(url, token or None, reconnect_for=reconnect_for)


def resolve(client, task_id: str) -> str:
    """A full id, or a unique prefix of one (as the tables show: 8 characters), made whole."""
    from ..notebook.client import TaskqError

    if len(task_id) == 36:
        return task_id
    if len(task_id) < 4 or not all(c in "0123456789abcdef-" for c in task_id.lower()):
        return task_id  # the server says it has no such task
    matches = [t["id"] for t in client.list(limit=MAX_PAGE, text=task_id.lower())["tasks"]
               if t["id"].startswith(task_id.lower())]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise CliError(f"{PROG}: {task_id!r} is the start of {len(matches)} task ids; give more of it")
    raise TaskqError(404, f"no task with id {task_id!r}")


# -- commands ---------------------------------------------------------------------------------------
def cmd_ls(args) -> int:
    client = connect(args)
    statuses = _statuses(args.status)
    tasks = _list(client, statuses, args.limit, name=args.name, owner=args.owner, notebook=args.notebook)
    if args.json:
        print(json.dumps(tasks, indent=1))
    elif tasks:
        print(render.task_table(tasks))
    else:
        print("no tasks", file=sys.stderr)
    return 0


def _statuses(values: list[str] | None) -> list[str]:
    statuses = [s.strip().upper() for v in values or [] for s in v.split(",") if s.strip()]
    bad = [s for s in statuses if s not in STATUSES]
    if bad:
        raise CliError(f"{PROG} ls: unknown status {bad[0]!r}; statuses are {', '.join(STATUSES)}", 2)
    return statuses


def _list(client, statuses, limit: int, name=None, owner=None, notebook=None) -> list[dict]:
    """The newest ``limit`` tasks that pass the filters. Status, owner and the name's text are filtered by the
    server; an exact name and a notebook are checked here, page by page, until enough are found."""
    found: list[dict] = []
    offset = 0
    exact = name is not None or notebook is not None
    while len(found) < limit:
        page = client.list(statuses or None, limit=MAX_PAGE if exact else min(limit, MAX_PAGE), offset=offset,
                           text=name[:200] if name else None, owner=owner)
        found += [t for t in page["tasks"] if (name is None or t.get("name") == name)
                  and (notebook is None or _same_notebook(t.get("notebook"), notebook))]
        offset += len(page["tasks"])
        if not page["tasks"] or offset >= page["total"]:
            break
    return found[:limit]


def _same_notebook(recorded: str | None, wanted: str) -> bool:
    """``--notebook`` matches the recorded path, or its file name (``analysis.ipynb``)."""
    if not recorded:
        return False
    return recorded == wanted or os.path.basename(recorded) == wanted


def cmd_show(args) -> int:
    client = connect(args)
    task = client.get(resolve(client, args.id))
    print(json.dumps(task, indent=1) if args.json else render.show_task(task))
    return 0


def cmd_logs(args) -> int:
    from ..notebook.client import TaskHandle

    client = connect(args, reconnect_for=60.0 if args.follow else 0.0)  # following rides out a server restart
    handle = TaskHandle(resolve(client, args.id), client=client)
    if args.follow:
        handle.logs(follow=True, file=sys.stdout)
    else:
        sys.stdout.write(handle.logs(attempt=args.attempt) or "")  # None only while following
    sys.stdout.flush()
    return 0


def cmd_cancel(args) -> int:
    if args.all_pending == bool(args.ids):  # a usage error before any server is looked for
        raise CliError(f"{PROG} cancel: give task ids or --all-pending (one or the other)", 2)
    client = connect(args)
    if args.all_pending:
        ids = [t["id"] for t in _list(client, WAITING, 10**9, owner=args.owner)]
    else:
        ids = [resolve(client, i) for i in args.ids]
    answer = client.cancel(ids) if ids else {"cancelled": [], "not_cancelled": []}
    if args.json:
        print(json.dumps(answer, indent=1))
    else:
        for task_id in answer["cancelled"]:
            print(f"cancelled {task_id}")
        if args.all_pending:
            print(f"{len(answer['cancelled'])} waiting task(s) cancelled", file=sys.stderr)
    refused = answer["not_cancelled"]
    if refused:
        first = refused[0]
        more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
        raise CliError(f"{PROG} cancel: not cancelled: {first['id']}: {first['reason']}{more}")
    return 0


def cmd_retry(args) -> int:
    client = connect(args)
    handle = client.retry(resolve(client, args.id))
    print(json.dumps(handle._info, indent=1) if args.json else handle.id)
    return 0


def cmd_outputs(args) -> int:
    client = connect(args)
    outputs = client.get(resolve(client, args.id))["outputs"]
    if args.json:
        print(json.dumps(outputs, indent=1))
    elif outputs:
        print(render.table(["NAME", "SIZE", "KIND"], [[o["name"], render.size(o.get("size")), o.get("kind") or "file"]
                                                       for o in outputs]))
    else:
        print("no outputs", file=sys.stderr)
    return 0


def cmd_download(args) -> int:
    client = connect(args)
    print(client.download(resolve(client, args.id), args.name, args.dest))
    return 0


def cmd_stats(args) -> int:
    stats = connect(args).stats()
    print(json.dumps(stats, indent=1) if args.json else render.stats_text(stats))
    return 0


def cmd_top(args) -> int:
    from .top import run_top

    return run_top(connect(args, reconnect_for=60.0), interval=args.interval, once=args.once)


# -- the command line ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="The jupyter-taskq task queue from a terminal: list, follow, cancel and "
                     "retry tasks, fetch their outputs, watch the workers. Against a server elsewhere (over SSH): "
                     "--url and --token, or JUPYTER_TASKQ_URL and JUPYTER_TASKQ_TOKEN.",
                     epilog="Exit status: 0 on success, 1 if the server refused or could not be reached, 2 for a "
                     "bad command line; the reason is one line on stderr.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name: str, run: Callable, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--url", default=None, help="the Jupyter server (http://host:8888/); default: "
                       "$JUPYTER_TASKQ_URL, else a local server with the task queue")
        p.add_argument("--token", default=None, help="its token (default: $JUPYTER_TASKQ_TOKEN)")
        p.set_defaults(run=run)
        return p

    ls = command("ls", cmd_ls, "list tasks, newest first")
    ls.add_argument("--status", "-s", action="append", metavar="STATUS",
                    help=f"only these statuses (repeat, or comma-separate): {', '.join(STATUSES)}")
    ls.add_argument("--name", "-n", help="only tasks with this name (a function's name, or name=)")
    ls.add_argument("--owner", help="only this user's tasks (a hub admin's choice; others see only their own)")
    ls.add_argument("--notebook", help="only tasks submitted from this notebook (its path, or its file name)")
    ls.add_argument("--limit", "-l", type=_positive, default=50, help="at most this many (default 50)")
    ls.add_argument("--json", action="store_true", help="print a JSON list of the tasks' JSON")
    show = command("show", cmd_show, "show one task: status, worker, times, error, outputs")
    show.add_argument("id", help="task id (or a unique prefix of 4+ characters)")
    show.add_argument("--json", action="store_true", help="print the task's JSON")
    logs = command("logs", cmd_logs, "print a task's log (stdout and stderr)")
    logs.add_argument("id", help="task id (or a unique prefix)")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing as the task writes, until it ends")
    logs.add_argument("--attempt", type=_positive, default=None, help="that attempt's log (default: the latest)")
    cancel = command("cancel", cmd_cancel, "cancel tasks (waiting ones never run; running ones are killed)")
    cancel.add_argument("ids", nargs="*", metavar="ID", help="task ids (or unique prefixes)")
    cancel.add_argument("--all-pending", action="store_true", help="cancel every waiting task (PENDING or RETRY) "
                        "you may see")
    cancel.add_argument("--owner", help="with --all-pending: only this user's (a hub admin's choice)")
    cancel.add_argument("--json", action="store_true", help="print the server's answer as JSON")
    retry = command("retry", cmd_retry, "run a finished task again, as a new task (prints its id)")
    retry.add_argument("id", help="task id (or a unique prefix)")
    retry.add_argument("--json", action="store_true", help="print the new task's JSON")
    outputs = command("outputs", cmd_outputs, "list the files a task saved with Output(path).save()")
    outputs.add_argument("id", help="task id (or a unique prefix)")
    outputs.add_argument("--json", action="store_true", help="print them as JSON")
    download = command("download", cmd_download, "download an output of a task (prints where it went)")
    download.add_argument("id", help="task id (or a unique prefix)")
    download.add_argument("name", help="the output's name (as `outputs` lists it)")
    download.add_argument("dest", nargs="?", default=".", help="a folder, or a file path (default: here)")
    stats = command("stats", cmd_stats, "counts by status, queue depth, workers, GPU time")
    stats.add_argument("--json", action="store_true", help="print GET stats's JSON")
    top = command("top", cmd_top, "a live view of workers, their tasks and progress, and the queue (q or Ctrl-C "
                  "quits)")
    top.add_argument("--interval", "-d", type=_interval, default=2.0, help="seconds between refreshes (default 2)")
    top.add_argument("--once", action="store_true", help="print one frame and exit (also what a pipe gets)")
    sub.add_parser("worker", help="run workers for a queue (jupyter taskq worker --help)", add_help=False)
    sub.add_parser("hub-service", help="run the hub-wide queue as a JupyterHub service", add_help=False)
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= 10**9:
        raise argparse.ArgumentTypeError(f"expected a number from 1 to 1000000000, got {value}")
    return value


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0.2 <= value <= 3600:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"expected seconds from 0.2 to 3600, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    from ..notebook.client import TaskqError

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return 2
        return args.run(args)
    except CliError as exc:
        print(str(exc), file=sys.stderr)
        return exc.status
    except TaskqError as exc:
        print(f"{PROG} {argv[0]}: {exc.server_message} (HTTP {exc.status_code})", file=sys.stderr)
        return 1
    except requests.RequestException as exc:
        print(f"{PROG} {argv[0]}: cannot reach the server: {_reason(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if argv[:1] == ["logs"]:
            return 0
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `jupyter taskq ls | head`
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so the interpreter's flush at exit stays quiet
        except OSError:
            pass
        return 0
    except OSError as exc:  # a download's destination
        print(f"{PROG} {argv[0]}: {exc}", file=sys.stderr)
        return 1


def _reason(exc: Exception) -> str:
    """What went wrong, in a few words: urllib3's chain (``Max retries exceeded ... [Errno 111] Connection
    refused``) cut to its cause."""
    import re

    text = str(exc) or type(exc).__name__
    cause = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    where = getattr(getattr(exc, "request", None), "url", None)
    return f"{cause.group(1) if cause else text.splitlines()[-1][:300]}{f' ({where})' if where else ''}"
