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
ETH_P_IPV6 = 0x86DD
IPV6_FRAGMENT = 44


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

    def ipv6(self) -> Optional[bytes]:
        """The IPv6 packet inside an Ethernet frame, or None."""
        if len(self.data) < 54 or struct.unpack("!H", self.data[12:14])[0] != ETH_P_IPV6:
            return None
        return self.data[14:]

    def tos(self) -> Optional[int]:
        """The IPv4 TOS byte or the IPv6 traffic class (where the DSCP marks are), or None."""
        packet = self.ipv4()
        if packet is not None:
            return packet[1]
        packet = self.ipv6()
        if packet is not None:
            return (struct.unpack("!H", packet[0:2])[0] >> 4) & 0xFF
        return None

    def fragment_key(self) -> Optional[tuple]:
        """What the fragments of one datagram share (addresses, protocol, id), or None if
        this frame is no fragment (an IPv6 one: a fragment header right after the fixed
        header, the only place the scenarios put it; an atomic fragment is none)."""
        packet = self.ipv4()
        if packet is not None:
            if struct.unpack("!H", packet[6:8])[0] & 0x3FFF:
                return (packet[12:20], packet[9], packet[4:6])
            return None
        packet = self.ipv6()
        if packet is not None and packet[6] == IPV6_FRAGMENT and len(packet) >= 48:
            if struct.unpack("!H", packet[42:44])[0] & 0xFFF9:
                return (packet[8:40], packet[44:48])
        return None


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
