"""Browser-test kit: a real `jupyter lab` with jupyter-taskq and its workers, and Debian's
Chromium driven headless by Playwright (never a downloaded browser). Screenshots go to
`test-artifacts/` at the repository root."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from conftest import TOKEN, TaskqServer, wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless=new", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


_shared: dict = {"users": 0}


@pytest.fixture(scope="module")
def browser():
    """One Chromium per browser test module. Each test module imports this fixture (its own definition), and
    a second sync Playwright started beside the first fails ("Sync API inside the asyncio loop"): so the
    definitions share one instance, stopped when the last user is done. Module-scoped, so it is stopped when
    its module ends: sync Playwright keeps an event loop running in the main thread, and a later test on the
    same xdist worker that runs its own loop (pytest-jupyter's, test_inprocess_api.py) failed beside it."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    if not _shared["users"]:
        _shared["playwright"] = sync_api.sync_playwright().start()
        _shared["chromium"] = _shared["playwright"].chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    _shared["users"] += 1
    try:
        yield _shared["chromium"]
    finally:
        _shared["users"] -= 1
        if not _shared["users"]:
            _shared.pop("chromium").close()
            _shared.pop("playwright").stop()


#: This checkout's build of the Lab extension (`cd labextension && npm run build`), which Lab is made to serve.
TREE_LABEXTENSION = Path(__file__).resolve().parents[1] / "jupyter_taskq" / "labextension"


def this_trees_labextension(root: Path) -> list[str]:
    """Lab serves the extension built in this checkout, ahead of any copy installed in the environment (which
    may be another checkout's): a folder of its own holding a link to the build, searched first."""
    if not (TREE_LABEXTENSION / "package.json").exists():
        return []  # not built here: whatever the environment has
    folder = root / "labextensions"
    folder.mkdir(exist_ok=True)
    (folder / "jupyter-taskq-labextension").symlink_to(TREE_LABEXTENSION, target_is_directory=True)
    return [f"--LabApp.extra_labextensions_path={folder}"]


def make_lab(root: Path, cpu_workers: int = 1, **kwargs) -> TaskqServer:
    """A JupyterLab TaskqServer (not started) with its own settings and workspaces, no news pop-up, serving
    this checkout's Lab extension."""
    settings = root / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')  # no news pop-up
    return TaskqServer(root, gpus=[], cpu_workers=cpu_workers, app="jupyterlab",
                       extra_args=["--LabApp.expose_app_in_browser=True",
                                   f"--LabApp.workspaces_dir={root / 'workspaces'}",
                                   f"--LabApp.user_settings_dir={root / 'settings'}",
                                   *this_trees_labextension(root)], **kwargs)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab with the extension, one CPU worker (so a second task visibly waits PENDING)."""
    server = make_lab(tmp_path_factory.mktemp("lab")).start()
    yield server
    server.stop()


@pytest.fixture
def page(browser, lab, request):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-final.png"), full_page=True)
    context.close()


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def write_notebook(root: Path, name: str, cells: list[str]) -> str:
    nb = {
        "cells": [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {},
                   "outputs": [], "source": src} for i, src in enumerate(cells)],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                     "language_info": {"name": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    (root / name).write_text(json.dumps(nb))
    return name


def open_notebook(page, lab: TaskqServer, name: str) -> None:
    """Open ``name`` in a fresh workspace and wait until its kernel is idle."""
    workspace = uuid.uuid4().hex[:8]
    page.goto(f"{lab.url}lab/workspaces/{workspace}/tree/{name}?reset&token={TOKEN}")
    page.wait_for_function(
        """(name) => {
            const app = window.jupyterapp;
            const w = app && app.shell.currentWidget;
            if (!w || !w.context || w.context.path !== name || !w.context.isReady) return false;
            const kernel = w.sessionContext.session && w.sessionContext.session.kernel;
            return Boolean(kernel && kernel.status === 'idle');
        }""", arg=name, timeout=60_000)


def open_lab(page, lab: TaskqServer) -> None:
    """Open Lab in a fresh workspace (no notebook) and wait until the app has started."""
    workspace = uuid.uuid4().hex[:8]
    page.goto(f"{lab.url}lab/workspaces/{workspace}?reset&token={TOKEN}")
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.started && "
                           "document.querySelector('.jp-SideBar .lm-TabBar-tab')", timeout=60_000)
    page.evaluate("() => window.jupyterapp.started")


def run_command(page, command: str, args: dict | None = None) -> None:
    """Fire a Lab command without waiting for its promise (a dialog may be waiting on a click)."""
    page.evaluate("([command, args]) => { window.jupyterapp.commands.execute(command, args); }", [command, args or {}])


def set_theme(page, theme: str) -> None:
    """'JupyterLab Light' or 'JupyterLab Dark'; waits until the page shows it."""
    run_command(page, "apputils:change-theme", {"theme": theme})
    light = "true" if "Light" in theme else "false"
    page.wait_for_function(f"() => document.body.dataset.jpThemeLight === '{light}'", timeout=20_000)


def run_cell(page, index: int) -> None:
    """Start running cell ``index`` of the open notebook without waiting for it to finish."""
    page.evaluate(
        """(index) => {
            const app = window.jupyterapp;
            app.shell.currentWidget.content.activeCellIndex = index;
            app.commands.execute('notebook:run-cell');
        }""", index)


def cell(page, index: int):
    return page.locator(".jp-Notebook .jp-Cell").nth(index)


__all__ = ["browser", "lab", "page", "cell", "make_lab", "open_lab", "open_notebook", "run_cell", "run_command",
           "screenshot", "set_theme", "wait_for", "write_notebook"]
