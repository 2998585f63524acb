"""The GRE tracker of nf_conntrack (linux profile; ip_conntrack tracks GRE as generic).

Tuple keys: 0 for plain GRE (version 0); enhanced GRE (PPTP) keys by call id.  The two
timeouts are fixed when the entry is made and printed in the state column, as the
kernel's gre_print_conntrack does: `timeout=30, stream_timeout=180 `.
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

from .entry import ASSURED, SEEN_REPLY, Entry
from .knobs import HZ, INT_MAX
from .l4 import checked_list, checked_uint, swapped
from .packet import Packet


class GreTracker:
    name = "gre"
    error_messages = False
    invert = staticmethod(swapped)

    def __init__(self, profile: str) -> None:
        self.profile = profile

    def error(self, pkt: Packet, knobs) -> Optional[str]:
        return None

    def quotes_flow(self, pkt: Packet) -> bool:
        return False

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

    def tuple_text(self, a: int, b: int) -> str:
        return f"srckey={a:#x} dstkey={b:#x} "

    def export_l4(self, entry: Entry, now: float) -> List[int]:
        return list(entry.l4)

    def restore_l4(self, value: Any, saved_at: float) -> Tuple[int, int]:
        timeout, stream = (checked_uint(v, 32, "l4") for v in checked_list(value, 2, "l4"))
        if max(timeout, stream) > INT_MAX // HZ:
            raise ValueError(f"l4: GRE timeouts {timeout}, {stream} above {INT_MAX // HZ} s")
        return timeout, stream
