"""Per-packet classification, as `-m state` / nft `ct state` see it (spec §6)."""
from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple


class CtState(IntEnum):
    ESTABLISHED = 0
    RELATED = 1
    NEW = 2
    INVALID = 7
    UNTRACKED = 8


class Verdict(NamedTuple):
    state: CtState
    reply: bool = False

    def __str__(self) -> str:
        return self.state.name + (" reply" if self.reply else "")


INVALID = Verdict(CtState.INVALID)
