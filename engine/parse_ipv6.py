"""IPv6 datagram bytes -> Packet, as the kernel gets them to conntrack (groundwork: the engine
does not feed IPv6 yet; Tracker.process takes what this returns).

ParseError where ipv6_rcv() drops the datagram (version, truncation, a jumbogram this
engine does not handle) or where the defragmenter holds it (a fragment).  The extension
headers are skipped as ipv6_skip_exthdr() does (hop-by-hop, routing, destination options,
AH; an atomic fragment header too); a chain cut short gives a Packet with l4_error, which
conntrack counts INVALID.  TCP and UDP are read by engine/parse.py's functions: the
pseudo-header sum there is taken modulo 0xFFFF, so it holds for 128-bit addresses too.
ICMPv6, unlike ICMP, sums a pseudo header.  Checksums are verified only at PREROUTING.
"""
from __future__ import annotations

import struct
from typing import Union

from . import ipv6
from .build import checksum_valid, pseudo_header_sum
from .hooks import PRE_ROUTING
from .packet import IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, Packet
from .parse import ParseError, _parse_tcp, _parse_udp, icmp_header, never_raising

HOP_BY_HOP, ROUTING, FRAGMENT, AH, NO_NEXT, DEST_OPTS = 0, 43, 44, 51, 59, 60
EXTENSION_HEADERS = frozenset((HOP_BY_HOP, ROUTING, FRAGMENT, AH, DEST_OPTS))
FRAGMENT_OFFSET_MASK, MORE_FRAGMENTS = 0xFFF8, 0x0001
# ICMPv6 errors (destination unreachable, packet too big, time exceeded, parameter problem)
# have types below 128.
ICMPV6_ERROR_BELOW = 128


def parse_ipv6(datagram: bytes, hook: int) -> Union[Packet, ParseError]:
    """Parse one whole IPv6 datagram seen at netfilter hook `hook`; never raises."""
    return never_raising(_parse, datagram, hook)


def _parse(datagram: bytes, hook: int) -> Union[Packet, ParseError]:
    if len(datagram) < ipv6.HEADER_LEN:
        return ParseError("truncated ipv6 header")
    first, payload_len, next_header, _hops, src, dst = ipv6.HEADER.unpack_from(datagram)
    if first >> 28 != 6:
        return ParseError("not ipv6")
    if payload_len == 0:
        return ParseError("jumbogram")
    end = ipv6.HEADER_LEN + payload_len
    if end > len(datagram):
        return ParseError("truncated datagram")
    packet = Packet(int.from_bytes(src, "big"), int.from_bytes(dst, "big"), next_header, end,
                    hook, l3=ipv6)
    pos = ipv6.HEADER_LEN
    while packet.proto in EXTENSION_HEADERS:
        if end - pos < 8:
            packet.l4_error = "truncated ipv6 extension header"
            break
        if packet.proto == FRAGMENT:
            if struct.unpack_from("!H", datagram, pos + 2)[0] & (FRAGMENT_OFFSET_MASK
                                                                | MORE_FRAGMENTS):
                return ParseError("fragment")
            length = 8
        elif packet.proto == AH:
            length = (datagram[pos + 1] + 2) * 4
        else:
            length = (datagram[pos + 1] + 1) * 8
        packet.proto = datagram[pos]
        pos += length
    if packet.l4_error is None and pos > end:
        packet.l4_error = "truncated ipv6 extension header"
    verify = hook == PRE_ROUTING
    if packet.l4_error is None:
        if packet.proto == IPPROTO_TCP:
            _parse_tcp(packet, datagram, pos, end, verify)
        elif packet.proto == IPPROTO_UDP:
            _parse_udp(packet, datagram, pos, end, verify)
        elif packet.proto == IPPROTO_ICMPV6:
            _parse_icmpv6(packet, datagram, pos, end, verify)
    packet.key = ipv6.key(packet.src, packet.dst, packet.sport, packet.dport)
    return packet


def _parse_icmpv6(packet: Packet, datagram: bytes, start: int, end: int, verify: bool) -> None:
    icmp = icmp_header(packet, datagram, start, end, "icmpv6")
    if icmp is None:
        return
    if verify:
        initial = pseudo_header_sum(packet.src, packet.dst, IPPROTO_ICMPV6, end - start)
        icmp.checksum_ok = packet.l4_checksum_ok = checksum_valid(datagram[start:end], initial)
    packet.icmp = icmp
