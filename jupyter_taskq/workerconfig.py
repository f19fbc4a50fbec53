"""The workers' settings, declared once: one frozen value from the server (or the command line) to each worker.

Before (issue 20) each setting travelled traits -> argv -> argparse -> argv -> argparse, its default
written in every hop (``kill_grace=2.0`` five times). Now the server's ``TaskQueue`` traits and the
``jupyter taskq worker`` flags both fill a :class:`WorkerConfig`; it travels to the supervisor and
from there to each worker as ONE JSON value (``--config``), checked once by :meth:`WorkerConfig.from_json`.

It lives in the core package (standard library only) because both sides read its defaults: the
server's traits (``server/app.py``) and the worker side (``worker/``), which never import each other.

To add a worker option: one field here (with its default and check), one trait in ``server/app.py``
whose default is this field's, and (if users set it by hand) one flag in ``worker/cli.py``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

MAX_IDLE_EXIT = 7 * 86400


@dataclass(frozen=True)
class WorkerConfig:
    """Every setting of a machine's workers, each with its one default."""

    #: Seconds between SIGTERM and SIGKILL when an attempt is cancelled, times out or its worker stops.
    kill_grace: float = 2.0
    #: Cap of a task's captured stdout/stderr log; past it the log keeps its tail.
    log_max_bytes: int = 10 * 1024 * 1024
    #: Hub service: each attempt runs as its owner's Unix account (needs root; worker/owner.py).
    run_as_owner: bool = False
    #: Seconds without a heartbeat after which a worker is judged lost and its attempt requeued.
    heartbeat_timeout: float = 10.0
    #: Seconds without a task after which the supervisor ends (0: never): a batch job's scale-down.
    idle_exit: float = 0.0
    #: Worker processes per GPU, and workers for tasks that ask for no GPU.
    workers_per_gpu: int = 1
    cpu_workers: int = 2
    #: Warm task processes (keep_warm_seconds) one worker keeps at most; the oldest idle one goes first.
    max_warm: int = 4

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            want = {"float": (int, float), "int": (int,), "bool": (bool,)}[str(field.type)]
            if isinstance(value, bool) != (field.type == "bool") or not isinstance(value, want):
                raise ValueError(f"worker setting {field.name} must be a {field.type}, got {value!r}")
            if field.type == "float":
                object.__setattr__(self, field.name, float(value))
        if not (0 <= self.kill_grace < math.inf):
            raise ValueError(f"kill_grace must be >= 0 seconds, got {self.kill_grace!r}")
        if self.log_max_bytes <= 0:
            raise ValueError(f"log_max_bytes must be > 0, got {self.log_max_bytes!r}")
        if not (0 < self.heartbeat_timeout < math.inf):
            raise ValueError(f"heartbeat_timeout must be > 0 seconds, got {self.heartbeat_timeout!r}")
        if not (0 <= self.idle_exit <= MAX_IDLE_EXIT):  # also refuses nan
            raise ValueError(f"idle_exit must be from 0 to {MAX_IDLE_EXIT} seconds")
        if self.workers_per_gpu < 1 or self.cpu_workers < 0:
            raise ValueError("workers_per_gpu must be >= 1 and cpu_workers >= 0")
        if self.max_warm < 0:
            raise ValueError(f"max_warm must be >= 0, got {self.max_warm!r}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def default(cls, name: str):
        """The one default of setting ``name`` (the server's traits take theirs from here)."""
        return next(f.default for f in dataclasses.fields(cls) if f.name == name)

    @classmethod
    def from_settings(cls, settings: dict) -> WorkerConfig:
        """From a mapping that may hold more than worker settings (the server's traits): takes only ours."""
        return cls(**{name: settings[name] for name in cls.names() if name in settings})

    def replace(self, **changes) -> WorkerConfig:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> WorkerConfig:
        """Parse and check a ``--config`` value; a ValueError says what is wrong (an unknown name too)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"worker configuration is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("worker configuration must be a JSON object")
        unknown = set(data) - set(cls.names())
        if unknown:
            raise ValueError(f"unknown worker setting(s): {', '.join(sorted(unknown))}")
        return cls(**data)


#: Every setting at its default (a default argument that is not built at each call).
DEFAULT_CONFIG = WorkerConfig()
