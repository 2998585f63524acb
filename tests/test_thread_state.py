"""fuse_compat.keep_thread_state(): a thread that Python did not start (libfuse's workers)
keeps its Python thread state from one callback to the next, as a Python thread does.

A real foreign thread is made here as libfuse makes its workers: a small C function
(compiled with cc) starts a pthread that calls a ctypes callback three times, with no
Python frame around the calls.  What a thread state holds (threading.local) shows whether
the next call found the same one."""
from __future__ import annotations

import ctypes
import shutil
import subprocess
import threading

import pytest

from procfs_ct.fuse_compat import keep_thread_state

CALLER = r"""
#include <pthread.h>
typedef void (*callback)(void);
static void *thrice(void *cb) {
    for (int i = 0; i < 3; i++) ((callback)cb)();
    return 0;
}
int on_a_new_thread(callback cb) {
    pthread_t thread;
    if (pthread_create(&thread, 0, thrice, (void *)cb)) return -1;
    return pthread_join(thread, 0);
}
"""
CALLBACK = ctypes.CFUNCTYPE(None)


@pytest.fixture(scope="module")
def caller(tmp_path_factory):
    if shutil.which("cc") is None:
        pytest.skip("needs cc")
    where = tmp_path_factory.mktemp("caller")
    source, library = where / "caller.c", where / "caller.so"
    source.write_text(CALLER)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(library), str(source), "-lpthread"],
                   check=True)
    return ctypes.CDLL(str(library))


def calls_seen(caller, keep: bool) -> list:
    """What a thread-local counter said at each of the three calls on one foreign thread."""
    local, seen = threading.local(), []

    def called() -> None:
        if keep:
            keep_thread_state()
        local.calls = getattr(local, "calls", 0) + 1
        seen.append(local.calls)
    callback = CALLBACK(called)
    assert caller.on_a_new_thread(callback) == 0
    return seen


def test_a_foreign_thread_gets_a_new_thread_state_at_every_callback(caller):
    # What the change is for: without it every callback starts from nothing.
    assert calls_seen(caller, keep=False) == [1, 1, 1]


def test_a_kept_thread_state_is_found_again_by_the_next_callback(caller):
    assert calls_seen(caller, keep=True) == [1, 2, 3]


def test_keeping_a_python_threads_state_changes_nothing_it_sees():
    local, seen = threading.local(), []

    def run() -> None:
        for _ in range(2):
            keep_thread_state()
            local.calls = getattr(local, "calls", 0) + 1
            seen.append(local.calls)
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [1, 2]
