"""One conntrack entry and the outcomes a protocol tracker can return for a packet."""
from __future__ import annotations

import struct
from typing import Any, List, Optional, Tuple

# Status bits (include/uapi/linux/netfilter/nf_conntrack_common.h).
SEEN_REPLY = 1 << 1
ASSURED = 1 << 2

ORIGINAL, REPLY = 0, 1

# A table key: the tuple without its protocol (each protocol has its own table), packed as
# the bytes sit in an option-less IPv4 header from offset 12 (src, dst) followed by the
# first four bytes of the TCP/UDP header (sport, dport).  So the common packet's key is one
# slice of its bytes, 12 bytes that cost 48 in memory where a 5-tuple of ints costs ~140.
# ICMP keeps the id in the sport place and type << 8 | code in the dport place, as the
# kernel keeps them in the tuple; protocols without ports use 0, 0.
KEY = struct.Struct("!IIHH")
Tuple5 = Tuple[int, int, int, int, int]


def key_of(src: int, dst: int, sport: int, dport: int) -> bytes:
    return KEY.pack(src, dst, sport, dport)


class Entry:
    """A tracked connection: two keys, status bits, an expiry and per-protocol state.

    Memory matters here (one Entry per tracked connection, 262,144 of them by default), so
    optional parts cost nothing when off, as the kernel's extensions do: `counters` exists
    only when nf_conntrack_acct was on at creation, `created` only when nf_conntrack_timestamp
    was on (the tracker clears it otherwise, once the protocol tracker has read it).
    """
    __slots__ = ("orig", "reply", "proto", "status", "expires", "created", "l4", "counters",
                 "timer_slot", "hnext")

    children = 0                   # expectation children (always 0: no helpers yet)

    def __init__(self, orig: Any, reply: Any, now: float, proto: int = 0) -> None:
        self.orig = orig               # key (see KEY) of the original direction
        self.reply = reply             # key of the reply direction
        self.proto = proto
        self.status = 0
        self.expires = now
        self.created: Optional[float] = now
        self.l4: Any = None            # protocol tracker's private state
        # [packets orig, packets reply, bytes orig, bytes reply] when accounting is on.
        self.counters: Optional[List[int]] = None
        self.timer_slot: Optional[float] = None   # when the timer wheel will look at it next
        self.hnext: Optional["Entry"] = None      # next entry in the same hash chain

    @property
    def acct(self) -> bool:
        """nf_conntrack_acct was on when the entry was made: counters are kept and shown."""
        return self.counters is not None

    @property
    def stamped(self) -> bool:
        """nf_conntrack_timestamp was on when the entry was made: delta-time is shown."""
        return self.created is not None

    @property
    def assured(self) -> bool:
        return bool(self.status & ASSURED)

    @property
    def seen_reply(self) -> bool:
        return bool(self.status & SEEN_REPLY)

    def tuple(self, direction: int = ORIGINAL) -> Tuple5:
        """(src, dst, proto, sport, dport) of one direction, decoded from its key."""
        src, dst, a, b = KEY.unpack(self.reply if direction else self.orig)
        return (src, dst, self.proto, a, b)


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
