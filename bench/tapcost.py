"""Instructions per frame of the live tap's path, by stage: `python -m bench.tapcost`.

The tap's reading thread and the engine thread share one GIL, so what matters is the sum
of what each spends per frame.  Wall-clock rates move 2x with the machine's load;
instruction counts (callgrind, as bench/instructions.py counts them) do not.  The frames
are the sender's (bench/blast.py: 32-byte UDP datagrams 127.0.0.1:40000 -> 9000+i over
1024 ports), laid out in TPACKET_V3 blocks as the kernel writes them (tap.kernel_block),
so no socket is involved.  Stages, each counted as the difference between a run over
`--frames` frames and a run over none (interpreter start and imports left out):

  decode   the tap thread: read_block() turning ring blocks into (ts, linktype, frame);
  feed     the engine alone: Engine.feed_frame() on those frames in a loop;
  driver   the engine thread and the pump behind a batches() source: the frames handed
           over as batches through EngineDriver (FrameQueue, _feed_due) to the same engine;
  pull     what the mount's one engine thread does behind a tap: the ring's blocks read
           by read_block() from EngineDriver's loop (a pull source, take_ready) and fed
           to the same engine -- decode and driver's work in one thread, no queue.

    python -m bench.tapcost [--frames 100000] [--stages decode,feed,driver,pull]
"""
from __future__ import annotations

import argparse
import mmap
import sys
import time
from typing import Optional

from .instructions import count

BLOCK_SIZE = 1 << 20
PORTS = 1024                       # as bench/main.py's tap section has blast.py send
PAYLOAD = b"x" * 32                # blast.py's datagram payload
T0 = 1_700_000_000

STAGES = {
    "decode": "from bench.tapcost import decode; decode({frames}, {work})",
    "feed": "from bench.tapcost import feed; feed({frames}, {work})",
    "driver": "from bench.tapcost import drive; drive({frames}, {work})",
    "pull": "from bench.tapcost import pull; pull({frames}, {work})",
}


def ring_of(frames: int) -> tuple[mmap.mmap, list[tuple[int, int]]]:
    """An anonymous mapping holding `frames` blaster datagrams in full blocks, and each
    block's (offset of its first packet, packet count)."""
    from engine.build import build_udp_datagram
    from procfs_ct.sources.tap import DGRAM_NET_OFFSET, RingPacket, kernel_block
    datagrams = [build_udp_datagram("127.0.0.1", "127.0.0.1", 40000, 9000 + port, PAYLOAD)
                 for port in range(PORTS)]
    record = (DGRAM_NET_OFFSET + len(datagrams[0]) + 7) & -8
    per_block = (BLOCK_SIZE - 64) // record
    blocks = max(1, -(-frames // per_block))
    ring = mmap.mmap(-1, blocks * BLOCK_SIZE)
    layout = []
    for block in range(blocks):
        first = block * per_block
        packets = [RingPacket(T0 + n // 100_000, (n % 100_000) * 10_000,
                              datagrams[n % PORTS])
                   for n in range(first, min(frames, first + per_block))]
        at = block * BLOCK_SIZE
        ring[at:at + BLOCK_SIZE] = kernel_block(packets, BLOCK_SIZE)
        layout.append((at + 48, len(packets)))
    return ring, layout


def decoded(frames: int) -> list:
    from procfs_ct.sources.tap import read_block
    ring, layout = ring_of(frames)
    batch: list = []
    kinds: dict = {}
    for at, packets in layout:
        read_block(ring, at, packets, kinds, batch)
    return batch


def decode(frames: int, work: bool) -> None:
    """The tap thread's work: the ring is built either way, read only if `work`."""
    from procfs_ct.sources.tap import read_block
    ring, layout = ring_of(frames)
    if work:
        batch: list = []
        kinds: dict = {}
        for at, packets in layout:
            read_block(ring, at, packets, kinds, batch)


def _engine():
    from engine.core import Engine
    return Engine("linux", ram_bytes=24 << 30, ncpu=2)


def feed(frames: int, work: bool) -> None:
    """The engine's work on the decoded frames (decoded either way, fed only if `work`)."""
    batch = decoded(frames)
    engine = _engine()
    if work:
        feed_frame = engine.feed_frame
        for ts, linktype, frame in batch:
            feed_frame(ts, linktype, frame)


class _Batches:
    """A source offering batches() as the tap does, one list per ring block."""

    def __init__(self, batches: list) -> None:
        self._batches = batches

    def __iter__(self) -> "_Batches":
        return self

    def __next__(self) -> tuple:
        raise StopIteration          # EngineDriver takes batches() when a source has it

    def batches(self):
        yield from self._batches


def drive(frames: int, work: bool) -> None:
    """The decoded frames through EngineDriver's pump and engine thread, as behind a tap
    (the frames' times are in the past: all are due at once)."""
    batch = decoded(frames)
    if work:
        per_block = len(batch) if len(batch) < 6000 else 6000
        lists = [batch[at:at + per_block] for at in range(0, len(batch), per_block)]
        _drive_until_done(_Batches(lists), frames)
    else:
        _engine()


class _RingPull:
    """A pull source over ring_of()'s blocks, as the tap is one: a block per take_ready()."""

    def __init__(self, ring: mmap.mmap, layout: list) -> None:
        from procfs_ct.sources.tap import read_block
        self._read_block = read_block
        self._ring, self._layout = ring, layout
        self._next = 0
        self._kinds: dict = {}

    def __iter__(self) -> "_RingPull":
        return self

    def __next__(self) -> tuple:
        raise StopIteration          # EngineDriver takes take_ready() from a pull source

    def take_ready(self) -> Optional[list]:
        if self._next == len(self._layout):
            return None              # every block read: the source is done
        at, packets = self._layout[self._next]
        self._next += 1
        batch: list = []
        self._read_block(self._ring, at, packets, self._kinds, batch)
        return batch

    def wait_ready(self, timeout: float) -> None:
        raise AssertionError("every block is ready at once")


def _drive_until_done(source: object, frames: int) -> None:
    """EngineDriver on `source` until the source is done and every frame fed."""
    from procfs_ct.driver import EngineDriver
    driver = EngineDriver(_engine(), source)
    driver.start()
    while not driver.stats.source_done:
        time.sleep(0.01)
    driver.stop()
    if driver.stats.packets != frames:
        raise RuntimeError(f"the driver fed {driver.stats.packets} of {frames} frames")


def pull(frames: int, work: bool) -> None:
    """The ring read and fed by the engine thread alone (the ring is built either way)."""
    ring, layout = ring_of(frames)
    if work:
        _drive_until_done(_RingPull(ring, layout), frames)
    else:
        _engine()


def per_frame(stage: str, frames: int, tree: str) -> float:
    many = count(STAGES[stage].format(frames=frames, work=True), tree)["instructions"]
    none = count(STAGES[stage].format(frames=frames, work=False), tree)["instructions"]
    return (many - none) / frames


def main(argv: Optional[list] = None) -> int:
    from .common import REPO
    parser = argparse.ArgumentParser(prog="python -m bench.tapcost")
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--stages", default=",".join(STAGES))
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error("--frames: at least 1")
    for stage in args.stages.split(","):
        cost = per_frame(stage, args.frames, REPO)
        print(f"{stage}: {cost:,.0f} instructions per frame", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
