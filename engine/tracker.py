"""nf_conntrack_in and nf_conntrack_confirm for one parsed packet: the one per-packet path.

`Tracker.process(packet, now)` classifies a packet at the hook it carries (PREROUTING or
OUTPUT): it finds the entry of its tuple, or makes a new *unconfirmed* one, lets the
protocol tracker judge the packet, and returns a PacketResult.  A new entry enters the
table only through `confirm(result, now)` -- when the packet leaves its last hook -- or is
thrown away by `discard(result)` if a hook drops the packet (engine/core.py walks the hooks).
Time is an argument; nothing here reads a clock.

A replay sends the common packets (a known flow's next packet, a first SYN or datagram)
through engine/fastpath.py instead: the same work for them in one call, the same results.

The table (engine/table.py), its timers (engine/timers.py), early drop
(engine/early_drop.py) and the state file's records (engine/persist.py) live in their own
modules; the protocol trackers (engine/l4.py) own everything protocol-specific.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

from . import icmp, ipv4, ipv6
from .ctstate import CtState, PacketResult
from .early_drop import early_drop_victims, has_room
from .entry import EXPECTED, ORIGINAL, REPLY, SEEN_REPLY, Entry, HelpedEntry, Tuple5
from .expect import INFINITY, Expectation, ExpectTable
from .helpers.call import HelpCall
from .helpers.registry import BY_PORT, Helper, helper_for_port
from .hooks import LOCAL_OUT
from .knobs import KnobValues
from .l3 import l3_of
from .l4 import L4Tracker, profile_trackers
from .outcome import DELETE, IGNORE, INVALID, REOPEN, TrackerOutcome
from .packet import IPPROTO_ICMP, IPPROTO_ICMPV6, Packet
from .persist import entries_from_records, export_entries, export_records
from .profile import is_modern
from .table import ConnTable, Keyed, TableId
from .timers import TimerWheel

NEW, ESTABLISHED, RELATED = CtState.NEW, CtState.ESTABLISHED, CtState.RELATED
PROTOCOL_NUMBERS = 256          # an IPv4 protocol / IPv6 next header is one byte
LOOPBACK_NET = 127              # 127.0.0.0/8: always this host, always through lo
S_INVALID = CtState.INVALID
# nf_conntrack_handle_icmp(): the protocols whose error() failures count in icmp_error.
ERROR_PATH_PROTOCOLS = frozenset((IPPROTO_ICMP, IPPROTO_ICMPV6))

# Event counters behind both stat files; render.py maps them to each generation's columns.
STAT_EVENTS = ("searched", "found", "new", "invalid", "ignore", "delete", "delete_list",
               "insert", "insert_failed", "drop", "early_drop", "icmp_error",
               "expect_new", "expect_create", "expect_delete")


def confirm_passes(pkt: Packet) -> int:
    """How many times the kernel's nf_confirm -- and with it the helper -- sees the packet:
    at POSTROUTING and again at LOCAL_IN for one sent to a loopback address (it loops back
    through lo carrying its entry), once otherwise.  (On lo the FTP helper so reads each
    command twice: the second expectation replaces the first, one more expect_create and
    expect_delete, as the kernel counts.)"""
    return 2 if pkt.hook == LOCAL_OUT and pkt.dst >> 24 == LOOPBACK_NET else 1


def knob_dict(knobs: Any) -> dict:
    """The plain dict behind a KnobValues, for the per-packet reads.

    KnobValues[name] is a Python-level call (it checks for live values first); the
    trackers read several knobs per packet and none of them is live (only `count` is),
    so they read the dict the registry stores into.  A write through write_text() or
    set() lands in this same dict, so the next packet sees it, as the kernel's does.
    """
    if isinstance(knobs, KnobValues):
        return knobs._values
    return knobs


class Tracker:
    """The conntrack of one network namespace, for one profile ("tutorial" or "linux")."""

    def __init__(self, profile: str, knobs: KnobValues) -> None:
        self.profile = profile
        self.modern = is_modern(profile)
        self.knobs = knobs
        self._kv = knob_dict(knobs)
        self.l4, self.generic = profile_trackers(profile)
        # The tracker of every protocol number, for process(): one list index per packet
        # instead of a dict.get() with a default.
        self._tracker_by_proto: List[L4Tracker] = [self.l4.get(proto, self.generic)
                                                   for proto in range(PROTOCOL_NUMBERS)]
        self.stats: Dict[str, int] = dict.fromkeys(STAT_EVENTS, 0)
        self.conns = ConnTable(int(knobs["buckets"]), self.stats)
        self._tables = self.conns.tables()     # (l3, proto) -> table, read per packet
        self.buckets = self.conns.buckets
        # The wheel's next_due also holds the expectations' (ExpectTable announces each):
        # `now >= timers.next_due` is the one test per packet for anything due.
        self.timers = TimerWheel()
        # A pass over due filings that expire_some() left half done (TimerWheel.due()).
        self._expiring: Optional[Iterator[Entry]] = None
        self.expects = ExpectTable(self.stats, self.timers.hold)
        knobs.provide("count", lambda: len(self.conns))

    # -- the table -----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.conns)

    def tables(self) -> Dict[TableId, Keyed]:
        return self.conns.tables()

    def entries(self) -> Iterator[Entry]:
        return self.conns.entries()

    def tracker_of(self, proto: int) -> L4Tracker:
        return self.l4.get(proto, self.generic)

    def lookup(self, family: int, proto: int, key: bytes) -> Optional[Tuple[Entry, int]]:
        return self.conns.lookup(family, proto, key)

    def lookup_tuple(self, t: Tuple5, family: int = 2) -> Optional[Tuple[Entry, int]]:
        """lookup() by (src, dst, proto, a, b)."""
        src, dst, proto, a, b = t
        return self.conns.lookup(family, proto, l3_of(family).key(src, dst, a, b))

    def lookup_reply_of(self, t: Tuple5, family: int = 2) -> Optional[Tuple[Entry, int]]:
        """The entry whose tuple answers t (t's reply tuple), or None."""
        src, dst, proto, a, b = t
        parts = self.tracker_of(proto).invert(a, b)
        if parts is None:
            return None
        return self.lookup_tuple((dst, src, proto) + parts, family)

    def remove(self, entry: Entry) -> None:
        """Unlink an entry (expiry, early drop, RST kill); its timer filing goes stale."""
        if self.conns.remove(entry):
            entry.timer_slot = None     # also tells a listing walk the entry is gone
            if entry.helper is not None or entry.master is not None:
                self._forget_helped(entry)

    def _forget_helped(self, entry: Entry) -> None:
        """A helped or expected entry is gone: its expectations die with it
        (nf_ct_remove_expectations) and its master has one child less."""
        self.expects.remove_master(entry)
        master = entry.master
        if master is not None:
            master.children -= 1
            entry.master = None

    # -- timers --------------------------------------------------------------------
    def _arm(self, entry: Entry, expires: float) -> None:
        entry.expires = expires
        slot = entry.timer_slot
        if slot is None or expires < slot:
            self.timers.file(entry, expires)

    def expire(self, now: float) -> int:
        """Remove every entry whose time is up; cost grows with what expires, not the table.
        Expectations whose countdown ran out go too."""
        expects = self.expects
        if now >= expects.next_due:             # (its own test, without the call: nearly
            expects.expire(now)                 # always nothing is expected)
        removed = 0
        if self._expiring is not None:          # finish what expire_some() began
            removed, _ = self._look_at_due(self._expiring, now, None)
            self._expiring = None
        return removed + self._look_at_due(self.timers.due(now), now, None)[0]

    def expire_some(self, now: float, budget: int) -> bool:
        """expire(), looking at no more than `budget` filings in this call; whether it is
        done.  A second's bucket may hold every entry of the table: the server shape's
        262,144 connections, all filed at their SYN_RECV timeout and refreshed since, are
        filed again in one pass (~200 ms), which the mount's engine thread makes under the
        engine lock.  In slices, a reader waits for one slice (bench/RESULTS.md, round 7).
        What is left stays due (the wheel's next_due does not move on), so a packet's
        expire() finishes it before the packet is looked up."""
        if self._expiring is None:
            self.expects.expire(now)
            self._expiring = self.timers.due(now)
        _, done = self._look_at_due(self._expiring, now, budget)
        if done:
            self._expiring = None
        return done

    def _look_at_due(self, due: Iterator[Entry], now: float,
                     budget: Optional[int]) -> Tuple[int, bool]:
        """Remove or file again the entries `due` hands out, at most `budget` of them (None:
        all); (how many were removed, whether `due` is exhausted)."""
        removed = looked = 0
        remove = self.remove
        file = self.timers.file
        for entry in due:
            expires = entry.expires
            if expires <= now:
                remove(entry)
                removed += 1
            else:
                file(entry, expires)            # refreshed since it was filed
            looked += 1
            if looked == budget:
                return removed, False
        return removed, True

    def next_expiry(self) -> Optional[float]:
        entries = self.timers.earliest()
        expects = self.expects.next_due
        if expects == INFINITY:
            return entries
        return expects if entries is None else min(entries, expects)

    # -- nf_conntrack_in -------------------------------------------------------------
    def process(self, pkt: Packet, now: float) -> PacketResult:
        """Classify one whole datagram at its hook, as nf_conntrack_in does."""
        if now >= self.timers.next_due:         # (the expectations' next_due included)
            self.expire(now)
        if pkt.l4_error is not None:
            return self._invalid(pkt.hook)
        proto = pkt.proto
        tracker = self._tracker_by_proto[proto]
        kv = self._kv
        if tracker.error(pkt, kv) is not None:
            return self._invalid(pkt.hook, error_path=True, proto=proto)
        if tracker.error_messages:
            if tracker.quotes_flow(pkt):
                return self._related(pkt)
            if tracker.untracked(pkt):
                return PacketResult(CtState.UNTRACKED, False, pkt.hook)
        # The lookup and the protocol tracker's verdict (resolve_normal_ct and l4proto
        # packet()), in this same call: it runs for every packet.  A REOPEN outcome removes
        # the old entry and looks the packet up again (the loop's second turn).
        key = pkt.key
        l3 = pkt.l3
        table = self._tables.get((l3.FAMILY, proto))
        if table is None:
            table = self.conns.table(l3.FAMILY, proto)
        while True:
            entry = table.get(key)
            if entry is None:
                parts = tracker.invert(pkt.sport, pkt.dport)
                if parts is None:
                    return self._invalid(pkt.hook)
                if (self.expects.next_due != INFINITY or pkt.template_helper is not None
                        or (not self.modern and (proto, pkt.dport) in BY_PORT)):
                    entry = self._new_entry(pkt, key, l3.mirror_key(key, *parts), now)
                else:                # nothing to expect, no helper: the common case, inlined
                    entry = Entry(key, l3.mirror_key(key, *parts), now, proto, l3)
                if not tracker.new(entry, pkt, kv):
                    return self._invalid(pkt.hook)
                is_new = True
                outcome = tracker.packet(entry, pkt, ORIGINAL, now, kv)
                # ctinfo is decided before the tracker sees the packet (resolve_normal_ct).
                state = RELATED if entry.status & EXPECTED else NEW
                direction, reply = ORIGINAL, False
            else:
                self.stats["found"] += 1
                is_new = False
                # The reply key wins when both are equal: the kernel finds the reply direction.
                if key == entry.reply:
                    state, direction, reply = ESTABLISHED, REPLY, True
                else:
                    if entry.status & SEEN_REPLY:
                        state = ESTABLISHED
                    else:
                        state = RELATED if entry.status & EXPECTED else NEW
                    direction, reply = ORIGINAL, False
                outcome = tracker.packet(entry, pkt, direction, now, kv)
            if outcome is INVALID:
                if not is_new:
                    # A refused packet may still shorten the timer (modern TCP: an invalid
                    # FIN/RST answering the peer's lowers it to timeout_unacknowledged).
                    self._arm(entry, entry.expires)
                self.stats["invalid"] += 1
                return PacketResult(S_INVALID, False, pkt.hook)
            if outcome is REOPEN:
                self.remove(entry)
                continue
            if is_new:
                if not self._make_room(key):
                    self.stats["drop"] += 1
                    return PacketResult(S_INVALID, False, pkt.hook)
                # A new entry is made: its optional parts, as the knobs say right now.
                if kv["acct"]:
                    entry.counters = [0, 0, 0, 0]
                if kv["timestamp"]:
                    entry.created = now
                self.stats["new"] += 1
            if reply:
                entry.status |= SEEN_REPLY
            ext = entry.ext             # (entry.counters without the property's call)
            counters = None if ext is None else ext.counters
            if counters is not None:
                counters[direction] += 1
                counters[2 + direction] += pkt.ip_len
            if not is_new and outcome.__class__ is not TrackerOutcome and entry.helper is None:
                # A timeout for an entry already in the table: nearly every packet.  _arm(),
                # inlined.
                expires = entry.expires = now + outcome
                slot = entry.timer_slot
                if slot is None or expires < slot:
                    self.timers.file(entry, expires)
                return PacketResult(state, reply, pkt.hook, entry, False)   # all positional: faster
            result = PacketResult(state, reply, pkt.hook, entry, is_new)
            if outcome is DELETE:
                if is_new:
                    result.pending = False          # nothing to confirm: it ends with this packet
                    self.stats["delete"] += 1
                else:
                    self.remove(entry)
            elif outcome is not IGNORE:
                if is_new:
                    entry.expires = now + outcome       # its timer starts when it is confirmed
                else:
                    # A helped entry (plain ones returned above): the helper runs below.
                    self._arm(entry, now + outcome)
            if entry.helper is not None:
                self._help(entry, pkt, direction, state is ESTABLISHED, result, now)
            return result

    def _invalid(self, hook: int, error_path: bool = False, proto: int = 0) -> PacketResult:
        """Count a packet that gets no entry.

        ip_conntrack counts every protocol error() failure in both `error` (icmp_error
        column) and `invalid`; nf_conntrack counts ICMP error-path failures in
        icmp_error only and everything else in invalid (spec §2).
        """
        if error_path and (not self.modern or proto in ERROR_PATH_PROTOCOLS):
            self.stats["icmp_error"] += 1
            if self.modern:
                return PacketResult(S_INVALID, False, hook)
        self.stats["invalid"] += 1
        return PacketResult(S_INVALID, False, hook)

    def _related(self, pkt: Packet) -> PacketResult:
        family = pkt.l3.FAMILY
        hit = icmp.classify_error(pkt, lambda t: self.lookup_reply_of(t, family),
                                  lambda t: self.lookup_tuple(t, family), self.modern)
        if isinstance(hit, str):
            self.stats["icmp_error"] += 1
            if not self.modern:
                self.stats["invalid"] += 1
            return PacketResult(S_INVALID, False, pkt.hook)
        if not self.modern:
            # 2.6 returns a matched error through its error path too (spec §2 quirk).
            self.stats["icmp_error"] += 1
            self.stats["invalid"] += 1
        entry, direction = hit
        return PacketResult(RELATED, direction == REPLY, pkt.hook, entry)

    # -- helpers and expectations ----------------------------------------------------------
    def _new_entry(self, pkt: Packet, orig: bytes, reply: bytes, now: float) -> Entry:
        """init_conntrack(): a plain entry, or a helped one when a helper is attached (the
        packet's CT template, or in the tutorial profile the helper of the server port),
        or an expected one when the tuple fulfils an expectation (which is used up)."""
        exp = None
        if self.expects.next_due != INFINITY:
            exp = self.expects.take(pkt.proto, pkt.src, pkt.dst, pkt.sport, pkt.dport)
        helper = None
        if exp is None:
            helper = pkt.template_helper
            if helper is None and not self.modern:
                helper = helper_for_port(pkt.proto, pkt.dport)
            if helper is None:
                return Entry(orig, reply, now, pkt.proto, pkt.l3)
        entry = HelpedEntry(orig, reply, now, pkt.proto, pkt.l3)
        if exp is not None:
            entry.status |= EXPECTED
            entry.master = exp.master
            exp.master.children += 1
            self.stats["expect_new"] += 1
        else:
            entry.helper = helper
            entry.help_state = helper.new_state()
        return entry

    def _help(self, entry: Entry, pkt: Packet, direction: int, established: bool,
              result: PacketResult, now: float) -> None:
        """The entry's helper reads the packet (the kernel runs it as the packet leaves
        conntrack's last hook); a packet it refuses is dropped."""
        helper: Helper = entry.helper
        # 2.6's ip_conntrack had no table-wide limit, only the helper's max_expected.
        expect_max = self._kv["expect_max"] if self.modern else len(self.expects) + 1

        def expect(src: Optional[int], dst: int, proto: int, dport: int) -> Optional[str]:
            exp = Expectation(entry, helper, entry.l3, proto, src, dst, None, dport)
            return self.expects.add(exp, helper.max_expected, helper.timeout, expect_max, now)

        call = HelpCall(entry, pkt, direction, established, expect, self.modern)
        for _ in range(confirm_passes(pkt)):
            if not helper.help(call):
                result.dropped = True
                self.discard(result)
                return

    def _make_room(self, key: bytes) -> bool:
        """Before a new entry goes in: True if the table has room for it (spec §7.2)."""
        if has_room(len(self.conns), self._kv["max"]):
            return True
        victims = early_drop_victims(self.conns, key, self.modern)
        for victim in victims:
            self.remove(victim)
        self.stats["early_drop"] += len(victims)
        return bool(victims)

    # -- nf_conntrack_confirm, or the drop of an unconfirmed entry --------------------------
    def confirm(self, result: PacketResult, now: float) -> None:
        """The packet left its last hook: its new entry enters the table, timer armed."""
        if not result.pending:
            return
        result.pending = False
        entry = result.entry
        self.conns.insert(entry)
        # _arm(entry, entry.expires), inlined: once per new entry.  Its timer starts now.
        slot = entry.timer_slot
        if slot is None or entry.expires < slot:
            self.timers.file(entry, entry.expires)

    def discard(self, result: PacketResult) -> None:
        """A hook dropped the packet: its unconfirmed entry is destroyed, never inserted."""
        if result.pending:
            result.pending = False
            entry = result.entry
            result.entry = None
            self.stats["delete"] += 1          # destroy_conntrack counts it; no delete_list
            if entry.helper is not None or entry.master is not None:
                self._forget_helped(entry)

    # -- names the listings print ----------------------------------------------------------
    def state_name(self, entry: Entry) -> Optional[str]:
        return self.tracker_of(entry.proto).state_name(entry)

    def l4_name(self, proto: int) -> str:
        """The protocol name listings print: the tracker's, `unknown` for generic."""
        return self.tracker_of(proto).name

    # -- saving and restoring the table (--state-file) --------------------------------------
    def export_entries(self, now: float) -> List[dict]:
        """Every live entry as a JSON-ready record (engine/persist.py)."""
        return export_entries(self.conns, self.tracker_of, now)

    def live_entries(self) -> List[Entry]:
        """The entries now in the table, for a saver that exports them in slices."""
        return list(self.conns.entries())

    def export_records(self, entries: Iterable[Entry], now: float) -> List[dict]:
        """The records of those of `entries` still in the table (engine/persist.py)."""
        return export_records(entries, self.conns, self.tracker_of, now)

    def import_entries(self, records: Any, saved_at: float, now: float) -> int:
        """Re-insert entries export_entries() saved at `saved_at`; returns how many.

        Each gets back its times and its timer re-armed; entries expired by `now` are
        skipped, and so are entries whose keys are taken.  The table limit is not applied
        (a restore puts back what was there) and the stat counters are left alone (they
        count this run's events).  A bad record raises ValueError naming it, before any
        entry goes in.
        """
        restored = 0
        families = (ipv4.FAMILY, ipv6.FAMILY) if self.modern else (ipv4.FAMILY,)
        for entry in entries_from_records(records, self.tracker_of, saved_at, now, families):
            table = self.conns.table(entry.l3.FAMILY, entry.proto)
            if entry.orig in table or entry.reply in table:
                continue
            inserts = self.stats["insert"]
            self.conns.insert(entry)
            self.stats["insert"] = inserts
            self._arm(entry, entry.expires)
            restored += 1
        return restored
