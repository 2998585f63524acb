"""The conntrack table: lookup, creation, early drop, expiry and statistics.

`Tracker.process(packet, now)` is nf_conntrack_in for one parsed datagram: it finds or
creates the entry, lets the protocol tracker judge the packet, and returns the
packet's ctstate.  Time is an argument; nothing here reads a clock.

Layout, chosen for memory (the table holds 262,144 entries by default) and speed:
- one dict per protocol maps both keys of every entry (engine/entry.py KEY: 12 bytes
  that are a plain slice of a TCP/UDP packet) to the Entry; the direction of a hit is
  whether the key is the entry's reply key;
- timers sit in a wheel of one-second buckets (see TimerWheel), so arming costs a list
  append and an entry costs the wheel one pointer, yet expiry is exact to the float.
"""
from __future__ import annotations

import heapq
from array import array
import itertools
import struct
from math import isfinite
from typing import Dict, Iterator, List, Optional, Tuple

from . import icmp
from .ctstate import CtState, Verdict
from .entry import (ASSURED, DELETE, IGNORE, INVALID, KEY, ORIGINAL, REOPEN, REPLY,
                    SEEN_REPLY, Entry, Tuple5)
from .generic import GenericTracker
from .gre import GreTracker
from .icmp import IcmpTracker
from .knobs import KnobValues
from .packet import IPPROTO_GRE, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Packet, TcpInfo
from .parse import TIMESTAMP_ONLY, parse_tcp_options
from .tcp import TcpTracker
from .tcp_window import N_FIELDS, TcpConn
from .tuples import ICMP_INVERSE
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

INFINITY = float("inf")

# From byte 4 of a TCP header: seq, ack, data offset (high nibble), flags, window.
_TCP_FIELDS = struct.Struct("!IIBBH")


def knob_dict(knobs) -> dict:
    """The plain dict behind a KnobValues, for the per-packet reads.

    KnobValues[name] is a Python-level call (it checks for live values first); the
    trackers read several knobs per packet and none of them is live (only `count` is),
    so they read the dict the registry stores into.  A write through write_text() or
    set() lands in this same dict, so the next packet sees it, as the kernel's does.
    """
    if isinstance(knobs, KnobValues):
        return knobs._values
    return knobs


def reply_key(proto: int, key: bytes) -> Optional[bytes]:
    """The key a reply carries; None if there is none (an ICMP type without a pair)."""
    src, dst, a, b = KEY.unpack(key)
    if proto == IPPROTO_ICMP:
        reply_type = ICMP_INVERSE.get(b >> 8)
        if reply_type is None:
            return None
        return KEY.pack(dst, src, a, (reply_type << 8) | (b & 0xFF))
    return KEY.pack(dst, src, b, a)


class TimerWheel:
    """Entries filed by the second their timer falls in; the current second in a heap.

    An entry is filed under `entry.timer_slot` (a time).  Arming a later time does not
    move it: when its slot comes the entry is looked at, and re-filed if its expiry
    moved on, so refreshing an entry per packet costs nothing here.  Arming an earlier
    time files it again (the old filing is then stale and skipped).

    Filings more than a second ahead go to a bucket per whole second (a list: one
    pointer per entry).  When a second begins its bucket is moved into a small heap of
    (time, seq, entry), which hands out entries exactly in time order, so expiry is as
    exact as with one big heap but the big heap's tuple per entry is only paid for the
    entries of the current second.
    """

    def __init__(self) -> None:
        self._buckets: Dict[int, List[Entry]] = {}
        self._seconds: List[int] = []                   # heap of the buckets' seconds
        self._near: List[Tuple[float, int, Entry]] = []  # heap: filings before _near_end
        self._near_end = -INFINITY
        self._seq = itertools.count()
        self.next_due = INFINITY        # nothing can be due before this time

    def file(self, entry: Entry, when: float) -> None:
        entry.timer_slot = when
        if when < self._near_end:
            heapq.heappush(self._near, (when, next(self._seq), entry))
            if when < self.next_due:
                self.next_due = when
            return
        second = int(when)
        bucket = self._buckets.get(second)
        if bucket is None:
            self._buckets[second] = [entry]
            heapq.heappush(self._seconds, second)
            if second < self.next_due:
                self.next_due = second
        else:
            bucket.append(entry)

    def due(self, now: float) -> Iterator[Entry]:
        """Entries whose filing time is <= now, in time order within the current second.

        The caller checks each one (stale filing, moved expiry) and may file it again.
        """
        while True:
            near = self._near
            if near and near[0][0] <= now:
                when, _, entry = heapq.heappop(near)
                if entry.timer_slot == when:
                    yield entry
                continue
            seconds = self._seconds
            if not seconds or seconds[0] > now:
                break
            second = heapq.heappop(seconds)
            bucket = self._buckets.pop(second)
            if second + 1 <= now:
                # The whole second is over: everything filed in it is due, in any order.
                for entry in bucket:
                    if entry.timer_slot is not None and int(entry.timer_slot) == second:
                        yield entry
                continue
            # `now` is inside this second: from here on it is handed out in time order.
            self._near_end = second + 1
            seq = self._seq
            near.extend((entry.timer_slot, next(seq), entry) for entry in bucket
                        if entry.timer_slot is not None and int(entry.timer_slot) == second)
            heapq.heapify(near)
        self.next_due = min(self._near[0][0] if self._near else INFINITY,
                            self._seconds[0] if self._seconds else INFINITY)

    def earliest(self) -> Optional[float]:
        """A lower bound of the next filing time (None when nothing is filed)."""
        return None if self.next_due == INFINITY else self.next_due


class Tracker:
    """The table of one network namespace, for one profile ("tutorial" or "linux")."""

    def __init__(self, profile: str, knobs: KnobValues) -> None:
        self.profile = profile
        self.modern = profile == "linux"
        self.knobs = knobs
        self._kv = knob_dict(knobs)
        self.l4 = {IPPROTO_TCP: TcpTracker(profile), IPPROTO_UDP: UdpTracker(profile),
                   IPPROTO_ICMP: IcmpTracker(profile)}
        if self.modern:
            self.l4[IPPROTO_GRE] = GreTracker(profile)   # ip_conntrack had no GRE in core
        self.generic = GenericTracker(profile)
        # Per protocol: both keys of every entry -> the entry.
        self._tables: Dict[int, Dict[bytes, Entry]] = {
            IPPROTO_TCP: {}, IPPROTO_UDP: {}, IPPROTO_ICMP: {}}
        self._tcp, self._udp = self.l4[IPPROTO_TCP], self.l4[IPPROTO_UDP]
        self._tcp_table, self._udp_table = self._tables[IPPROTO_TCP], self._tables[IPPROTO_UDP]
        self._count = 0
        # Hash chains by original key, only to choose early-drop victims the way the
        # kernel does (from the new tuple's bucket); heads are entries linked by .hnext.
        self.buckets = max(int(knobs["buckets"]), 1)
        self._chains: List[Optional[Entry]] = [None] * self.buckets
        self.timers = TimerWheel()
        self.stats: Dict[str, int] = dict.fromkeys(STAT_EVENTS, 0)
        knobs.provide("count", lambda: len(self))

    # -- the table -----------------------------------------------------------------
    def __len__(self) -> int:
        return self._count

    def table(self, proto: int) -> Dict[bytes, Entry]:
        """The key -> entry dict of one protocol (made on first use)."""
        table = self._tables.get(proto)
        if table is None:
            table = self._tables[proto] = {}
        return table

    def tables(self) -> Dict[int, Dict[bytes, Entry]]:
        """proto -> its key -> entry dict (both keys of each entry; see entries())."""
        return self._tables

    def entries(self) -> Iterator[Entry]:
        """Live entries, each once (by protocol, in insertion order within one)."""
        for table in list(self._tables.values()):
            for key, entry in table.items():
                # The original key's slot; an entry whose keys are equal (generic
                # protocol to itself) has that one slot only.
                if key is entry.orig:
                    yield entry

    def lookup(self, proto: int, key: bytes) -> Optional[Tuple[Entry, int]]:
        """(entry, direction) of the entry holding this key, or None."""
        table = self._tables.get(proto)
        entry = table.get(key) if table is not None else None
        if entry is None:
            return None
        # The reply key wins when both are equal: the kernel finds the reply direction.
        return entry, REPLY if key == entry.reply else ORIGINAL

    def lookup_tuple(self, t: Tuple5) -> Optional[Tuple[Entry, int]]:
        """lookup() by (src, dst, proto, sport, dport)."""
        src, dst, proto, a, b = t
        return self.lookup(proto, KEY.pack(src, dst, a, b))

    def _bucket(self, key: bytes) -> int:
        return hash(key) % self.buckets

    def _insert(self, entry: Entry) -> None:
        table = self._tables.get(entry.proto)
        if table is None:
            table = self.table(entry.proto)
        orig = entry.orig
        table[orig] = entry
        table[entry.reply] = entry
        self._count += 1
        chains = self._chains
        b = hash(orig) % self.buckets           # _bucket(), inlined: once per new entry
        entry.hnext = chains[b]
        chains[b] = entry
        self.stats["insert"] += 1

    def remove(self, entry: Entry) -> None:
        """Unlink an entry (expiry, early drop, RST kill)."""
        table = self._tables.get(entry.proto)
        if table is None or table.get(entry.orig) is not entry:
            return
        del table[entry.orig]
        table.pop(entry.reply, None)
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
        slot = entry.timer_slot
        if slot is None or expires < slot:
            self.timers.file(entry, expires)

    def expire(self, now: float) -> int:
        """Remove every entry whose time is up; cost grows with what expires, not the table."""
        removed = 0
        timers = self.timers
        for entry in timers.due(now):
            if entry.expires <= now:
                self.remove(entry)
                removed += 1
            else:
                timers.file(entry, entry.expires)      # refreshed since it was filed
        return removed

    def next_expiry(self) -> Optional[float]:
        return self.timers.earliest()

    # -- the table limit -----------------------------------------------------------
    def _make_room(self, key: bytes, now: float) -> bool:
        """Called before inserting a new entry; True if the table has room for it (spec §7.2)."""
        limit = self._kv["max"]
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
        if now >= self.timers.next_due:
            self.expire(now)
        if pkt.l4_error is not None:
            return self._invalid()
        tracker = self.l4.get(pkt.proto, self.generic)
        reason = tracker.error(pkt, self._kv)
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
        hit = icmp.classify_error(pkt, self.lookup_tuple, self.modern)
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
        proto = pkt.proto
        key = KEY.pack(pkt.src, pkt.dst, pkt.sport, pkt.dport)
        table = self.table(proto)
        entry = table.get(key)
        if entry is None:
            reply = reply_key(proto, key)
            if reply is None:
                return self._invalid()
            entry = Entry(key, reply, now, proto)
            if not tracker.new(entry, pkt, self._kv):
                return self._invalid()
            direction, is_new = ORIGINAL, True
        else:
            self.stats["found"] += 1
            # The reply key wins when both are equal: the kernel finds the reply direction.
            direction = REPLY if key == entry.reply else ORIGINAL
            is_new = False
        # ctinfo is decided before the tracker sees the packet (resolve_normal_ct).
        if direction == REPLY:
            verdict = V_REPLY
        elif entry.status & SEEN_REPLY:
            verdict = V_ESTABLISHED
        else:
            verdict = V_NEW
        outcome = tracker.packet(entry, pkt, direction, now, self._kv)
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
            self._created(entry)
            self._insert(entry)
        self._accepted(entry, direction, outcome, pkt.ip_len, now)
        return verdict

    def _created(self, entry: Entry) -> None:
        """A new entry is going in: its optional parts, as the knobs say right now."""
        kv = self._kv
        if kv["acct"]:
            entry.counters = [0, 0, 0, 0]
        if not kv["timestamp"]:
            entry.created = None
        self.stats["new"] += 1

    def _accepted(self, entry: Entry, direction: int, outcome, ip_len: int,
                  now: float) -> None:
        """After the protocol tracker accepted a packet: reply bit, counters, the timer."""
        if direction == REPLY:
            entry.status |= SEEN_REPLY
        counters = entry.counters
        if counters is not None:
            counters[direction] += 1
            counters[2 + direction] += ip_len
        if outcome is DELETE:
            self.remove(entry)
        elif outcome is not IGNORE:
            # _arm(), inlined: this runs for nearly every packet.
            expires = entry.expires = now + outcome
            slot = entry.timer_slot
            if slot is None or expires < slot:
                self.timers.file(entry, expires)

    # -- the fast path ---------------------------------------------------------------
    def track_ipv4(self, data: bytes, off: int, now: float) -> Optional[Verdict]:
        """process() for the common packet, straight from its bytes; None = not handled.

        Most packets are TCP or UDP in an option-less IPv4 header that needs no checksum
        check (hook OUTPUT: the caller makes sure).  For those the checks of parse_ipv4()
        and of the trackers' error() come down to a few byte tests, the keys are slices of
        the bytes, and no Packet is built.  Anything else -- IP options, a fragment, a
        length that does not add up, a TCP flag combination error() refuses, a TCP REOPEN
        -- returns None having changed nothing but the clock, and the caller takes the
        general path, which counts and judges it.  `data[off:]` is the IPv4 datagram
        (link padding may follow it).  Each step below is the general path's, in order.
        """
        size = len(data) - off
        if size < 28 or data[off] != 0x45 or data[off + 6] & 0x3F or data[off + 7]:
            return None                             # short, IP options, or a fragment
        tot_len = data[off + 2] << 8 | data[off + 3]
        if tot_len > size:
            return None
        proto = data[off + 9]
        if proto == IPPROTO_UDP:
            udp_len = data[off + 24] << 8 | data[off + 25]
            if tot_len < 28 or udp_len < 8 or udp_len > tot_len - 20:
                return None
            tracker, table, tcp = self._udp, self._udp_table, None
        elif proto == IPPROTO_TCP:
            if tot_len < 40:
                return None
            seq, ack, doff, flags, window = _TCP_FIELDS.unpack_from(data, off + 24)
            doff = (doff >> 4) * 4
            l4_len = tot_len - 20
            if doff < 20 or doff > l4_len or not self._tcp.valid_flags[flags]:
                return None
            tracker, table = self._tcp, self._tcp_table
            tcp = TcpInfo(flags, seq, ack, window, l4_len - doff)
            # Options, unless they are the usual timestamp alone (parse_tcp_options() would
            # find nothing in them; inlined, as most segments of a Linux peer carry it).
            if doff > 20 and not (doff == 32 and data[off + 40:off + 44] == TIMESTAMP_ONLY):
                parse_tcp_options(tcp, data, off + 40, off + 20 + doff)
        else:
            return None
        if now >= self.timers.next_due:
            self.expire(now)
        key = data[off + 12:off + 24]
        entry = table.get(key)
        if entry is None:
            return self._track_new_fast(data, off, key, proto, tracker, tcp, tot_len, now)
        self.stats["found"] += 1
        if key == entry.reply:
            direction, verdict = REPLY, V_REPLY
        else:
            direction = ORIGINAL
            verdict = V_ESTABLISHED if entry.status & SEEN_REPLY else V_NEW
        if tcp is None:
            outcome = tracker.datagram(entry, now, self._kv)
        else:
            outcome = tracker.segment(entry, tcp, direction, now, self._kv)
            if outcome is INVALID:
                self._arm(entry, entry.expires)     # as _track: the timer may shorten
                self.stats["invalid"] += 1
                return V_INVALID
            if outcome is REOPEN:
                self.remove(entry)                  # the general path makes the new one
                return None
        self._accepted(entry, direction, outcome, tot_len, now)
        return verdict

    def _track_new_fast(self, data: bytes, off: int, key: bytes, proto: int, tracker,
                        tcp: Optional[TcpInfo], tot_len: int, now: float) -> Optional[Verdict]:
        """track_ipv4() for a packet that finds no entry: _track()'s new-entry steps."""
        # The reply key is the mirror: addresses swapped, ports swapped.
        reply = (data[off + 16:off + 20] + data[off + 12:off + 16] + data[off + 22:off + 24]
                 + data[off + 20:off + 22])
        entry = Entry(key, reply, now, proto)
        kv = self._kv
        if tcp is None:
            tracker.new(entry, None, kv)            # UDP: always an entry
            outcome = tracker.datagram(entry, now, kv)
        else:
            if not tracker.new_connection(entry, tcp, kv):
                return self._invalid()
            outcome = tracker.segment(entry, tcp, ORIGINAL, now, kv)
            if outcome is INVALID:
                self.stats["invalid"] += 1
                return V_INVALID
            if outcome is REOPEN:
                return None                         # (cannot happen to a new entry)
        if not self._make_room(key, now):
            self.stats["drop"] += 1
            return V_INVALID
        self._created(entry)
        self._insert(entry)
        self._accepted(entry, ORIGINAL, outcome, tot_len, now)
        return V_NEW

    def state_name(self, entry: Entry) -> Optional[str]:
        return self.l4.get(entry.proto, self.generic).state_name(entry)

    def l4_name(self, proto: int) -> str:
        """The protocol name listings print: the tracker's, `unknown` for generic."""
        return self.l4.get(proto, self.generic).name

    # -- saving and restoring the table (--state-file) --------------------------------------
    def export_entries(self, now: float) -> List[dict]:
        """Every live entry as a JSON-ready dict; times relative to `now` (see import_entries).

        `tuple` is the original direction (src, dst, proto, sport, dport); the reply tuple
        follows from it.  `l4` is the protocol tracker's private state: TCP its packed u32
        array, UDP the age of its first packet, ICMP its outstanding requests, GRE its two
        timeouts, generic nothing.  `counters`/`age` are there only if the entry has them.
        """
        saved = []
        for entry in self.entries():
            left = entry.expires - now
            if left <= 0:
                continue                # due: the next expire() would remove it anyway
            record = {"tuple": list(entry.tuple(ORIGINAL)), "status": entry.status,
                      "left": left, "l4": self._export_l4(entry, now)}
            if entry.counters is not None:
                record["counters"] = list(entry.counters)
            if entry.created is not None:
                record["age"] = now - entry.created
            saved.append(record)
        return saved

    def import_entries(self, records: list, saved_at: float, now: float) -> int:
        """Re-insert entries export_entries() saved at `saved_at`; returns how many.

        Each gets back its times (expiry = saved_at + seconds left, and so on) and its
        timer re-armed; entries expired by `now` are skipped, and so are entries whose keys
        are taken.  The table limit is not applied (a restore puts back what was there) and
        the stat counters are left alone (they count this run's events).  A malformed record
        raises ValueError naming it, before any entry goes in.
        """
        parsed = []
        # Every record is parsed before the first goes in: a bad one leaves the table as it was.
        for index, record in enumerate(records):
            try:
                entry = self._entry_from_record(record, saved_at, now)
            except KeyError as exc:
                raise ValueError(f"table entry {index}: no {exc} field") from None
            except (TypeError, ValueError, OverflowError) as exc:
                raise ValueError(f"table entry {index}: {exc}") from None
            if entry is not None:
                parsed.append(entry)
        restored = 0
        for entry in parsed:
            table = self.table(entry.proto)
            if entry.orig in table or entry.reply in table:
                continue
            inserts = self.stats["insert"]
            self._insert(entry)
            self.stats["insert"] = inserts
            self._arm(entry, entry.expires)
            restored += 1
        return restored

    def _entry_from_record(self, record: dict, saved_at: float, now: float
                           ) -> Optional[Entry]:
        if not isinstance(record, dict):
            raise ValueError("not an object")
        expires = saved_at + _number(record["left"], "left")
        if expires <= now:
            return None
        src, dst, proto, sport, dport = (_u(v, bits, "tuple") for v, bits in
                                         zip(_list(record["tuple"], 5, "tuple"),
                                             (32, 32, 8, 16, 16)))
        orig = KEY.pack(src, dst, sport, dport)
        reply = reply_key(proto, orig)
        if reply is None:
            raise ValueError("tuple has no reply direction")
        entry = Entry(orig, reply, now, proto)
        entry.status = _u(record["status"], 32, "status")
        entry.expires = expires
        if "age" in record:
            entry.created = saved_at - _number(record["age"], "age")
        else:
            entry.created = None
        if "counters" in record:
            entry.counters = [_u(v, 64, "counters") for v in _list(record["counters"], 4,
                                                                   "counters")]
        entry.l4 = self._import_l4(proto, record["l4"], saved_at)
        return entry

    def _export_l4(self, entry: Entry, now: float):
        tracker = self.l4.get(entry.proto, self.generic)
        if isinstance(tracker, TcpTracker):
            return list(entry.l4)
        if isinstance(tracker, UdpTracker):
            return now - entry.l4                # first packet's age; the stream rule needs it
        if isinstance(tracker, GreTracker):
            return list(entry.l4)
        if isinstance(tracker, IcmpTracker):
            return entry.l4
        return None

    def _import_l4(self, proto: int, value, saved_at: float):
        tracker = self.l4.get(proto, self.generic)
        if isinstance(tracker, TcpTracker):
            conn = TcpConn()
            conn[:] = array_of_u32(_list(value, N_FIELDS, "l4"))
            return conn
        if isinstance(tracker, UdpTracker):
            return saved_at - _number(value, "l4")
        if isinstance(tracker, GreTracker):
            return tuple(_u(v, 32, "l4") for v in _list(value, 2, "l4"))
        if isinstance(tracker, IcmpTracker):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError("l4: not an integer")
            return value
        if value is not None:
            raise ValueError("l4: the generic tracker keeps no state")
        return None


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not isfinite(value):
        raise ValueError(f"{what}: not a finite number")
    return float(value)


def _u(value, bits: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise ValueError(f"{what}: {value!r} is not an unsigned {bits}-bit integer")
    return value


def _list(value, length: int, what: str) -> list:
    if not isinstance(value, list) or len(value) != length:
        raise ValueError(f"{what}: not a list of {length}")
    return value


def array_of_u32(values: list) -> array:
    """The saved TCP fields as the array a TcpConn holds (each checked to fit a u32)."""
    return array("I", [_u(v, 32, "l4") for v in values])
