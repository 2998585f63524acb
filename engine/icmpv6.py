"""The ICMPv6 tracker of nf_conntrack (protocol 58; linux profile only).

nf_ct_l4proto_find() picks trackers by protocol number alone, so this one also gets
protocol 58 inside IPv4, which the kernel refuses (nf_conntrack_icmpv6_packet(): "if
(state->pf != NFPROTO_IPV6) return -NF_ACCEPT"): INVALID, no entry (scenario
foreign_protocols).  Here parse_ipv4() reads no ICMPv6 header, so such a packet's tuple
holds type 0, which has no reply type: invert() refuses it before any entry is made.  Over IPv6: echo request (128) and node information query (139) make
entries keyed by id, answered by 129 and 140; timeout nf_conntrack_icmpv6_timeout.
Errors (types below 128: destination unreachable, packet too big, time exceeded, parameter
problem) are RELATED to the flow they quote, as ICMP errors are (engine/icmp.py's
classify_error; icmpv6_error_message()).  Neighbour discovery and MLD messages are left
UNTRACKED (noct_valid_new[] of nf_conntrack_icmpv6_error()): no entry, no stat counted.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

from . import ipv6
from .entry import Entry
from .hooks import PRE_ROUTING
from .l4 import icmp_inverted, icmp_text
from .packet import Packet
from .parse_ipv6 import ICMPV6_ERROR_BELOW

ECHO_REQUEST, NI_QUERY = 128, 139
REQUEST_TYPES = frozenset((ECHO_REQUEST, NI_QUERY))      # valid_new[] of the kernel
ICMPV6_INVERSE = {128: 129, 129: 128, 139: 140, 140: 139}
# MLD query/report/done (130-132), router solicitation/advertisement (133, 134), neighbour
# solicitation/advertisement (135, 136), MLDv2 report (143): noct_valid_new[].
NOT_TRACKED_TYPES = frozenset((130, 131, 132, 133, 134, 135, 136, 143))


class Icmpv6Tracker:
    name = "icmpv6"
    error_messages = True

    def __init__(self, profile: str) -> None:
        self.profile = profile

    def error(self, pkt: Packet, knobs) -> Optional[str]:
        if (pkt.l3 is ipv6 and pkt.hook == PRE_ROUTING and knobs["checksum"]
                and not pkt.l4_checksum_ok):
            return "bad icmpv6 checksum"
        return None

    def quotes_flow(self, pkt: Packet) -> bool:
        # (58 inside IPv4 has no ICMPv6 header read: never an error message)
        return pkt.icmp is not None and pkt.l3 is ipv6 and pkt.icmp.type < ICMPV6_ERROR_BELOW

    def untracked(self, pkt: Packet) -> bool:
        return pkt.icmp is not None and pkt.l3 is ipv6 and pkt.icmp.type in NOT_TRACKED_TYPES

    def invert(self, a: int, b: int) -> Optional[Tuple[int, int]]:
        return icmp_inverted(ICMPV6_INVERSE, a, b)

    def new(self, entry: Entry, pkt: Packet, knobs) -> bool:
        return pkt.icmp is not None and pkt.icmp.type in REQUEST_TYPES

    def packet(self, entry: Entry, pkt: Packet, direction: int, now: float, knobs):
        return knobs["icmpv6_timeout"]

    def state_name(self, entry: Entry) -> Optional[str]:
        return None

    tuple_text = staticmethod(icmp_text)

    def export_l4(self, entry: Entry, now: float) -> None:
        return None

    def restore_l4(self, value: Any, saved_at: float) -> None:
        if value is not None:
            raise ValueError("l4: the ICMPv6 tracker keeps no state")
        return None
