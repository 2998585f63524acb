"""The tap reader process's shared slots (procfs_ct/sources/tapreader.py): what the reader
lays out is what the engine thread takes, frame for frame, in order, and counted once.
The process itself is driven in tests/test_tap.py (a real ring on lo)."""
import mmap
import os
import signal

import pytest

from engine.build import build_udp_datagram
from processhelp import gone_within, run_script, running
from procfs_ct.sources.tap import Columns, RingPacket, kernel_block, read_block
from procfs_ct.sources.tapreader import (SLOTS, RoundCounts, filled, read_slot, shared_size,
                                         taken, write_slot)


def ring_columns(count: int, seed: int = 0) -> Columns:
    """`count` frames of assorted lengths as read_block() makes them from a kernel block."""
    packets = [RingPacket(1_700_000_000 + n // 100, (n * 7_919 + seed) % 1_000_000_000,
                          build_udp_datagram("10.0.0.1", "10.0.0.2", 1000 + n, 53,
                                             b"p" * ((n + seed) % 300)))
               for n in range(count)]
    block = mmap.mmap(-1, 1 << 20)
    block[:] = kernel_block(packets, 1 << 20)
    batch = Columns()
    read_block(block, 48, count, {}, batch)
    return batch


def shared_slots(size: int) -> mmap.mmap:
    return mmap.mmap(-1, shared_size(size))


def test_a_slot_hands_over_the_frames_times_and_counts_it_was_given():
    batch = ring_columns(500)
    size = 1 << 18
    shared = shared_slots(size)
    counts = RoundCounts(received=503, skipped=3, truncated=1, completed=2, spilled=7,
                         losing=True)
    assert write_slot(shared, 0, size, batch.times, batch.frames, 0, counts) == 500
    assert filled(shared) == 1 and taken(shared) == 0
    times, frames, got = read_slot(shared, 0, size)
    assert frames == batch.frames and times == batch.times
    assert (got.received, got.skipped, got.truncated, got.completed, got.spilled,
            got.losing) == (503, 3, 1, 2, 7, True)
    assert taken(shared) == 1


def test_columns_larger_than_a_slot_go_on_in_the_next_slots_in_order():
    """A slot takes as many whole frames as fit; the next slots the rest.  Round the ring
    several times: each slot's frames are the ones written there last."""
    size = 16 << 10
    shared = shared_slots(size)
    frames_out: list = []
    times_out: list = []
    written = 0
    for round_ in range(5):
        batch = ring_columns(400, seed=round_)
        start = 0
        while start < len(batch):
            start = write_slot(shared, written, size, batch.times, batch.frames, start,
                               RoundCounts())
            written += 1
            if written - taken(shared) == SLOTS:       # the engine thread takes them
                take_all(shared, written, size, times_out, frames_out)
        take_all(shared, written, size, times_out, frames_out)
        assert frames_out == batch.frames and times_out == batch.times
        frames_out.clear()
        times_out.clear()
    assert written > 5 * 400 * 60 // size          # the columns really were split


def take_all(shared: mmap.mmap, written: int, size: int, times: list, frames: list) -> None:
    while taken(shared) < written:
        slot_times, slot_frames, _counts = read_slot(shared, taken(shared), size)
        times += slot_times
        frames += slot_frames


def test_a_slot_out_of_step_is_an_error_not_lost_frames():
    size = 1 << 16
    shared = shared_slots(size)
    batch = ring_columns(10)
    write_slot(shared, SLOTS, size, batch.times, batch.frames, 0, RoundCounts())
    with pytest.raises(RuntimeError, match="out of step: slot 0 holds slot 16"):
        read_slot(shared, 0, size)


def test_a_frame_larger_than_a_slot_is_refused():
    with pytest.raises(ValueError, match="does not fit"):
        write_slot(shared_slots(256), 0, 256, [0.0], [b"x" * 300], 0, RoundCounts())


@pytest.mark.kernel
def test_the_reader_process_ends_with_the_process_that_started_it(tmp_path):
    """The daemon killed (no close): the reader sees its pipe close and exits."""
    [pid] = run_script("import os\n"
                       "from procfs_ct.sources.tap import Tap\n"
                       "tap = Tap(['lo'])\n"
                       "tap.take_ready()\n"
                       "print(tap._reader.process.pid, flush=True)\n"
                       "os._exit(0)\n")
    assert gone_within(pid)


@pytest.mark.kernel
def test_a_process_forked_from_the_daemon_does_not_keep_the_reader_alive(tmp_path):
    """A child forked from the daemon (a listing's render child) outliving it: the reader
    still exits with the daemon, the child having let go of the alive pipe at the fork."""
    pid, child = run_script("import os, time\n"
                            "from procfs_ct.sources.tap import Tap\n"
                            "tap = Tap(['lo'])\n"
                            "tap.take_ready()\n"
                            "child = os.fork()\n"
                            "if child == 0:\n"
                            "    os.close(1); os.close(2)\n"   # (read to their end)
                            "    time.sleep(60)\n"
                            "    os._exit(0)\n"
                            "print(tap._reader.process.pid, child, flush=True)\n"
                            "os._exit(0)\n")
    try:
        assert gone_within(pid) and running(child)
    finally:
        os.kill(child, signal.SIGKILL)
