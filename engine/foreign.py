"""Protocol numbers nf_conntrack hands to a tracker of the other address family.

nf_ct_l4proto_find() chooses the tracker by protocol number alone, so ICMPv6 (58) inside
IPv4 reaches the ICMPv6 tracker, whose packet() refuses every packet not of IPv6
(nf_conntrack_icmpv6_packet(): "if (state->pf != NFPROTO_IPV6) return -NF_ACCEPT"):
INVALID, no entry, counted in `invalid` (scenario foreign_protocols).  DCCP (33) is not
built into the reference kernel and goes to the generic tracker like any other number.
"""
from __future__ import annotations

from typing import Any, Optional

from .entry import Entry
from .l4 import swapped
from .packet import Packet


class ForeignFamilyTracker:
    """A tracker that makes no entry: every packet of its protocol is INVALID."""
    invert = staticmethod(swapped)

    def __init__(self, name: str) -> None:
        self.name = name

    def error(self, pkt: Packet, knobs) -> Optional[str]:
        return None

    def quotes_flow(self, pkt: Packet) -> bool:
        return False

    def new(self, entry: Entry, pkt: Packet, knobs) -> bool:
        return False

    def packet(self, entry: Entry, pkt: Packet, direction: int, now: float, knobs):
        raise AssertionError("a foreign-family tracker never has an entry")

    def state_name(self, entry: Entry) -> Optional[str]:
        return None

    def tuple_text(self, a: int, b: int) -> str:
        return ""

    def export_l4(self, entry: Entry, now: float) -> None:
        return None

    def restore_l4(self, value: Any, saved_at: float) -> None:
        raise ValueError(f"l4: {self.name} over this address family keeps no entries")
