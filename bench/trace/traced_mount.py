"""`procfs-ct mount` with a trace of every FUSE callback, collection and engine hold.

    LD_PRELOAD=fusetrace.so python -m bench.trace.traced_mount OUT_PREFIX mount MNT ...

Run by bench/trace/knobtrace.py.  Records, in CLOCK_MONOTONIC nanoseconds:
  OUT_PREFIX.py    `cb TID OP ENTER EXIT` per ProcFs callback (the Python side of a request),
                   `gc GEN START STOP` per collection (gc.callbacks),
                   `feed START STOP FRAMES` per hold of the engine lock for feeding;
  OUT_PREFIX.fuse  what the preloaded shim saw on /dev/fuse (see fusetrace.c).
KNOBTRACE_SWITCH_INTERVAL (seconds) replaces the mount's GIL switch interval;
KNOBTRACE_FUSE_NICE sets the nice value of each thread that serves a FUSE callback;
KNOBTRACE_FUSE_FIFO=N puts each such thread in SCHED_FIFO at priority N (root; with
SCHED_RESET_ON_FORK, so the threads and render children it starts are not real-time).
Nothing of procfs_ct is changed: its methods are wrapped here, before the mount starts.
"""
from __future__ import annotations

import atexit
import ctypes
import functools
import gc
import os
import sys
import threading
import time

from procfs_ct import driver, fs

now_ns = time.monotonic_ns
EVENTS: list = []
CALLBACKS = ("getattr", "access", "open", "read", "write", "truncate", "flush", "release",
             "getxattr")


FUSE_NICE = os.environ.get("KNOBTRACE_FUSE_NICE")
FUSE_FIFO = os.environ.get("KNOBTRACE_FUSE_FIFO")
NICED: set = set()


def prioritise(tid: int) -> None:
    """Once per FUSE thread: the nice value or real-time policy asked for (a diagnostic)."""
    NICED.add(tid)
    if FUSE_NICE is not None:
        os.setpriority(os.PRIO_PROCESS, tid, int(FUSE_NICE))
    if FUSE_FIFO is not None:
        os.sched_setscheduler(tid, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK,
                              os.sched_param(int(FUSE_FIFO)))


def wrap_callback(name: str) -> None:
    method = getattr(fs.ProcFs, name, None)
    if method is None or name not in vars(fs.ProcFs):
        return                  # not implemented here (libfuse answers ENOSYS)

    @functools.wraps(method)
    def traced(self, *args):
        enter = now_ns()
        if threading.get_native_id() not in NICED:
            prioritise(threading.get_native_id())
        try:
            return method(self, *args)
        finally:
            EVENTS.append(("cb", threading.get_native_id(), name, enter, now_ns()))
    setattr(fs.ProcFs, name, traced)


def wrap_feed() -> None:
    feed_due = driver.EngineDriver._feed_due

    def traced(self, batch, start, now):
        enter = now_ns()
        index = feed_due(self, batch, start, now)
        EVENTS.append(("feed", enter, now_ns(), index - start))
        return index
    driver.EngineDriver._feed_due = traced


GC_START: dict = {}


def on_gc(phase: str, info: dict) -> None:
    if phase == "start":
        GC_START[info["generation"]] = now_ns()
    else:
        EVENTS.append(("gc", info["generation"], GC_START.pop(info["generation"], 0), now_ns()))


def dump(prefix: str) -> None:
    with open(prefix + ".py", "w") as out:
        for event in list(EVENTS):
            out.write(" ".join(map(str, event)) + "\n")
    shim = getattr(ctypes.CDLL(None), "fusetrace_dump", None)
    if shim is not None:
        shim((prefix + ".fuse").encode())


def main() -> int:
    prefix, argv = sys.argv[1], sys.argv[2:]
    for name in CALLBACKS:
        wrap_callback(name)
    wrap_feed()
    gc.callbacks.append(on_gc)
    atexit.register(dump, prefix)
    interval = os.environ.get("KNOBTRACE_SWITCH_INTERVAL")
    if interval:
        from procfs_ct import cmd_mount
        cmd_mount.GIL_SWITCH_INTERVAL = float(interval)
    from procfs_ct.cli import main as cli_main
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
