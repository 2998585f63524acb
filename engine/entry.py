"""One conntrack entry and the outcomes a protocol tracker can return for a packet."""
from __future__ import annotations

from typing import Any, Optional

# Status bits (include/uapi/linux/netfilter/nf_conntrack_common.h).
SEEN_REPLY = 1 << 1
ASSURED = 1 << 2

ORIGINAL, REPLY = 0, 1


class Entry:
    """A tracked connection: two tuples, status bits, an expiry and per-protocol state.

    Tuples are (src, dst, proto, sport, dport); for ICMP sport is the id and dport
    is type << 8 | code, mirroring the kernel's tuple layout.
    """
    __slots__ = ("orig", "reply", "status", "expires", "created", "l4",
                 "packets", "bytes", "acct", "stamped", "timer_slot", "hnext", "children")

    def __init__(self, orig: tuple, reply: tuple, now: float) -> None:
        self.orig = orig
        self.reply = reply
        self.status = 0
        self.expires = now
        self.created = now
        self.l4: Any = None            # protocol tracker's private state
        self.packets = [0, 0]          # per direction
        self.bytes = [0, 0]
        self.acct = False              # nf_conntrack_acct was on when created: counters shown
        self.stamped = False           # nf_conntrack_timestamp was on when created: delta-time shown
        self.timer_slot: Optional[float] = None   # when the timer heap will look at it next
        self.hnext: Optional["Entry"] = None      # next entry in the same hash chain
        self.children = 0              # expectation children (always 0: no helpers yet)

    @property
    def proto(self) -> int:
        return self.orig[2]

    @property
    def assured(self) -> bool:
        return bool(self.status & ASSURED)

    @property
    def seen_reply(self) -> bool:
        return bool(self.status & SEEN_REPLY)


class _Outcome:
    """A non-numeric result of a protocol tracker's packet(); numbers mean 'accept, timeout N s'."""
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


IGNORE = _Outcome("IGNORE")    # accepted with the entry's ctinfo; state and timer unchanged
INVALID = _Outcome("INVALID")  # refused: packet INVALID, entry untouched
DELETE = _Outcome("DELETE")    # accepted, then the entry is removed at once
REOPEN = _Outcome("REOPEN")    # destroy the entry and process the packet again as new
