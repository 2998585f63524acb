"""Minimal reader for the classic pcap files tcpdump writes (stdlib only).

Used by the scenario generator to check a finished capture (no frame after the snapshot,
size limits) and to read the kernel's per-packet verdicts back out of the IP TOS byte;
the differential test uses it for the same verdicts. It is not the engine's reader.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO, Optional

LINKTYPE_EN10MB = 1
ETH_P_IP = 0x0800


@dataclass(frozen=True)
class Frame:
    index: int          # 0-based position in the capture
    ts: float           # seconds since the epoch
    data: bytes         # captured bytes, starting at the Ethernet header

    def ipv4(self) -> Optional[bytes]:
        """The IPv4 packet inside an Ethernet frame, or None."""
        if len(self.data) < 34 or struct.unpack("!H", self.data[12:14])[0] != ETH_P_IP:
            return None
        return self.data[14:]


def read_frames(stream: BinaryIO) -> tuple[int, list[Frame]]:
    """(link type, frames) of a pcap file (micro- or nanosecond, either byte order)."""
    header = stream.read(24)
    magic = header[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError("not a classic pcap file")
    divisor = 1e9 if magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1e6
    linktype = struct.unpack(endian + "I", header[20:24])[0]
    frames = []
    while True:
        record = stream.read(16)
        if len(record) < 16:
            break
        sec, frac, caplen, _origlen = struct.unpack(endian + "IIII", record)
        frames.append(Frame(len(frames), sec + frac / divisor, stream.read(caplen)))
    return linktype, frames


def read_pcap(path: str) -> tuple[int, list[Frame]]:
    with open(path, "rb") as stream:
        return read_frames(stream)
