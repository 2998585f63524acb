"""Handing freed pages back to the system off the path of the reader that freed them.

A listing's rendering is freed when its last reader's handle is released, and the freed
pages go back to the system with glibc's malloc_trim(0) (procfs_ct/fs.py).  Called from
the RELEASE callback itself, the trim ran on the daemon's FUSE thread while the reader
was still exiting: `head -1` closes its file before it flushes its output, so the trim
(0.07-0.1 ms after a `head -1`, over 1 ms after a big listing) shared the two CPUs with
the very process whose first byte was being timed.  A trim also has no reader waiting
for it, so one thread does it a short while after the last request: requests that come
in a burst (several readers closing) make one trim.
"""
from __future__ import annotations

import threading
from typing import Callable, Optional

TRIM_DELAY = 0.05       # seconds without a new request before the trim runs


class DeferredTrim:
    """request() returns at once; `trim` runs on a thread of its own, once `delay` seconds
    have passed without another request."""

    def __init__(self, trim: Callable[[], object], delay: float = TRIM_DELAY) -> None:
        self._trim = trim
        self._delay = delay
        self._wanted = threading.Event()
        self._mu = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    def request(self) -> None:
        self._wanted.set()
        if self._thread is None:
            with self._mu:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="malloc-trim",
                                                    daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        wanted = self._wanted
        while True:
            wanted.wait()
            wanted.clear()
            while wanted.wait(self._delay):     # another request came: wait on
                wanted.clear()
            self._trim()
