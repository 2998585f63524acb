"""Instructions per known UDP datagram in a table of 65,536 entries, the live tap's worst
case for the engine: `python -m bench.tapengine`.

bench/tapcost.py's `feed` stage counts the engine's work at 1,024 flows.  The tap's worst
traffic (bench/main.py's TAP_SHAPES) has 65,536: each flow's next datagram comes 65,536
datagrams after its last, so every lookup meets an entry not touched for a while.  Here the
blaster's datagrams (32-byte payload, as bench/blast.py sends them) are laid out in
TPACKET_V3 blocks and read back by the tap's own read_block() into the (ts, linktype,
frame) tuples the engine gets -- LINKTYPE_LINUX_SLL2, PACKET_OUTGOING -- one pass making
the 65,536 entries, then `--passes` passes over the same flows, each datagram a known
one.  Counted by callgrind (bench/instructions.py's count()) as the difference between a
run with the known passes and a run without them, per known datagram (the frames made
beforehand, outside valgrind, and loaded by both runs: building 131,072 of them costs more
than tracking them), through:

  fast     the engine's fast path, what EngineDriver calls for a tap's frame;
  feed     Engine.feed_frame(), the general path (what tapcost.py's `feed` stage runs).

Shapes: `addresses` (127.0.0.1:40000 -> 65,536 addresses of 127/8, 1,024 ports) and
`sports` (64 source ports x 1,024 ports of 127.0.0.1).

    python -m bench.tapengine [--passes 2] [--shapes addresses,sports] [--ways fast,feed]
                              [--tree PATH]
"""
from __future__ import annotations

import argparse
import os
import pickle
import sys
from typing import List, Optional, Tuple

from .common import REPO, cache_path
from .instructions import count

FLOWS = 65536
PORTS = 1024                        # bench/main.py's TAP_PORTS
FIRST_PORT = 9000                   # bench/blast.py's first destination port
SOURCE_PORT = 40000
PAYLOAD = b"x" * 32                 # blast.py's datagram payload
BLOCK_SIZE = 1 << 20
T0 = 1_700_000_000
CODE = "from bench.tapengine import run; run({shape!r}, {passes}, {way!r}, {saved!r})"
SHAPES = ("addresses", "sports")
WAYS = ("fast", "feed")


def flow(shape: str, n: int) -> Tuple[str, str, int, int]:
    """(source, destination, sport, dport) of flow n of a shape."""
    dport = FIRST_PORT + n % PORTS
    if shape == "addresses":
        address = 0x7F000001 + n % FLOWS
        dst = ".".join(str(address >> shift & 0xFF) for shift in (24, 16, 8, 0))
        return "127.0.0.1", dst, SOURCE_PORT, dport
    return "127.0.0.1", "127.0.0.1", SOURCE_PORT + n // PORTS, dport


def frames_of(shape: str, passes: int) -> List[tuple]:
    """The tap's (ts, linktype, frame) tuples: one pass making the entries, then `passes`
    over the same flows (100,000 datagrams a second, as the top offered rates)."""
    from engine.build import build_udp_datagram
    from procfs_ct.sources.tap import RingPacket, kernel_block, read_block
    datagrams = [build_udp_datagram(*flow(shape, n), PAYLOAD) for n in range(FLOWS)]
    packets = [RingPacket(T0 + n // 100_000, (n % 100_000) * 10_000, datagrams[n % FLOWS])
               for n in range(FLOWS * (1 + passes))]
    per_block = 6_000                 # (~160 B a record: a 1 MiB block holds 6,500)
    batch: list = []
    kinds: dict = {}
    for first in range(0, len(packets), per_block):
        block = packets[first:first + per_block]
        read_block(kernel_block(block, BLOCK_SIZE), 48, len(block), kinds, batch)
    return batch


def saved_frames(shape: str, passes: int) -> str:
    """frames_of(shape, passes) pickled in the bench cache (made once)."""
    path = cache_path(f"tapengine-{shape}-{passes}.pickle")
    if not os.path.exists(path):
        with open(path + ".tmp", "wb") as fileobj:
            pickle.dump(frames_of(shape, passes), fileobj, pickle.HIGHEST_PROTOCOL)
        os.replace(path + ".tmp", path)
    return path


def run(shape: str, passes: int, way: str, saved: str = "") -> None:
    """Feed a shape's frames (the known passes only counted as the difference): the first
    FLOWS * (1 + passes) of those pickled in `saved`, else made here."""
    from engine.core import Engine
    engine = Engine("linux", ram_bytes=24 << 30, ncpu=2)
    if saved:
        with open(saved, "rb") as fileobj:
            frames = pickle.load(fileobj)[:FLOWS * (1 + passes)]
    else:
        frames = frames_of(shape, passes)
    if way == "fast":
        fast = engine.fast_path(frames[0][1])
        for ts, linktype, frame in frames:
            if fast(ts, linktype, frame) is None:
                raise RuntimeError("a frame the fast path declined")
    else:
        feed_frame = engine.feed_frame
        for ts, linktype, frame in frames:
            feed_frame(ts, linktype, frame)
    if len(engine.tracker.conns) != FLOWS:
        raise RuntimeError(f"{len(engine.tracker.conns)} entries, not {FLOWS}")


def per_known(shape: str, passes: int, way: str, tree: str) -> float:
    """Instructions per known datagram: the run with `passes` known passes less the run
    with none, over their datagrams."""
    saved = saved_frames(shape, passes)
    many = count(CODE.format(shape=shape, passes=passes, way=way, saved=saved),
                 tree)["instructions"]
    none = count(CODE.format(shape=shape, passes=0, way=way, saved=saved),
                 tree)["instructions"]
    return (many - none) / (FLOWS * passes)


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tapengine")
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--ways", default=",".join(WAYS))
    parser.add_argument("--tree", default=REPO, help="checkout whose engine is counted")
    args = parser.parse_args(argv)
    if args.passes < 1:
        parser.error("--passes: at least 1")
    tree = os.path.abspath(args.tree)
    for shape in args.shapes.split(","):
        for way in args.ways.split(","):
            if shape not in SHAPES or way not in WAYS:
                parser.error(f"unknown shape or way: {shape}, {way}")
            print(f"{shape} {way} ({args.tree}): "
                  f"{per_known(shape, args.passes, way, tree):.0f} instructions per known "
                  f"datagram", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
