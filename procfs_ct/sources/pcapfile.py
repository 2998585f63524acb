"""A pcap/pcapng capture replayed as a live source, on its own timing scaled by a speed.

The capture's first frame is due at `start` (normally: None, the moment it is read: the
mount opens the source before it has set up the engine, its log and FUSE, which started
every replay 0.1-0.2 s behind, a lag a busy engine never made up); every later frame at
start + (its capture time - the first frame's) / speed.  Speed 0 means as fast as
possible: every frame is due at once, in file order.  Frames are never reordered and
due times never run backwards (a capture whose clock steps back keeps the previous
due time), so the engine's clock only moves forward.

This module only says when each frame is due; the driver does the waiting.  Progress
is logged as the frames are pulled (every tenth of the file), and the end of the
capture is logged once: after that the source is simply exhausted and entries time
out normally in the mount.

The frames come a chunk of the file at a time (engine.capture.read_capture_columns) and
`batches()` hands them on as lists: a frame costs one turn of one loop, where reading it
through three generators, a tell() of the file (a system call, which hands the GIL to the
engine thread and waits to get it back) and a queue hand-off per frame cost the live mount
about half the engine's speed (bench/RESULTS.md, round 8).  The mount's engine thread takes
the same lists from pull_source(): a reader process that does this file's reading on
another CPU (capturereader.py), for a capture in a regular file; a pipe's is read by the
driver's pump thread through batches().

A pcapng file names the interface each frame was captured on (its Interface Description
Block's if_name): such a frame is (due time, linktype, frame, name), the name being what
`-i`/`-o` rules match, as `procfs-ct replay` reads it; other frames are (due time, linktype,
frame).
"""
from __future__ import annotations

import itertools
import logging
import os
import stat
import time
from typing import TYPE_CHECKING, BinaryIO, Iterator, Optional, Union

from engine.capture import CaptureError, FrameColumns, read_capture_columns

if TYPE_CHECKING:
    from .capturereader import CaptureReader

log = logging.getLogger("procfs_ct.sources.pcap")

PROGRESS_STEPS = 10            # log a progress line every tenth of the file

# (due time, linktype, frame[, the name of the interface it was captured on])
DueFrame = Union[tuple[float, int, bytes], tuple[float, int, bytes, str]]


class CaptureReplay:
    """The capture at `path` as (due time, linktype, frame[, interface name]): iteration
    gives the frames one at a time, batches() the same frames a list at a time (never an
    empty one); use one or the other.  Opening checks the file at once, so a missing file
    or a non-capture fails here and not at the first next()."""

    def __init__(self, path: str, speed: float = 1.0, start: Optional[float] = None) -> None:
        fileobj = open(path, "rb")
        try:
            captured = read_capture_columns(fileobj)
            status = os.fstat(fileobj.fileno())
        except BaseException:
            fileobj.close()
            raise
        replay_log = ReplayLog(log, path, status.st_size, speed)
        self._batches = _logged(replay_log, fileobj, due_batches(captured, speed, start))
        self._frames = itertools.chain.from_iterable(self._batches)
        # A regular file's chunks are read by a process of its own, for the mount's engine
        # thread (pull_source()); a pipe's may wait for a live capture: a pump thread's job.
        # (Imported here: `python -m` of that module must not find it imported already.)
        from .capturereader import CaptureReader
        self._reader = (CaptureReader(fileobj, speed, start, replay_log)
                        if stat.S_ISREG(status.st_mode) else None)

    def __iter__(self) -> "CaptureReplay":
        return self

    def __next__(self) -> DueFrame:
        return next(self._frames)

    def batches(self) -> Iterator[list[DueFrame]]:
        """The frames iteration gives, as lists: one per chunk read from the file."""
        return self._batches

    def pull_source(self) -> Optional["CaptureReader"]:
        """For the mount's engine thread (procfs_ct/driver.py), instead of iteration or
        batches(): the same batches from a reader process (capturereader.py); None for a
        capture read from a pipe."""
        return self._reader


def replay_capture(path: str, speed: float = 1.0,
                   start: Optional[float] = None) -> CaptureReplay:
    """The capture at path, its first frame due at start (None: when it is read), the others
    on its own timing divided by speed (0: all due at start)."""
    return CaptureReplay(path, speed, start)


def due_batches(batches: Iterator[FrameColumns], speed: float,
                start: Optional[float]) -> Iterator[list[DueFrame]]:
    """Each batch of captured frames (columns: ts, linktype, frame, interface name or None)
    as a list of (due time, linktype, frame[, interface name]), rebased to start (None: the
    time the first batch is read) and scaled; a due time never runs backwards (a capture
    whose clock steps back keeps the previous one).

    Made column-wise: the due times in one comprehension (held from running back by
    itertools.accumulate(max) only where the capture's clock steps back: sorted() says so
    in C) and the tuples by zip: the capture's reading took ~14 % more with a Python loop
    per frame here (bench/RESULTS.md, round 14)."""
    first: Optional[float] = None
    due = 0.0
    for batch in batches:
        times = batch.times
        if not times:
            continue
        if first is None:
            first = times[0]
            due = start = time.time() if start is None else start
        if speed > 0:
            dues = [start + (ts - first) / speed for ts in times]
            if dues[0] < due or sorted(dues) != dues:      # the clock stepped back
                dues = list(itertools.accumulate(dues, max, initial=due))[1:]
            due = dues[-1]
        else:
            dues = [due] * len(times)
        names = batch.names
        if names.count(None) == len(names):
            yield list(zip(dues, batch.linktypes, batch.frames))
        else:
            yield [(at, linktype, data) if name is None else (at, linktype, data, name)
                   for at, linktype, data, name in zip(dues, batch.linktypes, batch.frames,
                                                       names)]


def _logged(replay_log: "ReplayLog", fileobj: BinaryIO, batches: Iterator[list[DueFrame]]
            ) -> Iterator[list[DueFrame]]:
    replay_log.started()
    damage = None
    try:
        for batch in batches:
            yield batch
            # Once a batch (a chunk of the file): tell() is a system call (a pipe's fails).
            replay_log.taken(batch, fileobj.tell() if replay_log.counts_progress() else 0)
    except CaptureError as exc:
        damage = str(exc)
    finally:
        fileobj.close()
    replay_log.finished(damage)


class ReplayLog:
    """A replay's log lines: its start, its progress by the tenth of the file, a damaged
    record, its end -- from the batches handed on, read here or by the reader process."""

    STEPS = PROGRESS_STEPS

    def __init__(self, log: logging.Logger, path: str, size: int, speed: float) -> None:
        self._log, self.path, self.size, self.speed = log, path, size, speed
        self.count, self._step = 0, 1
        self.first_due: Optional[float] = None
        self.last_due: Optional[float] = None

    def started(self) -> None:
        pace = "as fast as possible" if self.speed == 0 else f"at {self.speed:g}x"
        self._log.info("pcap %s: replaying %d bytes %s", self.path, self.size, pace)

    def counts_progress(self) -> bool:
        """Whether taken() still needs how far the file has been read."""
        return bool(self.size) and self._step < self.STEPS

    def taken(self, batch: list, offset: int) -> None:
        """A batch handed on; `offset`: how far the file has been read."""
        if self.first_due is None:
            self.first_due = batch[0][0]
        self.last_due = batch[-1][0]
        self.count += len(batch)
        if self.counts_progress() and offset * self.STEPS >= self.size * self._step:
            self._log.info("pcap %s: %d%% replayed (%d frames)", self.path,
                           offset * 100 // self.size, self.count)
            self._step = offset * self.STEPS // self.size + 1

    def finished(self, damage: Optional[str]) -> None:
        if damage is not None:
            # A record damaged mid-file ends the replay; what was read stays tracked.
            self._log.warning("pcap %s: stopped at frame %d: %s", self.path, self.count + 1,
                              damage)
        span = 0.0 if self.first_due is None else self.last_due - self.first_due
        self._log.info("pcap %s: replay finished: %d frames over %.3f s", self.path,
                       self.count, span)
