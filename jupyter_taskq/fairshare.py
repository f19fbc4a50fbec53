"""Fair share: which user's task a freed GPU runs next (issue 15). Pure functions, no I/O.

First come, first served lets one user's 200 queued tasks hold every GPU for a day while a
colleague's two wait behind them. Here, when a worker frees up, the next task comes from the
user with the *least recent GPU time*: each GPU-second counts with a weight that halves every
``half_life`` seconds (an hour by default), so yesterday's big run no longer counts against you
and a burst an hour ago counts half. Task priorities order tasks only within one user: they
cannot buy a user a place ahead of another. A user at their concurrent-GPU quota is passed over
(their tasks wait) until one of their tasks ends. Ties go to the user whose next task is oldest,
so with nobody's usage known the order is first come, first served.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Callable, Iterable

DEFAULT_HALF_LIFE = 3600.0


def decayed_gpu_seconds(spans: Iterable[tuple[float, float | None]], now: float,
                        half_life: float = DEFAULT_HALF_LIFE) -> float:
    """GPU-seconds of ``(started, ended or None while running)`` spans, each second weighted
    ``0.5 ** (age / half_life)``: the integral of that weight over each span, so a long task that
    ended long ago counts for little and one running now counts fully for its recent part."""
    rate = math.log(2) / half_life
    total = 0.0
    for started, ended in spans:
        end = now if ended is None else min(ended, now)
        if end <= started:
            continue
        # integral over [started, end] of exp(-rate * (now - t)) dt
        total += (math.exp(-rate * (now - end)) - math.exp(-rate * (now - started))) / rate
    return total


@dataclass(frozen=True)
class Head:
    """One user's next waiting task: the one their priorities put first."""

    owner: str | None
    task_id: str
    seq: float = 0.0  # smaller: queued earlier (a tie-break between users of equal usage)


def pick_next(heads: Iterable[Head], usage: dict[str | None, float],
              at_cap: Callable[[str | None], bool] = lambda owner: False) -> Head | None:
    """The head of the user with the least decayed GPU time among those not at their GPU cap;
    ``None`` when every waiting user is at their cap (the GPU stays free for a later task)."""
    allowed = [h for h in heads if not at_cap(h.owner)]
    if not allowed:
        return None
    return min(allowed, key=lambda h: (usage.get(h.owner, 0.0), h.seq))


def usage_from_spans(spans: Iterable[tuple[str | None, float, float | None]], now: float,
                     half_life: float = DEFAULT_HALF_LIFE) -> dict[str | None, float]:
    """Decayed GPU-seconds per owner from a store's ``gpu_spans``."""
    per_owner: dict[str | None, list[tuple[float, float | None]]] = {}
    for owner, started, ended in spans:
        per_owner.setdefault(owner, []).append((started, ended))
    return {owner: decayed_gpu_seconds(s, now, half_life) for owner, s in per_owner.items()}
