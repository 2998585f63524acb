"""IPv4 datagram bytes -> Packet, checked the way the kernel checks them before conntrack.

What is a ParseError and what is a Packet with l4_error follows where the kernel
stops the packet:
- ip_rcv() drops a datagram with a bad IPv4 header (version, IHL, total length,
  truncation, and in PREROUTING the header checksum) before any netfilter hook,
  so conntrack never sees it: ParseError.
- A datagram with a good IP header but an unusable TCP/UDP/ICMP header reaches
  conntrack, which counts it INVALID: Packet with l4_error set (spec 4.5, 5.1, 5.2).
Fragments are not parsed: the defragmenter reassembles them first (spec 8).

Checksums are computed only for hook == PRE_ROUTING, as the kernel verifies only
there (locally generated packets carry partial checksums); elsewhere the *_ok
flags stay True and no time is spent.  Whether a bad checksum matters (the
checksum sysctl) is the tracker's decision.

parse_ipv4 never raises: any byte string gives a Packet or a ParseError.
"""
from __future__ import annotations

import struct
from typing import Callable, Optional, Tuple, Union

from . import ipv4
from .build import checksum_valid, pseudo_header_sum
from .hooks import PRE_ROUTING
from .ipv4 import IP_MF, IP_OFFSET
from .packet import (ICMP_ERROR_TYPES, IPPROTO_GRE, IPPROTO_ICMP, IPPROTO_SCTP, IPPROTO_TCP,
                     IPPROTO_UDP, IPPROTO_UDPLITE, PORT_PROTOCOLS, IcmpInfo, Packet, TcpInfo)
from .parse_sctp import parse_sctp

_IP = ipv4.HEADER
_TCP = struct.Struct("!HHIIBBHHH")      # sport dport seq ack doff flags window csum urg
_UDP = struct.Struct("!HHHH")           # sport dport len csum
_ICMP = struct.Struct("!BBHH")          # type code csum id
_PORTS = struct.Struct("!HH")
_U32 = struct.Struct("!I")

# TCP options the tracker uses (kernel tcp_options()/tcp_sack()).
TCPOPT_EOL, TCPOPT_NOP, TCPOPT_WINDOW, TCPOPT_SACK_PERM, TCPOPT_SACK = 0, 1, 3, 4, 5
TCP_MAX_WSCALE = 14
# NOP NOP TIMESTAMP(10): the options of nearly every established-state segment.
TIMESTAMP_ONLY = b"\x01\x01\x08\x0a"
# The options of Linux's SYNs and SYN/ACKs (tcp_syn_options(), tcp_synack_options()), as
# the fast path recognises them by byte compares: MSS(4) alone, or MSS(4) SACK_PERM(2)
# TIMESTAMP(10) NOP WSCALE(3) -- the MSS value, the timestamps and the shift (the last
# byte) varying.  parse_tcp_options()' walk reads from those bytes exactly this:
# SACK-permitted and the window scale, or neither for the MSS alone.
SYN_MSS = b"\x02\x04"                       # at 0: the MSS's kind and length
SYN_MSS_ONLY_LEN = 4
SYN_SACK_TIMESTAMP = b"\x04\x02\x08\x0a"    # at 4: SACK_PERM, the timestamp's kind, length
SYN_NOP_WSCALE = b"\x01\x03\x03"             # at 16: NOP, the window scale's kind, length
SYN_LINUX_LEN = 20                          # its shift: the last byte
MSS_ALONE: Tuple[Optional[int], bool] = (None, False)


def linux_syn_options(frame: bytes, at: int,
                      length: int) -> Optional[Tuple[Optional[int], bool]]:
    """(window scale shift or None, SACK-permitted) of a SYN's `length` bytes of options
    at `at` when they are one of Linux's two layouts -- what parse_tcp_options() would
    read from them -- else None: the walk reads them."""
    if frame[at:at + 2] != SYN_MSS:
        return None
    if length == SYN_MSS_ONLY_LEN:
        return MSS_ALONE
    if (length == SYN_LINUX_LEN and frame[at + 4:at + 8] == SYN_SACK_TIMESTAMP
            and frame[at + 16:at + 19] == SYN_NOP_WSCALE):
        return frame[at + 19], True
    return None


class ParseError:
    """A datagram the IP layer would have dropped before conntrack; reason says why."""
    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"ParseError({self.reason!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ParseError) and other.reason == self.reason

    def __hash__(self) -> int:
        return hash(self.reason)


def parse_ipv4(datagram: bytes, hook: int) -> Union[Packet, ParseError]:
    """Parse one whole IPv4 datagram seen at netfilter hook `hook`."""
    return never_raising(_parse, datagram, hook)


def never_raising(parse: Callable[[bytes, int], Union[Packet, ParseError]], datagram: bytes,
                  hook: int) -> Union[Packet, ParseError]:
    """parse(datagram, hook), a parser bug reported as a ParseError instead of raised, so
    that it cannot stop the engine."""
    try:
        return parse(datagram, hook)
    except Exception as exc:
        return ParseError(f"parser error: {type(exc).__name__}: {exc}")


def _parse(datagram: bytes, hook: int) -> Union[Packet, ParseError]:
    # ip_rcv_core()'s header checks, then the fragment and checksum checks.
    length = len(datagram)
    if length < 20:
        return ParseError("truncated ip header")
    vihl, _tos, tot_len, _ident, frag, _ttl, proto, _csum, src, dst = _IP.unpack_from(datagram)
    if vihl >> 4 != 4:
        return ParseError("not ipv4")
    ihl = (vihl & 0x0F) * 4
    if ihl < 20:
        return ParseError("bad ihl")
    if ihl > length:
        return ParseError("truncated ip header")
    if tot_len > length:
        return ParseError("truncated datagram")
    if tot_len < ihl:
        return ParseError("bad total length")
    if frag & _FRAGMENT:
        return ParseError("fragment")
    verify = hook == PRE_ROUTING
    if verify and not checksum_valid(datagram[:ihl]):
        return ParseError("bad ip checksum")
    # Bytes after tot_len are link padding (Ethernet minimum frame, FCS): ignored.
    packet = Packet(src, dst, proto, tot_len, hook)
    if proto == IPPROTO_TCP:
        _parse_tcp(packet, datagram, ihl, tot_len, verify)
    elif proto == IPPROTO_UDP:
        _parse_udp(packet, datagram, ihl, tot_len, verify)
    elif proto == IPPROTO_ICMP:
        _parse_icmp(packet, datagram, ihl, tot_len, verify)
    elif proto == IPPROTO_GRE:
        _parse_gre(packet, datagram, ihl, tot_len)
    elif proto == IPPROTO_SCTP:
        parse_sctp(packet, datagram, ihl, tot_len, verify)
    elif proto == IPPROTO_UDPLITE:
        _parse_udplite(packet, datagram, ihl, tot_len, verify)
    packet.key = ipv4.key(src, dst, packet.sport, packet.dport)
    return packet


# -- the fast extraction ---------------------------------------------------------------------
# Most packets are TCP or UDP in an option-less, unfragmented IPv4 header met at OUTPUT,
# where no checksum is verified.  For those, parse_ipv4()'s work comes down to a few byte
# tests and one unpack, and the key is a slice of the bytes.  extract_ipv4() does exactly
# that and declines everything else, which parse_ipv4() then handles; both hand the same
# Packet to the same tracking steps (tests/test_packet_path.py checks they agree).
# The whole header in one unpack per protocol, from byte 0 of the IP header: version/IHL,
# total length, the fragment field, addresses, ports, then UDP's length / TCP's seq, ack,
# data offset, flags and window.  The protocol byte is read first to pick the layout.
_UDP_FROM_IP = struct.Struct("!BxHxxHxxxxIIHHH")
_TCP_FROM_IP = struct.Struct("!BxHxxHxxxxIIHHIIBBH")
_IPV4_NO_OPTIONS = 0x45                  # version 4, header length 20
_FRAGMENT = IP_MF | IP_OFFSET            # more fragments, or not the first one


def extract_ipv4(data: bytes, off: int, hook: int) -> Optional[Packet]:
    """The Packet of the common datagram at data[off:], or None: parse_ipv4() must do it."""
    size = len(data) - off
    if hook == PRE_ROUTING or size < 28:
        return None                 # checksums to verify, or shorter than any it takes
    proto = data[off + 9]
    if proto == IPPROTO_UDP:
        vihl, tot_len, frag, src, dst, sport, dport, udp_len = _UDP_FROM_IP.unpack_from(data, off)
        if (vihl != _IPV4_NO_OPTIONS or frag & _FRAGMENT or tot_len > size
                or tot_len < 28 or udp_len < 8 or udp_len > tot_len - 20):
            return None             # IP options, a fragment, or lengths to check in full
        # Every field positional (Packet's order): keywords cost as much again to match.
        return Packet(src, dst, proto, tot_len, hook, sport, dport, data[off + 12:off + 24],
                      ipv4, None, None, None, udp_len, True, None, (data, off), None)
    if proto == IPPROTO_TCP:
        if size < 40:
            return None             # no room for the 20-byte TCP header
        (vihl, tot_len, frag, src, dst, sport, dport, seq, ack, doff, flags,
         window) = _TCP_FROM_IP.unpack_from(data, off)
        doff = (doff >> 4) * 4
        l4_len = tot_len - 20
        if (vihl != _IPV4_NO_OPTIONS or frag & _FRAGMENT or tot_len > size
                or tot_len < 40 or doff < 20 or doff > l4_len):
            return None
        if doff == 20:
            tcp = TcpInfo(flags, seq, ack, window, l4_len - doff, None, False, None, True, False)
        else:
            tcp = TcpInfo(flags, seq, ack, window, l4_len - doff, None, False, None, True, True)
            # NOP NOP TIMESTAMP alone (most segments) sets nothing: no call for it.
            if doff != 32 or data[off + 40:off + 44] != TIMESTAMP_ONLY:
                parse_tcp_options(tcp, data, off + 40, off + 20 + doff)
        return Packet(src, dst, proto, tot_len, hook, sport, dport, data[off + 12:off + 24],
                      ipv4, tcp, None, None, 0, True, None, (data, off), None)
    return None


GRE_VERSION_1 = 1
GRE_PROTO_PPP = 0x880B


def gre_keys(data: bytes, start: int, end: int) -> Optional[Tuple[int, int]]:
    """(srckey, dstkey) of a GRE header as gre_pkt_to_tuple() reads it, None if the kernel
    makes no tuple of it.

    Only enhanced GRE (version 1, PPTP) has keys: the call id is the dstkey; the srckey
    comes from the PPTP helper's keymap, which is empty here, so 0.  Anything else, or a
    version-1 header cut before its call id, gets keys 0 like the generic tracker; a
    version-1 header carrying anything but PPP makes no tuple at all (INVALID).
    """
    if end - start < 8 or data[start + 1] & 0x07 != GRE_VERSION_1:
        return 0, 0
    if data[start + 2] << 8 | data[start + 3] != GRE_PROTO_PPP:
        return None
    return 0, data[start + 6] << 8 | data[start + 7]


def _parse_gre(packet: Packet, datagram: bytes, ihl: int, end: int) -> None:
    keys = gre_keys(datagram, ihl, end)
    if keys is None:
        packet.l4_error = "gre version 1 not carrying ppp"
        return
    packet.sport, packet.dport = keys


def _l4_checksum_ok(packet: Packet, datagram: bytes, start: int, end: int) -> bool:
    # nf_ip_checksum(): pseudo-header length = everything after the IP header.
    initial = pseudo_header_sum(packet.src, packet.dst, packet.proto, end - start)
    return checksum_valid(datagram[start:end], initial)


def _parse_tcp(packet: Packet, datagram: bytes, ihl: int, end: int, verify: bool) -> None:
    l4_len = end - ihl
    if l4_len < 20:
        if l4_len >= 4:
            packet.sport, packet.dport = _PORTS.unpack_from(datagram, ihl)
        packet.l4_error = "truncated tcp header"
        return
    sport, dport, seq, ack, doff, flags, window, _csum, _urg = _TCP.unpack_from(datagram, ihl)
    packet.sport = sport
    packet.dport = dport
    doff = (doff >> 4) * 4
    if doff < 20 or doff > l4_len:
        packet.l4_error = "bad tcp data offset"
        return
    if doff > 20:
        tcp = tcp_info_with_options(datagram, flags, seq, ack, window, l4_len - doff,
                                    ihl + 20, ihl + doff)
    else:
        tcp = TcpInfo(flags, seq, ack, window, l4_len - doff)
    if verify:
        tcp.checksum_ok = packet.l4_checksum_ok = _l4_checksum_ok(packet, datagram, ihl, end)
    packet.tcp = tcp
    packet.raw = (datagram, 0)


def tcp_info_with_options(data: bytes, flags: int, seq: int, ack: int, window: int,
                          payload_len: int, pos: int, end: int) -> TcpInfo:
    """The TcpInfo of a segment whose header has options (the bytes from pos to end), read
    by parse_tcp_options(): what extract_ipv4() and _parse() make of it, and the fast
    path's cases where they need the options read."""
    tcp = TcpInfo(flags, seq, ack, window, payload_len, None, False, None, True, True)
    parse_tcp_options(tcp, data, pos, end)
    return tcp


def parse_tcp_options(tcp: TcpInfo, data: bytes, pos: int, end: int) -> None:
    """Window scale, SACK-permitted and the SACK right edge, as the kernel reads them.

    One walk does the work of the kernel's tcp_options() and tcp_sack(): both stop
    at EOL, at a length byte < 2 or running past the option space ("don't parse
    partial options"); tcp_sack() uses only the first well-formed SACK option.
    sack_edge is tcp_sack()'s result: start at ack, keep each right edge that is
    after() it modulo 2**32; None when no SACK option was found.
    """
    if end - pos == 12 and data[pos:pos + 4] == TIMESTAMP_ONLY:
        return
    sack_seen = False
    while pos < end:
        kind = data[pos]
        if kind == TCPOPT_EOL:
            return
        if kind == TCPOPT_NOP:
            pos += 1
            continue
        if end - pos < 2:
            return
        size = data[pos + 1]
        if size < 2 or size > end - pos:
            return
        if kind == TCPOPT_WINDOW and size == 3:
            tcp.wscale = min(data[pos + 2], TCP_MAX_WSCALE)
        elif kind == TCPOPT_SACK_PERM and size == 2:
            tcp.sack_perm = True
        elif kind == TCPOPT_SACK and not sack_seen and size >= 10 and (size - 2) % 8 == 0:
            sack_seen = True
            edge = tcp.ack
            for block in range(pos + 6, pos + size, 8):
                right = _U32.unpack_from(data, block)[0]
                if (right - edge) & 0xFFFFFFFF and not (right - edge) & 0x80000000:
                    edge = right
            tcp.sack_edge = edge
        pos += size


def _udp_header(packet: Packet, datagram: bytes, ihl: int, end: int,
                what: str) -> Optional[Tuple[int, int]]:
    """The ports of a UDP or UDP-Lite header into packet; (length field, checksum), or None
    with packet.l4_error set when the 8 bytes are not there."""
    if end - ihl < 8:
        if end - ihl >= 4:
            packet.sport, packet.dport = _PORTS.unpack_from(datagram, ihl)
        packet.l4_error = f"truncated {what} header"
        return None
    packet.sport, packet.dport, length, csum = _UDP.unpack_from(datagram, ihl)
    return length, csum


def _parse_udp(packet: Packet, datagram: bytes, ihl: int, end: int, verify: bool) -> None:
    l4_len = end - ihl
    header = _udp_header(packet, datagram, ihl, end, "udp")
    if header is None:
        return
    udp_len, csum = header
    packet.udp_len = udp_len
    if udp_len > l4_len or udp_len < 8:
        packet.l4_error = "udp length"
        return
    packet.raw = (datagram, 0)
    if verify and csum:   # checksum 0: the sender computed none
        packet.l4_checksum_ok = _l4_checksum_ok(packet, datagram, ihl, end)


def _parse_udplite(packet: Packet, datagram: bytes, ihl: int, end: int, verify: bool) -> None:
    """udplite_error(): the length field is the checksum coverage (0 = the whole datagram,
    else 8 .. the datagram's length), and a checksum is mandatory."""
    l4_len = end - ihl
    header = _udp_header(packet, datagram, ihl, end, "udplite")
    if header is None:
        return
    coverage, csum = header
    if coverage == 0:
        coverage = l4_len
    elif coverage < 8 or coverage > l4_len:
        packet.l4_error = "invalid udplite checksum coverage"
        return
    if not csum:
        packet.l4_error = "udplite checksum missing"
        return
    if verify:
        # The pseudo header carries the whole length, and UDP's protocol number, not 136:
        # udplite_error() verifies with IPPROTO_UDP, so the kernel calls a correct UDP-Lite
        # sum bad (scenario wire_sctp_udplite_checksums).  The sum covers `coverage` bytes.
        initial = pseudo_header_sum(packet.src, packet.dst, IPPROTO_UDP, l4_len)
        packet.l4_checksum_ok = checksum_valid(datagram[ihl:ihl + coverage], initial)


def icmp_header(packet: Packet, datagram: bytes, start: int, end: int,
                what: str) -> Optional[IcmpInfo]:
    """An ICMP or ICMPv6 header: id into sport, type << 8 | code into dport; None with
    packet.l4_error set when its 8 bytes are not there."""
    if end - start < 8:
        packet.l4_error = f"truncated {what} header"
        return None
    icmp_type, code, _csum, ident = _ICMP.unpack_from(datagram, start)
    packet.sport = ident
    packet.dport = icmp_type << 8 | code
    return IcmpInfo(icmp_type, code, ident)


def _parse_icmp(packet: Packet, datagram: bytes, ihl: int, end: int, verify: bool) -> None:
    icmp = icmp_header(packet, datagram, ihl, end, "icmp")
    if icmp is None:
        return
    if icmp.type in ICMP_ERROR_TYPES:
        icmp.inner = _embedded_tuple(datagram, ihl + 8, end)
        icmp.inner_bad = icmp.inner is None
    if verify:
        icmp.checksum_ok = packet.l4_checksum_ok = checksum_valid(datagram[ihl:end])
    packet.icmp = icmp


def _embedded_tuple(data: bytes, start: int, end: int) -> Optional[tuple]:
    """(src, dst, proto, sport, dport) of the datagram an ICMP error quotes, or None.

    Mirrors nf_ct_get_tuplepr() on the inner header: the IP header must be whole
    and not a non-first fragment; ports need 4 bytes of TCP/UDP/SCTP/UDP-Lite, an inner
    ICMP needs its 8-byte header, GRE is keyed as gre_keys() says.  The inner total length is not checked (quotes are cut).
    """
    available = end - start
    if available < 20:
        return None
    _vihl, _tos, _tot, _id, frag, _ttl, proto, _csum, src, dst = _IP.unpack_from(data, start)
    ihl = (data[start] & 0x0F) * 4
    if ihl < 20 or ihl > available or frag & IP_OFFSET:
        return None
    l4 = start + ihl
    l4_available = available - ihl
    if proto in PORT_PROTOCOLS:
        if l4_available < 4:
            return None
        sport, dport = _PORTS.unpack_from(data, l4)
        return (src, dst, proto, sport, dport)
    if proto == IPPROTO_GRE:
        keys = gre_keys(data, l4, end)
        return None if keys is None else (src, dst, proto) + keys
    if proto == IPPROTO_ICMP:
        if l4_available < 8:
            return None
        icmp_type, code, _csum, ident = _ICMP.unpack_from(data, l4)
        return (src, dst, proto, ident, icmp_type << 8 | code)
    return (src, dst, proto, 0, 0)
