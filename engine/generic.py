"""The generic tracker: any IP protocol without its own (spec §5.3).

One entry per (src, dst, proto); every packet refreshes generic_timeout; never ASSURED.
"""
from __future__ import annotations

from typing import Optional

from .entry import Entry
from .packet import Packet


class GenericTracker:
    name = "unknown"

    def __init__(self, profile: str) -> None:
        self.profile = profile

    def error(self, pkt: Packet, knobs) -> Optional[str]:
        return None

    def new(self, entry: Entry, pkt: Packet, knobs) -> bool:
        return True

    def packet(self, entry: Entry, pkt: Packet, direction: int, now: float, knobs):
        return knobs["generic_timeout"]

    def state_name(self, entry: Entry) -> Optional[str]:
        return None
