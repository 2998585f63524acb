"""The ICMP tracker (spec §5.2): request/reply entries by id, and error messages.

Only request types create entries.  Errors (unreachable, quench, redirect, time
exceeded, parameter problem) quote a datagram; the reply of the quoted tuple is
looked up and a hit makes the error RELATED, without refreshing or changing the entry.
The tuple keeps the id in its first protocol part and type << 8 | code in the second.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple, Union

from .entry import REPLY, Entry
from .hooks import PRE_ROUTING
from .l4 import checked_uint, icmp_inverted, icmp_text
from .outcome import DELETE, IGNORE
from .packet import ICMP_ERROR_TYPES, Packet
from .profile import is_modern

REQUEST_TYPES = frozenset((8, 13, 15, 17))     # echo, timestamp, info, address mask
NR_ICMP_TYPES = 18                              # types above this are refused
# Request <-> reply types, both ways (the kernel's invmap).
ICMP_INVERSE = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 17: 18, 18: 17}

Tuple5 = Tuple[int, int, int, int, int]
# Finds the entry a quoted tuple's reply belongs to: (entry, direction of the hit) or None.
FindReply = Callable[[Tuple5], Optional[Tuple[Entry, int]]]


def classify_error(pkt: Packet, find_reply: FindReply, find: FindReply, modern: bool
                   ) -> Union[Tuple[Entry, int], str]:
    """(entry, direction) of the flow an ICMP error is about, or the reason it is INVALID.

    find_reply(t) looks up the reply of tuple t; find(t) looks up t itself."""
    icmp = pkt.icmp
    if icmp.inner is None:
        return "icmp error without a usable embedded header"
    hit = find_reply(icmp.inner)
    if hit is None and not modern and pkt.hook != PRE_ROUTING:
        # ip_conntrack: a locally generated error may quote the flow the other way round.
        hit = find(icmp.inner)
        if hit is not None:
            hit = (hit[0], 1 - hit[1])
    if hit is None:
        return "icmp error quoting no known flow"
    entry, direction = hit
    if modern:
        if pkt.dst != entry.tuple(direction)[1]:
            return "icmp error: outer destination is not the flow's"
    return hit


class IcmpTracker:
    name = "icmp"
    error_messages = True

    def __init__(self, profile: str) -> None:
        self.modern = is_modern(profile)

    def error(self, pkt: Packet, knobs) -> Optional[str]:
        icmp = pkt.icmp
        if icmp.type > NR_ICMP_TYPES:
            return f"icmp type {icmp.type} unknown"
        if pkt.hook == PRE_ROUTING and knobs["checksum"] and not icmp.checksum_ok:
            return "bad icmp checksum"
        return None

    def quotes_flow(self, pkt: Packet) -> bool:
        return pkt.icmp.type in ICMP_ERROR_TYPES

    def untracked(self, pkt: Packet) -> bool:
        return False            # (only ICMPv6 has messages conntrack leaves untracked)

    def invert(self, a: int, b: int) -> Optional[Tuple[int, int]]:
        return icmp_inverted(ICMP_INVERSE, a, b)

    def new(self, entry: Entry, pkt: Packet, knobs) -> bool:
        if pkt.icmp.type not in REQUEST_TYPES:
            return False
        entry.l4 = 0           # ip_conntrack: requests outstanding
        return True

    def packet(self, entry: Entry, pkt: Packet, direction: int, now: float, knobs):
        if self.modern:
            return knobs["icmp_timeout"]
        # ip_conntrack counts requests against replies and drops the entry when all
        # are answered: an answered ping disappears at once, as the tutorial says.
        if direction == REPLY:
            entry.l4 -= 1
            if entry.l4 <= 0:
                return DELETE
            return IGNORE       # a reply does not refresh the ip_conntrack ICMP timer
        entry.l4 += 1
        return knobs["icmp_timeout"]

    def state_name(self, entry: Entry) -> Optional[str]:
        return None

    tuple_text = staticmethod(icmp_text)

    def export_l4(self, entry: Entry, now: float) -> int:
        return entry.l4

    def restore_l4(self, value: Any, saved_at: float) -> int:
        return checked_uint(value, 32, "l4")
