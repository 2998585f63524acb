"""procfs_ct/memtrim.py: the trim after a rendering is freed runs off the releasing thread."""
from __future__ import annotations

import threading

from procfs_ct.memtrim import DeferredTrim


def test_a_request_returns_at_once_and_the_trim_runs_on_a_thread_of_its_own():
    ran_on, done, gate = [], threading.Event(), threading.Event()

    def trim() -> None:
        ran_on.append(threading.get_ident())
        gate.wait(10)                       # a trim in progress: requests still return
        done.set()

    trimmer = DeferredTrim(trim, delay=0.0)
    trimmer.request()
    trimmer.request()                       # while the first may be running: no wait
    gate.set()
    assert done.wait(10)
    assert ran_on and threading.get_ident() not in ran_on


def test_requests_made_during_a_trim_make_one_more_trim_not_one_each():
    calls, entered, gate, second = [], threading.Event(), threading.Event(), threading.Event()

    def trim() -> None:
        calls.append(1)
        if len(calls) == 1:
            entered.set()
            gate.wait(10)
        else:
            second.set()

    trimmer = DeferredTrim(trim, delay=0.0)
    trimmer.request()
    assert entered.wait(10)
    for _ in range(5):
        trimmer.request()
    gate.set()
    assert second.wait(10)
    assert len(calls) == 2
