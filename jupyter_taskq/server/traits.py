"""List options that take every form traitlets users write.

A list option may come as ``--TaskQueue.x=a --TaskQueue.x=b``, as one Python literal list
(``--TaskQueue.x="['a', 'b']"``, the form traitlets' own docs used for years), as one JSON list
(``--TaskQueue.x='["a", "b"]'``) or as a list in a config file. Through ``jupyter server`` the
command-line forms reach the extension as a list of raw strings (the server parses them before it
knows the extension's traits), so a literal list arrives as one string item: each trait here expands
such an item, in ``from_string_list`` and in ``validate`` alike, and a malformed one is a
``TraitError`` that names the option (the extension reports it and answers 503 saying so).
"""

from __future__ import annotations

import ast
import json
from typing import Any

from traitlets import List, TraitError, Type, Union


def _literal_list(name: str | None, text: str) -> list:
    """``text`` as a JSON or Python literal list (a tuple reads as a list)."""
    try:
        value = json.loads(text)
    except ValueError:
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise TraitError(f"TaskQueue.{name}: {text!r} is not a list (write it as [\"a\", \"b\"], ['a', 'b'], "
                             f"or repeat --TaskQueue.{name}=a --TaskQueue.{name}=b)") from None
    if not isinstance(value, (list, tuple)):
        raise TraitError(f"TaskQueue.{name}: {text!r} is not a list")
    return list(value)


def _from_text(name: str | None, item_trait: Any, items: list) -> list:
    """Items given as text converted by the list's item trait (``"0"`` -> 0 for a list of Int)."""
    if item_trait is None:
        return items
    try:
        return [item_trait.from_string(item) if isinstance(item, str) else item for item in items]
    except (ValueError, TypeError) as exc:
        raise TraitError(f"TaskQueue.{name}: {exc}") from None


def expand_items(name: str | None, value: Any) -> Any:
    """A list whose items may be literal lists as text (one per command-line argument), flattened."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        return value  # not a list at all: the trait's own check says so
    items: list = []
    for item in value:
        if isinstance(item, str) and item.strip().startswith(("[", "(")):
            items += _literal_list(name, item)
        else:
            items.append(item)
    return items


class ListOption(List):
    """A ``List`` option that takes each form above; items given as text are converted by the item trait."""

    def from_string_list(self, s_list: list[str]) -> list:
        return _from_text(self.name, self._trait, expand_items(self.name, s_list))

    def validate(self, obj: Any, value: Any) -> Any:
        return super().validate(obj, expand_items(self.name, value))


class TextOrListOption(Union):
    """A ``Union`` of text and a list (``gpus``: "auto", "0,1", [0, 1]): one argument is text or a literal
    list, several (``--TaskQueue.gpus=0 --TaskQueue.gpus=1``) are a list."""

    def from_string_list(self, s_list: list[str]) -> Any:
        if len(s_list) == 1:
            return self.validate_text(s_list[0])
        lists = [trait for trait in self.trait_types if isinstance(trait, List)]
        return _from_text(self.name, lists[0]._trait if lists else None, expand_items(self.name, s_list))

    def validate_text(self, text: str) -> Any:
        return _literal_list(self.name, text) if text.strip().startswith(("[", "(")) else text

    def validate(self, obj: Any, value: Any) -> Any:
        if isinstance(value, str):
            value = self.validate_text(value)
        elif isinstance(value, (list, tuple)):
            value = expand_items(self.name, value)
        return super().validate(obj, value)


#: Short names accepted by ``c.TaskQueue.launcher_class``: dotted names, loaded by the trait as traitlets
#: loads any ``*_class`` (the server starts the launcher it is configured with; it imports no worker module).
LAUNCHER_NAMES = {
    "local": "jupyter_taskq.worker.launchers.local.LocalLauncher",
    "slurm": "jupyter_taskq.worker.launchers.slurm.SlurmLauncher",
}


class LauncherType(Type):
    """``TaskQueue.launcher_class``: a Launcher subclass, by short name ("local", "slurm") or dotted name."""

    def validate(self, obj, value):
        if isinstance(value, str):
            value = LAUNCHER_NAMES.get(value.strip().lower(), value)
        return super().validate(obj, value)
