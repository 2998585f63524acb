"""What a protocol tracker answers for a packet: a timeout in seconds, or one of these.

A number means "accepted: (re)arm the entry's timer to now + that many seconds".
"""
from __future__ import annotations

from typing import Union


class TrackerOutcome:
    """A non-numeric answer of a protocol tracker's packet()."""
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


IGNORE = TrackerOutcome("IGNORE")    # accepted with the entry's ctinfo; state and timer unchanged
INVALID = TrackerOutcome("INVALID")  # refused: packet INVALID, entry untouched
DELETE = TrackerOutcome("DELETE")    # accepted, then the entry is removed at once
REOPEN = TrackerOutcome("REOPEN")    # destroy the entry and process the packet again as new

Outcome = Union[int, float, TrackerOutcome]
