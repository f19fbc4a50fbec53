"""Big JSON answers encoded a slice at a time, so the event loop thread gets the GIL in between.

``json.dumps`` runs in C and holds the GIL for the whole call: about 100 ms for the 20,000 tasks of
a batch's answer. Run on the thread pool, it still stalls the event loop that long (the loop
cannot take the GIL back until the call returns), and every request of the server, JupyterLab's
included, waits. Encoding a long list a slice of :data:`PIECE` items at a time gives the
interpreter a chance to switch threads between slices (every ``sys.getswitchinterval()``).
"""

from __future__ import annotations

import json
from typing import Any

PIECE = 50  # items per json.dumps call: well under 1 ms of encoding each for task dicts


def dumps_in_pieces(value: Any) -> bytes:
    """``json.dumps(value).encode()``, the same bytes, with long lists (at the top, or a top-level
    dict's values) encoded a slice at a time."""
    return _encode(value, top=True).encode()


def _encode(value: Any, top: bool = False) -> str:
    if isinstance(value, list) and len(value) > PIECE:
        parts = (json.dumps(value[i:i + PIECE])[1:-1] for i in range(0, len(value), PIECE))
        return "[" + ", ".join(parts) + "]"
    if top and isinstance(value, dict) and all(isinstance(k, str) for k in value) and any(isinstance(v, list) and len(v) > PIECE for v in value.values()):
        return "{" + ", ".join(f"{json.dumps(k)}: {_encode(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)
