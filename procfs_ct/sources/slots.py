"""A reader process and the engine thread, with a ring of shared slots between them.

A source whose reading is Python work per frame (the tap's walk over the kernel's rings, a
capture's records cut from the file) runs that work in a process of its own, on another
CPU: the mount's engine thread shares one GIL with the FUSE threads, and every
instruction it spends reading is one a knob write or a listing waits behind
(bench/RESULTS.md, rounds 13 and 14).  The reader lays each batch of frames out in a slot,
the engine thread takes it with one marshal.loads().

The slots are a ring in a memfd both map, behind two counters, each written by one side
only: slots filled (the reader's) and slots taken (the engine thread's).  The reader fills
slot `filled % slots` while fewer than `slots` are filled and not taken; the engine thread
takes slot `taken % slots` while `taken < filled`.  A slot is a header of HEAD_SIZE bytes
-- its number, which the taker checks, its payload's length, then the source's own fields
(tapreader.py, capturereader.py) -- and the payload, a marshal dump (put() and take()).
The reader writes a byte on a pipe after each slot it fills (the engine thread's
wait polls it), and a second pipe, written by nobody, tells it that the source is gone: it
exits when that pipe closes, with the daemon.

The reader is a fresh interpreter (not a fork of the daemon: its threads, FUSE's file
descriptor and locks stay behind), handed the memfd, the pipes and the source's own file
descriptors.
"""
from __future__ import annotations

import functools
import json
import marshal
import mmap
import os
import select
import struct
import subprocess
import sys
import weakref
from typing import Any, Sequence

_COUNTER = struct.Struct("@Q")
_FILLED_AT, _TAKEN_AT = 0, 64        # the two counters, a cache line each
_SLOTS_AT = 128
FILLED = b"."                        # on the notify pipe: a slot is filled
HEAD_SIZE = 64                       # a slot's header: its number, its payload's length
                                     # (a source's header struct begins "@QI"), the rest
# The payload: a marshal dump.  Both sides are the same interpreter (sys.executable), so the
# format is theirs; version 2 has no back-references to keep.
MARSHAL_VERSION = 2


def slot_offset(number: int, size: int, slots: int) -> int:
    """Where slot `number` (counted from 0 since the start: a counter's value) begins in
    a ring of `slots` slots of `size` bytes."""
    return _SLOTS_AT + number % slots * size


def shared_size(size: int, slots: int) -> int:
    return _SLOTS_AT + slots * size


def filled(shared: mmap.mmap) -> int:
    return _COUNTER.unpack_from(shared, _FILLED_AT)[0]


def taken(shared: mmap.mmap) -> int:
    return _COUNTER.unpack_from(shared, _TAKEN_AT)[0]


def count_filled(shared: mmap.mmap, number: int) -> None:
    """Slot `number` is filled: written last, as the taker reads nothing of a slot before."""
    _COUNTER.pack_into(shared, _FILLED_AT, number + 1)


def count_taken(shared: mmap.mmap, number: int) -> None:
    _COUNTER.pack_into(shared, _TAKEN_AT, number + 1)


def put(shared: mmap.mmap, number: int, size: int, slots: int, head: struct.Struct,
        fields: Sequence[int], data: bytes) -> None:
    """Lay `data` (a marshal dump) out in slot `number` after its header -- the number, the
    data's length, then `fields` in the source's `head` -- and count the slot filled.  The
    caller makes sure the slot is free (number - taken < slots) and the data fits."""
    if len(data) > size - HEAD_SIZE:
        raise ValueError(f"{len(data)} bytes do not fit a slot of {size}")
    at = slot_offset(number, size, slots)
    shared[at + HEAD_SIZE:at + HEAD_SIZE + len(data)] = data
    head.pack_into(shared, at, number, len(data), *fields)
    count_filled(shared, number)


def take(shared: mmap.mmap, number: int, size: int, slots: int, head: struct.Struct,
         source: str) -> tuple[tuple, Any]:
    """Filled slot `number`'s fields (those of `head` after the number and the length) and
    its payload loaded; the slot is counted taken.  A slot that holds another number is an
    error: frames would be lost, or fed twice, in silence."""
    at = slot_offset(number, size, slots)
    written_as, length, *fields = head.unpack_from(shared, at)
    if written_as != number:
        raise RuntimeError(f"the {source}'s reader process is out of step: slot {number} "
                           f"holds slot {written_as}")
    with memoryview(shared) as view:
        payload = marshal.loads(view[at + HEAD_SIZE:at + HEAD_SIZE + length])
    count_taken(shared, number)
    return tuple(fields), payload


class ReaderChild:
    """The daemon's side of a reader process: started on `spec` (JSON; the memfd, the
    pipes, the slots' size and number added) with `pass_fds` of the source's own."""

    def __init__(self, module: str, name: str, slot_size: int, slots: int,
                 spec: dict[str, Any], pass_fds: Sequence[int]) -> None:
        self.slot_size, self.slots = slot_size, slots
        memfd = os.memfd_create(name, os.MFD_CLOEXEC)
        try:
            os.ftruncate(memfd, shared_size(slot_size, slots))
            self.shared = mmap.mmap(memfd, shared_size(slot_size, slots), mmap.MAP_SHARED)
            notify_read, notify_write = os.pipe()
            alive_read, self._alive = os.pipe()
            os.set_blocking(notify_read, False)
            self._notify = notify_read
            spec = dict(spec, memfd=memfd, notify=notify_write, alive=alive_read,
                        slot_size=slot_size, slots=slots)
            self.process = subprocess.Popen(
                [sys.executable, "-m", module, json.dumps(spec)],
                pass_fds=[memfd, notify_write, alive_read, *pass_fds],
                stdin=subprocess.DEVNULL, close_fds=True,
                env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
            os.close(notify_write)
            os.close(alive_read)
            # A process forked from the daemon (a listing's render child, forkrender.py)
            # would hold the alive pipe open, and so the reader, until it exits.
            os.register_at_fork(after_in_child=functools.partial(_forked, weakref.ref(self)))
        finally:
            os.close(memfd)
        self._poller = select.poll()
        self._poller.register(self._notify, select.POLLIN)

    def any_filled(self, next_taken: int) -> bool:
        return filled(self.shared) > next_taken

    def wait(self, timeout: float, next_taken: int) -> bytes:
        """Until the reader fills a slot (or says something), at most `timeout` seconds;
        what it said on the pipe meanwhile."""
        said = self.said()
        if said or self.any_filled(next_taken):
            return said
        if self._poller.poll(max(1, int(timeout * 1000))):
            said = self.said()
        return said

    def said(self) -> bytes:
        """What the reader has written on the notify pipe (without waiting)."""
        try:
            return os.read(self._notify, 65536)
        except BlockingIOError:
            return b""

    def exited(self) -> bool:
        return self.process.poll() is not None

    def close(self) -> None:
        """Tell the reader to go (its pipe closes) and wait for it; idempotent."""
        if self._alive >= 0:
            os.close(self._alive)
            self._alive = -1
            try:
                self.process.wait(2)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            os.close(self._notify)
            self.shared.close()


def _forked(reader: "weakref.ref[ReaderChild]") -> None:
    """In a child forked from the process the reader serves: let go of its alive pipe."""
    child = reader()
    if child is not None and child._alive >= 0:
        os.close(child._alive)
        child._alive = -1


def child_side(spec: dict[str, Any]) -> tuple[mmap.mmap, int, int]:
    """In the reader process: the shared slots, the notify pipe and the alive pipe."""
    shared = mmap.mmap(spec["memfd"], shared_size(spec["slot_size"], spec["slots"]),
                       mmap.MAP_SHARED)
    os.close(spec["memfd"])
    os.set_blocking(spec["notify"], False)
    return shared, spec["notify"], spec["alive"]


def say(fd: int, message: bytes) -> None:
    """A message on the notify pipe; dropped while the pipe is full (the engine thread is
    awake then, and looks at the counters)."""
    try:
        os.write(fd, message)
    except BlockingIOError:
        pass
