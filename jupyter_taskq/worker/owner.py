"""Run each attempt as its owner's Unix account (hub service, ``--run-as-owner``; issue 15).

A hub's users are Unix accounts on the box (LocalProcessSpawner, SystemdSpawner): their code
must run with their own uid, gids and home, never as root or as someone else, and what it saves
must belong to them. The worker stays root; so does the keeper, which must be able to end the
attempt's whole tree. The task process drops to the owner (:func:`become`) *before* it reads the
payload's body, because unpickling a payload runs the user's code.

Files, as the attempt sees them:

* the payload (and a map()'s shared part) are opened by the task process while still root and
  read through those descriptors: the owner needs no access to the state directory's payloads;
* the attempt folder (``outputs/<task>/<n>``: log, progress, saved outputs) is the owner's (0700);
* result and error go to a run folder beside it (``outputs/<task>/.run-<n>``, the owner's, 0700).
  Afterwards the worker takes the folder back (root, so the owner can no longer change it) and
  moves in only plain files the owner made (no links), to where the server reads them.

The folders above are root's with mode 0711: the owner can pass through to their own attempt
folder but list nothing (:func:`jupyter_taskq.statedir.open_for_owners`).
"""

from __future__ import annotations

import os
import pickletools  # noqa: F401 - what a warm process's check (pickling.identity_free_digest) imports, loaded
import pwd          # before the drop: the owner may not be able to read this Python's own files (under /root)
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from ..statedir import open_for_owners


class OwnerError(Exception):
    """The task cannot run as its owner (no owner, no such account, root): the attempt fails saying so."""


@dataclass(frozen=True)
class Owner:
    name: str
    uid: int
    gid: int
    gids: tuple[int, ...]
    home: str

    def message(self) -> dict:
        """What the keeper hands the task process (JSON)."""
        return {"name": self.name, "uid": self.uid, "gid": self.gid, "gids": list(self.gids), "home": self.home}


def lookup(name: str | None) -> Owner:
    if not name:
        raise OwnerError("the task has no owner, and this queue runs every task as its owner's account")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise OwnerError(f"the task's owner {name!r} is not a Unix account on this machine; this queue runs "
                         "every task as its owner (TaskQueue.run_as_owner)") from None
    if entry.pw_uid == 0:
        raise OwnerError(f"the task's owner {name!r} is root: tasks never run as root")
    gids = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return Owner(entry.pw_name, entry.pw_uid, entry.pw_gid, gids, entry.pw_dir)


def become(who: dict) -> dict:
    """In the task process, before the payload's body is read: take the owner's uid, gids and home for
    good (real, effective and saved ids). Returns the environment entries that name the owner."""
    uid, gid = who["uid"], who["gid"]
    if os.getuid() != uid or os.geteuid() != uid:
        if uid == 0:
            raise OwnerError("tasks never run as root")
        os.setgroups(who["gids"])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise OwnerError(f"could not become {who['name']!r}")
    return {"HOME": who["home"], "USER": who["name"], "LOGNAME": who["name"]}


def prepare(attempt_dir: Path, owner: Owner, copies: dict[str, Path] | None = None) -> Path:
    """Hand the attempt folder to the owner; make the run folder for its result and error, with
    ``copies`` (name -> file: the payload for a warm process, which is the owner already) made while
    the folder is still root's, so no link the owner planted can redirect them."""
    task_dir = attempt_dir.parent
    os.chmod(task_dir, 0o711)  # root's: the owner passes through to their folders, lists nothing
    for entry in os.scandir(attempt_dir):  # the worker's files in it (limits spec): the owner reads them
        if entry.is_dir(follow_symlinks=False):  # an attempt run again (handed back at a shutdown)
            _give(Path(entry.path), owner)
        else:
            _give_file(entry.path, owner)
    _give(attempt_dir, owner)
    run = run_dir(attempt_dir)
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(mode=0o700)
    for name, source in (copies or {}).items():
        shutil.copyfile(source, run / name)
        _give_file(run / name, owner)
    _give(run, owner)
    return run


def _give_file(path, owner: Owner) -> None:
    """chown a plain file (never through a link, never a file with other names)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return
    try:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
            os.fchown(fd, owner.uid, owner.gid)
    finally:
        os.close(fd)


def collect(attempt_dir: Path, owner: Owner, moves: dict[str, Path]) -> None:
    """After the attempt: take the attempt folder back (:func:`_take_back`); take the run folder back,
    move each plain file the owner made to its place (``moves``: name in the run folder -> destination),
    and remove the rest."""
    _take_back(attempt_dir)
    run = run_dir(attempt_dir)
    try:
        fd = os.open(run, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    try:
        os.fchown(fd, 0, 0)  # from now on the owner's processes cannot add, swap or rename entries
        os.fchmod(fd, 0o700)
        for name, target in moves.items():
            try:
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            # The owner's, or root's (the task process's own error, written before it could become the owner).
            if stat.S_ISREG(info.st_mode) and info.st_nlink == 1 and info.st_uid in (owner.uid, 0):
                os.replace(name, target, src_dir_fd=fd)
    finally:
        os.close(fd)
    shutil.rmtree(run, ignore_errors=True)


def _take_back(attempt_dir: Path) -> None:
    """The attempt folder and its folders become root's again, so nothing can be swapped in any more, and
    whatever is not a plain file with one name goes: root reads and trims these files later (log,
    outputs), and must never follow the owner's link to a file of someone else's, nor block on a FIFO.
    The files stay the owner's."""
    try:
        fd = os.open(attempt_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    try:
        _take_back_folder(fd)
    finally:
        os.close(fd)


def _take_back_folder(fd: int) -> None:
    os.fchown(fd, 0, 0)
    os.fchmod(fd, 0o700)
    for name in os.listdir(fd):
        info = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            try:
                _take_back_folder(sub)
            finally:
                os.close(sub)
        elif not (stat.S_ISREG(info.st_mode) and info.st_nlink == 1):
            os.unlink(name, dir_fd=fd)


def run_dir(attempt_dir: Path) -> Path:
    return attempt_dir.parent / f".run-{attempt_dir.name}"


def _give(folder: Path, owner: Owner) -> None:
    os.chown(folder, owner.uid, owner.gid, follow_symlinks=False)
    os.chmod(folder, 0o700)


def check_can_run_as_owners(state) -> None:
    """run_as_owner (--run-as-owner): exit saying why if this worker cannot run tasks as their owners."""
    if os.geteuid() != 0:
        raise SystemExit(f"jupyter-taskq worker: --run-as-owner needs root (running as uid {os.geteuid()}): "
                         "only root can run each task as its owner's account")
    try:
        open_for_owners(state)
    except PermissionError as exc:
        raise SystemExit(f"jupyter-taskq worker: {exc}") from None
