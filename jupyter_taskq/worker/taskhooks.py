"""What a notebook habit does in a task: ``plt.show()`` keeps the figure, a ``tqdm`` bar drives progress.

In the kernel ``plt.show()`` draws the figure into the cell; a task has no screen (its backend is Agg:
runner.py), where ``show()`` would do nothing and the plot would be lost. Here each open figure is saved
as a PNG output of the task (``figure-1.png``...: the output list and download links show it) and closed.

A ``tqdm`` bar in a task writes ``\\r`` frames into the log; here every refresh of the bar also reports
``progress(n, total, desc)`` (rate-limited by :mod:`jupyter_taskq.taskio`), so the panel's and the
widget's progress bar move with it.

Both are installed before each call, and take effect when the task imports matplotlib.pyplot or tqdm
(importing either only to patch it would cost every task its import time). Standard library only: the
runner may load this file by path in another interpreter.
"""

from __future__ import annotations

import os
import sys
import tempfile

_count = 0  # figures saved by plt.show() in this attempt's process


def install() -> None:
    seeds = sys.modules.get("jupyter_taskq.seeds") or sys.modules.get("_jupyter_taskq_seeds")
    if seeds is None:
        return
    seeds.when_imported("matplotlib.pyplot", _patch_pyplot)
    seeds.when_imported("tqdm.std", _patch_tqdm)


def _taskio():
    try:
        from jupyter_taskq import taskio
    except ImportError:  # another interpreter without jupyter_taskq: nowhere to report to
        return None
    return taskio


def _patch_pyplot(pyplot) -> None:
    if getattr(pyplot.show, "_taskq", False):
        return

    def show(*args, **kwargs):
        """In a task: save each open figure as a PNG output of the task, then close it."""
        global _count
        taskio = _taskio()
        for number in pyplot.get_fignums():
            figure = pyplot.figure(number)
            if taskio is not None and taskio.attempt_dir() is not None:
                _count += 1
                folder = tempfile.mkdtemp(prefix="figure-", dir=str(taskio.attempt_dir()))
                path = os.path.join(folder, f"figure-{_count}.png")
                figure.savefig(path, format="png", bbox_inches="tight")
                taskio.Output(path).save()
                os.unlink(path)
                os.rmdir(folder)
            pyplot.close(figure)

    show._taskq = True  # type: ignore[attr-defined]  # a mark on a function object
    pyplot.show = show


def _patch_tqdm(std) -> None:
    cls = std.tqdm
    if getattr(cls.display, "_taskq", False):
        return
    display = cls.display

    def report(bar, *args, **kwargs):
        result = display(bar, *args, **kwargs)
        taskio = _taskio()
        if taskio is not None:
            try:
                taskio.progress(bar.n, bar.total, bar.desc or "")
            except Exception:  # noqa: BLE001 - a bar counting past 1e15, or backwards: the log still shows it
                pass
        return result

    report._taskq = True  # type: ignore[attr-defined]  # a mark on a function object
    cls.display = report
