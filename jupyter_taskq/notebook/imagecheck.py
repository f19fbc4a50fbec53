"""A result from an image, in the kernel: say which package differs, in one line.

Objects of packages installed in an image are pickled by reference (module and name), so the
kernel must import the same package to rebuild them. When the kernel lacks it, or has another
version, this names the package and both versions instead of a bare ``ModuleNotFoundError``.
"""

from __future__ import annotations

import pickletools
import re
import sys
import warnings
from importlib import metadata


class ImageMismatch(ImportError):
    """A result holds an object of a package that the kernel lacks, or has at another version."""


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def referenced_modules(data: bytes) -> set[str]:
    """Top-level modules whose objects the pickle names (GLOBAL / STACK_GLOBAL opcodes)."""
    found: set[str] = set()
    strings: list[str] = []
    try:
        for opcode, arg, _pos in pickletools.genops(data):
            if opcode.name == "GLOBAL" and isinstance(arg, str):
                found.add(arg.split(" ", 1)[0].split(".")[0])
            elif opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8") and isinstance(arg, str):
                strings.append(arg)
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.add(strings[-2].split(".")[0])
    except Exception:  # noqa: BLE001 - a partial scan still names what it saw
        pass
    return found


def _distributions_of(module: str) -> list[str]:
    """Distribution names that provide ``module`` in this kernel (``sklearn`` -> ``scikit-learn``)."""
    try:
        return list(metadata.packages_distributions().get(module, []))
    except Exception:  # noqa: BLE001
        return []


def mismatches(data: bytes, packages: list[str]) -> list[str]:
    """One line per package the result references whose version in the kernel differs from the image's."""
    image = {}
    for line in packages:
        name, sep, version = line.partition("==")
        if sep:
            image[_normal(name)] = (name, version)
    lines = []
    for module in sorted(referenced_modules(data)):
        if module in sys.builtin_module_names or module in ("builtins", "copyreg", "__main__", "jupyter_taskq",
                                                            "cloudpickle", "dill", "_codecs", "collections"):
            continue
        candidates = [_normal(d) for d in _distributions_of(module)] or [_normal(module)]
        hit = next((c for c in candidates if c in image), None)
        if hit is None:
            continue
        name, wanted = image[hit]
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = None
        if have != wanted:
            there = f"this kernel has {name} {have}" if have else f"this kernel does not have {name}"
            lines.append(f"the result holds {module} objects: the task's image has {name}=={wanted}, {there}")
    return lines


def load_checked(data: bytes, environment: dict | None, load):
    """``load(data)``, saying in one line which image package differs when it fails (a warning when it
    loads all the same)."""
    lines = mismatches(data, (environment or {}).get("packages") or []) if environment else []
    try:
        value = load(data)
    except Exception as exc:
        if lines:
            raise ImageMismatch(lines[0] + f" ({type(exc).__name__}: {exc})") from None
        raise
    for line in lines:
        warnings.warn(line, stacklevel=3)
    return value
