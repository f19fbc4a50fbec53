"""Where a GPU worker takes its next task: gangs, reservation and backfill (:mod:`jupyter_taskq.gangplan`),
fair share and GPU quotas (:mod:`.fair`), on the machine's GPU locks (:mod:`.gpulocks`).

As under fair share, a Huey message of a waiting GPU task is a *turn*, not an order: the worker plans
from the store's waiting tasks of its pools, takes the GPUs of the task the plan starts, and runs that
task (a message made for it when it is not the message's own; the message then goes back, so its task
keeps a turn). When nothing may start now (the head of the queue waits for GPUs that are busy, and no
task can backfill without delaying it), the message goes back and the GPU stays idle. A message whose
task is no longer waiting is passed on and its claim finds nothing, as before; a stale message can
neither run a task twice (the store's claim) nor on GPUs it does not hold (the worker runs only a task
it took GPUs for).
"""

from __future__ import annotations

import logging
import socket
import time

from ..gangplan import Want, plan, waiting_note
from ..pools import pool_model
from ..status import WAITING
from .fair import FairTurns
from .gpulocks import MachineGpus

log = logging.getLogger("jupyter_taskq.worker")
WAITING_VALUES = frozenset(s.value for s in WAITING)


class GangTurns:
    def __init__(self, store, fair: FairTurns, gpus: MachineGpus, pools: list[str], hueys: list):
        self.store = store
        self.fair = fair
        self.gpus = gpus
        self.pools = pools
        self.hueys = hueys
        self.planned: tuple[str, tuple[int, ...]] | None = None  # (task id, devices) this worker holds GPUs for
        self._notes: dict[str, dict | None] = {}  # waiting_for_gpus last written per task (written when it changes)
        self.machine = socket.gethostname()

    def _wants(self, now: float) -> list[Want]:
        candidates = self.store.waiting_gpu_tasks(self.pools, now=now)
        rank = {pool: i for i, pool in enumerate(self.pools)}  # this GPU's model's pool first, as ever
        candidates.sort(key=lambda t: rank.get(t["pool"], len(rank)))
        ordered = self.fair.order(candidates, now)
        return [Want(t["id"], int(t["gpu"] or 1), pool_model(t["pool"]), t.get("timeout"), t["pool"])
                for t in (candidates if ordered is None else ordered)]

    def observe(self) -> None:
        """While this GPU is busy or lent: say what the head of the queue waits for (nothing is taken)."""
        now = time.time()
        wants = self._wants(now)
        if not any(w.count > 1 for w in wants):
            return
        with self.gpus.planning():
            chosen = plan(self.gpus.snapshot(), wants, self.gpus.mine, now)
        if chosen.run is None:
            self._note(chosen)

    def choose(self, huey, message):
        """``(huey, message)`` to execute now (``message`` itself or one for another task), or None: the
        message went back and nothing may start on this GPU now."""
        task_id = message.args[0] if message.args else None
        if task_id is None or self.store.statuses([task_id]).get(task_id) not in WAITING_VALUES:
            return huey, message  # its task ran, or was cancelled or deleted: claiming it finds nothing to do
        now = time.time()
        wants = self._wants(now)
        with self.gpus.planning():
            chosen = plan(self.gpus.snapshot(), wants, self.gpus.mine, now)
            taken = chosen.run is not None and self.gpus.take(chosen.devices, chosen.run.task_id, chosen.run.timeout)
        self._note(chosen)
        if not taken:
            huey.enqueue(message)  # its task keeps a turn
            return None
        run = chosen.run
        self.planned = (run.task_id, chosen.devices)
        if run.task_id == task_id:
            return huey, message
        huey.enqueue(message)
        target = self.hueys[self.pools.index(run.pool)]
        log.debug("GPU plan: task %s on GPUs %s before %s's turn", run.task_id, chosen.devices, task_id)
        return target, target.attempt.s(run.task_id)

    def devices_for(self, task_id: str) -> tuple[int, ...] | None:
        """The GPUs this worker took for ``task_id`` (None: it took none: it must not run it)."""
        if self.planned is not None and self.planned[0] == task_id and self.gpus.held:
            return self.planned[1]
        return None

    def release(self) -> None:
        self.planned = None
        self.gpus.release()

    def _note(self, chosen) -> None:
        """The head's ``waiting_for_gpus`` (what it waits for), written when it changes; cleared when it runs."""
        if chosen.head is not None:
            note = waiting_note(chosen, self.machine)
            self._write_note(chosen.head.task_id, note)
        if chosen.run is not None and self._notes.get(chosen.run.task_id):
            self._write_note(chosen.run.task_id, None)

    def _write_note(self, task_id: str, note: dict | None) -> None:
        if self._notes.get(task_id) == note:
            return
        try:
            self.store.update_fields(task_id, waiting_for_gpus=note)
            self._notes[task_id] = note
        except Exception:  # noqa: BLE001 - only what the task's JSON shows
            log.warning("could not record what task %s waits for", task_id)
        if len(self._notes) > 1000:
            self._notes.clear()
