"""IPv6 datagram bytes -> Packet, as the kernel gets them to conntrack.

ParseError where ipv6_rcv() drops the datagram (version, truncation, a jumbogram this
engine does not handle).  Fragments were reassembled before (engine/defrag6.py); one the
defragmenter lets through as it is reaches conntrack as a fragment.  The extension headers
are skipped as ipv6_skip_exthdr() does (hop-by-hop, routing, destination options, AH,
the fragment header of a first fragment); where that fails (a chain cut short, "no next
header", a non-first fragment) nf_conntrack_in finds no protocol: a Packet with l4_error,
which conntrack counts INVALID.  TCP, UDP, UDP-Lite and SCTP are read by engine/parse.py's
and parse_sctp.py's functions: the pseudo-header sum there is taken modulo 0xFFFF, so it
holds for 128-bit addresses too.  ICMPv6, unlike ICMP, sums a pseudo header; an ICMPv6
error's quoted datagram gives the tuple it is about.  Checksums are verified only at
PREROUTING.
"""
from __future__ import annotations

import struct
from typing import Optional, Tuple, Union

from . import ipv6
from .build import checksum_valid, pseudo_header_sum
from .hooks import PRE_ROUTING
from .packet import (IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE,
                     PORT_PROTOCOLS, Packet)
from .parse import (ParseError, _parse_tcp, _parse_udp, _parse_udplite, icmp_header,
                    never_raising)
from .parse_sctp import parse_sctp

HOP_BY_HOP, ROUTING, FRAGMENT, AH, NO_NEXT, DEST_OPTS = 0, 43, 44, 51, 59, 60
EXTENSION_HEADERS = frozenset((HOP_BY_HOP, ROUTING, FRAGMENT, AH, DEST_OPTS))
FRAGMENT_OFFSET_MASK, MORE_FRAGMENTS = 0xFFF8, 0x0001
FRAGMENT_HEADER_LEN = 8
_U16 = struct.Struct("!H")
_ICMPV6_ECHO = struct.Struct("!BBHH")     # type, code, checksum, identifier
# ICMPv6 errors (destination unreachable, packet too big, time exceeded, parameter problem)
# have types below 128.
ICMPV6_ERROR_BELOW = 128


def parse_ipv6(datagram: bytes, hook: int) -> Union[Packet, ParseError]:
    """Parse one whole IPv6 datagram seen at netfilter hook `hook`; never raises."""
    return never_raising(_parse, datagram, hook)


def extension_length(kind: int, length_byte: int) -> int:
    """Bytes of an extension header from its length byte (AH counts 4-byte words less 2,
    the others 8-byte words less 1; a fragment header is always 8)."""
    if kind == FRAGMENT:
        return FRAGMENT_HEADER_LEN
    if kind == AH:
        return (length_byte + 2) * 4
    return (length_byte + 1) * 8


def skip_extensions(data: bytes, pos: int, kind: int, end: int) -> Optional[Tuple[int, int]]:
    """ipv6_skip_exthdr(): (offset, protocol) of the upper-layer header from an extension
    header of type `kind` at `pos`; None for a chain cut short or "no next header".  At
    a non-first fragment's header it stops there, protocol FRAGMENT."""
    while kind in EXTENSION_HEADERS:
        if end - pos < 2:
            return None
        if kind == FRAGMENT:
            if end - pos < FRAGMENT_HEADER_LEN:
                return None
            if _U16.unpack_from(data, pos + 2)[0] & FRAGMENT_OFFSET_MASK:
                return pos, FRAGMENT
        length = extension_length(kind, data[pos + 1])
        kind = data[pos]
        pos += length
    if kind == NO_NEXT or pos > end:
        return None
    return pos, kind


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
    skipped = skip_extensions(datagram, ipv6.HEADER_LEN, next_header, end)
    if skipped is None:
        packet.l4_error = "no ipv6 upper-layer header"
    elif skipped[1] == FRAGMENT:
        packet.l4_error = "non-first ipv6 fragment"
    else:
        pos, packet.proto = skipped
        verify = hook == PRE_ROUTING
        if packet.proto == IPPROTO_TCP:
            _parse_tcp(packet, datagram, pos, end, verify)
        elif packet.proto == IPPROTO_UDP:
            _parse_udp(packet, datagram, pos, end, verify)
        elif packet.proto == IPPROTO_ICMPV6:
            _parse_icmpv6(packet, datagram, pos, end, verify)
        elif packet.proto == IPPROTO_SCTP:
            parse_sctp(packet, datagram, pos, end, verify)
        elif packet.proto == IPPROTO_UDPLITE:
            _parse_udplite(packet, datagram, pos, end, verify)
    packet.key = ipv6.key(packet.src, packet.dst, packet.sport, packet.dport)
    return packet


def _parse_icmpv6(packet: Packet, datagram: bytes, start: int, end: int, verify: bool) -> None:
    icmp = icmp_header(packet, datagram, start, end, "icmpv6")
    if icmp is None:
        return
    if icmp.type < ICMPV6_ERROR_BELOW:
        icmp.inner = quoted_tuple(datagram, start + 8, end)
        icmp.inner_bad = icmp.inner is None
    if verify:
        initial = pseudo_header_sum(packet.src, packet.dst, IPPROTO_ICMPV6, end - start)
        icmp.checksum_ok = packet.l4_checksum_ok = checksum_valid(datagram[start:end], initial)
    packet.icmp = icmp


def quoted_tuple(data: bytes, start: int, end: int) -> Optional[tuple]:
    """(src, dst, proto, a, b) of the datagram an ICMPv6 error quotes, or None
    (nf_ct_get_tuplepr() on the inner header: the fixed header whole, the extension
    headers skippable, not a non-first fragment; ports need 4 bytes, an inner ICMPv6 its
    8-byte header).  The inner payload length is not checked (quotes are cut)."""
    if end - start < ipv6.HEADER_LEN:
        return None
    _first, _plen, kind, _hops, src, dst = ipv6.HEADER.unpack_from(data, start)
    skipped = skip_extensions(data, start + ipv6.HEADER_LEN, kind, end)
    if skipped is None or skipped[1] == FRAGMENT:
        return None
    pos, proto = skipped
    src_int, dst_int = int.from_bytes(src, "big"), int.from_bytes(dst, "big")
    if proto in PORT_PROTOCOLS:
        if end - pos < 4:
            return None
        return (src_int, dst_int, proto) + struct.unpack_from("!HH", data, pos)
    if proto == IPPROTO_ICMPV6:
        if end - pos < 8:
            return None
        icmp_type, code, _csum, ident = _ICMPV6_ECHO.unpack_from(data, pos)
        return (src_int, dst_int, proto, ident, icmp_type << 8 | code)
    return (src_int, dst_int, proto, 0, 0)
