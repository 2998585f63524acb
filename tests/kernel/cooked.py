"""The two link types of the wire scenarios' captures (stdlib only; not the engine's reader).

* LINUX_SLL2 (276): what `tcpdump -i any` writes. Each frame starts with a 20-byte header
  that says which way the packet went (packet type: PACKET_OUTGOING for what the observed
  host sent, PACKET_HOST for what it received).
* NFLOG (239): what `tcpdump -i nflog:N` writes from nft `log group N` rules. Each record
  carries the netfilter hook that logged the packet, the rule's prefix and the IP packet as
  the hook saw it (reassembled, for fragments).

Formats: tcpdump.org/linktypes/LINKTYPE_LINUX_SLL2.html and LINKTYPE_NFLOG.html. NFLOG TLV
headers are in the capturing host's byte order (little-endian here); the IP payload is not.
"""
from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from typing import Optional

LINKTYPE_LINUX_SLL2 = 276
LINKTYPE_NFLOG = 239
ETH_P_IP = 0x0800
PACKET_OUTGOING = 4                         # sll_pkttype of a packet this host sent

# <linux/netfilter.h> hook numbers, as NFULA_PACKET_HDR carries them.
NF_INET_PRE_ROUTING, NF_INET_LOCAL_IN, NF_INET_FORWARD = 0, 1, 2
NF_INET_LOCAL_OUT, NF_INET_POST_ROUTING = 3, 4

# <linux/netfilter/nfnetlink_log.h> attribute types.
NFULA_PACKET_HDR, NFULA_PAYLOAD, NFULA_PREFIX = 1, 9, 10

_SLL2 = struct.Struct("!HHIHBB")            # protocol, reserved, ifindex, arphrd, pkttype, addrlen
SLL2_HEADER_LEN = 20


@dataclass(frozen=True)
class CookedFrame:
    """One frame of a LINUX_SLL2 capture."""
    pkttype: int
    protocol: int
    payload: bytes                          # after the 20-byte header

    @property
    def outgoing(self) -> bool:
        return self.pkttype == PACKET_OUTGOING

    def ipv4(self) -> Optional[bytes]:
        return self.payload if self.protocol == ETH_P_IP and len(self.payload) >= 20 else None


def cooked(data: bytes) -> CookedFrame:
    if len(data) < SLL2_HEADER_LEN:
        raise ValueError("frame shorter than a LINUX_SLL2 header")
    protocol, _reserved, _ifindex, _arphrd, pkttype, _addrlen = _SLL2.unpack_from(data)
    return CookedFrame(pkttype, protocol, data[SLL2_HEADER_LEN:])


@dataclass(frozen=True)
class LogRecord:
    """One NFLOG record: which hook logged which packet, under which prefix."""
    hook: int
    prefix: str
    packet: bytes


def log_record(data: bytes, byteorder: str = sys.byteorder) -> LogRecord:
    """Decode one NFLOG record (4-byte header, then 4-byte aligned TLVs)."""
    order = "<" if byteorder == "little" else ">"
    hook, prefix, packet = None, "", b""
    offset = 4
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from(order + "HH", data, offset)
        if length < 4:
            raise ValueError(f"NFLOG TLV of length {length}")
        value = data[offset + 4:offset + length]
        kind &= 0x7FFF                      # NLA_F_NESTED and friends
        if kind == NFULA_PACKET_HDR:
            hook = value[2]                 # hw_protocol (2 bytes), then the hook
        elif kind == NFULA_PREFIX:
            prefix = value.split(b"\0", 1)[0].decode()
        elif kind == NFULA_PAYLOAD:
            packet = value
        offset += (length + 3) & ~3
    if hook is None:
        raise ValueError("NFLOG record without a packet header")
    return LogRecord(hook, prefix, packet)


def fragment_key(packet: bytes) -> Optional[tuple]:
    """(addresses, protocol, id) of a fragment; None for a whole datagram."""
    if struct.unpack("!H", packet[6:8])[0] & 0x3FFF:
        return packet[12:20], packet[9], packet[4:6]
    return None


def datagram_groups(ipv4s: list[Optional[bytes]], outgoing: list[bool]) -> list[list[int]]:
    """Frame indices by IP datagram: a fragment train (per direction) is one group."""
    groups: dict = {}
    for index, packet in enumerate(ipv4s):
        key = fragment_key(packet) if packet else None
        key = ("frame", index) if key is None else (outgoing[index], *key)
        groups.setdefault(key, []).append(index)
    return list(groups.values())
