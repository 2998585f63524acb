"""Packet builders and Internet checksums: real IPv4/IPv6/TCP/UDP/ICMP(v6)/Ethernet bytes.

Used by the synthetic traffic source (frames a capture tool will read) and by
tests that need genuine packet bytes.  The checksum helpers are shared with the
parser, which verifies what these functions compute.

The ones'-complement sum of 16-bit words equals the data read as one big-endian
integer modulo 0xFFFF (because 2**16 == 1 mod 0xFFFF), so a whole segment is
summed by a single C-level int.from_bytes and one modulo.
"""
from __future__ import annotations

import socket
import struct
from typing import Iterable, Optional, Sequence, Union

from . import ipv6
from .crc32c import crc32c
from .ipv4 import HEADER as _IP_HEADER
from .ipv4 import IP_DF, IP_MF
from .linklayer import ETH_P_IP
from .packet import IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, ACK

IPV6_FRAGMENT = 44          # the fragment header's next-header number

Address = Union[int, str]

_TCP_HEADER = struct.Struct("!HHIIBBHHH")
_UDP_HEADER = struct.Struct("!HHHH")
_ICMP_HEADER = struct.Struct("!BBHHH")


def ip_to_int(address: Address) -> int:
    """'10.0.0.1', 'fd00::1' or an int -> the address as an int (Packet's convention)."""
    if isinstance(address, int):
        return address
    if ":" in address:
        return ipv6.addr_value(address)
    return int.from_bytes(socket.inet_aton(address), "big")


def int_to_ip(address: int) -> str:
    return socket.inet_ntoa(address.to_bytes(4, "big"))


# -- checksums ---------------------------------------------------------------

def ones_complement_sum(data: bytes, initial: int = 0) -> int:
    """Ones'-complement sum of data's 16-bit words, folded into 0..0xFFFF.

    An odd trailing byte is padded with a zero byte on the right (RFC 1071).
    The result is 0 only for all-zero input; a non-zero sum that is a multiple
    of 0xFFFF is reported as 0xFFFF, as end-around-carry addition gives it.
    """
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8
    value += initial
    if value == 0:
        return 0
    return value % 0xFFFF or 0xFFFF


def internet_checksum(data: bytes, initial: int = 0) -> int:
    """The value to store in a checksum field (RFC 1071), field zeroed in data."""
    return ~ones_complement_sum(data, initial) & 0xFFFF


def ipv4_checksum(header: bytes) -> int:
    """Header checksum of an IPv4 header whose checksum field is zero."""
    return internet_checksum(header)


def pseudo_header_sum(src: int, dst: int, proto: int, length: int) -> int:
    """The TCP/UDP pseudo-header (RFC 793/768) as a plain sum of its 16-bit words."""
    return (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + proto + length


def l4_checksum(src: Address, dst: Address, proto: int, segment: bytes) -> int:
    """TCP or UDP checksum over the pseudo-header and segment (checksum field zeroed)."""
    initial = pseudo_header_sum(ip_to_int(src), ip_to_int(dst), proto, len(segment))
    return internet_checksum(segment, initial)


def checksum_valid(data: bytes, initial: int = 0) -> bool:
    """True if data (checksum field included) sums to 0xFFFF, i.e. verifies."""
    return ones_complement_sum(data, initial) == 0xFFFF


# -- builders ----------------------------------------------------------------

def build_ipv4(src: Address, dst: Address, proto: int, payload: bytes = b"", *,
               ident: int = 0, ttl: int = 64, tos: int = 0, df: bool = False,
               mf: bool = False, frag_offset: int = 0, options: bytes = b"",
               total_length: Optional[int] = None, checksum: Optional[int] = None) -> bytes:
    """An IPv4 datagram: header (with options, padded to 4 bytes) + payload.

    frag_offset is in bytes and must be a multiple of 8.  total_length and
    checksum override the computed values (for building malformed packets).
    """
    if frag_offset % 8:
        raise ValueError("fragment offset must be a multiple of 8 bytes")
    if len(options) % 4:
        options += b"\x00" * (4 - len(options) % 4)   # EOL padding
    ihl = 5 + len(options) // 4
    if ihl > 15:
        raise ValueError("IPv4 options longer than 40 bytes")
    length = ihl * 4 + len(payload) if total_length is None else total_length
    frag = (IP_DF if df else 0) | (IP_MF if mf else 0) | (frag_offset >> 3)
    header = _IP_HEADER.pack(0x40 | ihl, tos, length, ident, frag, ttl, proto, 0,
                             ip_to_int(src), ip_to_int(dst)) + options
    if checksum is None:
        checksum = ipv4_checksum(header)
    return header[:10] + checksum.to_bytes(2, "big") + header[12:] + payload


def build_ipv6(src: Address, dst: Address, next_header: int, payload: bytes = b"", *,
               hop_limit: int = 64, traffic_class: int = 0, flow_label: int = 0,
               payload_length: Optional[int] = None) -> bytes:
    """An IPv6 datagram: the fixed header + payload (extension headers included in it);
    payload_length overrides the computed value."""
    length = len(payload) if payload_length is None else payload_length
    first = 6 << 28 | (traffic_class & 0xFF) << 20 | (flow_label & 0xFFFFF)
    return ipv6.HEADER.pack(first, length, next_header, hop_limit,
                            ip_to_int(src).to_bytes(16, "big"),
                            ip_to_int(dst).to_bytes(16, "big")) + payload


def ipv6_fragments(datagram: bytes, size: int, ident: int,
                   order: Optional[Sequence[int]] = None) -> list[bytes]:
    """The fragments of an IPv6 datagram without extension headers: its payload in pieces
    of `size` bytes (a multiple of 8 but the last), each behind a fragment header; `order`
    picks and orders them (indices), default all in order."""
    if size % 8:
        raise ValueError("fragment size must be a multiple of 8 bytes")
    header, data = bytearray(datagram[:ipv6.HEADER_LEN]), datagram[ipv6.HEADER_LEN:]
    next_header = header[6]
    header[6] = IPV6_FRAGMENT
    pieces = []
    for offset in range(0, len(data), size):
        chunk = data[offset:offset + size]
        more = offset + size < len(data)
        fragment_header = struct.pack("!BBHI", next_header, 0, offset | more, ident)
        header[4:6] = (len(fragment_header) + len(chunk)).to_bytes(2, "big")
        pieces.append(bytes(header) + fragment_header + chunk)
    return pieces if order is None else [pieces[i] for i in order]


def tcp_options(*, mss: Optional[int] = None, wscale: Optional[int] = None,
                sack_perm: bool = False, timestamps: Optional[tuple[int, int]] = None,
                sack: Sequence[tuple[int, int]] = ()) -> bytes:
    """TCP option bytes laid out as Linux sends them, NOP-padded to 4 bytes."""
    out = b""
    if mss is not None:
        out += struct.pack("!BBH", 2, 4, mss)
    if sack_perm and timestamps is not None:
        # Linux packs SACK-permitted into the two bytes before the timestamps.
        out += b"\x04\x02" + struct.pack("!BBII", 8, 10, *timestamps)
    else:
        if sack_perm:
            out += b"\x01\x01\x04\x02"
        if timestamps is not None:
            out += b"\x01\x01" + struct.pack("!BBII", 8, 10, *timestamps)
    if wscale is not None:
        out += b"\x01" + struct.pack("!BBB", 3, 3, wscale)
    if sack:
        out += b"\x01\x01" + struct.pack("!BB", 5, 2 + 8 * len(sack))
        for left, right in sack:
            out += struct.pack("!II", left, right)
    if len(out) % 4:
        out += b"\x01" * (4 - len(out) % 4)
    return out


def build_tcp(src: Address, dst: Address, sport: int, dport: int, *, seq: int = 0,
              ack: int = 0, flags: int = ACK, window: int = 65535, payload: bytes = b"",
              options: bytes = b"", urgent: int = 0, data_offset: Optional[int] = None,
              checksum: Optional[int] = None) -> bytes:
    """A TCP segment with a valid checksum (addresses are needed for the pseudo-header).

    options must already be a multiple of 4 bytes (see tcp_options); data_offset
    (in 32-bit words) and checksum override the computed values.
    """
    if len(options) % 4:
        raise ValueError("TCP options must be padded to a multiple of 4 bytes")
    doff = 5 + len(options) // 4 if data_offset is None else data_offset
    header = _TCP_HEADER.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                              doff << 4, flags, window, 0, urgent) + options
    segment = header + payload
    if checksum is None:
        checksum = l4_checksum(src, dst, IPPROTO_TCP, segment)
    return segment[:16] + checksum.to_bytes(2, "big") + segment[18:]


def build_udp(src: Address, dst: Address, sport: int, dport: int, payload: bytes = b"", *,
              length: Optional[int] = None, checksum: Optional[int] = None) -> bytes:
    """A UDP datagram with a valid checksum (a computed 0 is sent as 0xFFFF, RFC 768).

    checksum=0 builds a datagram without checksum; length overrides the length field.
    """
    udp_len = 8 + len(payload) if length is None else length
    segment = _UDP_HEADER.pack(sport, dport, udp_len, 0) + payload
    if checksum is None:
        checksum = l4_checksum(src, dst, IPPROTO_UDP, segment) or 0xFFFF
    return segment[:6] + checksum.to_bytes(2, "big") + segment[8:]


def build_icmp(icmp_type: int, code: int = 0, ident: int = 0, seq: int = 0,
               payload: bytes = b"", *, checksum: Optional[int] = None) -> bytes:
    """An ICMP message.  For errors (3, 4, 5, 11, 12) leave ident/seq 0 (the
    'unused' word) and pass the offending datagram's header + 8 bytes as payload."""
    message = _ICMP_HEADER.pack(icmp_type, code, 0, ident, seq) + payload
    if checksum is None:
        checksum = internet_checksum(message)
    return message[:2] + checksum.to_bytes(2, "big") + message[4:]


def build_icmpv6(src: Address, dst: Address, icmp_type: int, code: int = 0, ident: int = 0,
                 seq: int = 0, payload: bytes = b"") -> bytes:
    """An ICMPv6 message; its checksum covers the IPv6 pseudo header.  For errors (types
    below 128) leave ident/seq 0 and pass the offending datagram's start as payload."""
    message = _ICMP_HEADER.pack(icmp_type, code, 0, ident, seq) + payload
    checksum = l4_checksum(src, dst, IPPROTO_ICMPV6, message)
    return message[:2] + checksum.to_bytes(2, "big") + message[4:]


_SCTP_CHUNK_HEADER = struct.Struct("!BBH")      # type, flags, length (without padding)
_SCTP_COMMON_HEADER = struct.Struct("!HHI")     # ports, verification tag (then the CRC32c)
_SCTP_INIT = struct.Struct("!IIHHI")            # initiate tag, a_rwnd, streams, initial TSN
_SCTP_DATA = struct.Struct("!IHHI")             # TSN, stream id, stream sequence, PPID
_SCTP_SACK = struct.Struct("!IIHH")             # cumulative TSN ack, a_rwnd, gap blocks, dups
SCTP_DATA_WHOLE_MESSAGE = 0x03                  # B and E flags: one unfragmented message


def build_sctp_chunk(chunk_type: int, value: bytes = b"", flags: int = 0) -> bytes:
    """One SCTP chunk (RFC 4960 3.2): its length field counts no padding; padded to 4."""
    chunk = _SCTP_CHUNK_HEADER.pack(chunk_type, flags, 4 + len(value)) + value
    return chunk + b"\0" * (-len(chunk) % 4)


def build_sctp_init(chunk_type: int, init_tag: int, tsn: int, *, a_rwnd: int = 106496,
                    streams: int = 10, parameters: bytes = b"") -> bytes:
    """An INIT or INIT ACK chunk (the STATE COOKIE parameter of an INIT ACK in
    `parameters`)."""
    return build_sctp_chunk(chunk_type, _SCTP_INIT.pack(init_tag, a_rwnd, streams, streams,
                                                        tsn) + parameters)


def build_sctp_data(tsn: int, payload: bytes, *, stream: int = 0, ssn: int = 0,
                    ppid: int = 0) -> bytes:
    """A DATA chunk carrying one whole user message."""
    return build_sctp_chunk(0, _SCTP_DATA.pack(tsn, stream, ssn, ppid) + payload,
                            flags=SCTP_DATA_WHOLE_MESSAGE)


def build_sctp_sack(cumulative_tsn: int, a_rwnd: int = 106496) -> bytes:
    """A SACK chunk without gap blocks or duplicates."""
    return build_sctp_chunk(3, _SCTP_SACK.pack(cumulative_tsn, a_rwnd, 0, 0))


def build_sctp(sport: int, dport: int, vtag: int, chunks: bytes) -> bytes:
    """An SCTP packet: common header + chunks, with its CRC32c (RFC 4960 appendix B; the
    kernel stores the value little-endian)."""
    packet = _SCTP_COMMON_HEADER.pack(sport, dport, vtag) + b"\0\0\0\0" + chunks
    return packet[:8] + crc32c(packet).to_bytes(4, "little") + packet[12:]


def _mac(address: Union[bytes, str]) -> bytes:
    if isinstance(address, bytes):
        return address
    return bytes(int(part, 16) for part in address.split(":"))


def build_ethernet(payload: bytes, *, src_mac: Union[bytes, str] = "02:00:00:00:00:01",
                   dst_mac: Union[bytes, str] = "02:00:00:00:00:02",
                   ethertype: int = ETH_P_IP, vlans: Iterable[tuple[int, int]] = (),
                   pad: bool = False) -> bytes:
    """An Ethernet II frame (no FCS).  vlans: (tpid, vid) tags, outermost first
    (0x88a8 then 0x8100 for QinQ).  pad=True pads to the 60-byte minimum as a NIC does."""
    frame = _mac(dst_mac) + _mac(src_mac)
    for tpid, vid in vlans:
        frame += struct.pack("!HH", tpid, vid & 0x0FFF)
    frame += struct.pack("!H", ethertype) + payload
    if pad and len(frame) < 60:
        frame += b"\x00" * (60 - len(frame))
    return frame


def build_tcp_datagram(src: Address, dst: Address, sport: int, dport: int, **kwargs) -> bytes:
    """Shortcut: an IPv4 datagram carrying build_tcp(...); ip_* keywords go to build_ipv4."""
    ip_kwargs = {key[3:]: kwargs.pop(key) for key in list(kwargs) if key.startswith("ip_")}
    return build_ipv4(src, dst, IPPROTO_TCP, build_tcp(src, dst, sport, dport, **kwargs), **ip_kwargs)


def build_udp_datagram(src: Address, dst: Address, sport: int, dport: int,
                       payload: bytes = b"", **kwargs) -> bytes:
    """Shortcut: an IPv4 datagram carrying build_udp(...); ip_* keywords go to build_ipv4."""
    ip_kwargs = {key[3:]: kwargs.pop(key) for key in list(kwargs) if key.startswith("ip_")}
    return build_ipv4(src, dst, IPPROTO_UDP, build_udp(src, dst, sport, dport, payload, **kwargs),
                      **ip_kwargs)


def build_icmp_datagram(src: Address, dst: Address, icmp_type: int, code: int = 0,
                        **kwargs) -> bytes:
    """Shortcut: an IPv4 datagram carrying build_icmp(...); ip_* keywords go to build_ipv4."""
    ip_kwargs = {key[3:]: kwargs.pop(key) for key in list(kwargs) if key.startswith("ip_")}
    return build_ipv4(src, dst, IPPROTO_ICMP, build_icmp(icmp_type, code, **kwargs), **ip_kwargs)
