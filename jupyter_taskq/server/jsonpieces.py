"""Big JSON answers encoded a slice at a time, so the event loop thread gets the GIL in between.

``json.dumps`` runs in C and holds the GIL for the whole call: about 100 ms for the 20,000 tasks of
a batch's answer. Run on the thread pool, it still stalls the event loop that long (the loop
cannot take the GIL back until the call returns), and every request of the server, JupyterLab's
included, waits. Encoding a long list a slice of :data:`PIECE` items at a time gives the
interpreter a chance to switch threads between slices (every ``sys.getswitchinterval()``).
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

log = logging.getLogger("jupyter_taskq.server")

PIECE = 50  # items per json.dumps call: well under 1 ms of encoding each for task dicts


def dumps(value: Any) -> str:
    """Every JSON answer of the server is encoded here: strict JSON, never ``NaN`` or ``Infinity``.

    Python's ``json.dumps`` writes those by default, and JavaScript's ``JSON.parse`` rejects the whole
    answer (one task's ``progress(inf)`` broke every panel's task list). Values are checked where they
    come in; a non-finite number that still reaches an answer (a record stored before the checks, a
    result's display data) goes out as ``null`` instead of breaking it, and is logged."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError as exc:
        if "Out of range float values" not in str(exc):
            raise
    log.warning("a non-finite number in a JSON answer was sent as null")
    return json.dumps(_finite(value), allow_nan=False)


def _finite(value: Any) -> Any:
    """``value`` with each float that is not finite replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def dumps_in_pieces(value: Any) -> bytes:
    """``dumps(value).encode()``, the same bytes, with long lists (at the top, or a top-level
    dict's values) encoded a slice at a time."""
    return _encode(value, top=True).encode()


def _encode(value: Any, top: bool = False) -> str:
    if isinstance(value, list) and len(value) > PIECE:
        parts = (dumps(value[i:i + PIECE])[1:-1] for i in range(0, len(value), PIECE))
        return "[" + ", ".join(parts) + "]"
    if top and isinstance(value, dict) and all(isinstance(k, str) for k in value) and \
            any(isinstance(v, list) and len(v) > PIECE for v in value.values()):
        return "{" + ", ".join(f"{json.dumps(k)}: {_encode(v)}" for k, v in value.items()) + "}"
    return dumps(value)
