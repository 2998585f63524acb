"""Expectations: connections a helper announced before they exist (nf_conntrack_expect.c).

A helper reading a control connection (engine/helpers/) learns that a data connection
will come -- FTP's PORT, a TFTP read request, an IRC DCC offer -- and files an
Expectation: the tuple to expect, which parts of it are wildcards (the source port, for
IRC the source address too), the master entry, the helper and a countdown (the helper
policy's timeout).  A new connection whose tuple matches an expectation of a confirmed
master consumes it and is RELATED (engine/tracker.py); an expectation also dies with its
master, when its time is up, or when a newer one of the same master pushes it out
(the policy's max_expected) or replaces it (same tuple).

The table is per namespace and bounded by the knob nf_conntrack_expect_max; its events
are the stat columns expect_create, expect_delete (and expect_new, counted by the
tracker when a connection consumes one).  Time is an argument; nothing reads a clock.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Callable, Dict, Iterator, List, Optional, Tuple

if TYPE_CHECKING:
    from .entry import Entry
    from .helpers.registry import Helper

# Expectation flags (include/uapi/linux/netfilter/nf_conntrack_common.h), as the
# listing names them.
EXPECT_PERMANENT = 1 << 0
EXPECT_INACTIVE = 1 << 1
EXPECT_USERSPACE = 1 << 2
FLAG_NAMES = ((EXPECT_PERMANENT, "PERMANENT"), (EXPECT_INACTIVE, "INACTIVE"),
              (EXPECT_USERSPACE, "USERSPACE"))
CLASS_DEFAULT = 0
INFINITY = float("inf")

# Why add() refused an expectation (the kernel's errno; the helper then drops the packet).
EALREADY, EBUSY, EMFILE = "EALREADY", "EBUSY", "EMFILE"


@dataclass(eq=False)
class Expectation:
    """One expected connection.  `src` None: any source address (IRC DCC); `sport`
    None: any source port (every helper here)."""
    master: "Entry"
    helper: "Helper"
    l3: ModuleType
    proto: int
    src: Optional[int]
    dst: int
    sport: Optional[int]
    dport: int
    expires: float = 0.0
    cls: int = CLASS_DEFAULT
    flags: int = 0
    live: bool = field(default=True)

    def matches(self, src: int, dst: int, sport: int, dport: int) -> bool:
        """The tuple (of a new connection's original direction) fits under the mask."""
        return (dst == self.dst and dport == self.dport
                and (self.src is None or src == self.src)
                and (self.sport is None or sport == self.sport))

    def same_as(self, other: "Expectation") -> bool:
        """expect_matches(): equal tuples and masks."""
        return (self.proto == other.proto and self.dst == other.dst
                and self.dport == other.dport and self.src == other.src
                and self.sport == other.sport)

    def clashes(self, other: "Expectation") -> bool:
        """expect_clash(): equal on the parts both masks look at."""
        if self.proto != other.proto or self.dst != other.dst or self.dport != other.dport:
            return False
        if self.src is not None and other.src is not None and self.src != other.src:
            return False
        return self.sport is None or other.sport is None or self.sport == other.sport

    def seconds_left(self, now: float) -> int:
        """(expires - jiffies) / HZ, rounded toward zero, as exp_seq_show prints it."""
        left = self.expires - now
        return int(left) if left > 0 else 0


Index = Tuple[int, int, int]        # (proto, dst address, dst port): what every mask keeps


class ExpectTable:
    """The namespace's expectations, indexed by the part no mask wildcards."""

    def __init__(self, stats: Dict[str, int], announce: Callable[[float], None]) -> None:
        """`announce(next_due)` is told every new next_due (the tracker's timer wheel holds
        it, TimerWheel.hold(): one due test per packet for timers and expectations)."""
        self.stats = stats
        self._announce = announce
        self._by_tuple: Dict[Index, List[Expectation]] = {}
        self._by_master: Dict[int, List[Expectation]] = {}     # id(master) -> oldest first
        self._all: Dict[int, Expectation] = {}                  # id -> exp, insertion order
        self.next_due = INFINITY

    def __len__(self) -> int:
        return len(self._all)

    def __iter__(self) -> Iterator[Expectation]:
        """Newest first: the kernel adds each to the head of its hash chain."""
        return iter(reversed(list(self._all.values())))

    def of_master(self, master: "Entry") -> List[Expectation]:
        return list(self._by_master.get(id(master), ()))

    # -- nf_ct_expect_related -----------------------------------------------------------
    def add(self, exp: Expectation, max_expected: int, timeout: int, expect_max: int,
            now: float) -> Optional[str]:
        """File `exp` as __nf_ct_expect_check() and nf_ct_expect_insert() do; None when it
        is in, else why not (EALREADY, EBUSY, EMFILE)."""
        for other in list(self._by_tuple.get((exp.proto, exp.dst, exp.dport), ())):
            if other.master is exp.master and other.same_as(exp):
                if other.cls != exp.cls:
                    return EALREADY
                self.remove(other)              # the same expectation again: renewed
                break
            if other.clashes(exp):
                return EBUSY
        if max_expected:
            mine = [e for e in self._by_master.get(id(exp.master), ()) if e.cls == exp.cls]
            if len(mine) >= max_expected:
                # evict_oldest_expect(): the kernel's list is newest first, its "last"
                # of the class is the oldest.
                self.remove(mine[0])
                if len(mine) - 1 >= max_expected:
                    return EMFILE
        if len(self._all) >= expect_max:
            return EMFILE
        exp.expires = now + timeout
        exp.live = True
        self._by_tuple.setdefault((exp.proto, exp.dst, exp.dport), []).append(exp)
        self._by_master.setdefault(id(exp.master), []).append(exp)
        self._all[id(exp)] = exp
        self._set_next_due(min(self.next_due, exp.expires))
        self.stats["expect_create"] += 1
        return None

    # -- nf_ct_find_expectation ----------------------------------------------------------
    def take(self, proto: int, src: int, dst: int, sport: int, dport: int) -> Optional[Expectation]:
        """The expectation a new connection with this original tuple fulfils, or None.
        Its master must be confirmed; a non-permanent one is used up (unlinked)."""
        candidates = self._by_tuple.get((proto, dst, dport))
        if not candidates:
            return None
        for exp in candidates:
            if exp.master.confirmed and exp.matches(src, dst, sport, dport):
                if not exp.flags & EXPECT_PERMANENT:
                    self.remove(exp)
                return exp
        return None

    # -- nf_ct_unlink_expect ---------------------------------------------------------------
    def remove(self, exp: Expectation) -> None:
        if not exp.live:
            return
        exp.live = False
        del self._all[id(exp)]
        index = (exp.proto, exp.dst, exp.dport)
        chain = self._by_tuple[index]
        chain.remove(exp)
        if not chain:
            del self._by_tuple[index]
        mine = self._by_master[id(exp.master)]
        mine.remove(exp)
        if not mine:
            del self._by_master[id(exp.master)]
        if not self._all:
            self._set_next_due(INFINITY)    # nothing to wait for: new entries skip the lookup
        self.stats["expect_delete"] += 1

    def remove_master(self, master: "Entry") -> None:
        """nf_ct_remove_expectations(): the master is gone, so are its expectations."""
        for exp in self.of_master(master):
            self.remove(exp)

    def expire(self, now: float) -> int:
        """Remove every expectation whose countdown ran out; returns how many."""
        if now < self.next_due:
            return 0
        gone = [e for e in self._all.values() if e.expires <= now]
        for exp in gone:
            self.remove(exp)
        self._set_next_due(min((e.expires for e in self._all.values()), default=INFINITY))
        return len(gone)

    def _set_next_due(self, when: float) -> None:
        self.next_due = when
        self._announce(when)
