"""The payload format: what can be sent, and a clear error naming what cannot."""

from __future__ import annotations

import io
import sqlite3

import pytest

from jupyter_taskq.payload import PayloadError, dumps_call, load_call, read_header_bytes

DB = sqlite3.connect(":memory:")  # a live connection cannot be sent anywhere


def round_trip(fn, args=(), kwargs=None):
    header, fn2, args2, kwargs2 = load_call(io.BytesIO(dumps_call(fn, args, kwargs)))
    return header, fn2(*args2, **kwargs2)


def test_closures_lambdas_and_kwargs_round_trip():
    base = 10

    def closure(x, scale=1):
        return (x + base) * scale

    assert round_trip(closure, (1,), {"scale": 2})[1] == 22
    assert round_trip(lambda x: x * 3, (4,))[1] == 12


def test_header_carries_the_calling_world_without_unpickling():
    import os
    import sys

    header = read_header_bytes(dumps_call(len, ([1, 2],)))
    assert header["python"] == sys.executable and header["cwd"] == os.getcwd()
    assert header["sys_path"] == sys.path
    assert "CUDA_VISIBLE_DEVICES" not in header["env"]


def test_unpicklable_argument_is_named():
    with pytest.raises(PayloadError, match=r"argument 0 of the call \(a sqlite3.Connection\)"):
        dumps_call(print, (sqlite3.connect(":memory:"),))
    with pytest.raises(PayloadError, match=r"keyword argument 'rows' \(a generator\)"):
        dumps_call(print, (), {"rows": (i for i in range(3))})


def test_unpicklable_global_and_closure_variable_are_named():
    def uses_global():
        return DB.total_changes

    with pytest.raises(PayloadError, match=r"global variable 'DB' used by .*uses_global"):
        dumps_call(uses_global)

    cursor = sqlite3.connect(":memory:").cursor()

    def uses_closure():
        return cursor.fetchall()

    with pytest.raises(PayloadError, match=r"closure variable 'cursor' of .*uses_closure"):
        dumps_call(uses_closure)


@pytest.mark.parametrize("data", [b"", b"hello", b"JTQPAY1\n\x00\x00\x00\x05nope!", b"JTQPAY1\n\x00\x00\x00\x02[]"])
def test_foreign_bytes_are_refused(data):
    with pytest.raises(PayloadError):
        read_header_bytes(data)
