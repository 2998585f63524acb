"""The conntrack table: lookup, creation, early drop, expiry and statistics.

`Tracker.process(packet, now)` is nf_conntrack_in for one parsed datagram: it finds or
creates the entry, lets the protocol tracker judge the packet, and returns the
packet's ctstate.  Time is an argument; nothing here reads a clock.
"""
from __future__ import annotations

import heapq
import itertools
from typing import Dict, Iterator, List, Optional, Tuple

from . import icmp
from .ctstate import CtState, Verdict
from .entry import (ASSURED, DELETE, IGNORE, INVALID, ORIGINAL, REOPEN, REPLY,
                    SEEN_REPLY, Entry)
from .generic import GenericTracker
from .gre import GreTracker
from .icmp import IcmpTracker
from .knobs import KnobValues
from .packet import IPPROTO_GRE, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Packet
from .tcp import TcpTracker
from .tuples import invert
from .udp import UdpTracker

V_INVALID = Verdict(CtState.INVALID)
V_NEW = Verdict(CtState.NEW)
V_ESTABLISHED = Verdict(CtState.ESTABLISHED)
V_REPLY = Verdict(CtState.ESTABLISHED, True)
V_RELATED = Verdict(CtState.RELATED)
V_RELATED_REPLY = Verdict(CtState.RELATED, True)

# Event counters behind both stat files; render.py maps them to each generation's columns.
STAT_EVENTS = ("searched", "found", "new", "invalid", "ignore", "delete", "delete_list",
               "insert", "insert_failed", "drop", "early_drop", "icmp_error",
               "expect_new", "expect_create", "expect_delete")

EARLY_DROP_BUCKETS = 8          # modern: buckets scanned for victims (NF_CT_EVICTION_RANGE)


class Tracker:
    """The table of one network namespace, for one profile ("tutorial" or "linux")."""

    def __init__(self, profile: str, knobs: KnobValues) -> None:
        self.profile = profile
        self.modern = profile == "linux"
        self.knobs = knobs
        self.l4 = {IPPROTO_TCP: TcpTracker(profile), IPPROTO_UDP: UdpTracker(profile),
                   IPPROTO_ICMP: IcmpTracker(profile)}
        if self.modern:
            self.l4[IPPROTO_GRE] = GreTracker(profile)   # ip_conntrack had no GRE in core
        self.generic = GenericTracker(profile)
        # Both tuples of every entry map to (entry, direction).
        self._by_tuple: Dict[tuple, Tuple[Entry, int]] = {}
        self._count = 0
        # Hash chains by original tuple, only to choose early-drop victims the way the
        # kernel does (from the new tuple's bucket); heads are entries linked by .hnext.
        self.buckets = max(int(knobs["buckets"]), 1)
        self._chains: List[Optional[Entry]] = [None] * self.buckets
        # Lazy timer heap: (scheduled time, seq, entry).  An entry whose expiry moved
        # later is re-queued only when its old time comes, so a refresh costs nothing.
        self._timers: List[Tuple[float, int, Entry]] = []
        self._seq = itertools.count()
        self.stats: Dict[str, int] = dict.fromkeys(STAT_EVENTS, 0)
        knobs.provide("count", lambda: len(self))

    # -- the table -----------------------------------------------------------------
    def __len__(self) -> int:
        return self._count

    def entries(self) -> Iterator[Entry]:
        """Live entries, each once (in insertion order)."""
        for entry, direction in self._by_tuple.values():
            # An entry whose tuples are equal (generic protocol to itself) has one key.
            if direction == ORIGINAL or entry.orig == entry.reply:
                yield entry

    def lookup(self, key: tuple) -> Optional[Tuple[Entry, int]]:
        return self._by_tuple.get(key)

    def _bucket(self, key: tuple) -> int:
        return hash(key) % self.buckets

    def _insert(self, entry: Entry) -> None:
        # The reply tuple is hashed in last, at the head of its chain, so when both
        # tuples are equal the kernel's lookups find the reply direction.
        self._by_tuple[entry.orig] = (entry, ORIGINAL)
        self._by_tuple[entry.reply] = (entry, REPLY)
        self._count += 1
        b = self._bucket(entry.orig)
        entry.hnext = self._chains[b]
        self._chains[b] = entry
        self.stats["insert"] += 1

    def remove(self, entry: Entry) -> None:
        """Unlink an entry (expiry, early drop, RST kill)."""
        if self._by_tuple.get(entry.orig, (None,))[0] is not entry:
            return
        del self._by_tuple[entry.orig]
        self._by_tuple.pop(entry.reply, None)
        self._count -= 1
        b = self._bucket(entry.orig)
        node, prev = self._chains[b], None
        while node is not None and node is not entry:
            prev, node = node, node.hnext
        if node is not None:
            if prev is None:
                self._chains[b] = node.hnext
            else:
                prev.hnext = node.hnext
        entry.hnext = None
        entry.timer_slot = None
        self.stats["delete"] += 1
        self.stats["delete_list"] += 1

    # -- timers --------------------------------------------------------------------
    def _arm(self, entry: Entry, expires: float) -> None:
        entry.expires = expires
        if entry.timer_slot is None or expires < entry.timer_slot:
            entry.timer_slot = expires
            heapq.heappush(self._timers, (expires, next(self._seq), entry))

    def expire(self, now: float) -> int:
        """Remove every entry whose time is up; cost grows with what expires, not the table."""
        timers, removed = self._timers, 0
        while timers and timers[0][0] <= now:
            when, _, entry = heapq.heappop(timers)
            if entry.timer_slot != when:
                continue                       # stale: removed, or re-armed earlier
            if entry.expires <= now:
                self.remove(entry)
                removed += 1
            else:
                entry.timer_slot = entry.expires
                heapq.heappush(timers, (entry.expires, next(self._seq), entry))
        return removed

    def next_expiry(self) -> Optional[float]:
        return self._timers[0][0] if self._timers else None

    # -- the table limit -----------------------------------------------------------
    def _make_room(self, key: tuple, now: float) -> bool:
        """Called before inserting a new entry; True if the table has room for it (spec §7.2)."""
        limit = self.knobs["max"]
        if limit == 0 or len(self) + 1 <= limit:
            return True                  # a negative ip_conntrack max is "always over"
        start = self._bucket(key)
        if self.modern:
            # Every unassured entry of the first of 8 buckets that has any.
            for i in range(EARLY_DROP_BUCKETS):
                victims = self._unassured_in_chain((start + i) % self.buckets)
                if victims:
                    for victim in victims:
                        self.remove(victim)
                    self.stats["early_drop"] += len(victims)
                    return True
            return False
        # ip_conntrack: the oldest unassured entry of the new tuple's own chain (newest
        # entries sit at the head, so the oldest is the last one found).
        victims = self._unassured_in_chain(start)
        if not victims:
            return False
        self.remove(victims[-1])
        self.stats["early_drop"] += 1
        return True

    def _unassured_in_chain(self, bucket: int) -> List[Entry]:
        found, node = [], self._chains[bucket]
        while node is not None:
            if not node.status & ASSURED:
                found.append(node)
            node = node.hnext
        return found

    # -- packets -------------------------------------------------------------------
    def process(self, pkt: Packet, now: float) -> Verdict:
        """Classify one whole datagram and update the table, as nf_conntrack_in does."""
        if self._timers and self._timers[0][0] <= now:
            self.expire(now)
        if pkt.l4_error is not None:
            return self._invalid()
        tracker = self.l4.get(pkt.proto, self.generic)
        reason = tracker.error(pkt, self.knobs)
        if reason is not None:
            return self._invalid(error_path=True, proto=pkt.proto)
        if pkt.proto == IPPROTO_ICMP and icmp.is_error(pkt):
            return self._icmp_error(pkt)
        return self._track(pkt, tracker, now)

    def _invalid(self, error_path: bool = False, proto: int = 0) -> Verdict:
        """Count a packet that gets no entry.

        ip_conntrack counts every protocol error() failure in both `error` (icmp_error
        column) and `invalid`; nf_conntrack counts ICMP error-path failures in
        icmp_error only and everything else in invalid (spec §2).
        """
        if error_path and (not self.modern or proto == IPPROTO_ICMP):
            self.stats["icmp_error"] += 1
            if self.modern:
                return V_INVALID
        self.stats["invalid"] += 1
        return V_INVALID

    def _icmp_error(self, pkt: Packet) -> Verdict:
        hit = icmp.classify_error(pkt, self._by_tuple.get, self.modern)
        if isinstance(hit, str):
            self.stats["icmp_error"] += 1
            if not self.modern:
                self.stats["invalid"] += 1
            return V_INVALID
        if not self.modern:
            # 2.6 returns a matched error through its error path too (spec §2 quirk).
            self.stats["icmp_error"] += 1
            self.stats["invalid"] += 1
        return V_RELATED_REPLY if hit[1] == REPLY else V_RELATED

    def _track(self, pkt: Packet, tracker, now: float) -> Verdict:
        key = (pkt.src, pkt.dst, pkt.proto, pkt.sport, pkt.dport)
        hit = self._by_tuple.get(key)
        if hit is None:
            reply = invert(key)
            if reply is None:
                return self._invalid()
            entry = Entry(key, reply, now)
            if not tracker.new(entry, pkt, self.knobs):
                return self._invalid()
            direction, is_new = ORIGINAL, True
        else:
            self.stats["found"] += 1
            entry, direction = hit
            is_new = False
        # ctinfo is decided before the tracker sees the packet (resolve_normal_ct).
        if direction == REPLY:
            verdict = V_REPLY
        elif entry.status & SEEN_REPLY:
            verdict = V_ESTABLISHED
        else:
            verdict = V_NEW
        outcome = tracker.packet(entry, pkt, direction, now, self.knobs)
        if outcome is INVALID:
            if not is_new:
                # A refused packet may still shorten the timer (modern TCP: an invalid
                # FIN/RST answering the peer's lowers it to timeout_unacknowledged).
                self._arm(entry, entry.expires)
            self.stats["invalid"] += 1
            return V_INVALID
        if outcome is REOPEN:
            self.remove(entry)
            return self._track(pkt, tracker, now)
        if is_new:
            if not self._make_room(key, now):
                self.stats["drop"] += 1
                return V_INVALID
            entry.acct = bool(self.knobs["acct"])
            entry.stamped = bool(self.knobs["timestamp"])
            self.stats["new"] += 1
            self._insert(entry)
        if direction == REPLY:
            entry.status |= SEEN_REPLY
        entry.packets[direction] += 1
        entry.bytes[direction] += pkt.ip_len
        if outcome is DELETE:
            self.remove(entry)
        elif outcome is not IGNORE:
            self._arm(entry, now + outcome)
        return verdict

    def state_name(self, entry: Entry) -> Optional[str]:
        return self.l4.get(entry.proto, self.generic).state_name(entry)

    def l4_name(self, proto: int) -> str:
        """The protocol name listings print: the tracker's, `unknown` for generic."""
        return self.l4.get(proto, self.generic).name
