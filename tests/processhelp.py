"""Processes a test starts and watches: a stand-in for the daemon run as a script (it
prints the process ids it wants watched, then exits), and whether a process still lives."""
from __future__ import annotations

import os
import subprocess
import sys
import time


def run_script(script: str) -> list[int]:
    """Run `script` in a fresh interpreter that sees this one's modules; the numbers it
    printed (process ids)."""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=30, check=True,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    return [int(word) for word in done.stdout.split()]


def gone_within(pid: int, seconds: float = 10.0) -> bool:
    """Whether `pid` has exited within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and running(pid):
        time.sleep(0.05)
    return not running(pid)


def running(pid: int) -> bool:
    """Whether `pid` is a live process (an exited one its new parent has not reaped yet is
    a zombie, state Z)."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False
