"""The /proc text of the table: ip_conntrack, nf_conntrack, the stat files, expectations.

Formats are byte-exact against spec §1-2: every token is followed by one space, the
line ends with `use=N` and a newline.
"""
from __future__ import annotations

from typing import Iterable, List

from .entry import ASSURED, SEEN_REPLY, Entry
from .tracker import Tracker
from .tuples import tuple_text

# Event counters behind each stat column, in file order; None = always 0 in that generation.
IPCT_STAT_COLUMNS = (("searched", "searched"), ("found", "found"), ("new", "new"),
                     ("invalid", "invalid"), ("ignore", "ignore"), ("delete", "delete"),
                     ("delete_list", "delete_list"), ("insert", "insert"),
                     ("insert_failed", "insert_failed"), ("drop", "drop"),
                     ("early_drop", "early_drop"), ("icmp_error", "icmp_error"),
                     ("expect_new", "expect_new"), ("expect_create", "expect_create"),
                     ("expect_delete", "expect_delete"))
# Modern nf_conntrack stops counting most events in this file (spec §2): normal
# traffic only moves invalid, drop, early_drop, icmp_error and the expect columns.
NF_STAT_COLUMNS = (("clashres", None), ("found", None), ("new", None),
                   ("invalid", "invalid"), ("ignore", None), ("delete", None),
                   ("chainlength", None), ("insert", None), ("insert_failed", None),
                   ("drop", "drop"), ("early_drop", "early_drop"),
                   ("icmp_error", "icmp_error"), ("expect_new", "expect_new"),
                   ("expect_create", "expect_create"), ("expect_delete", "expect_delete"),
                   ("search_restart", None))


def seconds_left(entry: Entry, now: float) -> int:
    """(expires - now) / HZ rounded toward zero, clamped at 0 as modern kernels do."""
    left = entry.expires - now
    return int(left) if left > 0 else 0


def _counters(entry: Entry, direction: int) -> str:
    counters = entry.counters
    return f"packets={counters[direction]} bytes={counters[2 + direction]} "


def nf_conntrack_line(tracker: Tracker, entry: Entry, now: float) -> str:
    proto = entry.proto
    state = tracker.state_name(entry)
    name = tracker.l4_name(proto)
    keyed = name == "gre"
    parts = [f"ipv4     2 {name:<8} {proto} {seconds_left(entry, now)} "]
    if state is not None:
        parts.append(state + " ")
    parts.append(tuple_text(entry.tuple(0), keyed))
    if entry.acct:
        parts.append(_counters(entry, 0))
    if not entry.status & SEEN_REPLY:
        parts.append("[UNREPLIED] ")
    parts.append(tuple_text(entry.tuple(1), keyed))
    if entry.acct:
        parts.append(_counters(entry, 1))
    if entry.status & ASSURED:
        parts.append("[ASSURED] ")
    parts.append("mark=0 zone=0 ")
    if entry.stamped:
        parts.append(f"delta-time={int(now - entry.created)} ")
    parts.append(f"use={2 + entry.children}\n")
    return "".join(parts)


def ip_conntrack_line(tracker: Tracker, entry: Entry, now: float) -> str:
    """The 2.6 ip_conntrack line as the tutorial prints it (no mark, `use=1`)."""
    proto = entry.proto
    state = tracker.state_name(entry)
    name = tracker.l4_name(proto)
    keyed = name == "gre"
    parts = [f"{name:<8} {proto} {seconds_left(entry, now)} "]
    if state is not None:
        parts.append(state + " ")
    parts.append(tuple_text(entry.tuple(0), keyed))
    if not entry.status & SEEN_REPLY:
        parts.append("[UNREPLIED] ")
    parts.append(tuple_text(entry.tuple(1), keyed))
    if entry.status & ASSURED:
        parts.append("[ASSURED] ")
    parts.append(f"use={1 + entry.children}\n")
    return "".join(parts)


def render_nf_conntrack(tracker: Tracker, now: float) -> str:
    return "".join(nf_conntrack_line(tracker, e, now) for e in _live(tracker, now))


def render_ip_conntrack(tracker: Tracker, now: float) -> str:
    return "".join(ip_conntrack_line(tracker, e, now) for e in _live(tracker, now))


def _live(tracker: Tracker, now: float) -> Iterable[Entry]:
    # Expired entries are never printed, even before the next expiry pass.
    return [e for e in tracker.entries() if e.expires > now]


def render_stat(tracker: Tracker, modern: bool, ncpu: int = 2) -> str:
    """One header, then one row per possible CPU; all events are counted on CPU 0."""
    columns = NF_STAT_COLUMNS if modern else IPCT_STAT_COLUMNS
    names = ["entries"] + [name for name, _ in columns]
    # Two spaces before expect_new, one elsewhere (spec §2).
    expect_at = names.index("expect_new")
    header = names[0] + "  " + " ".join(names[1:expect_at]) + "  " + " ".join(names[expect_at:])
    rows: List[str] = [header]
    count = len(tracker)
    for cpu in range(ncpu):
        values = [count] + [(tracker.stats[event] if event and cpu == 0 else 0)
                            for _, event in columns]
        cells = [f"{v & 0xFFFFFFFF:08x}" for v in values]
        row = cells[0] + "  " + " ".join(cells[1:expect_at]) + "  " + " ".join(cells[expect_at:])
        rows.append(row if modern else row + " ")
    return "\n".join(rows) + "\n"


def render_expect(tracker: Tracker, modern: bool) -> str:
    """Expectation listings: empty, as no helper creates expectations yet."""
    return ""
