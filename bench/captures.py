"""The captures the benchmarks replay, made once and kept in the cache directory.

* the mixed capture: `procfs-ct generate` (TCP lifecycles with data, UDP request/response,
  ICMP echo, scans, GRE...) cut to exactly N frames;
* the shape captures: the datagrams that make one of bench/shapes.py's tables, the same
  ones the kernel gets from a raw socket in a namespace, for the listing comparison.
"""
from __future__ import annotations

import os
import struct
import subprocess
from typing import Iterator

from .common import PYTHON, REPO, cache_path, say

PCAP_HEADER = 24
RECORD = struct.Struct("<IIII")
GENERATE_RATE = 20000          # packets/s of the synthetic mix in the generated capture


def mixed_capture(packets: int = 1_000_000, seed: int = 0) -> str:
    """Path of a pcap holding exactly `packets` frames of the synthetic mix."""
    path = cache_path(f"mixed-{packets}-seed{seed}.pcap")
    if os.path.exists(path):
        return path
    seconds = packets / GENERATE_RATE * 1.05 + 2        # the mix settles a little below rate
    raw = path + ".full"
    say(f"  generating {packets} packets of mixed traffic ({seconds:.0f} s at "
        f"{GENERATE_RATE} pps) -> {path}")
    subprocess.run([PYTHON, "-m", "procfs_ct.cli", "generate", "--out", raw, "--seconds",
                    f"{seconds:.0f}", "--rate", str(GENERATE_RATE), "--seed", str(seed)],
                   cwd=REPO, check=True, stderr=subprocess.DEVNULL,
                   env=dict(os.environ, PYTHONPATH=REPO))
    written = cut_capture(raw, path + ".tmp", packets)
    os.unlink(raw)
    if written < packets:
        raise RuntimeError(f"generated only {written} packets, wanted {packets}")
    os.replace(path + ".tmp", path)
    return path


def cut_capture(source: str, target: str, frames: int) -> int:
    """Copy the pcap header and the first `frames` records of a little-endian pcap."""
    count = 0
    with open(source, "rb") as src, open(target, "wb") as dst:
        dst.write(src.read(PCAP_HEADER))
        while count < frames:
            head = src.read(RECORD.size)
            if len(head) < RECORD.size:
                break
            caplen = RECORD.unpack(head)[2]
            dst.write(head + src.read(caplen))
            count += 1
    return count


def shape_capture(shape: str, entries: int) -> str:
    """Path of a capture of the datagrams that make a table shape (bench/shapes.py), as
    Ethernet frames 1 us apart: what a mount replays (pcap:FILE@0) and what task_fill
    sends to the kernel, so both tables hold the same entries."""
    from engine.build import build_ethernet
    from engine.capture import PcapWriter
    from .shapes import datagrams

    path = cache_path(f"shape-{shape}-{entries}.pcap")
    if os.path.exists(path):
        return path
    say(f"  building the {shape} table's datagrams ({entries} entries) -> {path}")
    start = 1_700_000_000.0
    with open(path + ".tmp", "wb") as fileobj:
        writer = PcapWriter(fileobj)
        for n, datagram in enumerate(datagrams(shape, entries)):
            writer.write(start + n * 1e-6, build_ethernet(datagram))
    os.replace(path + ".tmp", path)
    return path


ETHERNET_HEADER = 14


def capture_datagrams(path: str) -> Iterator[bytes]:
    """The IPv4 datagrams of a little-endian Ethernet pcap written by shape_capture()."""
    with open(path, "rb") as fileobj:
        data = fileobj.read()
    pos = PCAP_HEADER
    while pos + RECORD.size <= len(data):
        caplen = RECORD.unpack_from(data, pos)[2]
        frame = pos + RECORD.size
        yield data[frame + ETHERNET_HEADER:frame + caplen]
        pos = frame + caplen
