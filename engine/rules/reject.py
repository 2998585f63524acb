"""The datagrams REJECT answers with, built as the kernel's nf_reject_ipv4 and icmp_send do.

tcp-reset (nf_send_reset): IP header with TOS 0, ID 0, DF, TTL 64 (the route's default hop
limit), addresses swapped; a bare 20-byte TCP header with RST, and either seq = the
offending segment's ack (if it had ACK) or ACK with ack = seq + SYN + FIN + payload length;
window 0, and the checksum field as nf_reject leaves it for the device to complete
(CHECKSUM_PARTIAL: the pseudo-header's sum; `complete_tcp_checksum` gives the wire form).
No reset answers a reset or a non-first fragment.

ICMP (nf_send_unreach -> icmp_send): destination unreachable with the rule's code; TOS =
(original TOS & 0x1E) | 0xC0 (precedence "internetwork control"), no DF, TTL 64; the body
quotes the original datagram from its IP header, cut so the error is at most 576 bytes.
The kernel draws the IP ID from its per-destination generator: here it is 0, and the caller
(which knows the host's ID state) may rewrite it. No error answers an ICMP error, a
non-first fragment, or a packet to or from a broadcast or multicast address.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Optional

TCP_RESET = "tcp-reset"
DEFAULT_TTL = 64
ICMP_DEST_UNREACH = 3
IPTOS_TOS_MASK = 0x1E
IPTOS_PREC_INTERNETCONTROL = 0xC0
ICMP_ERROR_MAX = 576                 # RFC 1812: an ICMP error datagram is at most 576 bytes
IP_DF = 0x4000
IP_OFFSET = 0x1FFF
# ICMP types that are errors: icmp_send never answers them (icmp_pointers[].error).
ICMP_ERROR_TYPES = frozenset({3, 4, 5, 11, 12})


@dataclass(frozen=True)
class RejectType:
    name: str
    icmp_code: Optional[int]          # None for tcp-reset


# --reject-with names -> the canonical type.
_CANONICAL = (("icmp-net-unreachable", 0), ("icmp-host-unreachable", 1),
              ("icmp-proto-unreachable", 2), ("icmp-port-unreachable", 3),
              ("icmp-net-prohibited", 9), ("icmp-host-prohibited", 10),
              ("icmp-admin-prohibited", 13))
REJECT_TYPES: dict[str, RejectType] = {name: RejectType(name, code) for name, code in _CANONICAL}
# iptables 1.8.9 also takes tcp-rst (and no name without its icmp- prefix: checked).
REJECT_TYPES.update({TCP_RESET: RejectType(TCP_RESET, None), "tcp-rst": RejectType(TCP_RESET, None)})


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ip_header(tos: int, total_len: int, ident: int, frag: int, ttl: int, proto: int,
              src: bytes, dst: bytes) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, tos, total_len, ident, frag, ttl, proto, 0,
                         src, dst)
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:]


def _is_broadcast_or_multicast(addr: bytes) -> bool:
    return addr == b"\xff\xff\xff\xff" or 224 <= addr[0] <= 239


def tcp_reset(datagram: bytes) -> Optional[bytes]:
    ihl = (datagram[0] & 15) * 4
    frag = struct.unpack_from("!H", datagram, 6)[0]
    if frag & IP_OFFSET or len(datagram) < ihl + 20:
        return None
    sport, dport, seq, ack_seq, offset_flags = struct.unpack_from("!HHIIH", datagram, ihl)
    flags = offset_flags & 0x3F
    if flags & 0x04:                                       # never answer a RST
        return None
    src, dst = datagram[12:16], datagram[16:20]
    if _is_broadcast_or_multicast(dst):
        return None
    total = struct.unpack_from("!H", datagram, 2)[0]
    if flags & 0x10:                                       # ACK: take its ack as our seq
        new_seq, new_ack, new_flags = ack_seq, 0, 0x04
    else:
        payload = total - ihl - (offset_flags >> 12) * 4
        new_seq = 0
        new_ack = (seq + bool(flags & 0x02) + bool(flags & 0x01) + payload) & 0xFFFFFFFF
        new_flags = 0x14                                   # RST | ACK
    tcp = struct.pack("!HHIIBBHHH", dport, sport, new_seq, new_ack, 5 << 4, new_flags, 0, 0, 0)
    # CHECKSUM_PARTIAL: the field holds the pseudo-header's sum, which the device (or the
    # stack, without offload) completes on the way out; the hooks see it like this.
    pseudo = dst + src + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", ~checksum(pseudo) & 0xFFFF) + tcp[18:]
    return ip_header(0, 20 + len(tcp), 0, IP_DF, DEFAULT_TTL, 6, dst, src) + tcp


def complete_tcp_checksum(datagram: bytes) -> bytes:
    """The datagram as it leaves the device: its TCP checksum computed in full."""
    ihl = (datagram[0] & 15) * 4
    tcp = datagram[ihl:]
    pseudo = datagram[12:16] + datagram[16:20] + struct.pack("!BBH", 0, 6, len(tcp))
    zeroed = tcp[:16] + b"\0\0" + tcp[18:]
    return datagram[:ihl] + zeroed[:16] + struct.pack("!H", checksum(pseudo + zeroed)) + zeroed[18:]


def icmp_unreachable(code: int, datagram: bytes) -> Optional[bytes]:
    ihl = (datagram[0] & 15) * 4
    frag = struct.unpack_from("!H", datagram, 6)[0]
    if frag & IP_OFFSET:
        return None
    src, dst = datagram[12:16], datagram[16:20]
    if _is_broadcast_or_multicast(dst) or _is_broadcast_or_multicast(src):
        return None
    if datagram[9] == 1 and len(datagram) > ihl and datagram[ihl] in ICMP_ERROR_TYPES:
        return None
    total = struct.unpack_from("!H", datagram, 2)[0]
    quoted = datagram[:min(total, len(datagram), ICMP_ERROR_MAX - 20 - 8)]
    icmp = struct.pack("!BBHI", ICMP_DEST_UNREACH, code, 0, 0) + quoted
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    tos = (datagram[1] & IPTOS_TOS_MASK) | IPTOS_PREC_INTERNETCONTROL
    return ip_header(tos, 20 + len(icmp), 0, 0, DEFAULT_TTL, 1, dst, src) + icmp


def reject_reply(kind: str, datagram: bytes) -> Optional[bytes]:
    """The datagram the kernel sends for REJECT --reject-with KIND, or None if it sends none."""
    if len(datagram) < 20:
        return None
    rtype = REJECT_TYPES[kind]
    if rtype.icmp_code is None:
        return tcp_reset(datagram)
    return icmp_unreachable(rtype.icmp_code, datagram)
