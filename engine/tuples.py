"""Conntrack tuples: (src, dst, proto, sport, dport) with int addresses.

ICMP keeps the id in `sport` and type << 8 | code in `dport`, as the kernel keeps
them in the tuple's src/dst protocol parts; protocols without ports use 0, 0.
"""
from __future__ import annotations

from typing import Optional, Tuple

Tuple5 = Tuple[int, int, int, int, int]

# ICMP request -> reply types, both ways (the kernel's invmap).
ICMP_INVERSE = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 17: 18, 18: 17}


def invert(t: Tuple5) -> Optional[Tuple5]:
    """The tuple a reply carries; None if it has no inverse (an ICMP type without a pair)."""
    src, dst, proto, a, b = t
    if proto == 1:
        reply_type = ICMP_INVERSE.get(b >> 8)
        if reply_type is None:
            return None
        return (dst, src, proto, a, (reply_type << 8) | (b & 0xFF))
    return (dst, src, proto, b, a)


def ip_text(addr: int) -> str:
    return f"{addr >> 24}.{(addr >> 16) & 255}.{(addr >> 8) & 255}.{addr & 255}"


def tuple_text(t: Tuple5, keyed: bool = False) -> str:
    """The listing form: `src=... dst=... ` plus the protocol part, each token space-ended.

    keyed: GRE is tracked by its own tracker (linux), which prints its keys."""
    src, dst, proto, a, b = t
    head = f"src={ip_text(src)} dst={ip_text(dst)} "
    if proto in (6, 17):
        return f"{head}sport={a} dport={b} "
    if proto == 1:
        return f"{head}type={b >> 8} code={b & 255} id={a} "
    if proto == 47 and keyed:
        return f"{head}srckey={a:#x} dstkey={b:#x} "
    return head
