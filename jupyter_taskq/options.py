"""Every task option, declared once: name, type, default, sane range, help and magic flag.

The decorator's and the client's keywords, the ``%%task_queue`` flags, the
server's REST validation, the task JSON and the README's table of options are all
derived from :data:`OPTIONS`, so an option is added (or its range changed) here and
nowhere else. ``tests/test_options.py`` fails when any of them disagree.

Every number that comes from outside is checked here to be finite and within a
range that no later arithmetic can overflow (dates, backoff, sleeps): a request
can never store a value that stops the queue.
"""

from __future__ import annotations

import inspect
import json
import math
import re
from dataclasses import dataclass
from collections.abc import Callable, Mapping
from typing import Any

DAY = 86400.0
MAX_SECONDS = 365 * DAY  # timeout, expires, result_ttl: a year
MAX_RETRY_DELAY = 7 * DAY
MAX_RETRY_WAIT = 30 * DAY  # the longest wait between two attempts, backoff included
MAX_NAME = 200
MAX_URL = 2000
MAX_CPU = 4096.0
MAX_MEMORY_MIB = 64 * 1024 * 1024  # 64 TiB
MAX_RETRY_FOR = 100
MAX_GPUS = 64  # GPUs one task may ask for (the most any one machine has; checked against live machines too)
#: Pagination of ``GET tasks`` (and log offsets): integers JavaScript and SQLite both hold exactly.
MAX_LIMIT = 1000
MAX_OFFSET = 2 ** 53 - 1


class OptionError(ValueError):
    """A task option (or query parameter) out of its range; the message names it and the range."""


@dataclass(frozen=True)
class TaskOption:
    name: str
    kind: str  # int | seconds | number | text | url | gpu | memory | names | callable | image
    help: str
    default: Any = None  # what the decorator and client send by default (None: nothing, the server decides)
    server_default: str | None = None  # the TaskQueue traitlet that supplies the default
    default_text: str | None = None  # the default as the README says it
    minimum: float | None = None
    maximum: float | None = None
    flag: str | None = None  # the %%task_queue flag
    rest: bool = True  # sent to the server (False: travels inside the payload)
    annotation: str = "Any"

    @property
    def bounds(self) -> tuple[float, float]:
        """``(minimum, maximum)`` of a numeric option (each has both)."""
        if self.minimum is None or self.maximum is None:
            raise TypeError(f"option {self.name!r} has no range")
        return self.minimum, self.maximum

    @property
    def range_text(self) -> str:
        if self.kind in ("int", "seconds", "number"):
            unit = " seconds" if self.kind == "seconds" else ""
            return f"between {_num(self.minimum)} and {_num(self.maximum)}{unit}"
        if self.kind == "memory":
            return (f"between {_num(self.minimum)} and {_num(self.maximum)} MiB"
                    " (an integer of MiB, or \"512M\", \"16G\")")
        return ""


def _num(value: float | None) -> str:
    return f"{value:.10g}" if isinstance(value, float) else str(value)


OPTIONS: tuple[TaskOption, ...] = (
    TaskOption("name", "text", "A name shown in the panel and lists (the function's name by default). With the magic, "
               "also the notebook variable the handle is bound to.", flag="--name", default_text="the function's name",
               annotation="str | None"),
    TaskOption("gpu", "gpu", "0: no GPU; N: N GPUs of any model on one machine; a model name such as \"A100\": one "
               "GPU of that model; \"A100:4\": four of that model on one machine. A task asking for N GPUs starts "
               "when all N are free on one machine and sees exactly them (CUDA_VISIBLE_DEVICES, "
               "jupyter_taskq.gpus()).",
               default=0, flag="--gpu", annotation="int | str"),
    TaskOption("cpu", "number", "CPU cores the task may use (fractional allowed): its process is pinned to "
               "ceil(cpu) cores and the thread-count variables (OMP_NUM_THREADS, ...) are set to match.",
               minimum=0.01, maximum=MAX_CPU, flag="--cpu", default_text="no limit", annotation="float | None"),
    TaskOption("memory", "memory", "Memory limit in MiB (or \"512M\", \"16G\"): past it the attempt ends with "
               "\"exceeded memory=N MiB\" and counts as a failed attempt.", minimum=1, maximum=MAX_MEMORY_MIB,
               flag="--memory", default_text="no limit", annotation="int | str | None"),
    TaskOption("max_retries", "int", "Retries after a failed attempt.", server_default="max_retries",
               minimum=0, maximum=100, flag="--retries", annotation="int | None"),
    TaskOption("retry_delay", "seconds", "Seconds before the next attempt of a failed task.",
               server_default="retry_delay", minimum=0.0, maximum=MAX_RETRY_DELAY, flag="--retry-delay",
               annotation="float | None"),
    TaskOption("retry_backoff", "number", "Multiplier of retry_delay after each failed attempt; the longest wait "
               f"between two attempts must stay within {MAX_RETRY_WAIT / DAY:g} days.",
               server_default="retry_backoff", minimum=1.0, maximum=100.0, flag="--retry-backoff",
               annotation="float | None"),
    TaskOption("retry_for", "names", "Retry only exceptions of these types (and subclasses): classes or dotted names "
               "such as \"requests.ConnectionError\"; any other exception fails the task at once. Default: every "
               "failure is retried. A crash, memory kill or lost worker is always retried.",
               flag="--retry-for", default_text="every failure", annotation="list | None"),
    TaskOption("timeout", "seconds", "Seconds an attempt may run before it is killed (TIMEOUT).",
               minimum=0.001, maximum=MAX_SECONDS, flag="--timeout", default_text="none", annotation="float | None"),
    TaskOption("expires", "seconds", "Seconds the task may wait to start (then EXPIRED).",
               minimum=0.001, maximum=MAX_SECONDS, flag="--expires", default_text="never", annotation="float | None"),
    TaskOption("priority", "int", "Higher runs first among waiting tasks.", default=0, minimum=-1_000_000,
               maximum=1_000_000, flag="--priority", annotation="int"),
    TaskOption("callback_url", "url", "An http(s) URL the server POSTs the finished task to (signed).",
               flag="--callback-url", default_text="none", annotation="str | None"),
    TaskOption("result_ttl", "seconds", "Seconds a finished task's result, payload, log and outputs are kept.",
               server_default="result_ttl", minimum=0.0, maximum=MAX_SECONDS, flag="--result-ttl",
               annotation="float | None"),
    TaskOption("keep_warm_seconds", "seconds", default=0.0,
               help="Seconds a finished task's process stays alive, with its imports, to serve the next attempt of "
               "the same function from the same notebook (0: no warm process).",
               minimum=0.0, maximum=7 * DAY, flag="--keep-warm", annotation="float | None"),
    TaskOption("notebook", "text", "The notebook the task was submitted from (its file path); set "
               "by the kernel (JPY_SESSION_NAME), none from a script. The panel's \"Go to cell\" opens it.",
               default_text="the submitting notebook", annotation="str | None"),
    TaskOption("cell_id", "text", "The id of the notebook cell the task was submitted from; set by the kernel from "
               "the running cell (its execute request's cellId), none from a script.",
               default_text="the submitting cell", annotation="str | None"),
    TaskOption("on_start", "callable", "A function run in the task process before the first attempt it serves "
               "(with keep_warm_seconds once per warm process, else before each attempt), e.g. to load a model; the "
               "task reads its return value with jupyter_taskq.on_start_value(). The magic flag names a notebook "
               "function. Travels in the payload, not over REST.", flag="--on-start", rest=False,
               default_text="none", annotation="Callable | None"),
    TaskOption("image", "image", "The Python environment the task runs in: "
               "jupyter_taskq.Image(python_packages=[...], python_version=, commands=[...], env_vars={...}) is "
               "built with uv once per machine (or per cluster with a shared c.TaskQueue.image_dir) and cached; "
               "Image(kernel=\"name\") or Image(python=\"/path\") use an "
               "environment that exists. Over REST a JSON spec; the magic flag takes a requirements file or a "
               "kernelspec name.", flag="--image", default_text="the kernel's own interpreter",
               annotation="Image | dict | None"),
)

BY_NAME: dict[str, TaskOption] = {o.name: o for o in OPTIONS}
NAMES = tuple(BY_NAME)
REST_NAMES = tuple(o.name for o in OPTIONS if o.rest)
#: Options stored with the task (store columns of the same name); ``gpu`` also sets the pool.
STORED = REST_NAMES


# -- checking values ---------------------------------------------------------------------------------------------
def check_int(name: str, value: Any, minimum: int, maximum: int) -> int:
    """An integer from a request (JSON number or query-string text) within [minimum, maximum]."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"[+-]?\d{1,30}", text):
            raise OptionError(f"option {name!r} must be an integer between {minimum} and {maximum}, got {value!r}")
        value = int(text)
    if not isinstance(value, int):
        raise OptionError(f"option {name!r} must be an integer between {minimum} and {maximum}, got {value!r}")
    if not minimum <= value <= maximum:
        raise OptionError(f"option {name!r} must be between {minimum} and {maximum}, got {value}")
    return value


def check_number(name: str, value: Any, minimum: float, maximum: float, unit: str = "") -> float:
    """A finite number within [minimum, maximum]; ``inf``, ``nan`` and ``1e400`` are refused."""
    what = f"a number between {_num(minimum)} and {_num(maximum)}{unit}"
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise OptionError(f"option {name!r} must be {what}, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OptionError(f"option {name!r} must be {what}, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or not minimum <= value <= maximum:
        raise OptionError(f"option {name!r} must be {what}, got {value!r}")
    return value


_MEMORY = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(I?B?)", re.IGNORECASE)
_UNIT_MIB = {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


def parse_memory(name: str, value: Any) -> int:
    """MiB as an integer (Beam's unit), or text: "2048", "512M", "16G", "16GiB"."""
    option = BY_NAME["memory"]
    if isinstance(value, str):
        match = _MEMORY.fullmatch(value.strip())
        if not match:
            raise OptionError(f"option {name!r} must be {option.range_text}, got {value!r}")
        mib = float(match.group(1)) * _UNIT_MIB[match.group(2).upper()]
        value = math.ceil(mib) if mib == mib and mib < 1e18 else value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    low, high = option.bounds
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise OptionError(f"option {name!r} must be {option.range_text}, got {value!r}")
    return value


_GPU_TEXT = (f"option 'gpu' must be 0, a number of GPUs up to {MAX_GPUS}, a GPU model name (\"A100\")"
             " or \"MODEL:N\" (\"A100:4\")")


def check_gpu(value: Any) -> int | str:
    """``gpu=``: a count of any GPUs (0..MAX_GPUS), ``"MODEL"`` (one of that model) or ``"MODEL:N"``.

    Canonical forms come back: an int, ``"MODEL"`` for one GPU of a model, ``"MODEL:N"`` for N > 1 (so
    ``"A100:1"`` is ``"A100"``, ``"2"`` is ``2``). :func:`gpu_request` splits any of them."""
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("+-").isdigit():
            value = text
        else:
            model, colon, count = text.rpartition(":")
            if not colon:
                model, count = text, "1"
            model = model.strip()
            if not model or len(model) > MAX_NAME or not count.strip().isdigit():
                raise OptionError(f"{_GPU_TEXT}, got {value!r}")
            n = int(count.strip()) if len(count.strip()) < 10 else 0
            if not 1 <= n <= MAX_GPUS:
                raise OptionError(f"{_GPU_TEXT}, got {value!r}")
            return model if n == 1 else f"{model}:{n}"
    try:
        return check_int("gpu", value, 0, MAX_GPUS)
    except OptionError:
        raise OptionError(f"{_GPU_TEXT}, got {value!r}") from None


def gpu_request(value: Any) -> tuple[str | None, int]:
    """``(model or None, count)`` of a checked ``gpu=`` value (``0`` -> ``(None, 0)``)."""
    if isinstance(value, str):
        model, colon, count = value.rpartition(":")
        if colon and count.isdigit():
            return model, int(count)
        return value, 1
    return None, int(value or 0)


_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def exception_name(kind: type) -> str:
    """The dotted name a worker reports for an exception type (``ValueError``, ``requests.exceptions.X``)."""
    return f"{kind.__module__}.{kind.__qualname__}".removeprefix("builtins.")


def parse_names(name: str, value: Any) -> list[str]:
    """``retry_for``: exception classes or dotted names, as a list or one comma-separated text."""
    if isinstance(value, str):
        value = [v for v in (p.strip() for p in value.split(",")) if v]
    if isinstance(value, (type, str)):
        value = [value]
    if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= MAX_RETRY_FOR:
        raise OptionError(f"option {name!r} must be a list of 1 to {MAX_RETRY_FOR} exception types or dotted names")
    names = []
    for item in value:
        if isinstance(item, type) and issubclass(item, BaseException):
            item = exception_name(item)
        if not isinstance(item, str) or len(item) > MAX_NAME or not _DOTTED.fullmatch(item):
            raise OptionError(f"option {name!r}: {item!r} is not an exception type or a dotted name such as "
                              "'requests.ConnectionError'")
        names.append(item.removeprefix("builtins."))
    return list(dict.fromkeys(names))


def retry_for_matches(retry_for: list[str] | None, raised: list[str] | None) -> bool:
    """Whether an attempt that raised an exception whose class and bases are ``raised`` (dotted names, as
    the worker reports them) may be retried. No ``retry_for``: every failure is. A name may be the full
    dotted name, the bare class name of a built-in, or a package's public alias of it
    (``requests.ConnectionError`` for ``requests.exceptions.ConnectionError``)."""
    if not retry_for:
        return True
    if raised is None:  # not an exception of the task's (a crash, a memory kill): retried like any failure
        return True
    for wanted in retry_for:
        top, _, short = wanted.rpartition(".")
        for name in raised:
            if name == wanted:
                return True
            module, _, qualname = name.rpartition(".")
            if top and qualname == short and (module == top or module.startswith(top.split(".")[0] + ".")):
                return True
    return False


_URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")


def check_url(name: str, value: Any) -> str:
    if (not isinstance(value, str) or len(value) > MAX_URL or not value.lower().startswith(("http://", "https://"))
            or _URL_FORBIDDEN.search(value)):
        raise OptionError(f"option {name!r} must be an http:// or https:// URL of at most {MAX_URL} characters, "
                          "without spaces or control characters")
    return value


MAX_IMAGE_TEXT = 256 * 1024


def check_image(value: Any) -> dict:
    """``image``: an Image, its spec, or the spec as JSON text (a query parameter); see jupyter_taskq/image.py."""
    from . import image

    if isinstance(value, str):
        if len(value) > MAX_IMAGE_TEXT:
            raise OptionError(f"option 'image' must be a JSON spec of at most {MAX_IMAGE_TEXT} characters")
        try:
            value = json.loads(value)
        except ValueError:
            raise OptionError("option 'image' must be a JSON object (an image spec), got text that is not JSON") \
                from None
    try:
        return image.check_spec(value)
    except image.ImageError as exc:
        raise OptionError(str(exc)) from None


def check(option: TaskOption, value: Any) -> Any:
    """One option's value from a request, checked and normalised (None: not given)."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "null") and option.kind != "text"):
        return None
    name = option.name
    if option.kind == "int":
        low, high = option.bounds
        return check_int(name, value, int(low), int(high))
    if option.kind == "seconds":
        return check_number(name, value, *option.bounds, " seconds")
    if option.kind == "number":
        return check_number(name, value, *option.bounds)
    if option.kind == "memory":
        return parse_memory(name, value)
    if option.kind == "names":
        return parse_names(name, value)
    if option.kind == "url":
        return check_url(name, value)
    if option.kind == "text":
        if not isinstance(value, str) or len(value) > MAX_NAME:
            raise OptionError(f"option {name!r} must be a string of at most {MAX_NAME} characters")
        return value or None
    if option.kind == "gpu":
        return check_gpu(value)
    if option.kind == "image":
        return check_image(value)
    if option.kind == "callable":
        if not callable(value):
            raise OptionError(f"option {name!r} must be a function")
        return value
    raise AssertionError(option.kind)


def validate(raw: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict:
    """REST options from a request, each checked, server defaults filled in; raises OptionError."""
    unknown = sorted(set(raw) - set(REST_NAMES))
    if unknown:
        raise OptionError(f"unknown option(s) {', '.join(map(repr, unknown))}; known options: {', '.join(REST_NAMES)}")
    opts = {}
    for option in OPTIONS:
        if not option.rest:
            continue
        value = check(option, raw.get(option.name))
        if value is None and option.server_default:
            value = defaults[option.server_default]
        if value is None and option.default is not None:
            value = option.default
        opts[option.name] = value
    longest = retry_wait(opts["retry_delay"] or 0, opts["retry_backoff"] or 1, opts["max_retries"] or 0)
    if longest > MAX_RETRY_WAIT:
        raise OptionError(
            f"options 'retry_delay' x 'retry_backoff' ** ('max_retries' - 1) give a wait of {longest:.3g} s before "
            f"the last retry; it must be at most {MAX_RETRY_WAIT:.10g} s ({MAX_RETRY_WAIT / DAY:g} days)")
    return opts


def retry_wait(delay: float, backoff: float, retries: int) -> float:
    """The wait before the last of ``retries`` retries (inf when it overflows)."""
    if retries < 1 or delay <= 0:
        return 0.0
    try:
        return delay * backoff ** (retries - 1)
    except OverflowError:
        return math.inf


def stored_problem(task: Mapping[str, Any]) -> str | None:
    """Why a task row already in the store could not be run (a value no check would let in now), or None."""
    for option in OPTIONS:
        if not option.rest or option.kind in ("gpu", "text", "url", "names"):
            continue
        value = task.get(option.name)
        if value is None:
            continue
        try:
            check(option, value)
        except OptionError as exc:
            return str(exc)
    for column in ("created_at", "expires_at"):
        value = task.get(column)
        if value is not None and (not isinstance(value, (int, float)) or not math.isfinite(value)
                                  or not 0 <= value <= 1e11):
            return f"{column} {value!r} is not a time"
    return None


def json_value(value: Any) -> Any:
    """A stored value as JSON may carry it: a number that is not finite becomes null (never Infinity/NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# -- the kernel side: keywords, flags, docs ---------------------------------------------------------------------
def client_options(given: Mapping[str, Any], caller: str) -> tuple[dict, dict]:
    """(REST options to send, payload options) from keywords; an unknown keyword is a TypeError."""
    unknown = sorted(set(given) - set(NAMES))
    if unknown:
        raise TypeError(f"{caller}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
                        f"task options are: {', '.join(NAMES)}")
    rest: dict[str, Any] = {}
    payload: dict[str, Any] = {}
    for option in OPTIONS:
        value = given.get(option.name, option.default)
        if value is None or (option.default is not None and value == option.default):
            continue
        try:
            value = check(option, value)  # fail in the kernel, before anything is serialised or sent
        except OptionError as exc:
            raise ValueError(str(exc)) from None
        if option.kind == "names":
            value = ",".join(value)
        if option.kind == "image":  # the kernel's own check too: python_version (pickles do not cross minors)
            from . import image

            try:
                value = json.dumps(image.for_kernel(value), sort_keys=True)
            except image.ImageError as exc:
                raise ValueError(str(exc)) from None
        (rest if option.rest else payload)[option.name] = value
    return rest, payload


def keyword_parameters() -> list[inspect.Parameter]:
    """The keyword-only parameters of ``@task_queue`` and ``Client.submit``, one per option."""
    return [inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=o.default, annotation=o.annotation)
            for o in OPTIONS]


def with_option_keywords(fn: Callable, leading: list[inspect.Parameter]) -> Callable:
    """Give ``fn`` (which takes ``**options``) the signature its callers and IDEs see."""
    signature = inspect.Signature([*leading, *keyword_parameters()])
    fn.__signature__ = signature  # type: ignore[attr-defined]  # inspect.signature() reads it; no type declares it
    fn.__doc__ = (fn.__doc__ or "") + "\n\nTask options:\n" + "\n".join(
        f"    {o.name}: {o.help}" for o in OPTIONS)
    return fn


def magic_flags(fn: Callable) -> Callable:
    """Decorate a cell magic with one IPython ``@argument`` per option that has a flag."""
    from IPython.core.magic_arguments import argument

    for option in reversed(OPTIONS):
        if option.flag:
            fn = argument(option.flag, dest=option.name, type=str, default=None, help=option.help)(fn)
    return fn


def from_magic_args(args: Any, namespace: Mapping[str, Any]) -> dict:
    """Keyword options from parsed magic flags; ``--on-start f`` names a notebook function."""
    given = {}
    for option in OPTIONS:
        if option.flag and getattr(args, option.name, None) is not None:
            value = getattr(args, option.name)
            if option.kind == "callable":
                if value not in namespace or not callable(namespace[value]):
                    raise ValueError(f"{option.flag} {value}: no function named {value!r} in the notebook")
                value = namespace[value]
            if option.kind == "image":
                from . import image

                value = image.from_magic(value)
            given[option.name] = value
    return given


def default_text(option: TaskOption) -> str:
    if option.default_text is not None:
        return option.default_text
    if option.server_default:
        return f"`c.TaskQueue.{option.server_default}`"
    return repr(option.default)


def markdown_table() -> str:
    """The README's table of task options (``python -m jupyter_taskq.options`` rewrites it)."""
    lines = ["| option | magic flag | default | range | meaning |", "|---|---|---|---|---|"]
    for o in OPTIONS:
        where = "" if o.rest else " (decorator and magic only)"
        flag = f"`{o.flag}`" if o.flag else "-"
        lines.append(f"| `{o.name}` | {flag} | {default_text(o)} | {o.range_text or '-'} | {o.help}{where} |")
    return "\n".join(lines)


README_START = "<!-- task-options:start (generated by python -m jupyter_taskq.options) -->"
README_END = "<!-- task-options:end -->"


def readme_with_table(text: str) -> str:
    start, end = text.index(README_START) + len(README_START), text.index(README_END)
    return text[:start] + "\n" + markdown_table() + "\n" + text[end:]


if __name__ == "__main__":
    import pathlib
    import sys

    readme = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    readme.write_text(readme_with_table(readme.read_text()))
    print(f"options table written to {readme}")
