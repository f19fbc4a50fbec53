"""Random seeds: how a task's random numbers follow from the notebook's.

The rule (README, "What a queued call computes"): at submit the kernel draws one 32-bit number from
each random library's *global* stream it has imported (``random``; numpy's legacy ``np.random``;
torch's default generator), exactly as a local call drawing one number would; the task process seeds
the same library with it before the function runs. So

* a notebook that seeds ``np.random`` (or ``random``, or ``torch``) gets the same task results every
  time it runs, since the draws are the same;
* the tasks of a loop or a ``map`` draw successive numbers, so they never share a stream;
* an unseeded kernel's streams start from OS entropy, so its tasks get fresh numbers each run.

A library the kernel has not imported is not drawn from (importing torch would take seconds): its
task seed comes from ``os.urandom``. The seeds travel in the payload header (``"seed"``) and are
recorded in the task's JSON (``seed``), so a task can be re-run exactly (:func:`apply` in the kernel,
then the call). Generators the notebook made itself (``np.random.default_rng(0)``) travel with their
state, by value, like any other object; this module is about the global streams.

Standard library only: the task runner loads this file by path in another interpreter.
"""

from __future__ import annotations

import os
import random
import sys
from typing import cast

LIBRARIES = ("random", "numpy", "torch")
MAX_SEED = 2 ** 32 - 1  # numpy's legacy seed() takes at most 32 bits


def _fresh() -> int:
    return int.from_bytes(os.urandom(4), "big")


def draw() -> dict[str, int]:
    """In the kernel, at submit: one seed per library, drawn from its global stream (see the rule)."""
    seed = {"random": random.getrandbits(32), "numpy": None, "torch": None}
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        try:
            seed["numpy"] = int(numpy.random.randint(0, MAX_SEED + 1, dtype=numpy.uint64))
        except Exception:  # noqa: BLE001 - a half-imported or unusual numpy: fresh entropy instead
            pass
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            seed["torch"] = int(torch.randint(0, MAX_SEED + 1, (1,), dtype=torch.int64).item())
        except Exception:  # noqa: BLE001
            pass
    return {name: _fresh() if value is None else value for name, value in seed.items()}


def check(value) -> dict[str, int] | None:
    """A payload header's ``seed`` as the server stores it (None: an older client sent none); ValueError
    naming what is wrong. The one place a seed from outside is checked."""
    if value is None:
        return None
    if not isinstance(value, dict) or not value or set(value) - set(LIBRARIES):
        raise ValueError(f"payload header field 'seed' must be an object with keys among {', '.join(LIBRARIES)}")
    for name, number in value.items():
        if type(number) is not int or not 0 <= number <= MAX_SEED:
            raise ValueError(f"payload header field 'seed': {name} must be an integer between 0 and {MAX_SEED}")
    return dict(value)


def apply(seed: dict | None) -> None:
    """In the task process, before the function runs (or in a kernel, to re-run a task exactly): seed
    ``random``, and numpy's and torch's global streams now if imported, else as soon as they are.
    Without a seed (a payload of an older client) each library gets fresh entropy: a forked process
    would otherwise share its parent's numpy stream with every other task."""
    seed = {name: (seed or {}).get(name) for name in LIBRARIES}
    seed = {name: _fresh() if value is None else value for name, value in seed.items()}
    random.seed(seed["random"])
    when_imported("numpy.random", lambda module: module.seed(seed["numpy"]))
    when_imported("torch", lambda module: module.manual_seed(seed["torch"]))


def when_imported(name: str, action) -> None:
    """``action(module)`` now if ``name`` is imported, else right after the task imports it."""
    module = sys.modules.get(name)
    if module is not None:
        try:
            action(module)
        except Exception:  # noqa: BLE001 - a library too old or odd to seed: the task still runs
            pass
        return
    _hook().pending[name] = action


class _SeedOnImport:
    """A meta path finder that runs an action once a named module has executed (first in sys.meta_path)."""

    def __init__(self) -> None:
        self.pending: dict[str, object] = {}

    def find_spec(self, name, path, target=None):
        action = self.pending.get(name)
        if action is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def run(module):
            exec_module(module)
            if self.pending.pop(name, None) is not None:
                try:
                    action(module)
                except Exception:  # noqa: BLE001
                    pass

        loader.exec_module = run  # this spec's own loader object (a FileFinder makes one per module)
        return spec


def _hook() -> _SeedOnImport:
    for finder in sys.meta_path:
        if isinstance(finder, _SeedOnImport) or type(finder).__name__ == "_SeedOnImport":
            return cast(_SeedOnImport, finder)  # or the class of a reloaded copy of this module: same fields
    finder = _SeedOnImport()
    sys.meta_path.insert(0, finder)
    return finder
