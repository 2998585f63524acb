"""The LOG target's line, in the kernel's format (net/netfilter/nf_log_syslog.c).

`PREFIX` `IN=.. OUT=.. ` then, for a packet that came in on an interface, `MAC=` and the
link-layer header's bytes; then the IP part (`SRC= DST= LEN= TOS= PREC= TTL= ID= ` and
CE/DF/MF/FRAG:), the transport part, `UID= GID= ` with --log-uid for a local socket's
packet, and `MARK=0x.. ` when the mark is not zero. Every field ends with a space, the
last one too, as the kernel prints them. ICMP errors quote the inner datagram in [ ].
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from .packet import RulePacket
from .values import ipv4_text

LOG_DEFAULT_LEVEL = 4                     # warning
IPTOS_TOS_MASK = 0x1E
IPTOS_PREC_MASK = 0xE0
IP_CE, IP_DF, IP_MF, IP_OFFSET = 0x8000, 0x4000, 0x2000, 0x1FFF
TCP_FLAG_WORDS = (("CWR", 0x80), ("ECE", 0x40), ("URG", 0x20), ("ACK", 0x10), ("PSH", 0x08),
                  ("RST", 0x04), ("SYN", 0x02), ("FIN", 0x01))
# The shortest ICMP message of each type the kernel logs beyond its type and code.
ICMP_REQUIRED_LEN = {0: 8, 3: 36, 4: 36, 5: 36, 8: 8, 11: 36, 12: 36, 13: 20, 14: 20,
                     15: 8, 16: 8, 17: 12, 18: 12}
ICMP_QUOTING = frozenset({3, 4, 5, 11})


@dataclass(frozen=True)
class LogFlags:
    tcp_sequence: bool = False
    tcp_options: bool = False
    ip_options: bool = False
    uid: bool = False


def _hex(data: bytes) -> str:
    return data.hex().upper()


def _have(parts: list[str], off: int, end: int, need: int) -> bool:
    """True if `need` header bytes are there; else the kernel's INCOMPLETE note."""
    if end - off < need:
        parts.append(f"INCOMPLETE [{max(end - off, 0)} bytes] ")
        return False
    return True


def _tcp(parts: list[str], data: bytes, off: int, end: int, fragment: bool,
         flags: LogFlags) -> bool:
    parts.append("PROTO=TCP ")
    if fragment:
        return True
    if not _have(parts, off, end, 20):
        return False
    sport, dport, seq, ack, word, window, _, urgp = struct.unpack_from("!HHIIHHHH", data, off)
    parts.append(f"SPT={sport} DPT={dport} ")
    if flags.tcp_sequence:
        parts.append(f"SEQ={seq} ACK={ack} ")
    parts.append(f"WINDOW={window} ")
    parts.append(f"RES=0x{(word >> 8 & 0x0F) << 2:02x} ")
    parts.append("".join(f"{name} " for name, bit in TCP_FLAG_WORDS if word & bit))
    parts.append(f"URGP={urgp} ")
    doff = (word >> 12) * 4
    if flags.tcp_options and doff > 20:
        if end - off < doff:
            parts.append("OPT (TRUNCATED)")
            return False
        parts.append(f"OPT ({_hex(data[off + 20:off + doff])}) ")
    return True


def _udp(parts: list[str], data: bytes, off: int, end: int, fragment: bool) -> bool:
    parts.append("PROTO=UDP ")
    if fragment:
        return True
    if not _have(parts, off, end, 8):
        return False
    sport, dport, length = struct.unpack_from("!HHH", data, off)
    parts.append(f"SPT={sport} DPT={dport} LEN={length} ")
    return True


def _icmp(parts: list[str], data: bytes, off: int, end: int, fragment: bool,
          flags: LogFlags, nested: bool) -> None:
    parts.append("PROTO=ICMP ")
    if fragment or not _have(parts, off, end, 4):
        return
    icmp_type, code = data[off], data[off + 1]
    parts.append(f"TYPE={icmp_type} CODE={code} ")
    if not _have(parts, off, end, ICMP_REQUIRED_LEN.get(icmp_type, 0)):
        return
    if icmp_type in (0, 8):
        ident, seq = struct.unpack_from("!HH", data, off + 4)
        parts.append(f"ID={ident} SEQ={seq} ")
    elif icmp_type == 12:
        parts.append(f"PARAMETER={data[off + 4]} ")
    if icmp_type == 5:
        parts.append(f"GATEWAY={ipv4_text(struct.unpack_from('!I', data, off + 4)[0])} ")
    if icmp_type in ICMP_QUOTING:
        if not nested:                                 # the kernel recurses only once
            parts.append("[")
            _ip(parts, data, off + 8, flags, nested=True)
            parts.append("] ")
        if icmp_type == 3 and code == 4:
            parts.append(f"MTU={struct.unpack_from('!H', data, off + 6)[0]} ")


def _ip(parts: list[str], data: bytes, off: int, flags: LogFlags, nested: bool) -> None:
    if len(data) - off < 20:
        parts.append("TRUNCATED")
        return
    tos, total, ident, frag, ttl, proto = struct.unpack_from("!xBHHHBB", data, off)
    parts.append(f"SRC={ipv4_text(struct.unpack_from('!I', data, off + 12)[0])} "
                 f"DST={ipv4_text(struct.unpack_from('!I', data, off + 16)[0])} ")
    parts.append(f"LEN={total} TOS=0x{tos & IPTOS_TOS_MASK:02X} PREC=0x{tos & IPTOS_PREC_MASK:02X} "
                 f"TTL={ttl} ID={ident} ")
    parts.append("".join(word for bit, word in ((IP_CE, "CE "), (IP_DF, "DF "), (IP_MF, "MF "))
                         if frag & bit))
    if frag & IP_OFFSET:
        parts.append(f"FRAG:{frag & IP_OFFSET} ")
    ihl = (data[off] & 15) * 4
    if flags.ip_options and ihl > 20:
        parts.append(f"OPT ({_hex(data[off + 20:off + ihl])}) ")
    fragment = bool(frag & IP_OFFSET)
    l4, end = off + ihl, len(data)
    if proto == 6:
        _tcp(parts, data, l4, end, fragment, flags)
    elif proto == 17:
        _udp(parts, data, l4, end, fragment)
    elif proto == 1:
        _icmp(parts, data, l4, end, fragment, flags, nested)
    else:
        parts.append(f"PROTO={proto} ")


def log_line(prefix: str, pkt: RulePacket, flags: LogFlags, mark: int) -> str:
    """The text the kernel hands to syslog for this packet (without the <level> marker)."""
    parts = [f"{prefix}IN={pkt.in_iface} OUT={pkt.out_iface} "]
    if pkt.in_iface:
        parts.append("MAC=" + ":".join(f"{b:02x}" for b in pkt.link_header) + " ")
    _ip(parts, pkt.raw, 0, flags, nested=False)
    if flags.uid and pkt.uid is not None:
        parts.append(f"UID={pkt.uid} GID={pkt.gid if pkt.gid is not None else pkt.uid} ")
    if mark:
        parts.append(f"MARK=0x{mark:x} ")
    return "".join(parts)
