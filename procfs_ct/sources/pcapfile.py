"""A pcap/pcapng capture replayed as a live source, on its own timing scaled by a speed.

The capture's first frame is due at `start` (normally: now); every later frame at
start + (its capture time - the first frame's) / speed.  Speed 0 means as fast as
possible: every frame is due at once, in file order.  Frames are never reordered and
due times never run backwards (a capture whose clock steps back keeps the previous
due time), so the engine's clock only moves forward.

This module only says when each frame is due; the driver does the waiting.  Progress
is logged as the frames are pulled (every tenth of the file), and the end of the
capture is logged once: after that the source is simply exhausted and entries time
out normally in the mount.

A pcapng file names the interface each frame was captured on (its Interface Description
Block's if_name): such a frame is (due time, linktype, frame, name), the name being what
`-i`/`-o` rules match, as `procfs-ct replay` reads it; other frames are (due time, linktype,
frame).
"""
from __future__ import annotations

import logging
import os
from typing import BinaryIO, Iterator, Optional, Union

from engine.capture import CaptureError, CapturedFrame, read_named_capture

log = logging.getLogger("procfs_ct.sources.pcap")

PROGRESS_STEPS = 10            # log a progress line every tenth of the file

NamedFrame = tuple[CapturedFrame, Optional[str]]
# (due time, linktype, frame[, the name of the interface it was captured on])
DueFrame = Union[tuple[float, int, bytes], tuple[float, int, bytes, str]]


def open_capture(path: str) -> tuple[BinaryIO, Iterator[NamedFrame]]:
    """Open path and check its file header; raises OSError or CaptureError at once."""
    fileobj = open(path, "rb")
    try:
        return fileobj, read_named_capture(fileobj)
    except BaseException:
        fileobj.close()
        raise


def due_times(frames: Iterator[NamedFrame], speed: float,
              start: float) -> Iterator[DueFrame]:
    """(due time, linktype, frame[, interface name]) for each captured frame, rebased to
    start and scaled."""
    first = None
    due = start
    for frame, name in frames:
        if first is None:
            first = frame.ts
        if speed > 0:
            due = max(due, start + (frame.ts - first) / speed)
        if name is None:
            yield due, frame.linktype, frame.data
        else:
            yield due, frame.linktype, frame.data, name


def replay_capture(path: str, speed: float = 1.0,
                   start: float = 0.0) -> Iterator[DueFrame]:
    """The capture at path as (due time, linktype, frame[, interface name]); opens and
    checks it now, so a missing file or a non-capture fails here and not at the first
    next()."""
    fileobj, frames = open_capture(path)
    return _logged(path, fileobj, due_times(frames, speed, start), speed)


def _logged(path: str, fileobj: BinaryIO, frames: Iterator[DueFrame],
            speed: float) -> Iterator[DueFrame]:
    try:
        size = os.fstat(fileobj.fileno()).st_size
    except OSError:
        size = 0
    pace = "as fast as possible" if speed == 0 else f"at {speed:g}x"
    log.info("pcap %s: replaying %d bytes %s", path, size, pace)
    count, step = 0, 1
    first_due = last_due = None
    try:
        for item in frames:
            if first_due is None:
                first_due = item[0]
            last_due = item[0]
            count += 1
            yield item
            if size and step < PROGRESS_STEPS and fileobj.tell() * PROGRESS_STEPS >= size * step:
                log.info("pcap %s: %d%% replayed (%d frames)", path,
                         fileobj.tell() * 100 // size, count)
                step = fileobj.tell() * PROGRESS_STEPS // size + 1
    except CaptureError as exc:
        # A record damaged mid-file ends the replay; what was read stays tracked.
        log.warning("pcap %s: stopped at frame %d: %s", path, count + 1, exc)
    finally:
        fileobj.close()
    span = 0.0 if first_due is None else last_due - first_due
    log.info("pcap %s: replay finished: %d frames over %.3f s", path, count, span)
