"""The Lab extension's step in a source install (`pip install .`): pyproject.toml's jupyter-builder hook calls
:func:`build`, which runs hatch-jupyter-builder's npm build unless Node.js is missing or too old.

Without a usable Node.js the npm builder failed with ``Could not find cmd (npm) in path`` and pip with a
bare ``metadata-generation-failed``, saying neither that it is the Lab extension that needs Node nor which
version. Here the build stops first with one line that says both, and the two ways on: install Node.js,
or install without the Lab panel (``SKIP_JUPYTER_BUILDER=1``, hatch-jupyter-builder's own switch). A
wheel carries the built extension, so installing one needs no Node.js at all.
"""

from __future__ import annotations

import re
import shutil
import subprocess

NODE_MINIMUM = (20, 19)


def node_problem() -> str | None:
    """Why this machine cannot build the extension (no node or npm on the PATH, an older node), or None."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = [name for name, path in (("node", node), ("npm", npm)) if path is None]
        return f"{' and '.join(missing)} {'are' if len(missing) > 1 else 'is'} not on the PATH"
    try:
        version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"`node --version` failed ({exc})"
    found = re.match(r"v?(\d+)\.(\d+)", version)
    if not found or (int(found.group(1)), int(found.group(2))) < NODE_MINIMUM:
        return f"node is {version or 'of an unknown version'}"
    return None


def build(target_name: str, version: str, **kwargs) -> None:
    problem = node_problem()
    if problem is not None:
        wanted = ".".join(map(str, NODE_MINIMUM))
        raise SystemExit(
            f"jupyter-taskq: the JupyterLab extension (labextension/) is built from source with Node.js >= {wanted} "
            f"and npm, and {problem}. Install Node.js >= {wanted} and run the install again, or install without "
            "the Lab panel: SKIP_JUPYTER_BUILDER=1 pip install . (the queue and the kernel client work without it; "
            "a wheel built elsewhere carries the extension and needs no Node.js)")
    from hatch_jupyter_builder import npm_builder

    npm_builder(target_name, version, **kwargs)
