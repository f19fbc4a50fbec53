"""How the task CLI prints: tables sized to their columns, durations, sizes, progress bars.

Pure functions of the server's JSON (no HTTP here), so ``ls``, ``show``, ``stats`` and ``top`` print
the same words the Lab panel shows.
"""

from __future__ import annotations

import datetime
import time

SHORT_ID = 8  # characters of an id shown in a table (any unique prefix of 4 or more is accepted back)


def parse_iso(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def duration(seconds: float | None) -> str:
    """``0.4s``, ``12s``, ``3m05s``, ``2h04m``, ``3d02h``; ``-`` for none."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def size(n: int | float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "-"


def task_duration(task: dict, now: float | None = None) -> float | None:
    """Run time so far (RUNNING) or in all (ended); None before it started."""
    started = parse_iso(task.get("started_at"))
    if started is None:
        return None
    ended = parse_iso(task.get("ended_at"))
    return (ended if ended is not None else (time.time() if now is None else now)) - started


def progress_text(progress: dict | None, width: int = 10) -> str:
    """``[####------] 42%`` (and the message), or ``-``."""
    if not progress:
        return "-"
    fraction = progress.get("fraction")
    if fraction is None:
        done, total = progress.get("done"), progress.get("total")
        fraction = done / total if isinstance(done, (int, float)) and total else None
    if fraction is None:
        return progress.get("message") or "-"
    fraction = min(1.0, max(0.0, float(fraction)))
    filled = round(fraction * width)
    bar = f"[{'#' * filled}{'-' * (width - filled)}] {fraction * 100:3.0f}%"
    return f"{bar} {progress['message']}" if progress.get("message") else bar


def table(headers: list[str], rows: list[list[str]], max_width: dict[int, int] | None = None) -> str:
    """Left-aligned columns two spaces apart; a cell over its column's ``max_width`` ends with ``…``."""
    max_width = max_width or {}
    cells = [[str(c) for c in row] for row in rows]
    for row in cells:
        for i, cell in enumerate(row):
            limit = max_width.get(i)
            if limit and len(cell) > limit:
                row[i] = cell[:limit - 1] + "…"
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


TASK_HEADERS = ["ID", "NAME", "STATUS", "WAITING FOR", "OWNER", "WORKER", "ATTEMPT", "CREATED", "DURATION",
                "PROGRESS"]


def clock(at: float, now: float) -> str:
    """``14:05:00`` today, ``03-02 14:05`` another day (local time, as the CREATED column)."""
    moment = datetime.datetime.fromtimestamp(at)
    same_day = moment.date() == datetime.datetime.fromtimestamp(now).date()
    return moment.strftime("%H:%M:%S" if same_day else "%m-%d %H:%M")


def pending_reason(task: dict, now: float | None = None) -> str:
    """Why a PENDING task has not started, in the words the panel uses: ``3 tasks`` (its dependencies not yet
    done), ``start 14:05:00`` (its start_at), both, ``2 GPUs`` (a gpu=N task waiting for N free GPUs), or the
    launcher's ``waiting_note``; ``-`` for a task that is merely queued, or not PENDING."""
    if task.get("status") != "PENDING":
        return "-"
    now = time.time() if now is None else now
    parts = []
    deps = len(task.get("waiting_for") or [])
    if deps:
        parts.append(f"{deps} task{'' if deps == 1 else 's'}")
    start = parse_iso(task.get("start_at"))
    if start is not None and start > now:
        parts.append(f"start {clock(start, now)}")
    gpus = task.get("waiting_for_gpus")
    if not parts and isinstance(gpus, dict) and gpus.get("gpus"):
        parts.append(f"{gpus['gpus']} GPU{'' if gpus['gpus'] == 1 else 's'}")
    if not parts and task.get("waiting_note"):  # the launcher's words (a Slurm job being started)
        parts.append(str(task["waiting_note"]))
    return ", ".join(parts) or "-"


def task_row(task: dict, now: float | None = None) -> list[str]:
    created = parse_iso(task.get("created_at"))
    when = datetime.datetime.fromtimestamp(created).strftime("%m-%d %H:%M:%S") if created else "-"
    attempts = f"{task.get('attempt') or 0}/{(task.get('max_retries') or 0) + 1}"
    return [task["id"][:SHORT_ID], task.get("name") or "-", task["status"], pending_reason(task, now),
            task.get("owner") or "-", task.get("worker") or "-", attempts, when, duration(task_duration(task, now)),
            progress_text(task.get("progress"))]


def task_table(tasks: list[dict]) -> str:
    now = time.time()
    return table(TASK_HEADERS, [task_row(t, now) for t in tasks], {1: 32, 3: 28, 4: 16, 5: 20, 9: 40})


def show_task(task: dict) -> str:
    """``show ID``: the fields a person reads first, then the error and outputs."""
    lines = []
    fields = [("id", task["id"]), ("name", task.get("name")), ("status", task["status"]),
              ("owner", task.get("owner")), ("worker", task.get("worker")),
              ("attempt", f"{task.get('attempt') or 0} of {(task.get('max_retries') or 0) + 1}"),
              ("gpu", task.get("gpu_model") or task.get("gpu")), ("priority", task.get("priority")),
              ("created", task.get("created_at")), ("started", task.get("started_at")),
              ("ended", task.get("ended_at")), ("duration", duration(task_duration(task))),
              ("progress", progress_text(task.get("progress"))), ("notebook", task.get("notebook")),
              ("retry of", task.get("retry_of"))]
    for key in ("waiting_for", "start_at", "schedule_id", "waiting_note"):  # dependencies, times, the launcher
        if task.get(key):
            fields.append((key.replace("_", " "), task[key]))
    result = task.get("result") or {}
    if result.get("available"):
        fields.append(("result", f"{size(result.get('size'))} (jupyter_taskq.TaskHandle(id).result())"))
    width = max(len(k) for k, _ in fields)
    lines += [f"{k.ljust(width)}  {v}" for k, v in fields if v not in (None, "", "-")]
    error = task.get("error")
    if error:
        lines.append(f"error{' ' * (width - 5)}  {error.get('type')}: {error.get('message')}")
        if error.get("traceback"):
            lines += ["", error["traceback"].rstrip()]
    outputs = task.get("outputs") or []
    if outputs:
        lines += ["", "outputs:"] + [f"  {o['name']}  {size(o.get('size'))}" for o in outputs]
    return "\n".join(lines)


def stats_text(stats: dict) -> str:
    counts = stats.get("counts") or {}
    lines = ["tasks:   " + "  ".join(f"{s} {n}" for s, n in counts.items() if s != "LOST"),
             "waiting: " + "  ".join(f"{pool} {n}" for pool, n in (stats.get("queue_depth") or {}).items()),
             f"disk:    {size(stats.get('disk_usage_bytes'))}"]
    for user, usage in sorted((stats.get("users") or {}).items()):
        if usage.get("gpu_seconds_week"):
            lines.append(f"user {user or '-'}: GPU {duration(usage['gpu_seconds_today'])} today, "
                         f"{duration(usage['gpu_seconds_week'])} this week")
    lines += ["", workers_table(stats.get("workers") or [], {})]
    launcher = stats.get("launcher") or {}
    if launcher.get("kind") not in (None, "local"):
        lines += ["", jobs_table(launcher)]
    return "\n".join(lines)


def jobs_table(launcher: dict) -> str:
    """The launcher's batch jobs (Slurm): id, state (pending with Slurm's reason, running, ending), node,
    GPUs and time left; and why it last failed, if it did."""
    rows = []
    for job in launcher.get("jobs") or []:
        state = job.get("state") or "-"
        if state in ("pending", "failed") and job.get("reason"):
            state = f"{state} ({job['reason']})"
        gpus = job.get("gpus")
        rows.append([str(job.get("id")), state, job.get("node") or "-",
                     ",".join(gpus) if isinstance(gpus, list) else str(gpus or 0),
                     duration(job["time_left"]) if job.get("time_left") is not None else "-"])
    text = table([f"{launcher.get('kind', '').upper()} JOB", "STATE", "NODE", "GPUS", "TIME LEFT"], rows, {1: 40})
    if launcher.get("error"):
        text += f"\nlast problem: {launcher['error']}"
    return text


def worker_device(worker: dict) -> str:
    if worker.get("pool") != "gpu":
        return "CPU"
    label = f"GPU {worker.get('device') if worker.get('device') is not None else '?'}"
    return f"{label} {worker['model']}" if worker.get("model") else label


def workers_table(workers: list[dict], running: dict[str, dict], now: float | None = None) -> str:
    """One row per worker: its device, state, task, for how long and (``running``: task JSON by id) progress."""
    now = time.time() if now is None else now
    rows = []
    for w in sorted(workers, key=lambda w: (not w.get("alive"), w.get("name") or "")):
        task = running.get(w.get("current_task") or "")
        since = parse_iso(w.get("busy_since"))
        state = "dead" if not w.get("alive") else "busy" if w.get("busy") else "idle"
        rows.append([w.get("name") or "-", worker_device(w), state,
                     w.get("current_task_name") or ("(another user's)" if w.get("busy") and not w.get("current_task")
                                                    else "-"),
                     (w.get("current_task") or "-")[:SHORT_ID], duration(now - since) if since and w.get("busy")
                     else "-", progress_text(task.get("progress")) if task else "-"])
    return table(["WORKER", "DEVICE", "STATE", "TASK", "ID", "FOR", "PROGRESS"], rows, {0: 24, 1: 28, 3: 28, 6: 40})
