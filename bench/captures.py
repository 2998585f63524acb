"""The captures the benchmarks replay, made once and kept in the cache directory.

* the mixed capture: `procfs-ct generate` (TCP lifecycles with data, UDP request/response,
  ICMP echo, scans, GRE...) cut to exactly N frames;
* the fill capture: N unreplied UDP datagrams 127.0.0.1 -> 127.0.0.1 to distinct ports,
  the same table the kernel gets in bench/listing.py, for the listing comparison.
"""
from __future__ import annotations

import os
import struct
import subprocess

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


def fill_capture(entries: int) -> str:
    """N UDP datagrams 127.0.0.1:sport -> 127.0.0.1:dport, every (sport, dport) distinct and
    none answered: what the kernel's table holds after bench/listing.py fills a namespace."""
    from engine.build import build_ethernet, build_udp_datagram
    from engine.capture import PcapWriter

    path = cache_path(f"fill-{entries}.pcap")
    if os.path.exists(path):
        return path
    template = build_ethernet(build_udp_datagram("127.0.0.1", "127.0.0.1", 1, 1, b"x"))
    # Patch ports into a template (checksums are not verified at LOCAL_OUT, as for lo).
    ports = 34 + 0                                   # Ethernet 14 + IPv4 20: UDP header
    start = 1_700_000_000.0
    with open(path + ".tmp", "wb") as fileobj:
        writer = PcapWriter(fileobj)
        for n, (sport, dport) in enumerate(fill_ports(entries)):
            frame = bytearray(template)
            struct.pack_into("!HH", frame, ports, sport, dport)
            writer.write(start + n * 1e-6, bytes(frame))
    os.replace(path + ".tmp", path)
    return path


FILL_SPORTS = range(40000, 40100)       # source ports, one after the other


def fill_ports(entries: int):
    """(sport, dport) pairs: source ports 40000, 40001, ... each to every destination port
    outside the source ports' range (so no datagram is the reply of another: 40001 -> 40000
    would be tracked as the answer to 40000 -> 40001 and make no entry)."""
    made = 0
    for sport in FILL_SPORTS:
        for dport in range(1, 65536):
            if dport in FILL_SPORTS:
                continue
            if made == entries:
                return
            yield sport, dport
            made += 1
