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
`batches()` hands them on as lists, which the driver's engine thread takes one at a time
(from a regular file; from a pipe its pump puts them on its queue at once): a
frame costs the pump one turn of one loop, where reading it through three generators,
a tell() of the file (a system call, which hands the GIL to the engine thread and waits
to get it back) and a queue hand-off per frame cost the live mount about half the
engine's speed (bench/RESULTS.md, round 8).

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
from typing import BinaryIO, Iterator, Optional, Union

from engine.capture import CaptureError, FrameColumns, read_capture_columns

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
        except BaseException:
            fileobj.close()
            raise
        self._batches = _logged(path, fileobj, due_batches(captured, speed, start), speed)
        self._frames = itertools.chain.from_iterable(self._batches)
        # A regular file's next chunk is there to read (the engine thread pulls it itself,
        # procfs_ct/driver.py); a pipe's may wait for a live capture (a pump thread's job).
        self.batches_never_block = stat.S_ISREG(os.fstat(fileobj.fileno()).st_mode)

    def __iter__(self) -> "CaptureReplay":
        return self

    def __next__(self) -> DueFrame:
        return next(self._frames)

    def batches(self) -> Iterator[list[DueFrame]]:
        """The frames iteration gives, as lists: one per chunk read from the file."""
        return self._batches


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
    in C) and the tuples by zip -- the mount's engine thread reads the capture itself, and
    a loop here per frame cost ~12 % more (bench/RESULTS.md, round 14)."""
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


def _logged(path: str, fileobj: BinaryIO, batches: Iterator[list[DueFrame]],
            speed: float) -> Iterator[list[DueFrame]]:
    try:
        size = os.fstat(fileobj.fileno()).st_size
    except OSError:
        size = 0
    pace = "as fast as possible" if speed == 0 else f"at {speed:g}x"
    log.info("pcap %s: replaying %d bytes %s", path, size, pace)
    count, step = 0, 1
    first_due = last_due = None
    try:
        for batch in batches:
            if first_due is None:
                first_due = batch[0][0]
            last_due = batch[-1][0]
            count += len(batch)
            yield batch
            # Once a batch (a chunk of the file): tell() is a system call.
            if size and step < PROGRESS_STEPS:
                done = fileobj.tell()
                if done * PROGRESS_STEPS >= size * step:
                    log.info("pcap %s: %d%% replayed (%d frames)", path,
                             done * 100 // size, count)
                    step = done * PROGRESS_STEPS // size + 1
    except CaptureError as exc:
        # A record damaged mid-file ends the replay; what was read stays tracked.
        log.warning("pcap %s: stopped at frame %d: %s", path, count + 1, exc)
    finally:
        fileobj.close()
    span = 0.0 if first_due is None else last_due - first_due
    log.info("pcap %s: replay finished: %d frames over %.3f s", path, count, span)
