"""Releasing held tasks: dependencies met and start times come (issue 24).

A task submitted with ``after=``, ``start_at=`` or ``delay=`` is stored PENDING and *held*: no Huey
message, and neither a claim nor fair share will start it (backends/sqlite_store.py,
backends/redis_store.py). The server's one-second sweep calls :func:`release_held`, which reads the held
tasks alone (an index of them) and the statuses of what they wait for, in one query each, and for every
held task:

- a dependency that ended other than COMPLETE (FAILED, TIMEOUT, EXPIRED, CANCELLED, or deleted) ends
  it ``CANCELLED`` with ``dependency <id> <STATUS>`` (unless ``after_any_outcome``), which in turn
  cancels its own dependants at the same sweep: a pipeline stops at its first broken stage;
- ``waiting_for`` shrinks as dependencies complete (the task JSON shows what is left);
- with nothing left to wait for and its start time come, it is un-held (a write conditional on its
  status) and its attempt is put on its pool's queue; a crash in between leaves a waiting task
  without a message, which the start-up reconcile queues.

Why not Huey's ``eta``: a message scheduled in Huey is invisible to the store (the panel could not
say what the task waits for), cannot be moved or cancelled, and under fair share a worker picks the
store's waiting tasks, not the queue's order, so it would start the task early. Everything here is
in the store, so it survives a restart of the server (the next sweep picks up where it left) and
works the same on Redis, where the workers on other machines change the dependencies' statuses.
"""

from __future__ import annotations

import logging
import time

from ..status import TaskStatus

log = logging.getLogger("jupyter_taskq.pipelines")
PASSES = 20  # cancellations cascade one stage per pass; a deeper chain finishes at the next sweep


def release_held(service) -> list[str]:
    """One sweep over the held tasks; returns the ids it changed (released or cancelled)."""
    changed: list[str] = []
    for _ in range(PASSES):
        moved = _one_pass(service)
        changed += moved
        if not moved:
            break
    return changed


def _one_pass(service) -> list[str]:
    store = service.store
    held = store.held()
    if not held:
        return []
    deps = list({d for t in held for d in (t.get("waiting_for") or [])})
    statuses: dict[str, str] = {}
    for start in range(0, len(deps), 5000):
        statuses.update(store.statuses(deps[start:start + 5000]))
    now = time.time()
    changed, release = [], []
    for task in held:
        waiting = list(task.get("waiting_for") or [])
        broken = [(d, statuses.get(d, TaskStatus.LOST.value)) for d in waiting
                  if statuses.get(d) not in _UNFINISHED and statuses.get(d) != TaskStatus.COMPLETE.value]
        if broken and not task.get("after_any_outcome"):
            dep, status = broken[0]
            error = {"type": "DependencyFailed", "traceback": None,
                     "message": f"dependency {dep} {'was deleted' if status == 'LOST' else status}; not run "
                                "(after_any_outcome=True runs it anyway)"}
            if store.transition(task["id"], TaskStatus.CANCELLED, [TaskStatus.PENDING], error=error, held=0):
                changed.append(task["id"])
            continue
        left = [d for d in waiting if statuses.get(d) in _UNFINISHED]
        if left and left != waiting:
            store.update_fields(task["id"], waiting_for=left)
            changed.append(task["id"])
        if left or (task.get("start_at") or 0) > now:
            continue
        if store.transition(task["id"], TaskStatus.PENDING, [TaskStatus.PENDING], waiting_for=None, held=0,
                            ready_at=ready_at(store, task, now)):
            release.append(dict(task, held=0))
            changed.append(task["id"])
    if release:
        service._enqueue(release)
    if changed:
        service.on_changes(changed)
    return changed


def ready_at(store, task: dict, now: float) -> float:
    """When a held task could start: the later of its start time and its last dependency's end (a deleted
    one's end is unknown: the sweep's ``now`` then). Its queue wait (server/metrics.py) counts from here, not
    from its submission: an hour waiting for its dependencies is the pipeline's, not the queue's."""
    deps = task.get("depends_on") or []
    ended = store.ended_times(deps) if deps else {}
    ends = [ended.get(d, now) for d in deps]
    return min(now, max([task.get("created_at") or now, task.get("start_at") or 0.0, *ends]))


_UNFINISHED = {TaskStatus.PENDING.value, TaskStatus.RUNNING.value, TaskStatus.RETRY.value}
