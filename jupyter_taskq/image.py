"""``Image``: the Python environment a task asks to run in (Beam's ``image=``), and its one check.

A task option like any other (declared in :mod:`jupyter_taskq.options`): the decorator,
``%%task_queue --image`` and REST all end in :func:`check_spec`, which turns an
:class:`Image`, or the JSON spec REST sends, into one normalised dict, every field bounded.
The worker builds it (:mod:`jupyter_taskq.worker.images`); this module is the kernel's side
and imports nothing but the standard library, so ``import jupyter_taskq`` stays cheap.

Two kinds of image:

* built: ``python_packages`` / ``commands`` / ``env_vars`` on an interpreter of
  ``python_version``, installed with uv into a cache keyed by the spec's hash;
* existing: ``kernel="name"`` (that kernelspec's interpreter) or ``python="/path/to/python"``,
  used as they are (only ``env_vars`` may be added).

Notebook code travels by value and pickles do not cross Python minor versions, so a built
image's ``python_version`` defaults to the submitting kernel's (:func:`for_kernel`), and a
different one is refused at submit (:func:`version_problem`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from typing import Any

MAX_PACKAGES = 500
MAX_COMMANDS = 50
MAX_ENV = 200
MAX_ITEM = 4000  # characters of one package specifier, command or variable value
MAX_PATH = 1000

_VERSION = re.compile(r"3\.\d{1,2}")
_KERNEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,199}")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # tab allowed; no newline (one requirement per entry)
FIELDS = ("python_packages", "python_version", "commands", "env_vars", "kernel", "python")


class ImageError(ValueError):
    """An image spec that cannot be built or used; the message says which field and why."""


class Image:
    """The environment a task runs in. ``Image(python_packages=["torch==2.4"])`` builds one (once per
    machine, or per cluster with a shared ``image_dir``); ``Image(kernel="py312")`` and
    ``Image(python="/opt/env/bin/python")`` use one that exists."""

    def __init__(self, python_packages: Iterable[str] | None = None, python_version: str | None = None,
                 commands: Iterable[str] | None = None, env_vars: Mapping[str, str] | None = None,
                 kernel: str | None = None, python: str | None = None):
        self.python_packages = list(python_packages or [])
        self.python_version = python_version
        self.commands = list(commands or [])
        self.env_vars = dict(env_vars or {})
        self.kernel = kernel
        self.python = python
        check_spec(self.spec())  # a bad field fails here, where it was written

    def add_python_packages(self, packages: Iterable[str]) -> Image:
        """A new image with these packages too (Beam's builder style: returns the image)."""
        return self._with(python_packages=[*self.python_packages, *_listed(packages)])

    def add_commands(self, commands: Iterable[str]) -> Image:
        """A new image that also runs these shell commands, once, after the packages are installed."""
        return self._with(commands=[*self.commands, *_listed(commands)])

    def with_envs(self, env_vars: Mapping[str, str]) -> Image:
        return self._with(env_vars={**self.env_vars, **env_vars})

    @classmethod
    def from_requirements(cls, path: str | os.PathLike, **fields: Any) -> Image:
        """An image with the requirements of a ``requirements.txt`` (read here, in the kernel: the file's
        lines travel in the spec, so the worker needs no copy). Comments and blank lines are skipped;
        pip options (``-r``, ``--index-url``) are refused: the worker uses its machine's pip sources."""
        packages = []
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                line = line.split(" #", 1)[0].strip()
                if not line or line.startswith("#"):
                    continue
                if line.startswith("-"):
                    raise ImageError(f"{os.fspath(path)} line {number}: pip options such as {line.split()[0]!r} are "
                                     "not supported in an image; list requirements only (the worker installs from "
                                     "its machine's pip configuration)")
                packages.append(line)
        return cls(python_packages=[*packages, *fields.pop("python_packages", [])], **fields)

    def spec(self) -> dict:
        return {"python_packages": self.python_packages, "python_version": self.python_version,
                "commands": self.commands, "env_vars": self.env_vars, "kernel": self.kernel, "python": self.python}

    def _with(self, **changes) -> Image:
        return Image(**{**self.spec(), **changes})

    def __eq__(self, other) -> bool:
        return isinstance(other, Image) and check_spec(self.spec()) == check_spec(other.spec())

    def __repr__(self) -> str:
        given = {k: v for k, v in self.spec().items() if v}
        return f"Image({', '.join(f'{k}={v!r}' for k, v in given.items())})"


def _listed(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _text(field: str, value: Any, limit: int = MAX_ITEM) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit or _CONTROL.search(value):
        raise ImageError(f"image {field}: each entry must be a non-empty string of at most {limit} characters "
                         f"on one line, got {value!r:.80}")
    return value.strip()


def check_spec(value: Any) -> dict:
    """The one check of an image: an :class:`Image` or its JSON spec (a dict) -> a normalised spec dict.
    Raises :class:`ImageError` naming the field."""
    if isinstance(value, Image):
        value = value.spec()
    if not isinstance(value, Mapping):
        raise ImageError("option 'image' must be an Image or its JSON spec (an object with python_packages, "
                         f"python_version, commands, env_vars, kernel or python), got {type(value).__name__}")
    unknown = sorted(set(value) - set(FIELDS))
    if unknown:
        raise ImageError(f"image: unknown field(s) {', '.join(map(repr, unknown))}; fields are {', '.join(FIELDS)}")
    packages = value.get("python_packages") or []
    commands = value.get("commands") or []
    env_vars = value.get("env_vars") or {}
    if isinstance(packages, str) or not isinstance(packages, list) or len(packages) > MAX_PACKAGES:
        raise ImageError(f"image python_packages must be a list of at most {MAX_PACKAGES} requirement strings")
    if isinstance(commands, str) or not isinstance(commands, list) or len(commands) > MAX_COMMANDS:
        raise ImageError(f"image commands must be a list of at most {MAX_COMMANDS} shell commands")
    if not isinstance(env_vars, Mapping) or len(env_vars) > MAX_ENV:
        raise ImageError(f"image env_vars must be a mapping of at most {MAX_ENV} variables")
    spec: dict = {"python_packages": [], "python_version": None, "commands": [], "env_vars": {}, "kernel": None,
                  "python": None}
    for item in packages:
        item = _text("python_packages", item)
        if item.startswith("-"):  # never an installer option: the worker's pip sources decide where from
            raise ImageError(f"image python_packages: {item!r} is an installer option, not a requirement")
        spec["python_packages"].append(item)
    spec["commands"] = [_text("commands", c) for c in commands]
    for name, text in env_vars.items():
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise ImageError(f"image env_vars: {name!r} is not a variable name")
        if not isinstance(text, str) or len(text) > MAX_ITEM or "\x00" in text:
            raise ImageError(f"image env_vars[{name!r}] must be a string of at most {MAX_ITEM} characters")
        spec["env_vars"][name] = text
    version = value.get("python_version")
    if version is not None:
        version = str(version).strip() if isinstance(version, (str, float)) else version
        if not isinstance(version, str) or not _VERSION.fullmatch(version):
            raise ImageError(f"image python_version must be a minor version such as \"3.11\", got {version!r}")
        spec["python_version"] = version
    kernel, python = value.get("kernel"), value.get("python")
    if kernel is not None:
        if not isinstance(kernel, str) or not _KERNEL.fullmatch(kernel):
            raise ImageError(f"image kernel must be a kernelspec name (letters, digits, . _ -), got {kernel!r}")
        spec["kernel"] = kernel
    if python is not None:
        if (not isinstance(python, str) or not python.startswith("/") or len(python) > MAX_PATH
                or _CONTROL.search(python)):
            raise ImageError(f"image python must be the absolute path of an interpreter, got {python!r}")
        spec["python"] = os.path.normpath(python)
    if kernel and python:
        raise ImageError("image: give kernel= or python=, not both")
    if (kernel or python) and (spec["python_packages"] or spec["commands"] or spec["python_version"]):
        raise ImageError("image: kernel= and python= name an environment that exists; python_packages, commands "
                         "and python_version are for an image that is built (use one or the other)")
    return spec


def is_built(spec: Mapping) -> bool:
    """Built by the worker (packages/commands), as opposed to an existing kernel or interpreter."""
    return not (spec.get("kernel") or spec.get("python"))


def spec_json(spec: Mapping) -> str:
    """The canonical text of a spec: what its hash is of."""
    return json.dumps(check_spec(spec), sort_keys=True, separators=(",", ":"))


def kernel_minor() -> str:
    return "{}.{}".format(*sys.version_info[:2])


def for_kernel(value: Any) -> dict:
    """The spec a submitting kernel sends: checked, a built image's ``python_version`` set to this kernel's
    when not given, and a different one refused (the function is pickled by value under this Python)."""
    spec = check_spec(value)
    if is_built(spec):
        spec["python_version"] = spec["python_version"] or kernel_minor()
        problem = version_problem(kernel_minor(), spec["python_version"], "the image's python_version")
    else:
        interpreter = local_interpreter(spec)
        found = interpreter and interpreter_version(interpreter)
        problem = found and version_problem(kernel_minor(), found, f"the image's interpreter {interpreter}")
    if problem:
        raise ImageError(problem)
    return spec


def version_problem(pickled: str, running: str, what: str) -> str | None:
    """Why a call pickled under Python ``pickled`` cannot run under ``running`` (minor versions), or None."""
    pickled_minor, running_minor = ".".join(pickled.split(".")[:2]), ".".join(running.split(".")[:2])
    if pickled_minor == running_minor:
        return None
    return (f"not sent: this notebook's code is pickled by value under Python {pickled_minor}, and {what} is Python "
            f"{running_minor}; pickled functions do not cross Python minor versions. Use an image of Python "
            f"{pickled_minor}, or run the notebook in a Python {running_minor} kernel")


def local_interpreter(spec: Mapping) -> str | None:
    """The interpreter of an existing-environment image, if this machine has it (else None)."""
    if spec.get("python"):
        return spec["python"] if os.access(spec["python"], os.X_OK) else None
    if spec.get("kernel"):
        return kernel_interpreter(spec["kernel"])
    return None


def kernel_interpreter(name: str) -> str | None:
    """The Python a kernelspec starts (its argv[0] when that is an interpreter), or None if not found here."""
    try:
        from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    except ImportError:
        return None
    try:
        spec = KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        return None
    argv = list(spec.argv or [])
    if not argv:
        return None
    exe = argv[0]
    same_name = os.path.basename(exe) == os.path.basename(sys.executable)
    if exe in ("python", "python3", "{python}") or same_name and not os.path.isabs(exe):
        return sys.executable  # ipykernel's default spec: "the Python that runs the server", here this one
    if not os.path.isabs(exe):
        import shutil

        exe = shutil.which(exe) or exe
    return exe if os.access(exe, os.X_OK) else None


_VERSIONS: dict[str, str | None] = {}


def interpreter_version(python: str) -> str | None:
    """``"3.11.7"`` for an interpreter, or None when it does not run (a pyenv shim of an unselected version)."""
    if python not in _VERSIONS:
        try:
            out = subprocess.run([python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                                 capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
            _VERSIONS[python] = out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None
        except (OSError, subprocess.SubprocessError):
            _VERSIONS[python] = None
    return _VERSIONS[python]


def from_magic(text: str) -> Image:
    """``%%task_queue --image X``: a requirements file when ``X`` is a file, else a kernelspec's name."""
    if os.path.isfile(text):
        return Image.from_requirements(text)
    if not _KERNEL.fullmatch(text):
        raise ImageError(f"--image {text}: neither a requirements file nor a kernelspec name")
    return Image(kernel=text)
