import os

from conftest import wait_for


def add(a, b):
    return a + b


def test_submit_and_result(client):
    handle = client.submit(add, (2, 3))
    assert handle.result(timeout=30) == 5
    info = handle.info()
    assert info["status"] == "COMPLETE"
    assert info["attempt"] == 1
    assert info["worker"].startswith("cpu")
