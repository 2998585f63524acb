"""The generic tracker: any IP protocol without its own (spec §5.3).

One entry per (src, dst, proto); every packet refreshes generic_timeout; never ASSURED.
"""
from __future__ import annotations

from typing import Any, Optional

from .entry import Entry
from .l4 import swapped
from .packet import Packet


class GenericTracker:
    name = "unknown"
    error_messages = False
    invert = staticmethod(swapped)

    def __init__(self, profile: str) -> None:
        self.profile = profile

    def error(self, pkt: Packet, knobs) -> Optional[str]:
        return None

    def quotes_flow(self, pkt: Packet) -> bool:
        return False

    def new(self, entry: Entry, pkt: Packet, knobs) -> bool:
        return True

    def packet(self, entry: Entry, pkt: Packet, direction: int, now: float, knobs):
        return knobs["generic_timeout"]

    def state_name(self, entry: Entry) -> Optional[str]:
        return None

    def tuple_text(self, a: int, b: int) -> str:
        return ""                           # the generic tuple has no protocol part

    def export_l4(self, entry: Entry, now: float) -> None:
        return None

    def restore_l4(self, value: Any, saved_at: float) -> None:
        if value is not None:
            raise ValueError("l4: the generic tracker keeps no state")
        return None
