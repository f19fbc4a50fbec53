"""A state directory opened for tasks' owners (hub service, run as owner) stays open to them.

Every process that opens the state (the service, each worker it starts, a joining machine) makes its
folders user-only; that must not take back what :func:`open_for_owners` opened (0711, enter but never
list), or a task that a worker is running as its owner at that moment cannot reach its attempt folder
and crashes (seen as one run in six of test_run_as_owner's attempt-folder test)."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

from jupyter_taskq.statedir import StateDir, open_for_owners


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_opening_the_state_again_keeps_the_owners_way_in():
    top = Path(tempfile.mkdtemp(prefix="taskq-statedir-", dir="/tmp"))  # users may pass /tmp (not tmp_path)
    try:
        os.chmod(top, 0o711)
        state = StateDir.create(top / "state")
        open_for_owners(state)
        StateDir.create(top / "state")  # another worker starting
        assert mode(state.root) == mode(state.files / "outputs") == 0o711
        assert all(mode(state.files / sub) == 0o700 for sub in ("payloads", "results", "logs", "spool", "blobs"))
        fresh = StateDir.create(top / "other")
        assert mode(fresh.root) == mode(fresh.files / "outputs") == 0o700, "a state nobody opened stays user-only"
        os.chmod(fresh.files / "outputs", 0o755)
        StateDir.create(top / "other")
        assert mode(fresh.files / "outputs") == 0o700, "a folder left open to all is made user-only again"
    finally:
        shutil.rmtree(top, ignore_errors=True)
