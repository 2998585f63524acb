"""One conntrack entry: two keys, status bits, an expiry and per-protocol state."""
from __future__ import annotations

from types import ModuleType
from typing import Any, Dict, List, Optional, Tuple

from . import ipv4

# Status bits (include/uapi/linux/netfilter/nf_conntrack_common.h).
EXPECTED = 1 << 0
SEEN_REPLY = 1 << 1
ASSURED = 1 << 2
CONFIRMED = 1 << 3              # in the table (set by confirmation)
STATUS_BITS = EXPECTED | SEEN_REPLY | ASSURED | CONFIRMED   # the ones this engine sets

ORIGINAL, REPLY = 0, 1

Tuple5 = Tuple[int, int, int, int, int]

# (Entry class, l3 module, protocol) -> the subclass whose instances have them (Entry.__new__)
_KINDS: Dict[Tuple[type, ModuleType, int], type] = {}


class Entry:
    """A tracked connection.

    `orig` and `reply` are table keys of the entry's layer 3 (engine/ipv4.py: addresses and
    the two protocol parts).  Memory matters here (one Entry per tracked connection,
    262,144 of them by default), so optional parts cost nothing when off, as the kernel's
    extensions do: `counters` (nf_conntrack_acct on at creation), `created`
    (nf_conntrack_timestamp on at creation) and a non-zero `mark` live in one Extras object
    that exists only for the entries that have one of them (`ext`, None for the rest).
    Three slots of their own cost every entry 24 bytes (16 once pymalloc rounds to its
    16-byte classes: 96 bytes an entry, not 112); an entry with an extra pays 64 more.
    Until the protocol tracker sets its state, `l4` holds the creation time (UDP keeps it:
    its stream rule counts from the first packet).

    `l3` and `proto` never change after creation, and a table holds a handful of their
    combinations, so they are class attributes: Entry(...) makes an instance of a subclass
    per (class, l3, proto), made on first use (two slots fewer).
    """
    # (The fast path's admit() sets these itself for a new entry; it checks ENTRY_SLOTS.)
    __slots__ = ("orig", "reply", "status", "expires", "l4", "timer_slot", "hnext", "ext")

    l3: ModuleType = ipv4          # the layer-3 module (engine/ipv4.py, ...)
    proto = 0
    children = 0                   # live connections expected by this one (HelpedEntry)
    helper = None                  # the conntrack helper attached (HelpedEntry)
    master = None                  # the entry whose expectation made this one (HelpedEntry)

    def __new__(cls, orig: bytes, reply: bytes, now: float, proto: int = 0,
                l3: ModuleType = ipv4) -> "Entry":
        kind = _KINDS.get((cls, l3, proto))
        if kind is None:
            kind = kind_of(cls, l3, proto)
        return object.__new__(kind)

    def __init__(self, orig: bytes, reply: bytes, now: float, proto: int = 0,
                 l3: ModuleType = ipv4) -> None:
        self.orig = orig               # key of the original direction
        self.reply = reply             # key of the reply direction
        self.status = 0
        self.expires = now
        self.l4: Any = now             # protocol tracker's private state (the creation time till then)
        self.timer_slot: Optional[float] = None   # when the timer wheel will look at it next
        self.hnext: Optional["Entry"] = None      # next entry in the same hash chain
        self.ext: Optional[Extras] = None         # counters, created, mark: see the class text

    def _extras(self) -> "Extras":
        ext = self.ext
        if ext is None:
            ext = self.ext = Extras()
        return ext

    @property
    def counters(self) -> Optional[List[int]]:
        """[packets orig, packets reply, bytes orig, bytes reply] when accounting was on."""
        ext = self.ext
        return None if ext is None else ext.counters

    @counters.setter
    def counters(self, value: Optional[List[int]]) -> None:
        if value is not None or self.ext is not None:
            self._extras().counters = value

    @property
    def created(self) -> Optional[float]:
        """The creation time when timestamps were on (delta-time), else None."""
        ext = self.ext
        return None if ext is None else ext.created

    @created.setter
    def created(self, value: Optional[float]) -> None:
        if value is not None or self.ext is not None:
            self._extras().created = value

    @property
    def mark(self) -> int:
        """The connection mark (CONNMARK, -m connmark)."""
        ext = self.ext
        return 0 if ext is None else ext.mark

    @mark.setter
    def mark(self, value: int) -> None:
        if value or self.ext is not None:
            self._extras().mark = value

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

    @property
    def confirmed(self) -> bool:
        return bool(self.status & CONFIRMED)

    def tuple(self, direction: int = ORIGINAL) -> Tuple5:
        """(src, dst, proto, a, b) of one direction, decoded from its key."""
        src, dst, a, b = self.l3.unkey(self.reply if direction else self.orig)
        return (src, dst, self.proto, a, b)



def kind_of(cls: type, l3: ModuleType, proto: int) -> type:
    """The subclass of `cls` (Entry or HelpedEntry) whose instances have this l3 and proto,
    made on first use.  `object.__new__(kind_of(Entry, l3, proto))` then Entry.__init__
    on it is what Entry(orig, reply, now, proto, l3) does, without the Python-level
    __new__ and its lookup: the fast path makes its new entries so (~0.5 us less each)."""
    kind = _KINDS.get((cls, l3, proto))
    if kind is None:
        kind = _KINDS[cls, l3, proto] = type(cls.__name__, (cls,), {
            "__slots__": (), "l3": l3, "proto": proto, "__module__": cls.__module__,
            "__qualname__": cls.__qualname__})
    return kind


ENTRY_SLOTS = Entry.__slots__


class HelpedEntry(Entry):
    """An entry with a helper attached or made from an expectation: the kernel's helper
    extension (helper, its private data, the count of expected children) and ct->master.
    Plain entries, nearly all of them, pay nothing for these slots."""
    __slots__ = ("helper", "help_state", "master", "children")

    def __init__(self, orig: bytes, reply: bytes, now: float, proto: int = 0,
                 l3: ModuleType = ipv4) -> None:
        super().__init__(orig, reply, now, proto, l3)
        self.helper: Any = None
        self.help_state: Any = None
        self.master: Optional[Entry] = None
        self.children = 0


class Extras:
    """An entry's optional parts, made on the first one it gets (Entry.ext)."""
    __slots__ = ("counters", "created", "mark")

    def __init__(self) -> None:
        self.counters: Optional[List[int]] = None
        self.created: Optional[float] = None
        self.mark = 0
