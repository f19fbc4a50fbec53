"""Which waiting GPU task a free GPU of this machine starts: gangs, a reservation, backfill. Pure, no I/O.

A task may ask for N GPUs (``gpu=4``, ``gpu="A100:4"``): it starts only when N GPUs (of its model)
are free on one machine, and holds them together for the attempt (:mod:`jupyter_taskq.worker.gpulocks`).
Left to first come, first served per GPU, a stream of ``gpu=1`` tasks would never leave four GPUs free
at once. So this is EASY backfilling, per machine:

* The *head* is the first waiting task (in the queue's order: fair share, then priority, then age)
  that this machine could ever run (it has N GPUs of its model). If N of them are free now, it starts.
* Otherwise it holds a *reservation*: the N GPUs that free up first (free ones, then busy ones by the
  end of their holder's ``timeout``; a holder without a timeout has no known end), and the *reserved
  start*, when the last of them frees up.
* A later task may *backfill* a free GPU only if it cannot delay the head: it runs on free GPUs outside
  the reservation, or its own ``timeout`` ends before the reserved start. Otherwise it waits, and the
  GPU stays idle for the head.

Every worker of the machine plans from the same state (the GPU locks and their holders' records) under
one machine-wide mutex, so they agree on the head and its reservation. With several machines (Redis),
each machine whose GPUs could hold the head keeps a reservation for it; the first to fit it runs it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Device:
    """One GPU of this machine as the planner sees it."""

    id: int
    model: str | None = None
    free: bool = True  # no attempt holds it: a gang may take it
    until: float | None = None  # busy: when its holder's timeout ends it at the latest (None: no known end)
    shareable: bool = False  # busy only with gpu=1 tasks of the worker slots that share it (workers_per_gpu)
    task: str | None = None  # busy: the task that holds it


@dataclass(frozen=True)
class Want:
    """A waiting task: N GPUs (of ``model``, or any), for at most ``timeout`` seconds (None: no limit)."""

    task_id: str
    count: int
    model: str | None = None
    timeout: float | None = None
    pool: str = "gpu"


@dataclass(frozen=True)
class Plan:
    run: Want | None = None  # the task to start now on ``devices`` (None: none may start)
    devices: tuple[int, ...] = ()
    head: Want | None = None  # the task holding the reservation, when it could not start
    reserved: tuple[int, ...] = ()
    start: float | None = None  # the reserved start (None: unknown, a busy GPU's holder has no timeout)
    busy: tuple[Device, ...] = field(default=())  # the reserved GPUs that are busy


def _eligible(devices: list[Device], want: Want) -> list[Device]:
    return [d for d in devices if want.model is None or d.model == want.model]


def _end(device: Device) -> float:
    return -math.inf if device.free else math.inf if device.until is None else device.until


def plan(devices: list[Device], candidates: list[Want], mine: int, now: float | None = None) -> Plan:
    """What the worker of GPU ``mine`` (free, or shared by its slots) starts now, in ``candidates``' order."""
    now = time.time() if now is None else now
    by_id = {d.id: d for d in devices}
    me = by_id.get(mine)
    if me is None:
        return Plan()
    head: Plan | None = None
    for want in candidates:
        eligible = _eligible(devices, want)
        if want.count < 1 or len(eligible) < want.count or me not in eligible:
            continue  # this machine could never run it (or not on this GPU): another machine's
        take: tuple[int, ...]
        if want.count == 1:
            fits, take = me.free or me.shareable, (mine,)
        else:
            free = [d.id for d in eligible if d.free and d.id != mine]
            fits = me.free and len(free) >= want.count - 1
            take = tuple(sorted([mine, *free[:want.count - 1]]))
        if head is None:
            if fits:
                return Plan(run=want, devices=take)
            ranked = sorted(eligible, key=lambda d: (_end(d), d.id))[:want.count]
            ends = [_end(d) for d in ranked]
            start = max(ends)
            head = Plan(head=want, reserved=tuple(sorted(d.id for d in ranked)),
                        start=None if start == math.inf else max(start, now),
                        busy=tuple(d for d in ranked if not d.free))
            continue
        if not fits:
            continue
        backfill = Plan(run=want, devices=take, head=head.head, reserved=head.reserved, start=head.start,
                        busy=head.busy)
        if mine not in head.reserved:  # on GPUs outside the reservation it cannot delay the head
            spare = [d.id for d in eligible if d.free and d.id != mine and d.id not in head.reserved]
            if want.count == 1 or len(spare) >= want.count - 1:
                return Plan(run=want, devices=tuple(sorted([mine, *spare[:want.count - 1]])), head=head.head,
                            reserved=head.reserved, start=head.start, busy=head.busy)
        if want.timeout is not None and head.start is not None and now + want.timeout <= head.start:
            return backfill  # it ends before the reserved start
    return head or Plan()


def waiting_note(plan: Plan, machine: str, now: float | None = None) -> dict | None:
    """What the head of a plan that could not start waits for, as its task's JSON says it
    (``waiting_for_gpus``): "waiting for 4 GPUs on one machine: 3 busy until about 14:20"."""
    if plan.head is None or plan.run is not None and plan.run.task_id == plan.head.task_id:
        return None
    count, busy = plan.head.count, len(plan.busy)
    what = f"waiting for {count} GPU{'s' if count != 1 else ''} on one machine"
    if plan.start is not None:
        when = time.strftime("%H:%M", time.localtime(plan.start))
        message = f"{what}: {busy} busy until about {when}"
    else:
        message = f"{what}: {busy} busy with no known end (a task without a timeout holds one)"
    return {"gpus": count, "busy": busy, "machine": machine, "until": plan.start,
            "reserved": list(plan.reserved), "held_by": sorted({d.task for d in plan.busy if d.task}),
            "message": message}
