"""Per-packet classification, as `-m state` / nft `ct state` see it (spec §6), and the
result conntrack hands on for each packet."""
from __future__ import annotations

from enum import IntEnum
from typing import Any, NamedTuple, Optional


class CtState(IntEnum):
    ESTABLISHED = 0
    RELATED = 1
    NEW = 2
    INVALID = 7
    UNTRACKED = 8


class Verdict(NamedTuple):
    """A packet's ctstate and whether it travels in the reply direction (ctinfo)."""
    state: CtState
    reply: bool = False

    def __str__(self) -> str:
        return self.state.name + (" reply" if self.reply else "")


INVALID = Verdict(CtState.INVALID)
_VERDICTS = {(state, reply): Verdict(state, reply) for state in CtState for reply in (False, True)}


class PacketResult:
    """What conntrack made of one packet: its ctstate and direction, the hook that tracked
    it, its entry (None for INVALID/UNTRACKED), and whether that entry still waits for
    confirmation (it enters the table when the packet leaves its last hook)."""
    __slots__ = ("state", "reply", "hook", "entry", "pending", "dropped")

    def __init__(self, state: CtState, reply: bool, hook: int, entry: Any = None,
                 pending: bool = False) -> None:
        self.state = state
        self.reply = reply
        self.hook = hook
        self.entry = entry
        self.pending = pending          # a new entry, not yet in the table
        self.dropped = False            # a hook dropped the packet

    @property
    def verdict(self) -> Verdict:
        return _VERDICTS[(self.state, self.reply)]

    @property
    def direction(self) -> int:
        return 1 if self.reply else 0

    def __str__(self) -> str:
        return self.state.name + (" reply" if self.reply else "")

    def __repr__(self) -> str:
        entry = "" if self.entry is None else (" pending" if self.pending else " entry")
        return f"<{self} at hook {self.hook}{entry}{' dropped' if self.dropped else ''}>"


def verdict_of(result: Optional[PacketResult]) -> Optional[Verdict]:
    return None if result is None else result.verdict
