"""The tap's reader process: it walks the kernel's receive rings, the engine thread takes
the frames in bulk.

Reading a TPACKET_V3 block is a walk of Python code over each packet (tap.read_block: a
header and a sockaddr_ll unpacked, a slice, the SLL2 header put in front): ~5,000
instructions a frame, a third of what the mount's engine thread spent per frame behind a
tap, under the one GIL it shares with the FUSE threads (bench/RESULTS.md, round 13).  So,
for take_ready() (the mount's engine thread, procfs_ct/driver.py), a process of its own does
that walk, on another CPU, and hands each round's frames over in a shared slot:

    slot header   its number, frame count, payload bytes, and the round's counters
                  (received, skipped, truncated, checksums completed, spilled, overflowed)
    payload       marshal.dumps((times, frames)): the kernel's timestamps, the frames

which the engine thread turns back into its Columns' two lists with one marshal.loads(),
C all the way: ~150 ns a frame.  The frames are the bytes read_block() makes (the reader
calls it).

The slots are slots.py's ring (SLOTS of them, each a round of the kernel's blocks), each
carrying its number, which the engine thread checks: a slot out of step is an error, not
frames lost in silence.  (A first version had a status word per slot that both sides
wrote, READY and FREE: it lost slots now and then under load, ~0.4 % of the frames in two
runs of five, bench/RESULTS.md round 13.)  While every slot is full (the engine thread
behind) the reader keeps reading the kernel's rings into a list of its own, up to
SPILL_FRAMES frames (`stats.spilled`), and only then leaves them to fill and overflow (the
kernel's drops, counted as ever).  It is started with the first take_ready(): iteration and batches() read
the rings in the caller's thread as before.

The reader is a fresh interpreter (slots.ReaderChild), handed the packet sockets too.
"""
from __future__ import annotations

import collections
import json
import marshal
import mmap
import select
import socket
import struct
import sys
from dataclasses import dataclass
from typing import Sequence

from . import slots as ring
from .slots import FILLED as _FILLED, filled, say as _say, taken

SLOTS = 16
# the slot's number, data bytes (slots.py's), frame count, received, skipped, truncated,
# completed, spilled, losing
_SLOT_HEAD = struct.Struct("@QI7I")
_HEAD_SIZE = ring.HEAD_SIZE
assert _SLOT_HEAD.size <= _HEAD_SIZE
# The slot's payload: marshal's dump of the (times, frames) lists -- what loads() rebuilds
# in C at ~150 ns a frame, against ~450 for columns of times and ends and a slice per frame
# (bench/RESULTS.md, round 13).  A frame takes a type byte and a length (5 bytes) and its
# time a type byte and 8 bytes.
_MARSHALLED_FRAME = 14
_MARSHAL_SLACK = 64                  # the tuple's and the two lists' own headers
_DOWN = b"D"                         # on the notify pipe: then an interface's index and
                                     # the socket's error number (a byte each)
IDLE_POLL_MS = 200                   # the reader's poll() while the rings are quiet
FULL_POLL_MS = 2                     # its look at the slots while every one is full


@dataclass
class RoundCounts:
    """What the reader counted over the frames of one slot (added to Tap.stats)."""
    received: int = 0
    skipped: int = 0
    truncated: int = 0
    completed: int = 0
    spilled: int = 0
    losing: bool = False
    blocks: int = 0                  # ring blocks read (the reader's own count)


def slot_size(block_size: int, blocks_per_round: int) -> int:
    """Bytes a slot needs for a round of `blocks_per_round` full blocks: a frame laid out
    here (14 bytes of marshal's, 20 of SLL2 header, the packet) takes less than in the ring
    (tpacket3_hdr, sockaddr_ll, padding: DGRAM_NET_OFFSET, 80 bytes, before the packet)."""
    return _HEAD_SIZE + blocks_per_round * block_size


def shared_size(size: int, slots: int = SLOTS) -> int:
    return ring.shared_size(size, slots)


def write_slot(shared: mmap.mmap, number: int, size: int, times: Sequence[float],
               frames: Sequence[bytes], start: int, counts: RoundCounts,
               slots: int = SLOTS) -> int:
    """Lay frames `start`... of the columns out in slot `number` (`size` bytes), as many as
    fit, then count it filled; the index after the last frame written.  The caller makes
    sure the slot is not filled and untaken (number - taken < slots)."""
    room = size - _HEAD_SIZE - _MARSHAL_SLACK
    end = len(frames)
    # A round of the ring's blocks fits its slot (slot_size()): summed in C.  Only columns
    # grown larger (the reader's own list, while every slot was full) are cut frame by frame.
    if sum(map(len, frames[start:])) + _MARSHALLED_FRAME * (end - start) > room:
        end, used = start, 0
        while end < len(frames) and used + _MARSHALLED_FRAME + len(frames[end]) <= room:
            used += _MARSHALLED_FRAME + len(frames[end])
            end += 1
    if end == start and start < len(frames):
        raise ValueError(f"a frame of {len(frames[start])} bytes does not fit a slot of {size}")
    data = marshal.dumps((times[start:end], frames[start:end]), ring.MARSHAL_VERSION)
    ring.put(shared, number, size, slots, _SLOT_HEAD,
             (end - start, counts.received, counts.skipped, counts.truncated,
              counts.completed, counts.spilled, counts.losing), data)
    return end


def read_slot(shared: mmap.mmap, number: int, size: int, slots: int = SLOTS
              ) -> tuple[list[float], list[bytes], RoundCounts]:
    """Filled slot `number`'s times, frames and counts; the slot is counted taken."""
    (_count, received, skipped, truncated, completed, spilled, losing), (times, frames) = \
        ring.take(shared, number, size, slots, _SLOT_HEAD, "tap")
    return times, frames, RoundCounts(received, skipped, truncated, completed, spilled,
                                      bool(losing))


class SlotTaker:
    """Takes filled slots in order (the engine thread's side of the shared slots)."""

    def __init__(self, shared: mmap.mmap, size: int, slots: int = SLOTS) -> None:
        self.shared, self.size, self.slots = shared, size, slots
        self.next = 0                        # the next slot to take (the taken counter)

    def take(self, times: list, frames: list, most: int) -> list[RoundCounts]:
        """Up to `most` filled slots' frames appended to the two columns, in order; their
        counts (none if no slot is filled)."""
        counts = []
        ready = filled(self.shared)
        while len(counts) < most and self.next < ready:
            slot_times, slot_frames, slot_counts = read_slot(self.shared, self.next, self.size,
                                                             self.slots)
            times += slot_times
            frames += slot_frames
            counts.append(slot_counts)
            self.next += 1
        return counts

    def any_filled(self) -> bool:
        return filled(self.shared) > self.next


class ReaderProcess:
    """The engine thread's side: starts the reader on the tap's interfaces, takes its
    slots in order, waits on its pipe, stops it."""

    def __init__(self, interfaces: Sequence, blocks_per_round: int) -> None:
        self.slot_size = slot_size(max(iface.block_size for iface in interfaces),
                                   blocks_per_round)
        spec = {"blocks_per_round": blocks_per_round,
                "interfaces": [{"name": iface.name, "fd": iface.sock.fileno(),
                                "block_size": iface.block_size,
                                "block_nr": iface.block_nr, "block": iface.block,
                                "loopback": iface.loopback} for iface in interfaces]}
        self.child = ring.ReaderChild("procfs_ct.sources.tapreader", "procfs-ct-tap-slots",
                                      self.slot_size, SLOTS, spec,
                                      [i["fd"] for i in spec["interfaces"]])
        self.process = self.child.process
        self.shared = self.child.shared
        self.slots = SlotTaker(self.shared, self.slot_size)
        self._names = [iface.name for iface in interfaces]
        self.downs: list[tuple[str, int]] = []  # (interface, errno) the reader saw (to log)

    def take(self, times: list, frames: list, most: int) -> list[RoundCounts]:
        """Up to `most` filled slots' frames appended to the columns, in order; their
        counts.  Raises if the reader has died (the driver then ends the source)."""
        counts = self.slots.take(times, frames, most)
        if not counts and self.child.exited():
            raise RuntimeError(f"the tap's reader process exited ({self.process.returncode})")
        return counts

    def wait(self, timeout: float) -> None:
        """Until the reader fills a slot (or says an interface went down), at most
        `timeout` seconds."""
        self._heard(self.child.wait(timeout, self.slots.next))

    def _heard(self, said: bytes) -> None:
        at = said.find(_DOWN)
        while at >= 0 and at + 2 < len(said):
            self.downs.append((self._names[said[at + 1]], said[at + 2]))
            at = said.find(_DOWN, at + 3)

    def close(self) -> None:
        """Tell the reader to go (its pipe closes) and wait for it; idempotent."""
        self.child.close()


# -- the reader process ----------------------------------------------------------------------
def main(argv: Sequence[str]) -> int:
    from .tap import Columns, SPILL_FRAMES, _Interface
    spec = json.loads(argv[0])
    shared, notify, alive = ring.child_side(spec)
    per_round = spec["blocks_per_round"]
    interfaces = [_Interface.adopt(i["name"], socket.socket(fileno=i["fd"]), i["block_size"],
                                   i["block_nr"], i["block"], i["loopback"])
                  for i in spec["interfaces"]]
    by_fd = {iface.sock.fileno(): n for n, iface in enumerate(interfaces)}
    rings, watch = select.poll(), select.poll()
    for fd in by_fd:
        rings.register(fd, select.POLLIN)
    for poller in (rings, watch):
        poller.register(alive, select.POLLIN)
    # [Columns, RoundCounts, frames of it already laid out] not all laid out yet
    waiting: collections.deque[list] = collections.deque()
    waiting_frames = 0
    number, size = 0, spec["slot_size"]        # the next slot to fill (the filled counter)
    while True:
        full = waiting_frames >= SPILL_FRAMES
        events = (watch if full else rings).poll(FULL_POLL_MS if waiting else IDLE_POLL_MS)
        for fd, event in events:
            if fd == alive:
                return 0                    # the tap closed (or the daemon is gone)
            if event & select.POLLERR:
                error = interfaces[by_fd[fd]].clear_error(log_it=False)
                if error:
                    _say(notify, _DOWN + bytes([by_fd[fd], error & 0xFF]))
        if not full:
            for iface in interfaces:
                batch = Columns()
                counts = iface.take_blocks(batch, per_round)
                if counts.received:
                    if waiting or number - taken(shared) >= SLOTS:
                        counts.spilled = len(batch)
                    waiting.append([batch, counts, 0])
                    waiting_frames += len(batch)
        while waiting and number - taken(shared) < SLOTS:
            batch, counts, written = waiting[0]
            done = write_slot(shared, number, size, batch.times, batch.frames, written, counts)
            number += 1
            _say(notify, _FILLED)
            if done < len(batch):           # the rest in the next slot, counted once
                waiting[0][1:] = [RoundCounts(), done]
            else:
                waiting.popleft()
                waiting_frames -= len(batch)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
