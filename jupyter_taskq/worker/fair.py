"""Fair share where a GPU worker takes its next task (issue 15; the policy is :mod:`jupyter_taskq.fairshare`).

Only when the hub service has written its policy (``fairshare.json``, :mod:`jupyter_taskq.quotas`);
otherwise a worker takes Huey's next message as always.

Huey's queue stays the durable record that work is waiting, but under fair share a message of a
waiting task is a *turn*, not an order: the worker asks the store for each user's next task that may
start now (their own priorities, then age; a retry counts as soon as its retry_delay is over, the
store's ``not_before``), gives the turn to the user with the least recent GPU time who is under their
GPU quota, and, when that is another task than the message's, puts the message back so its task
keeps a turn of its own. First attempts and retries are alike: both are their owner's waiting tasks
(PENDING and RETRY), both wait while their owner is at the GPU cap.

Every waiting task keeps at least one message: a message is consumed only by running its own task
(claimed: no longer waiting) or by finding its task no longer waiting; a retry gets a new message
when its attempt fails (:func:`jupyter_taskq.recovery.requeue_attempt`). A task may hold more than
one message (its own left behind when another turn chose it, then a retry's); any of them is only a
turn: a task runs when fair share picks it and its retry delay is over, and the store's claim lets
one worker run it once, so a stale message can neither run a task twice nor before its turn or its
delay. A message whose task is no longer waiting is dropped, as any message of a cancelled task is.
When every waiting user is at their GPU quota, or only retries still in their delay are waiting,
the message goes back and the GPU stays idle until one can start.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ..fairshare import Head, pick_next, usage_from_spans
from ..quotas import PolicyFile
from ..status import WAITING

log = logging.getLogger("jupyter_taskq.worker")
WAITING_VALUES = frozenset(s.value for s in WAITING)
HORIZON_HALF_LIVES = 10  # GPU time older than this many half-lives counts for less than 0.1 %


class FairTurns:
    def __init__(self, store, state_root: Path):
        self.store = store
        self.policy = PolicyFile(state_root)

    def choose(self, huey, message, pool: str):
        """The message to run now (``message`` itself, or one for another user's task), or None: the
        message went back: no waiting task may start now (their users are at their GPU quota, or
        only retries still in their delay are waiting)."""
        policy = self.policy.current()
        if policy is None or not message.args:
            return message
        quotas, groups_of = policy
        task_id = message.args[0]
        if self.store.statuses([task_id]).get(task_id) not in WAITING_VALUES:
            return message  # its task ran, or was cancelled or deleted: claiming it finds nothing to do
        now = time.time()
        heads = [Head(h["owner"], h["id"], h["created_at"] or 0.0)
                 for h in self.store.waiting_heads([pool], now=now)]
        held = self.store.running_gpus_by_owner()
        usage = usage_from_spans(self.store.gpu_spans(now - HORIZON_HALF_LIVES * quotas.half_life), now,
                                 quotas.half_life)

        def at_cap(owner) -> bool:  # (a gpu=N task is held to the quota in GangTurns: see order())
            cap = quotas.limit("max_gpus", owner, groups_of.get(owner, ()))
            return bool(cap) and held.get(owner, 0) >= cap

        pick = pick_next(heads, usage, at_cap)
        if pick is not None and pick.task_id == task_id:
            return message
        huey.enqueue(message)  # its task keeps a turn
        if pick is None:
            return None
        log.debug("fair share: %s's task %s before %s", pick.owner, pick.task_id, task_id)
        return huey.attempt.s(pick.task_id)


    def order(self, candidates: list[dict], now: float) -> list[dict] | None:
        """Waiting tasks (``store.waiting_gpu_tasks``) in fair-share order: users by least recent GPU time
        (each GPU of a gpu=N task counts: N GPU-seconds a second), each user's own in their order; a task
        that would take its user past their GPU quota (GPUs, not tasks) is left out. None: no policy."""
        policy = self.policy.current()
        if policy is None:
            return None
        quotas, groups_of = policy
        held = self.store.running_gpus_by_owner()
        usage = usage_from_spans(self.store.gpu_spans(now - HORIZON_HALF_LIVES * quotas.half_life), now,
                                 quotas.half_life)
        first_seen: dict = {}
        for rank, task in enumerate(candidates):
            first_seen.setdefault(task["owner"], rank)

        def allowed(task) -> bool:
            cap = quotas.limit("max_gpus", task["owner"], groups_of.get(task["owner"], ()))
            return not cap or held.get(task["owner"], 0) + int(task["gpu"] or 1) <= cap

        ranked = sorted(enumerate(candidates), key=lambda rt: (usage.get(rt[1]["owner"], 0.0),
                                                               first_seen[rt[1]["owner"]], rt[0]))
        return [task for _rank, task in ranked if allowed(task)]
