"""``GET tasks/<id>/display``: a finished task's result as a MIME bundle, so a front end shows it without a kernel.

The worker computes the bundle in the task's own interpreter with IPython's display formatter
(see :mod:`jupyter_taskq.worker.display`) and stores it beside the result; the server never
unpickles a result, it only hands this JSON on. Its HTML is the task's: show it as untrusted.
"""

from __future__ import annotations

import io
import json
import pickle

from ..status import TaskStatus
from .service import ServiceError, conflict

#: Larger than the worker ever writes (a few capped entries): anything bigger was not written by it.
MAX_STORED_BYTES = 4 * 1024 * 1024
#: A result this small may be a scalar, whose display the worker leaves to us (see worker/display.py).
SCALAR_RESULT_BYTES = 4200
_SCALARS = (bool, int, float, str, bytes)


class _NoGlobals(pickle.Unpickler):
    """Loads only what a pickle builds from its own opcodes (numbers, strings, containers): any class
    or function it names is refused, so nothing of the task's runs here."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"{module}.{name} is not loaded by the server")


def _scalar_bundle(service, task: dict) -> dict:
    """``{"text/plain": repr}`` for a result that is a number or a short string; else ``{}``."""
    if not task.get("result_size") or task["result_size"] > SCALAR_RESULT_BYTES:
        return {}
    path = service.state.result(task["id"])
    try:
        if not service.objects.fetch(path):
            return {}
        value = _NoGlobals(io.BytesIO(path.read_bytes()[:SCALAR_RESULT_BYTES + 1])).load()
    except Exception:  # noqa: BLE001 - a class, a removed file: not a scalar we can show
        return {}
    return {"text/plain": repr(value)} if type(value) in _SCALARS else {}


def display_json(service, task_id: str) -> dict:
    """``{"task_id", "data": {mime: value}, "metadata": {...}, "left_out": [mime types over the size cap]}``;
    ``data`` is empty when there is nothing to show (a None result, or no IPython where the task ran)."""
    task = service.get_task(task_id)
    if task["status"] != TaskStatus.COMPLETE:
        raise conflict(f"task {task_id} is {task['status']}; its result is shown once it is COMPLETE")
    if task["result_expired"]:
        raise ServiceError(410, f"the result of task {task_id} has expired (result TTL)", "gone")
    answer = {"task_id": task_id, "data": {}, "metadata": {}, "left_out": []}
    path = service.state.display(task_id)
    try:
        if service.objects.fetch(path) and path.stat().st_size <= MAX_STORED_BYTES:
            stored = json.loads(path.read_bytes())
            if isinstance(stored, dict) and isinstance(stored.get("data"), dict):
                answer.update({key: stored[key] for key in ("data", "metadata", "left_out") if key in stored})
        else:
            answer["data"] = _scalar_bundle(service, task)
    except (OSError, ValueError):  # removed meanwhile (TTL), or not JSON: nothing to show
        pass
    return answer
