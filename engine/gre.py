"""The GRE tracker of nf_conntrack (linux profile; ip_conntrack tracks GRE as generic).

Tuple keys: 0 for plain GRE (version 0); enhanced GRE (PPTP) keys by call id.  The two
timeouts are fixed when the entry is made and printed in the state column, as the
kernel's gre_print_conntrack does: `timeout=30, stream_timeout=180 `.
"""
from __future__ import annotations

from typing import Optional

from .entry import ASSURED, SEEN_REPLY, Entry
from .packet import Packet


class GreTracker:
    name = "gre"

    def __init__(self, profile: str) -> None:
        self.profile = profile

    def error(self, pkt: Packet, knobs) -> Optional[str]:
        return None

    def new(self, entry: Entry, pkt: Packet, knobs) -> bool:
        entry.l4 = (knobs["gre_timeout"], knobs["gre_timeout_stream"])
        return True

    def packet(self, entry: Entry, pkt: Packet, direction: int, now: float, knobs):
        timeout, stream_timeout = entry.l4
        if entry.status & SEEN_REPLY:
            entry.status |= ASSURED
            return stream_timeout
        return timeout

    def state_name(self, entry: Entry) -> Optional[str]:
        timeout, stream_timeout = entry.l4
        return f"timeout={timeout}, stream_timeout={stream_timeout}"
