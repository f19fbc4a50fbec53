"""What a ``%%task_queue`` cell becomes on the worker: run the source, return what it assigned.

Kept apart from the magic so the worker imports nothing of IPython to run a cell.
"""

from __future__ import annotations


def run_cell(source: str, namespace: dict, assigned: list[str]) -> dict:
    scope = dict(namespace)
    scope.setdefault("__name__", "__main__")
    exec(compile(source, "<task_queue cell>", "exec"), scope)  # noqa: S102 - the user's own cell
    return {name: scope[name] for name in assigned if name in scope}
