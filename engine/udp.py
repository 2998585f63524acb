"""The UDP tracker (spec §5.1): unreplied -> replied -> assured.

tutorial (ip_conntrack): once a reply was seen, every packet gets udp_timeout_stream
and sets ASSURED.  linux (nf_conntrack): only packets more than 2 s after the entry's
first one do; earlier ones keep udp_timeout and leave the entry unassured.
"""
from __future__ import annotations

from typing import Any, Optional

from .entry import ASSURED, SEEN_REPLY, Entry
from .hooks import PRE_ROUTING
from .l4 import checked_seconds, ports_text, swapped
from .packet import Packet
from .profile import is_modern

STREAM_AFTER = 2.0      # seconds: modern ct->proto.udp.stream_ts = first packet + 2*HZ
MAX_AGE = float(1 << 32)   # seconds: a saved first-packet age beyond this is not a real one


class UdpTracker:
    name = "udp"
    error_messages = False
    invert = staticmethod(swapped)
    tuple_text = staticmethod(ports_text)

    def __init__(self, profile: str) -> None:
        self.modern = is_modern(profile)

    def error(self, pkt: Packet, knobs) -> Optional[str]:
        if pkt.hook == PRE_ROUTING and knobs["checksum"] and not pkt.l4_checksum_ok:
            return "bad udp checksum"
        return None

    def quotes_flow(self, pkt: Packet) -> bool:
        return False

    def new(self, entry: Entry, pkt: Packet, knobs) -> bool:
        # entry.l4 is the first packet's time already (Entry.__init__; the entry keeps no
        # creation time of its own unless timestamps are on); the stream rule applies from
        # STREAM_AFTER seconds later.
        return True

    def packet(self, entry: Entry, pkt: Packet, direction: int, now: float, knobs):
        if not entry.status & SEEN_REPLY:
            return knobs["udp_timeout"]
        if self.modern and now <= entry.l4 + STREAM_AFTER:
            return knobs["udp_timeout"]
        entry.status |= ASSURED
        return knobs["udp_timeout_stream"]

    def state_name(self, entry: Entry) -> Optional[str]:
        return None

    def export_l4(self, entry: Entry, now: float) -> float:
        return now - entry.l4                # first packet's age; the stream rule needs it

    def restore_l4(self, value: Any, saved_at: float) -> float:
        return saved_at - checked_seconds(value, "l4", 0.0, MAX_AGE)
