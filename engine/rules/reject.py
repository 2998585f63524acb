"""The datagrams REJECT answers with, built as the kernel's nf_reject_ipv4 and icmp_send do.

tcp-reset (nf_send_reset): IP header with TOS 0, ID 0, DF, TTL 64 (the route's default hop
limit), addresses swapped; a bare 20-byte TCP header with RST, and either seq = the
offending segment's ack (if it had ACK) or ACK with ack = seq + SYN + FIN + payload length;
window 0, and the checksum field as nf_reject leaves it for the device to complete
(CHECKSUM_PARTIAL: the pseudo-header's sum; a device without offload completes it).
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

from engine.build import build_icmp, build_ipv4, build_tcp, pseudo_header_sum

TCP_RESET = "tcp-reset"
DEFAULT_TTL = 64
ICMP_DEST_UNREACH = 3
IPTOS_TOS_MASK = 0x1E
IPTOS_PREC_INTERNETCONTROL = 0xC0
ICMP_ERROR_MAX = 576                 # RFC 1812: an ICMP error datagram is at most 576 bytes
IP_OFFSET = 0x1FFF
TCP_HEADER_LEN = 20
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
    new_src, new_dst = int.from_bytes(dst, "big"), int.from_bytes(src, "big")
    # CHECKSUM_PARTIAL: the field holds the pseudo-header's sum, which the device (or the
    # stack, without offload) completes on the way out; the hooks see it like this.
    partial = pseudo_header_sum(new_src, new_dst, 6, TCP_HEADER_LEN)
    while partial >> 16:
        partial = (partial & 0xFFFF) + (partial >> 16)
    tcp = build_tcp(new_src, new_dst, dport, sport, seq=new_seq, ack=new_ack, flags=new_flags,
                    window=0, checksum=partial)
    return build_ipv4(new_src, new_dst, 6, tcp, ident=0, ttl=DEFAULT_TTL, df=True)


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
    icmp = build_icmp(ICMP_DEST_UNREACH, code, payload=quoted)
    tos = (datagram[1] & IPTOS_TOS_MASK) | IPTOS_PREC_INTERNETCONTROL
    return build_ipv4(int.from_bytes(dst, "big"), int.from_bytes(src, "big"), 1, icmp,
                      ident=0, ttl=DEFAULT_TTL, tos=tos)


def reject_reply(kind: str, datagram: bytes) -> Optional[bytes]:
    """The datagram the kernel sends for REJECT --reject-with KIND, or None if it sends none."""
    if len(datagram) < 20:
        return None
    rtype = REJECT_TYPES[kind]
    if rtype.icmp_code is None:
        return tcp_reset(datagram)
    return icmp_unreachable(rtype.icmp_code, datagram)
