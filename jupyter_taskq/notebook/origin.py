"""Where a submission comes from: the notebook and the cell, so the panel can lead back to it.

A kernel started by Jupyter Server has ``JPY_SESSION_NAME`` = the notebook's file-system path (the
Lab extension turns it into a server path by its ``serverRoot``),
and JupyterLab (Notebook 7, VS Code too) puts the running cell's id in the execute request's
metadata (``cellId``), which ipykernel keeps as the parent message of the code running now. A
script, or a kernel without a front end, has neither: then nothing is recorded.
"""

from __future__ import annotations

import os

from ..options import MAX_NAME


def submitted_from() -> dict[str, str]:
    """``{"notebook": path, "cell_id": id}``, with only what is known (empty outside a notebook kernel)."""
    origin: dict[str, str] = {}
    try:
        from IPython import get_ipython
    except ImportError:
        return origin
    shell = get_ipython()
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return origin
    notebook = os.environ.get("JPY_SESSION_NAME")
    if notebook and len(notebook) <= MAX_NAME:  # a longer path is not worth refusing the submission over
        origin["notebook"] = notebook
    try:
        parent = kernel.get_parent("shell") or {}
    except Exception:  # noqa: BLE001 - an older ipykernel, or no request being answered
        parent = {}
    cell_id = (parent.get("metadata") or {}).get("cellId")
    if isinstance(cell_id, str) and 0 < len(cell_id) <= MAX_NAME:
        origin["cell_id"] = cell_id
    return origin
