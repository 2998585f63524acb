"""A capture's reader process: it cuts the file's records and times them, the engine thread
takes each chunk's frames in bulk.

Cutting a pcap record and making its due time is a turn of a Python loop per frame, which
the mount's engine thread did itself between two feeds: 17 % of its samples at 50,000
packets/s (py-spy), ~2.2 us a frame of the GIL it shares with the FUSE threads, which a
knob write waits behind (bench/RESULTS.md, round 14).  So, for a capture in a regular
file (a pipe's keeps its pump thread: the driver's), a process of its own reads it
(pcapfile.due_batches over engine.capture.read_capture_columns, as the mount did) and lays
each chunk's frames out in one of slots.py's shared slots:

    slot header   its number, frame count, payload bytes, the file's offset read so far,
                  and what the slot is: frames, the end, or the end at a damaged record
    payload       marshal.dumps(the chunk's list of (due, linktype, frame[, name]) tuples),
                  or the damaged record's message

which the engine thread turns back into the list with one marshal.loads(), in C.  The log
lines are the daemon's, as before: the replay's start, its progress by the tenth of the file
(from the offset each slot carries), a damaged record, its end.

The reader reads at most SLOTS chunks ahead of the engine thread (a scheduled source waits
in its file, not in memory) and exits when the daemon closes its pipe, or dies.
"""
from __future__ import annotations

import json
import marshal
import os
import select
import struct
import sys
from typing import TYPE_CHECKING, BinaryIO, Optional, Sequence

from engine.capture import MAX_RECORD, READ_CHUNK, CaptureError, read_capture_columns

from . import slots as ring

if TYPE_CHECKING:
    from .pcapfile import ReplayLog

SLOTS = 8
# A chunk's frames marshalled: each is a tuple (5 bytes), its due time (9), link type (5),
# bytes (5 + its length), maybe a name: a chunk of tiny records grows by half or more, so
# a slot holds twice a chunk and a record of the largest size; a batch larger than that
# is laid out in halves, in slots of their own.
SLOT_SIZE = 2 * (READ_CHUNK + MAX_RECORD)
# the slot's number, payload bytes (slots.py's), frame count, file offset, kind
_SLOT_HEAD = struct.Struct("@QIIQI")
FRAMES, END, DAMAGED = 0, 1, 2
FULL_POLL_MS = (2, 20)               # the reader's look at the slots while all are full:
                                     # from 2 ms, doubled while none is taken, up to 20


class CaptureReader:
    """The engine thread's side (a pull source, procfs_ct/driver.py): the reader started
    at the first take_ready() on the capture's open file, each filled slot's frames a
    list, None once the capture has ended; the log lines of the replay (`log`)."""

    def __init__(self, fileobj: BinaryIO, speed: float, start: Optional[float],
                 log: "ReplayLog") -> None:
        self._file, self._speed, self._start, self.log = fileobj, speed, start, log
        self.child: Optional[ring.ReaderChild] = None
        self._next = 0                       # the next slot to take (the taken counter)
        self._ended = False

    def take_ready(self) -> Optional[list]:
        """The frames of the next filled slot, [] if none is, None once the capture ended
        (the reader's last slot taken)."""
        if self._ended:
            return None
        if self.child is None:
            self._start_reader()
        child = self.child
        assert child is not None
        if not child.any_filled(self._next):
            if child.exited() and not child.any_filled(self._next):
                raise RuntimeError(f"the capture's reader process exited "
                                   f"({child.process.returncode})")
            return []
        kind, offset, payload = read_slot(child.shared, self._next)
        self._next += 1
        if kind == FRAMES:
            self.log.taken(payload, offset)
            return payload
        self._ended = True
        self.log.finished(payload if kind == DAMAGED else None)
        self.close()                        # the reader has nothing more: let it go now
        return None

    def wait_ready(self, timeout: float) -> None:
        if self.child is not None:
            self.child.wait(timeout, self._next)

    def close(self) -> None:
        """Stop the reader (if started) and close the file; idempotent (the engine thread's
        alone, as take_ready)."""
        if self.child is not None:
            self.child.close()
        self._file.close()

    def _start_reader(self) -> None:
        self.log.started()
        fd = self._file.fileno()
        self.child = ring.ReaderChild(
            "procfs_ct.sources.capturereader", "procfs-ct-capture-slots", SLOT_SIZE, SLOTS,
            {"fd": fd, "speed": self._speed, "start": self._start}, [fd])


def write_slot(shared, number: int, kind: int, offset: int, count: int, data: bytes
               ) -> None:
    """Slot `number` laid out (the caller makes sure it is free) and counted filled: `data`
    the marshal dump of its `count` frames (or of the damaged record's message)."""
    ring.put(shared, number, SLOT_SIZE, SLOTS, _SLOT_HEAD, (count, offset, kind), data)


def read_slot(shared, number: int) -> tuple[int, int, object]:
    """Filled slot `number`'s kind, file offset and payload; the slot is counted taken."""
    (_count, offset, kind), payload = ring.take(shared, number, SLOT_SIZE, SLOTS,
                                                _SLOT_HEAD, "capture")
    return kind, offset, payload


def fitting(batch: list) -> list[tuple[int, bytes]]:
    """`batch` in parts that each fit a slot, as (frames, their marshal dump): the dump is
    made once, and halved until each part's fits."""
    data = marshal.dumps(batch, ring.MARSHAL_VERSION)
    if len(batch) < 2 or len(data) <= SLOT_SIZE - ring.HEAD_SIZE:
        return [(len(batch), data)]
    half = len(batch) // 2
    return fitting(batch[:half]) + fitting(batch[half:])


# -- the reader process ----------------------------------------------------------------------
def main(argv: Sequence[str]) -> int:
    from .pcapfile import due_batches
    spec = json.loads(argv[0])
    shared, notify, alive = ring.child_side(spec)
    watch = select.poll()
    watch.register(alive, select.POLLIN)
    fileobj = os.fdopen(spec["fd"], "rb")
    fileobj.seek(0)
    number = 0

    def wait_for_room() -> bool:
        """Until slot `number` is free; False once the daemon is gone."""
        pause = FULL_POLL_MS[0]
        while number - ring.taken(shared) >= SLOTS:
            if watch.poll(pause):
                return False
            pause = min(2 * pause, FULL_POLL_MS[1])
        return True

    kind, said = END, None
    try:
        for batch in due_batches(read_capture_columns(fileobj), spec["speed"], spec["start"]):
            for count, data in fitting(batch):
                if not wait_for_room():
                    return 0
                write_slot(shared, number, FRAMES, fileobj.tell(), count, data)
                number += 1
                ring.say(notify, ring.FILLED)
    except CaptureError as exc:
        kind, said = DAMAGED, str(exc)
    if not wait_for_room():
        return 0
    write_slot(shared, number, kind, fileobj.tell(), 0,
               marshal.dumps(said, ring.MARSHAL_VERSION))
    ring.say(notify, ring.FILLED)
    watch.poll()                        # until the daemon has taken it and closes the pipe
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
