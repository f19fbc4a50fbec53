"""Building and caching task images (``image=``) with uv, once per machine or per shared ``image_dir``.

Layout of ``image_dir`` (``c.TaskQueue.image_dir``; by default ``<state_dir>/images``)::

    <hash>/          the virtual environment (built in place: a venv is not relocatable)
    <hash>.json      written last, atomically: the image is ready (spec, packages, python, bytes)
    <hash>.log       the build's output (each task that waited for it copies it into its own log)
    <hash>.failed    a failed build's error: tasks with that spec fail with it for FAILED_FOR seconds
    <hash>.lock      flock: exclusive while building or evicting, shared while a task uses the image
    uv-cache/        uv's own cache, kept (on the same filesystem, so environments hard-link from it)

The lock is ``flock`` on a file in ``image_dir`` itself, so on a shared filesystem (NFS v4 maps it to a
byte-range lock) one machine builds and the others wait and then use the result; a machine that may not
write there still uses images that are built. A built image gets the spec's packages plus what the task
runner needs (cloudpickle and dill at this worker's versions: the runner's other modules are loaded by
path, see runner.py), so a task's code runs on the image's interpreter with the image's packages.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

from .. import image as image_spec
from . import taskside
from ..imagecache import cache_bytes, image_dir, last_used, list_images  # noqa: F401
from ..imagecache import read_json as _read_json

log = logging.getLogger("jupyter_taskq.worker")

FAILED_FOR = 600.0  # seconds a failed build's error answers for its spec (then a new task builds again)
BUILD_TIMEOUT = 3600.0
FORMAT = 1  # part of the hash: a change of layout or runner requirements builds afresh


class ImageBuildError(Exception):
    """The image cannot be built or used; ``str()`` is the installer's own error (or ours, naming why)."""


# -- uv and pip's configuration --------------------------------------------------------------------------------
def uv_bin() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


#: pip setting -> (uv variable, how several values join). uv reads none of pip's configuration.
_PIP_TO_UV = {"index-url": "UV_DEFAULT_INDEX", "extra-index-url": "UV_EXTRA_INDEX_URL", "find-links": "UV_FIND_LINKS",
              "constraint": "UV_CONSTRAINT", "cert": "SSL_CERT_FILE", "client-cert": "SSL_CLIENT_CERT",
              "trusted-host": "UV_INSECURE_HOST", "timeout": "UV_HTTP_TIMEOUT",
              "default-timeout": "UV_HTTP_TIMEOUT", "no-index": "UV_NO_INDEX"}
_SECTION_RANK = {"global": 0, "install": 1, ":env:": 2}  # pip's own precedence: the environment wins


@contextlib.contextmanager
def _noop():
    yield


_pip_env: dict | None = None


def pip_sources_env() -> dict[str, str]:
    """uv's variables for the package sources pip uses on this machine (``pip config list``: its files and
    PIP_* variables): index, extra indexes, find-links, constraints, certificates. Asked once per worker."""
    global _pip_env
    if _pip_env is None:
        try:
            out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                                 timeout=60, stdin=subprocess.DEVNULL).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        _pip_env = translate_pip_config(out)
    return dict(_pip_env)


def translate_pip_config(listing: str) -> dict[str, str]:
    """``pip config list`` lines (``global.extra-index-url='a b'``) -> uv's environment variables."""
    chosen: dict[str, tuple[int, str]] = {}
    for line in listing.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        section, _, name = key.rpartition(".")
        rank = _SECTION_RANK.get(section)
        if rank is None or name not in _PIP_TO_UV:
            continue
        value = value.strip().strip("'\"")
        if name not in chosen or rank >= chosen[name][0]:
            chosen[name] = (rank, value)
    env = {}
    for name, (_rank, value) in chosen.items():
        variable = _PIP_TO_UV[name]
        if variable == "UV_NO_INDEX":
            if value.lower() in ("1", "true", "yes", "on"):
                env[variable] = "1"
            continue
        env[variable] = " ".join(value.split())
    return env


def uv_env(directory: Path, no_build: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.update(pip_sources_env())
    # pip merges every index; uv by default takes the first index that lists a package at all.
    env.setdefault("UV_INDEX_STRATEGY", "unsafe-best-match")
    env.setdefault("UV_CACHE_DIR", str(directory / "uv-cache"))
    env["UV_PYTHON_DOWNLOADS"] = "never"  # only interpreters that are on the machine
    env["UV_NO_PROGRESS"] = "1"
    env.pop("VIRTUAL_ENV", None)
    if no_build:  # a hub's worker runs as root: install wheels only, no package's build code
        env["UV_NO_BUILD"] = "1"
    return env


# -- interpreters ----------------------------------------------------------------------------------------------
def _candidates():
    """Interpreters to try, the worker's own first; pyenv's shims are skipped (one for a version that is
    not selected fails when called, slowly): pyenv's versions folder is read instead."""
    yield sys.executable
    yield getattr(sys, "_base_executable", None)
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if "/shims" not in folder:
            yield from sorted(glob.glob(os.path.join(folder, "python3.[0-9]*")))
    yield from sorted(glob.glob("/usr/bin/python3.[0-9]*")) + sorted(glob.glob("/usr/local/bin/python3.[0-9]*"))
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    yield from sorted(glob.glob(os.path.join(root, "versions", "3.*", "bin", "python3")))


def reachable_by_all(path: str) -> bool:
    """Whether any account can run ``path`` (it and every folder above it: o+x). On a hub an image's
    interpreter runs as the task's owner: one under root's home (a pyenv in /root) cannot."""
    real = os.path.realpath(path)
    try:
        if not os.stat(real).st_mode & 0o001:
            return False
        parent = os.path.dirname(real)
        while parent != "/":
            if not os.stat(parent).st_mode & 0o001:
                return False
            parent = os.path.dirname(parent)
    except OSError:
        return False
    return True


def interpreters(wanted: str | None = None, for_all: bool = False) -> dict[str, str]:
    """``{"3.11": path}``: the Python interpreters on this machine that run; with ``wanted``, the search
    stops at the first of that minor version; ``for_all``: only those every account can run (a hub)."""
    found: dict[str, str] = {}
    for path in _candidates():
        if not path or path.endswith("-config") or not os.access(path, os.X_OK):
            continue
        if for_all and not reachable_by_all(path):
            continue
        version = image_spec.interpreter_version(path)
        if version:
            found.setdefault(".".join(version.split(".")[:2]), path)
            if wanted in found:
                break
    return found


def find_interpreter(version: str, for_all: bool = False) -> str:
    if version == image_spec.kernel_minor() and (not for_all or reachable_by_all(sys.executable)):
        return sys.executable  # the worker's own, as a kernel of that version most likely is
    there = interpreters(version, for_all)
    if version in there:
        return there[version]
    ordered = sorted(there.items(), key=lambda i: tuple(map(int, i[0].split("."))))
    listed = ", ".join(f"{v} ({p})" for v, p in ordered) or "none"
    raise ImageBuildError(f"no Python {version} interpreter on this machine ({os.uname().nodename}); the Pythons "
                          f"here are: {listed}")


# -- hashes and records ------------------------------------------------------------------------------------------
def runner_requirements() -> list[str]:
    """What the task runner needs in an image: the pickling libraries at this worker's versions."""
    from importlib.metadata import version

    return [f"cloudpickle=={version('cloudpickle')}", f"dill=={version('dill')}"]


def image_hash(spec: dict) -> str:
    text = json.dumps({"spec": image_spec.check_spec(spec), "runner": runner_requirements(), "format": FORMAT},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _write_json(path: Path, record: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    with open(tmp, "w") as f:
        json.dump(record, f)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _tree_bytes(path: Path) -> int:
    """Disk blocks of the environment, each hard-linked file (shared with uv's cache) counted once."""
    total, seen = 0, set()
    for folder, _dirs, files in os.walk(path):
        for name in files:
            try:
                info = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            key = (info.st_dev, info.st_ino)
            if key in seen:
                continue
            seen.add(key)
            total += info.st_blocks * 512
    return total


# -- the lease: an image in use --------------------------------------------------------------------------------
class Lease:
    """An image in use by one attempt: a shared flock on its lock file, so eviction leaves it alone."""

    def __init__(self, fd: int | None, python: str, environment: dict, run_env: dict):
        self.fd, self.python, self.environment, self.run_env = fd, python, environment, run_env

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _lock_fd(directory: Path, digest: str) -> int:
    path = directory / f"{digest}.lock"
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return os.open(path, os.O_RDONLY)  # a read-only image_dir: flock works on any descriptor


# -- building --------------------------------------------------------------------------------------------------
def prepare(spec: dict, directory: Path, say: Callable[[str], None], no_build: bool = False,
            limit: int | None = None) -> Lease:
    """The image for ``spec``, built here if no machine has built it yet (under the lock); returns the lease
    the attempt holds while it runs. Raises :class:`ImageBuildError` with the installer's own message."""
    spec = image_spec.check_spec(spec)
    if not image_spec.is_built(spec):
        return _existing(spec, directory)
    digest = image_hash(spec)
    short = digest[:12]
    directory.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(directory, 0o755)  # task processes (run as their owners on a hub) read images, never write them
    fd = _lock_fd(directory, digest)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        if _ready(directory, digest):
            return _lease(fd, directory, digest, spec)
        fcntl.flock(fd, fcntl.LOCK_UN)
        _refuse_recent_failure(directory, digest)
        say(f"[jupyter-taskq: building image {short}… (or waiting for the machine that builds it)]\n")
        fcntl.flock(fd, fcntl.LOCK_EX)  # one builder per spec, on every machine sharing image_dir
        if not _ready(directory, digest):
            _refuse_recent_failure(directory, digest)
            _build(spec, directory, digest, no_build)
            _evict(directory, limit if limit is not None else cache_bytes(), keep=digest)
        fcntl.flock(fd, fcntl.LOCK_SH)  # from exclusive to shared: in use, not being built
        return _lease(fd, directory, digest, spec)
    except BaseException:
        os.close(fd)
        raise


def _ready(directory: Path, digest: str) -> bool:
    return (directory / f"{digest}.json").exists() and (directory / digest / "bin" / "python").exists()


def _refuse_recent_failure(directory: Path, digest: str) -> None:
    failed = _read_json(directory / f"{digest}.failed")
    if failed and time.time() - failed.get("at", 0) < FAILED_FOR:
        raise ImageBuildError(failed.get("error") or "the image's build failed")


def _lease(fd: int, directory: Path, digest: str, spec: dict) -> Lease:
    record = _read_json(directory / f"{digest}.json") or {}
    with contextlib.suppress(OSError):
        os.utime(directory / f"{digest}.json")  # last use (a read-only image_dir: the builder's time stays)
    prefix = directory / digest
    environment = {"hash": digest, "packages": record.get("packages", []), "python": record.get("python_version")}
    return Lease(fd, str(prefix / "bin" / "python"), environment, _run_env(spec, str(prefix), directory))


def _run_env(spec: dict, prefix: str | None, directory: Path, runner_path: str | None = None) -> dict:
    """What the task's environment gets over the notebook's (runner.py applies it): the image's variables,
    its prefix (VIRTUAL_ENV, PATH), for an existing interpreter a folder with the runner's libraries, and
    the folder with the task-side ``jupyter_taskq`` (:mod:`.taskside`)."""
    return {"env_vars": spec.get("env_vars") or {}, "prefix": prefix, "runner_path": runner_path,
            "taskside_path": taskside.task_side_path(directory)}


def runner_libraries(directory: Path) -> str | None:
    """A folder holding only links to this worker's cloudpickle and dill, appended to an existing
    interpreter's sys.path (its own copies, if any, come first): the runner needs nothing else there."""
    import cloudpickle
    import dill

    folder = directory / f".runner-libs-{os.uname().nodename}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for module in (cloudpickle, dill):
            link = folder / module.__name__
            target = os.path.dirname(module.__file__)
            if not link.is_symlink() or os.readlink(link) != target:
                link.unlink(missing_ok=True)
                link.symlink_to(target)
    except OSError:
        return None
    return str(folder)


def _build(spec: dict, directory: Path, digest: str, no_build: bool) -> None:
    prefix = directory / digest
    log_path = directory / f"{digest}.log"
    started = time.monotonic()
    with open(log_path, "w") as out:
        os.chmod(log_path, 0o644)

        def run(argv: list[str], env: dict, what: str, shell: bool = False) -> str:
            out.write(f"$ {argv if shell else ' '.join(argv)}\n")
            out.flush()
            done = subprocess.run(argv, env=env, stdout=subprocess.PIPE if what == "freeze" else out,
                                  stderr=out, stdin=subprocess.DEVNULL, text=True, timeout=BUILD_TIMEOUT,
                                  shell=shell, cwd=str(prefix) if shell else None)
            if done.returncode != 0:
                out.flush()
                raise ImageBuildError(_tail(log_path, what))
            return done.stdout or ""

        try:
            if spec["commands"] and no_build:
                raise ImageBuildError("image commands are not run by a hub-wide queue (they would run as the "
                                      "worker's account, not yours); install packages only")
            python = find_interpreter(spec["python_version"] or image_spec.kernel_minor(), for_all=no_build)
            shutil.rmtree(prefix, ignore_errors=True)  # a build interrupted before its record was written
            env = uv_env(directory, no_build)
            uv = uv_bin()
            run([uv, "venv", "--quiet", "--python", python, str(prefix)], env, "creating the environment")
            target = ["--python", str(prefix / "bin" / "python")]
            run([uv, "pip", "install", *target, *spec["python_packages"], *runner_requirements()], env,
                "installing the packages")
            search_path = f"{prefix / 'bin'}{os.pathsep}{os.path.dirname(uv)}{os.pathsep}{env.get('PATH', '')}"
            command_env = {**env, **spec["env_vars"], "VIRTUAL_ENV": str(prefix), "PATH": search_path}
            for command in spec["commands"]:
                run(command, command_env, f"the command {command!r}", shell=True)
            frozen = run([uv, "pip", "freeze", *target], env, "freeze")
            packages = [line.strip() for line in frozen.splitlines() if line.strip() and not line.startswith("#")]
            version = image_spec.interpreter_version(str(prefix / "bin" / "python")) or ""
            record: dict[str, Any] = {"hash": digest, "spec": spec, "packages": packages, "python_version": version,
                      "built_on": os.uname().nodename, "built_at": time.time(), "bytes": _tree_bytes(prefix),
                      "build_seconds": round(time.monotonic() - started, 2)}
            out.write(f"[jupyter-taskq: image {digest[:12]} built in {record['build_seconds']} s, "
                      f"{record['bytes'] / 1e6:.1f} MB, {len(packages)} packages]\n")
        except ImageBuildError as exc:
            out.write(f"[jupyter-taskq: image {digest[:12]} failed: {exc}]\n")
            out.flush()
            shutil.rmtree(prefix, ignore_errors=True)
            _write_json(directory / f"{digest}.failed", {"at": time.time(), "error": str(exc)})
            raise
        except BaseException:
            shutil.rmtree(prefix, ignore_errors=True)
            raise
    (directory / f"{digest}.failed").unlink(missing_ok=True)
    _write_json(directory / f"{digest}.json", record)  # last: the image is ready


def _tail(log_path: Path, what: str, lines: int = 30) -> str:
    """The installer's own error: the end of its output (uv prints the resolver's explanation there)."""
    try:
        text = log_path.read_text(errors="replace").splitlines()
    except OSError:
        text = []
    body = [line for line in text if not line.startswith("$ ")][-lines:]
    return f"{what} failed:\n" + "\n".join(body)


def _evict(directory: Path, limit: int, keep: str) -> list[str]:
    """Least recently used images go until the cache is within ``limit`` bytes; an image in use (a task
    holds its shared lock) or the one just built stays. Returns the hashes removed."""
    images = sorted(list_images(directory), key=lambda i: i["last_used"] or 0)
    total = sum(i["bytes"] or 0 for i in images)
    removed = []
    for image in images:
        if total <= limit:
            break
        if image["hash"] == keep:
            continue
        fd = _lock_fd(directory, image["hash"])
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # in use
        try:
            (directory / f"{image['hash']}.json").unlink(missing_ok=True)  # first: no one starts on it now
            shutil.rmtree(directory / image["hash"], ignore_errors=True)
            (directory / f"{image['hash']}.log").unlink(missing_ok=True)
            total -= image["bytes"] or 0
            removed.append(image["hash"])
            log.info("image %s evicted (least recently used; cache over %d bytes)", image["hash"][:12], limit)
        finally:
            os.close(fd)
    return removed


# -- existing environments -------------------------------------------------------------------------------------
def _existing(spec: dict, directory: Path) -> Lease:
    """``Image(kernel=...)`` / ``Image(python=...)``: that interpreter as it is; its packages as ``uv pip freeze``
    lists them (no lock: nothing is built or evicted)."""
    if spec.get("kernel"):
        python = image_spec.kernel_interpreter(spec["kernel"])
        if python is None:
            raise ImageBuildError(f"no kernelspec named {spec['kernel']!r} with a Python interpreter on this machine "
                                  f"({os.uname().nodename}); `jupyter kernelspec list` shows those there are")
    else:
        python = spec["python"]
        if not os.access(python, os.X_OK):
            raise ImageBuildError(f"no interpreter {python} on this machine ({os.uname().nodename})")
    version = image_spec.interpreter_version(python)
    if version is None:
        raise ImageBuildError(f"the interpreter {python} does not run")
    try:
        frozen = subprocess.run([uv_bin(), "pip", "freeze", "--python", python], capture_output=True, text=True,
                                timeout=120, stdin=subprocess.DEVNULL, env={**os.environ, "UV_NO_PROGRESS": "1"}).stdout
    except (OSError, subprocess.SubprocessError):
        frozen = ""
    packages = [line.strip() for line in frozen.splitlines() if line.strip() and not line.startswith("#")]
    digest = hashlib.sha256(json.dumps({"spec": spec, "python": os.path.realpath(python), "packages": packages},
                                       sort_keys=True).encode()).hexdigest()
    return Lease(None, python, {"hash": digest, "packages": packages, "python": version},
                 _run_env(spec, None, directory, runner_libraries(directory)))
