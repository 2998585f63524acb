"""The ICMP tracker (spec §5.2): request/reply entries by id, and error messages.

Only request types create entries.  Errors (unreachable, quench, redirect, time
exceeded, parameter problem) quote a datagram; the inverse of the quoted tuple is
looked up and a hit makes the error RELATED, without refreshing or changing the entry.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple, Union

from .entry import DELETE, IGNORE, REPLY, Entry
from .packet import PRE_ROUTING, Packet
from .tuples import invert

REQUEST_TYPES = frozenset((8, 13, 15, 17))     # echo, timestamp, info, address mask
ERROR_TYPES = frozenset((3, 4, 5, 11, 12))
NR_ICMP_TYPES = 18                              # types above this are refused


def is_error(pkt: Packet) -> bool:
    return pkt.icmp is not None and pkt.icmp.type in ERROR_TYPES


Lookup = Callable[[tuple], Optional[Tuple[Entry, int]]]


def classify_error(pkt: Packet, lookup: Lookup, modern: bool
                   ) -> Union[Tuple[Entry, int], str]:
    """(entry, direction) of the flow an ICMP error is about, or the reason it is INVALID."""
    icmp = pkt.icmp
    if icmp.inner is None:
        return "icmp error without a usable embedded header"
    wanted = invert(icmp.inner)
    if wanted is None:
        return "icmp error quoting a packet with no inverse"
    hit = lookup(wanted)
    if hit is None and not modern and pkt.hook != PRE_ROUTING:
        # ip_conntrack: a locally generated error may quote the flow the other way round.
        hit = lookup(icmp.inner)
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

    def __init__(self, profile: str) -> None:
        self.modern = profile == "linux"

    def error(self, pkt: Packet, knobs) -> Optional[str]:
        icmp = pkt.icmp
        if icmp.type > NR_ICMP_TYPES:
            return f"icmp type {icmp.type} unknown"
        if pkt.hook == PRE_ROUTING and knobs["checksum"] and not icmp.checksum_ok:
            return "bad icmp checksum"
        return None

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
