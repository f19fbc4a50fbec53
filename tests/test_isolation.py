"""Tasks stay apart: an attempt never sees what another task did to its process.

Every attempt runs in a fresh process forked from the clean worker (unless the task asked
for a warm process with keep_warm_seconds), so builtins additions, signal handlers, umask,
nice value, recursion limit, patched modules and closed standard streams die with the task.
"""

from __future__ import annotations


def pollute():
    """Everything issue 12 saw leak from one task into the next."""
    import builtins
    import json
    import os
    import signal
    import sys

    builtins.leaked_from_another_task = True
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.umask(0)
    os.nice(5)
    sys.setrecursionlimit(200)
    json.dumps = lambda *args, **kwargs: "patched"
    os.close(1)
    os.close(2)
    return "polluted"


def observe():
    import builtins
    import json
    import os
    import signal
    import sys

    umask = os.umask(0o022)
    os.umask(umask)
    print("stdout works")
    return {
        "leaked": hasattr(builtins, "leaked_from_another_task"),
        "sigterm": str(signal.getsignal(signal.SIGTERM)),
        "umask": umask,
        "nice": os.nice(0),
        "recursion_limit": sys.getrecursionlimit(),
        "json": json.dumps([1]),
    }


def test_a_task_never_sees_what_an_earlier_task_did_to_its_process(make_server):
    client = make_server(gpus=[], cpu_workers=1).client()  # one worker: every task runs on it
    before = client.submit(observe).result(timeout=30)
    assert before["leaked"] is False and before["json"] == "[1]"
    for _ in range(2):
        assert client.submit(pollute).result(timeout=30) == "polluted"
        after = client.submit(observe)
        assert after.result(timeout=30) == before
        assert "stdout works" in after.logs()
