"""The UDP-Lite tracker of nf_conntrack (protocol 136; linux profile only).

UDP's tuple and timeouts (nf_conntrack_udp_timeout, _stream), with the header checks of
udplite_error() done by the parser (checksum coverage, mandatory checksum; the checksum
itself at PREROUTING).  Unlike modern UDP there is no 2-second rule: once a reply was
seen, every packet gets the stream timeout and ASSURED (nf_conntrack_udplite_packet()).
"""
from __future__ import annotations

from .entry import ASSURED, SEEN_REPLY, Entry
from .packet import Packet
from .udp import UdpTracker


class UdpliteTracker(UdpTracker):
    name = "udplite"

    def packet(self, entry: Entry, pkt: Packet, direction: int, now: float, knobs):
        if not entry.status & SEEN_REPLY:
            return knobs["udp_timeout"]
        entry.status |= ASSURED
        return knobs["udp_timeout_stream"]
