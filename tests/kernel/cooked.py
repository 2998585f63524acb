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
ETH_P_IPV6 = 0x86DD
IPV6_HEADER_LEN = 40
IPV6_FRAGMENT = 44
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

    def ip(self) -> Optional[bytes]:
        """The IPv4 or IPv6 packet, or None."""
        if self.protocol == ETH_P_IPV6 and len(self.payload) >= IPV6_HEADER_LEN:
            return self.payload
        return self.ipv4()


def is_ipv6(packet: bytes) -> bool:
    return packet[0] >> 4 == 6


def ip_length(packet: bytes) -> int:
    """The datagram's length by its header (IPv4 total length, IPv6 40 + payload length)."""
    if is_ipv6(packet):
        return IPV6_HEADER_LEN + struct.unpack("!H", packet[4:6])[0]
    return struct.unpack("!H", packet[2:4])[0]


def addresses(packet: bytes) -> bytes:
    return packet[8:40] if is_ipv6(packet) else packet[12:20]


def l4_start(packet: bytes) -> tuple[int, int]:
    """(offset, protocol) of the header after the IP header (IPv6: the next header, which
    is the transport for every packet the scenarios compare whole)."""
    if is_ipv6(packet):
        return IPV6_HEADER_LEN, packet[6]
    return (packet[0] & 0x0F) * 4, packet[9]


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
    """(addresses, protocol, id) of a fragment; None for a whole datagram (an IPv6 one: a
    fragment header right after the fixed header, offset or M set; an atomic fragment is
    whole)."""
    if is_ipv6(packet):
        if (packet[6] == IPV6_FRAGMENT and len(packet) >= 48
                and struct.unpack("!H", packet[42:44])[0] & 0xFFF9):
            return packet[8:40], IPV6_FRAGMENT, packet[44:48]
        return None
    if struct.unpack("!H", packet[6:8])[0] & 0x3FFF:
        return packet[12:20], packet[9], packet[4:6]
    return None


def datagram_groups(packets: list[Optional[bytes]], outgoing: list[bool]) -> list[list[int]]:
    """Frame indices by IP datagram: a fragment train (per direction) is one group."""
    groups: dict = {}
    for index, packet in enumerate(packets):
        key = fragment_key(packet) if packet else None
        key = ("frame", index) if key is None else (outgoing[index], *key)
        groups.setdefault(key, []).append(index)
    return list(groups.values())
