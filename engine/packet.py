"""The parsed form of one datagram: what the parser hands the tracker.

Addresses are ints (host order), so tuples hash fast and render with one helper.
Only the fields a tracker needs are kept; everything is read-only once built.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Optional, Tuple

from . import ipv4
from .hooks import LOCAL_OUT

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_GRE = 47
IPPROTO_ICMPV6 = 58
IPPROTO_SCTP = 132
IPPROTO_UDPLITE = 136
# Protocols whose tuple holds ports in the first 4 bytes of their header.
PORT_PROTOCOLS = frozenset((IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP, IPPROTO_UDPLITE))

# ICMP types whose body quotes the offending datagram (spec 5.2).
ICMP_ERROR_TYPES = frozenset((3, 4, 5, 11, 12))

# TCP flag bits as they sit in byte 13 of the header.
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80


@dataclass(slots=True)
class TcpInfo:
    flags: int
    seq: int
    ack: int
    window: int
    payload_len: int
    wscale: Optional[int] = None     # window-scale option value, None if absent
    sack_perm: bool = False          # SACK-permitted option present
    sack_edge: Optional[int] = None  # highest right edge of SACK blocks, None if none
    checksum_ok: bool = True
    options: bool = False            # the header has option bytes (data offset above 5)


@dataclass(slots=True)
class IcmpInfo:
    type: int
    code: int
    ident: int
    # For error types (3,4,5,11,12): the tuple of the embedded datagram, as the
    # sender of that datagram saw it: (src, dst, proto, sport, dport) or None if the
    # embedded header is unusable (truncated, non-first fragment).
    inner: Optional[tuple] = None
    inner_bad: bool = False
    checksum_ok: bool = True


@dataclass(slots=True)
class SctpInfo:
    vtag: int                        # the common header's verification tag
    # (type, flags, initiate tag) per chunk, in order; the initiate tag of INIT and
    # INIT ACK chunks, None for other chunks or when it is cut off.
    chunks: tuple
    # do_basic_checks(): at least one chunk, none of length 0, COOKIE ECHO/ACK only first,
    # INIT / INIT ACK / SHUTDOWN COMPLETE only alone.
    chunks_ok: bool
    checksum_ok: bool = True


@dataclass(slots=True)
class Packet:
    """One whole (reassembled) datagram, as conntrack sees it at `hook`."""
    src: int
    dst: int
    proto: int
    ip_len: int                      # IP total length: what the byte counters add
    hook: int = LOCAL_OUT
    sport: int = 0                   # TCP/UDP ports; ICMP: id in sport, type<<8|code in dport
    dport: int = 0
    key: bytes = b""                 # the table key: l3.key(src, dst, sport, dport), see keyed()
    l3: ModuleType = ipv4
    tcp: Optional[TcpInfo] = None
    icmp: Optional[IcmpInfo] = None
    sctp: Optional[SctpInfo] = None
    udp_len: int = 0
    l4_checksum_ok: bool = True
    # Set by the parser when the L4 header is unusable (truncated, bad length):
    # the tracker classifies such a packet INVALID and counts it.
    l4_error: Optional[str] = None
    # (buffer, offset of the IP header in it) of a TCP or UDP packet: the buffer the parser
    # read, a frame or a datagram.  Only conntrack helpers read the payload (engine/helpers/),
    # so the parser keeps one reference per packet and copies nothing.
    raw: Optional[Tuple[bytes, int]] = None
    # The helper a raw-table `CT --helper` rule attached (the kernel's conntrack template),
    # read when the packet makes a new entry.
    template_helper: Any = None

    @property
    def payload(self) -> bytes:
        """The TCP or UDP payload (b"" for other protocols or none), read from the headers
        the parser checked (IHL, total length, TCP data offset, UDP length)."""
        if self.raw is None:
            return b""
        data, at = self.raw
        l4 = at + (data[at] & 0x0F) * 4
        if self.proto == IPPROTO_TCP:
            return data[l4 + (data[l4 + 12] >> 4) * 4:at + self.ip_len]
        return data[l4 + 8:l4 + (data[l4 + 4] << 8 | data[l4 + 5])]

    def keyed(self) -> "Packet":
        """This packet with its key set from its fields (for a Packet built by hand)."""
        self.key = self.l3.key(self.src, self.dst, self.sport, self.dport)
        return self
