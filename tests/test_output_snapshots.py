"""What a task saved with ``Output(path).save()`` is a snapshot taken at save(): later rewrites of the
same file (by another task, or by hand in the notebook) never change it, and the user's file is
left as it was (mode, link count)."""

from __future__ import annotations

import os
import stat

import pytest

from conftest import TaskqServer


def write_and_save(i):
    import pandas as pd

    from jupyter_taskq import Output

    pd.DataFrame({"task": [i] * 3, "value": [i * 10, i * 20, i * 30]}).to_csv("results.csv", index=False)
    Output("results.csv").save()
    return i


def save_folder():
    import os

    from jupyter_taskq import Output

    os.makedirs("plots", exist_ok=True)
    with open("plots/a.txt", "w") as f:
        f.write("first")
    Output("plots").save()
    return "saved"


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    """One CPU worker, so the six tasks run one after the other, as a notebook user would expect them to."""
    server = TaskqServer(tmp_path_factory.mktemp("snapshots"), gpus=[], cpu_workers=1).start()
    yield server
    server.close()


def test_six_mapped_tasks_each_download_their_own_results_csv(one_worker, tmp_path, monkeypatch):
    pytest.importorskip("pandas")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "results.csv").write_text("the user's own file\n")
    os.chmod(work / "results.csv", 0o644)

    handles = one_worker.client().submit_many(write_and_save, range(6))
    assert [h.result(timeout=120) for h in handles] == list(range(6))

    contents = [open(h.download("results.csv", f"{tmp_path}/dl/{h.id}/")).read() for h in handles]
    assert len(set(contents)) == 6
    for i, text in enumerate(contents):
        assert text.splitlines()[1] == f"{i},{i * 10}"

    user_file = os.stat(work / "results.csv")
    assert stat.S_IMODE(user_file.st_mode) == 0o644  # never chmod-ed to 0600
    assert user_file.st_nlink == 1  # never hard-linked into the output store

    (work / "results.csv").write_text("edited by hand in the notebook afterwards\n")
    again = handles[2].download("results.csv", f"{tmp_path}/again/")
    assert open(again).read() == contents[2]


def test_a_saved_folder_does_not_follow_later_edits(one_worker, tmp_path, monkeypatch):
    import zipfile

    monkeypatch.chdir(tmp_path)
    handle = one_worker.client().submit(save_folder)
    assert handle.result(timeout=60) == "saved"
    (tmp_path / "plots" / "a.txt").write_text("edited later")
    archive = zipfile.ZipFile(handle.download("plots.zip", f"{tmp_path}/dl/"))
    assert archive.read("a.txt") == b"first"


def test_download_into_a_folder_that_does_not_exist_yet(one_worker, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    handle = one_worker.client().submit(save_folder)
    assert handle.result(timeout=60) == "saved"
    path = handle.download("plots.zip", "downloads")
    assert os.path.isdir(tmp_path / "downloads") and path == os.path.join("downloads", "plots.zip")
    path = handle.download("plots.zip", "more/nested/")
    assert os.path.isfile(tmp_path / "more" / "nested" / "plots.zip")
    path = handle.download("plots.zip", "renamed.zip")  # a name with an extension is the file's own path
    assert os.path.isfile(tmp_path / "renamed.zip")
