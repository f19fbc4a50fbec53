"""``jupyter taskq top``: the queue redrawn in place like ``htop``: each worker with its GPU, task, time and
progress, then the running and waiting tasks, fitted to the terminal.

On a terminal it redraws every ``--interval`` seconds and quits on ``q`` or Ctrl-C; a pipe (or ``--once``)
gets plain frames instead (one with ``--once``, else one per interval, as ``top -b`` prints).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import select
import shutil
import sys
import time

from . import render

RUNNING_SHOWN = 200  # running tasks fetched per frame for their progress (a page of GET tasks)
WAITING_SHOWN = 200  # waiting tasks listed at most (a pipe has no height: it gets this many)


def frame(client, width: int = 120, height: int = 40) -> str:
    """One screenful: a header, the workers, then the running and waiting tasks that still fit."""
    stats = client.stats()
    running = client.list("RUNNING", limit=RUNNING_SHOWN)["tasks"]
    by_id = {t["id"]: t for t in running}
    counts = stats.get("counts") or {}
    now = datetime.datetime.now().strftime("%H:%M:%S")
    live = [w for w in stats.get("workers") or [] if w.get("alive")]
    busy = sum(1 for w in live if w.get("busy"))
    lines = [f"jupyter-taskq  {client.url}  {now}   workers {busy}/{len(live)} busy",
             "tasks   " + "  ".join(f"{s} {counts.get(s, 0)}" for s in
                                    ("PENDING", "RETRY", "RUNNING", "COMPLETE", "FAILED", "TIMEOUT", "CANCELLED",
                                     "EXPIRED")),
             "waiting " + "  ".join(f"{pool} {n}" for pool, n in (stats.get("queue_depth") or {}).items()), ""]
    lines += render.workers_table(stats.get("workers") or [], by_id).splitlines()
    room = height - len(lines) - 3
    if room > 1:
        wanted = max(1, room - min(len(running), room // 2))
        waiting = client.list(["PENDING", "RETRY"], limit=min(WAITING_SHOWN, wanted))["tasks"]
        shown = running[:max(0, room - len(waiting))] + waiting
        shown = shown[:room]
        if shown:
            lines += ["", *render.task_table(shown).splitlines()]
    return "\n".join(line[:width] for line in lines)


def run_top(client, interval: float = 2.0, once: bool = False) -> int:
    interactive = sys.stdout.isatty() and sys.stdin.isatty() and not once
    if not interactive:
        while True:
            size = shutil.get_terminal_size((120, 40))
            print(frame(client, size.columns, 10**6 if not sys.stdout.isatty() else size.lines), flush=True)
            if once:
                return 0
            try:
                time.sleep(interval)
            except KeyboardInterrupt:
                return 0
            print()
    with _keys() as key_ready:
        sys.stdout.write("\x1b[?1049h\x1b[?25l")  # the alternate screen, no cursor: the shell comes back untouched
        try:
            while True:
                size = shutil.get_terminal_size((120, 40))
                text = frame(client, size.columns, size.lines)
                sys.stdout.write("\x1b[H\x1b[2J" + text.replace("\n", "\r\n") +
                                 f"\r\n\x1b[7m q quits · every {interval:g} s \x1b[0m")
                sys.stdout.flush()
                if key_ready(interval) in ("q", "Q"):
                    return 0
        except KeyboardInterrupt:
            return 0
        finally:
            sys.stdout.write("\x1b[?25h\x1b[?1049l")
            sys.stdout.flush()


@contextlib.contextmanager
def _keys():
    """Keys read one at a time without echo (cbreak) while ``top`` runs; the terminal restored after."""
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def key_ready(timeout: float) -> str | None:
        ready, _, _ = select.select([fd], [], [], timeout)
        return os.read(fd, 1).decode(errors="replace") if ready else None

    try:
        yield key_ready
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
