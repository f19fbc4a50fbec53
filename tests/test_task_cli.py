"""`jupyter taskq ls|show|logs|cancel|retry|outputs|download|stats|top` run as a user runs them (the real
`jupyter` command, a subprocess) against a live server, and again after that server restarted."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import TOKEN, wait_for


def chatty(n):
    from jupyter_taskq import Output, progress

    for i in range(n):
        print(f"line {i}", flush=True)
    progress(n, n, "done")
    with open("report.txt", "w") as f:
        f.write("the report")
    Output("report.txt").save()
    return n


def fails():
    raise RuntimeError("broken on purpose")


def hold(path):
    import os
    import time

    print("holding", flush=True)
    while not os.path.exists(path):
        time.sleep(0.05)
    print("released", flush=True)
    return "held"


def taskq(*args: str, url: str | None = None, env_url: bool = True, cwd=None, timeout: float = 60):
    """``jupyter taskq ARGS`` as a subprocess; its (exit status, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER_TASKQ_", "JPY_"))}
    if url and env_url:
        env.update(JUPYTER_TASKQ_URL=url, JUPYTER_TASKQ_TOKEN=TOKEN)
    jupyter = os.path.join(os.path.dirname(sys.executable), "jupyter")
    done = subprocess.run([jupyter, "taskq", *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout)
    return done.returncode, done.stdout, done.stderr


def one_line_error(rc: int, err: str) -> str:
    assert rc != 0
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


def test_task_cli_against_a_live_server_and_after_a_restart(make_server, tmp_path):
    server = make_server(gpus=[], cpu_workers=1)
    client = server.client()
    url = server.url
    good = client.submit(chatty, (3,), name="report")
    bad = client.submit(fails, max_retries=0)
    assert good.result(timeout=60) == 3
    assert bad.wait(timeout=60) == "FAILED"

    # ls: a JSON list, filtered by status and name; a table with short ids
    rc, out, err = taskq("ls", "--json", url=url)
    assert rc == 0, err
    listed = json.loads(out)
    assert isinstance(listed, list) and {good.id, bad.id} <= {t["id"] for t in listed}
    rc, out, _ = taskq("ls", "--json", "--status", "failed", url=url)
    assert rc == 0 and [t["id"] for t in json.loads(out)] == [bad.id]
    rc, out, _ = taskq("ls", "--json", "--name", "report", url=url)
    assert [t["id"] for t in json.loads(out)] == [good.id]
    rc, out, _ = taskq("ls", url=url)
    assert rc == 0 and good.id[:8] in out and "COMPLETE" in out and "FAILED" in out and "STATUS" in out

    # show / logs / outputs / download, by full id and by the short id the table shows
    rc, out, _ = taskq("show", good.id[:8], url=url)
    assert rc == 0 and good.id in out and "COMPLETE" in out and "report.txt" in out
    rc, out, _ = taskq("show", bad.id, url=url)
    assert rc == 0 and "RuntimeError: broken on purpose" in out
    rc, out, _ = taskq("logs", good.id, url=url)
    assert rc == 0 and out == "line 0\nline 1\nline 2\n"
    rc, out, _ = taskq("outputs", good.id, "--json", url=url)
    assert rc == 0 and [o["name"] for o in json.loads(out)] == ["report.txt"]
    rc, out, _ = taskq("download", good.id, "report.txt", str(tmp_path / "got"), url=url)
    assert rc == 0 and (tmp_path / "got" / "report.txt").read_text() == "the report"
    assert out.strip() == str(tmp_path / "got" / "report.txt")

    # retry: a new task, its id printed
    rc, out, _ = taskq("retry", bad.id, url=url)
    assert rc == 0
    retried = out.strip()
    assert client.wait([retried], timeout=60)[0]["retry_of"] == bad.id

    # logs -f follows a running task to its end; top and stats see the busy worker; cancel
    release = tmp_path / "release"
    held = client.submit(hold, (str(release),))
    waiting = client.submit(hold, (str(release),))  # one CPU worker: this one waits
    wait_for(lambda: client.get(held.id)["status"] == "RUNNING", 30, 0.1, "the held task running")
    follower = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "jupyter"), "taskq", "logs", "-f",
                                 held.id, "--url", url, "--token", TOKEN], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    rc, out, _ = taskq("top", "--once", url=url)
    assert rc == 0 and "busy" in out and "hold" in out and held.id[:8] in out and waiting.id[:8] in out
    rc, out, _ = taskq("stats", "--json", url=url)
    assert rc == 0 and json.loads(out)["counts"]["RUNNING"] == 1
    rc, out, _ = taskq("cancel", "--all-pending", url=url)
    assert rc == 0 and out.strip() == f"cancelled {waiting.id}"
    release.write_text("go")
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    assert out == "holding\nreleased\n"
    rc, _, err = taskq("cancel", held.id, url=url)  # already COMPLETE: refused, one line, non-zero
    assert "already COMPLETE" in one_line_error(rc, err)

    # errors: one line on stderr, non-zero
    rc, _, err = taskq("show", "0" * 36, url=url)
    assert "no task with id" in one_line_error(rc, err)
    rc, _, err = taskq("ls", "--status", "DONE", url=url)
    assert rc == 2 and "unknown status" in one_line_error(rc, err)
    rc, _, err = taskq("ls", "--url", url, "--token", "wrong", url=None)
    assert "403" in one_line_error(rc, err)

    # the same commands after the server restarted, with --url and --token instead of the environment
    server.stop()
    rc, _, err = taskq("ls", "--url", url, "--token", TOKEN)
    assert "cannot reach the server" in one_line_error(rc, err)
    server.start()
    rc, out, err = taskq("ls", "--json", "--url", url, "--token", TOKEN)
    assert rc == 0, err
    assert {good.id, bad.id, retried, held.id, waiting.id} <= {t["id"] for t in json.loads(out)}
    rc, out, _ = taskq("logs", good.id, "--url", url, "--token", TOKEN)
    assert rc == 0 and out == "line 0\nline 1\nline 2\n"
    rc, out, _ = taskq("show", waiting.id, "--json", "--url", url, "--token", TOKEN)
    assert rc == 0 and json.loads(out)["status"] == "CANCELLED"
    again = client.submit(chatty, (1,))
    assert again.result(timeout=60) == 1
    rc, out, _ = taskq("ls", "--status", "COMPLETE", "--limit", "1", "--json", "--url", url, "--token", TOKEN)
    assert [t["id"] for t in json.loads(out)] == [again.id]


def test_task_cli_help_and_usage_errors():
    rc, out, _ = taskq("--help")
    assert rc == 0
    for command in ("ls", "show", "logs", "cancel", "retry", "outputs", "download", "stats", "top", "worker"):
        assert command in out
    rc, out, _ = taskq("worker", "--help")  # `jupyter taskq worker` is still the worker command
    assert rc == 0 and "--cpu-workers" in out
    rc, _, err = taskq("cancel")
    assert rc == 2 and "--all-pending" in one_line_error(rc, err)
    rc, _, err = taskq("top", "--interval", "nan")
    assert rc == 2 and one_line_error(rc, err)
    rc, _, err = taskq("ls", url="http://127.0.0.1:9/")
    assert "cannot reach the server" in one_line_error(rc, err)
