"""Instructions per frame of the live tap's path, by stage: `python -m bench.tapcost`.

The tap's reading thread and the engine thread share one GIL, so what matters is the sum
of what each spends per frame.  Wall-clock rates move 2x with the machine's load;
instruction counts (callgrind, as bench/instructions.py counts them) do not.  The frames
are the packet sender's, byte for byte (bench/blast.py --sender packet: bench/udpframes.py's
32-byte UDP datagrams with DF and each flow's number as IP id; datagram n of a pass over the
lcm(PORTS, ADDRESSES) destinations to 127.0.0.1 + n % ADDRESSES, port 9000 + n % PORTS,
pass p from source port 40000 + p % SOURCES), laid out in TPACKET_V3 blocks as the kernel
writes them (tap.kernel_block), so no socket is involved.  Every run first tracks one pass
of all the flows (as a long run's table has them: the worst shapes' 65,536 entries), so
the frames counted meet known entries, as they do at the top rates.  Stages, each counted
as the difference between a run over `--frames` frames and a run over none (interpreter
start, imports, building the frames and the warm-up pass left out; procfs_ct.driver is
imported in every run, as its dataclasses compile code at run time: imported only where a
stage's frames go through it, it added 600-1,500 instructions a frame to driver and pull):

  decode   the tap's reader process (procfs_ct/sources/tapreader.py): read_block() turning
           ring blocks into frames (Columns: a time and a frame each) and write_slot()
           laying each block's out in a shared slot -- its own CPU, not the engine's;
  feed     the engine alone: the frames (decoded either way) to the engine's fast path in
           a loop, Engine.feed_frame() for those it declines -- what the driver calls;
  driver   the engine thread and the pump behind a batches() source: the frames handed
           over as batches through EngineDriver (FrameQueue, _feed_due) to the same engine;
  pull     what the mount's one engine thread does behind a tap: the slots the reader
           process laid out (laid out before the count: decode's work) taken from
           EngineDriver's loop (a pull source, take_ready: tapreader.SlotTaker) and fed
           to the same engine, no queue.

pull - feed is what the tap and the driver add to the engine thread's work per frame.

    python -m bench.tapcost [--frames 100000] [--stages decode,feed,driver,pull]
                            [--ports 1024] [--addresses 1] [--sources 1]

The worst shapes of bench/main.py's tap section: `--addresses 65536` (65,536 flows to
65,536 addresses) and `--sources 64` (65,536 flows from 64 source ports x 1,024 ports).
"""
from __future__ import annotations

import argparse
import math
import mmap
import os
import sys
import threading
from typing import NamedTuple, Optional

from procfs_ct import driver as driver_module
from procfs_ct.driver import EngineDriver
from procfs_ct.gcpolicy import FreezeAfterFullCollection

from .common import cache_path
from .instructions import count

BLOCK_SIZE = 1 << 20
T0 = 1_700_000_000
RATE = 100_000                     # frames a second of the frames' kernel timestamps
COLLECTOR = FreezeAfterFullCollection()


class Traffic(NamedTuple):
    """bench/blast.py's PORTS, ADDRESSES and SOURCES (bench/main.py's TAP_SHAPES)."""
    ports: int = 1024
    addresses: int = 1
    sources: int = 1

    @property
    def flows(self) -> int:
        return self.sources * math.lcm(self.ports, self.addresses)


STAGES = {
    "decode": "from bench.tapcost import Traffic, decode; decode({frames}, {work}, {traffic!r})",
    "feed": "from bench.tapcost import Traffic, feed; feed({frames}, {work}, {traffic!r})",
    "driver": "from bench.tapcost import Traffic, drive; drive({frames}, {work}, {traffic!r})",
    "pull": "from bench.tapcost import Traffic, pull; pull({frames}, {work}, {traffic!r})",
}


def sent(first: int, frames: int, traffic: Traffic) -> list[tuple[int, bytes]]:
    """Datagrams `first` to `first + frames` of what blast.py sends, each with its number
    (the frames' times count from it): bench/udpframes.py's round, the packet sender's
    bytes (DF, the flow's number as IP id), the same flow for every round's datagram n."""
    from bench.udpframes import one_round
    datagrams = one_round(traffic.ports, traffic.addresses, traffic.sources)
    return [(n, datagrams[n % len(datagrams)]) for n in range(first, first + frames)]


def ring_of(frames: int, traffic: Traffic, first: Optional[int] = None
            ) -> tuple[mmap.mmap, list[tuple[int, int]]]:
    """A mapping holding `frames` blaster datagrams from number `first` on (by default
    those after the warm-up pass) in full blocks, and each block's (offset of its first
    packet, packet count).  Built once into the bench cache (main() builds them before
    counting): both counted runs only map the file."""
    from procfs_ct.sources.tap import _BLOCK_DESC
    first = traffic.flows if first is None else first
    # v2: the frames are udpframes.py's (v1's were built here: no DF, IP id 0).
    path = cache_path(f"tapcost-v2-{first}-{frames}-{traffic.ports}-{traffic.addresses}-"
                      f"{traffic.sources}.ring")
    if not os.path.exists(path):
        _build_ring(path, first, frames, traffic)
    with open(path, "rb") as file:
        ring = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    layout = []
    for at in range(0, len(ring), BLOCK_SIZE):
        (_version, _priv, _status, packets, offset, *_rest) = _BLOCK_DESC.unpack_from(ring, at)
        layout.append((at + offset, packets))
    return ring, layout


def _build_ring(path: str, first: int, frames: int, traffic: Traffic) -> None:
    from procfs_ct.sources.tap import DGRAM_NET_OFFSET, RingPacket, kernel_block
    datagrams = sent(first, frames, traffic)
    record = (DGRAM_NET_OFFSET + len(datagrams[0][1]) + 7) & -8
    per_block = (BLOCK_SIZE - 64) // record
    with open(path + ".tmp", "wb") as file:
        for at in range(0, frames, per_block):
            file.write(kernel_block([RingPacket(T0 + n // RATE, (n % RATE) * (10 ** 9 // RATE),
                                                datagram)
                                     for n, datagram in datagrams[at:at + per_block]],
                                    BLOCK_SIZE))
    os.replace(path + ".tmp", path)


def read_columns(ring: mmap.mmap, layout: list[tuple[int, int]]):
    """Every frame of ring_of()'s blocks, as the tap's read_block() makes them (Columns)."""
    from procfs_ct.sources.tap import Columns, read_block
    batch = Columns()
    kinds: dict = {}
    for at, packets in layout:
        read_block(ring, at, packets, kinds, batch)
    return batch


def read_ring(ring: mmap.mmap, layout: list[tuple[int, int]]) -> list:
    """Every frame of ring_of()'s blocks as (ts, linktype, frame) tuples."""
    return read_columns(ring, layout).tuples()


def lay_out(ring: mmap.mmap, layout: list[tuple[int, int]], slots: int) -> tuple:
    """The reader process's work on ring_of()'s blocks: each read (read_block) and laid out
    in a slot of its own, numbered from 0, in a ring of `slots` slots; (the shared mapping,
    the slot size)."""
    from procfs_ct.sources import tapreader
    from procfs_ct.sources.tap import Columns, read_block
    size = tapreader.slot_size(BLOCK_SIZE, 1)
    shared = mmap.mmap(-1, tapreader.shared_size(size, slots))
    kinds: dict = {}
    for number, (at, packets) in enumerate(layout):
        batch = Columns()
        read_block(ring, at, packets, kinds, batch)
        tapreader.write_slot(shared, number, size, batch.times, batch.frames, 0,
                             tapreader.RoundCounts(), slots)
    return shared, size


def decode(frames: int, work: bool, traffic: Traffic) -> None:
    """The reader process's work: the ring is built either way, and only if `work` read
    block by block and laid out in the slots (the reader's ring of them, as it runs)."""
    from procfs_ct.sources.tapreader import SLOTS
    ring, layout = ring_of(frames, traffic)
    if work:
        lay_out(ring, layout, SLOTS)


def _engine(traffic: Traffic):
    """An engine that has tracked one pass over all the flows, as the tap reads them (the
    frames counted follow it in time): the table a long run has."""
    from engine.core import Engine
    from engine.linklayer import LINKTYPE_LINUX_SLL2
    engine = Engine("linux", ram_bytes=24 << 30, ncpu=2)
    fast = engine.fast_path(LINKTYPE_LINUX_SLL2)
    for ts, linktype, frame in read_ring(*ring_of(traffic.flows, traffic, first=0)):
        if fast(ts, linktype, frame) is None:
            engine.feed_frame(ts, linktype, frame)
    # The mount's collector policy (procfs_ct/cmd_mount.py serve()), installed as it does
    # before serving: full collections walk only what came since the last one.  Without
    # it every frame's tuple brought full collections walking the whole table: ~5,000
    # instructions a frame of pull's 1,024 flows, a cost the mount does not have.
    COLLECTOR.install()
    return engine


def feed(frames: int, work: bool, traffic: Traffic) -> None:
    """The engine's own work on the decoded frames (decoded either way, fed only if
    `work`): its fast path, as the driver calls it, and feed_frame() where it declines."""
    from engine.linklayer import LINKTYPE_LINUX_SLL2
    batch = read_ring(*ring_of(frames, traffic))
    engine = _engine(traffic)
    if work:
        fast = engine.fast_path(LINKTYPE_LINUX_SLL2)
        feed_frame = engine.feed_frame
        for ts, linktype, frame in batch:
            if fast(ts, linktype, frame) is None:
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


def drive(frames: int, work: bool, traffic: Traffic) -> None:
    """The decoded frames through EngineDriver's pump and engine thread, as behind a tap
    (the frames' times are in the past: all are due at once)."""
    batch = read_ring(*ring_of(frames, traffic))
    engine = _engine(traffic)
    if work:
        per_block = len(batch) if len(batch) < 6000 else 6000
        lists = [batch[at:at + per_block] for at in range(0, len(batch), per_block)]
        _drive_until_done(engine, _Batches(lists), frames, traffic)


class _SlotPull:
    """A pull source over ring_of()'s blocks as the tap's reader process hands them over:
    each block laid out in a slot of its own before the count (decode's work, in another
    process in the mount), a slot taken per take_ready() by tapreader.SlotTaker, as
    Tap.take_ready() takes them."""

    def __init__(self, ring: mmap.mmap, layout: list) -> None:
        from procfs_ct.sources.tapreader import SlotTaker
        slots = len(layout)                  # room for every block: none is taken before
        shared, size = lay_out(ring, layout, slots)
        self._slots = SlotTaker(shared, size, slots)
        self._blocks = len(layout)

    def __iter__(self) -> "_SlotPull":
        return self

    def __next__(self) -> tuple:
        raise StopIteration          # EngineDriver takes take_ready() from a pull source

    def take_ready(self):
        from procfs_ct.sources.tap import Columns
        if self._slots.next == self._blocks:
            return None              # every slot taken: the source is done
        batch = Columns()
        self._slots.take(batch.times, batch.frames, 1)
        return batch

    def wait_ready(self, timeout: float) -> None:
        raise AssertionError("every slot is filled at once")


class _AfterTheFrames:
    """The driver's clock: one second after the last frame's time, standing still.  Every
    frame is due at once, and no advance happens (the driver's first is due half a second
    after it starts): on the real clock one came whenever the count had run half a second
    of wall time, and once the source was done (no frame left to bound it) it advanced to
    today and expired the whole table -- ~1,300 instructions a frame of driver and pull, or
    none, as the machine's load had it."""

    def __init__(self, frames: int) -> None:
        self._now = float(T0 + frames // RATE + 1)

    def now(self) -> float:
        return self._now


def _drive_until_done(engine, source: object, frames: int, traffic: Traffic) -> None:
    """EngineDriver on `source` until the source is done and every frame fed, taking the
    collector's steps between its holds as the mount's does.  The engine thread itself
    stops the driver once the source is done, and this thread waits for it without
    waking: a thread polling every few ms ran for as long as the count took (callgrind
    on a loaded machine: 100-250 instructions a frame of driver and pull, varying)."""
    # A hold of the engine lock ends after FEED_SLICE frames or FEED_HOLD seconds: under
    # callgrind (~50 times slower) the 2 ms ended every hold after one check, 32 frames,
    # and the per-hold work counted 16 times what the mount pays at speed, varying with
    # the load.  Counted by frames only: every hold is FEED_SLICE frames.
    driver_module.FEED_HOLD = float("inf")
    done = threading.Event()

    def between_holds() -> None:
        COLLECTOR.step()
        if driver.stats.source_done and not done.is_set():
            driver.stop()                # from the engine thread: it ends its loop
            done.set()

    driver = EngineDriver(engine, source, between_holds=between_holds,
                          clock=_AfterTheFrames(traffic.flows + frames))
    driver.start()
    done.wait()
    driver.stop()
    if driver.stats.packets != frames:
        raise RuntimeError(f"the driver fed {driver.stats.packets} of {frames} frames")


def pull(frames: int, work: bool, traffic: Traffic) -> None:
    """The slots taken and fed by the engine thread alone (the ring is built and laid out
    in slots either way)."""
    ring, layout = ring_of(frames, traffic)
    source = _SlotPull(ring, layout)
    engine = _engine(traffic)
    if work:
        _drive_until_done(engine, source, frames, traffic)


def per_frame(stage: str, frames: int, tree: str, traffic: Traffic = Traffic()) -> float:
    many = count(STAGES[stage].format(frames=frames, work=True, traffic=traffic),
                 tree)["instructions"]
    none = count(STAGES[stage].format(frames=frames, work=False, traffic=traffic),
                 tree)["instructions"]
    return (many - none) / frames


def main(argv: Optional[list] = None) -> int:
    from .common import REPO
    parser = argparse.ArgumentParser(prog="python -m bench.tapcost")
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--stages", default=",".join(STAGES))
    default = Traffic()
    parser.add_argument("--ports", type=int, default=default.ports)
    parser.add_argument("--addresses", type=int, default=default.addresses)
    parser.add_argument("--sources", type=int, default=default.sources)
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error("--frames: at least 1")
    if min(args.ports, args.addresses, args.sources) < 1:
        parser.error("--ports, --addresses, --sources: at least 1")
    traffic = Traffic(args.ports, args.addresses, args.sources)
    print(f"{traffic.flows:,} flows ({args.sources} source ports x {args.ports} ports x "
          f"{args.addresses} addresses), {args.frames:,} frames after one pass of them",
          flush=True)
    ring_of(args.frames, traffic)              # built once here, read by every run
    ring_of(traffic.flows, traffic, first=0)
    for stage in args.stages.split(","):
        cost = per_frame(stage, args.frames, REPO, traffic)
        print(f"{stage}: {cost:,.0f} instructions per frame", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
