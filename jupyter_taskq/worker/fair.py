"""Fair share where a GPU worker takes its next task (issue 15; the policy is :mod:`jupyter_taskq.fairshare`).

Only when the hub service has written its policy (``fairshare.json``, :mod:`jupyter_taskq.quotas`);
otherwise a worker takes Huey's next message as always.

Huey's queue stays the durable record that work is waiting, but under fair share a message of a
task waiting for its first attempt is a *turn*, not an order: the worker asks the store for each
user's next task (their own priorities, then age), gives the turn to the user with the least recent
GPU time who is under their GPU quota, and, when that is another task than the message's, puts the
message back so its task keeps a turn of its own. The chosen task's own message is left behind and
is skipped when it comes up (its task is no longer waiting), as any message of a cancelled task is.
Retries and messages of tasks that ran already go as before, so nothing is ever left without a
message. When every waiting user is at their GPU quota the message goes back and the GPU stays idle
until one of their tasks ends.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ..fairshare import Head, pick_next, usage_from_spans
from ..quotas import PolicyFile
from ..status import TaskStatus

log = logging.getLogger("jupyter_taskq.worker")
HORIZON_HALF_LIVES = 10  # GPU time older than this many half-lives counts for less than 0.1 %


class FairTurns:
    def __init__(self, store, state_root: Path):
        self.store = store
        self.policy = PolicyFile(state_root)

    def choose(self, huey, message, pool: str):
        """The message to run now (``message`` itself, or one for another user's task), or None: the
        message went back and every waiting user is at their GPU quota."""
        policy = self.policy.current()
        if policy is None or not message.args:
            return message
        quotas, groups_of = policy
        task_id = message.args[0]
        if self.store.statuses([task_id]).get(task_id) != TaskStatus.PENDING.value:
            return message  # a retry's message, or a task that ran already: as before
        now = time.time()
        heads = [Head(h["owner"], h["id"], h["created_at"] or 0.0)
                 for h in self.store.waiting_heads([pool], statuses=[TaskStatus.PENDING])]
        held = self.store.running_gpus_by_owner()
        usage = usage_from_spans(self.store.gpu_spans(now - HORIZON_HALF_LIVES * quotas.half_life), now,
                                 quotas.half_life)

        def at_cap(owner) -> bool:
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
