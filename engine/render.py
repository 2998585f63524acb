"""The /proc text of the table: ip_conntrack, nf_conntrack, the stat files, expectations.

Formats are byte-exact against spec §1-2: every token is followed by one space, the
line ends with `use=N` and a newline.
"""
from __future__ import annotations

from typing import Iterator, List, Tuple

import struct

from . import ipv4
from .entry import ASSURED, SEEN_REPLY, Entry
from .packet import IPPROTO_TCP, IPPROTO_UDP
from .tcp_window import STATE
from .tracker import Tracker

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


def tuple_text(l3, l4, packed: bytes) -> str:
    """A tuple as listings print it: `src=... dst=... ` and the protocol's part."""
    src, dst, a, b = l3.unkey(packed)
    return f"src={l3.addr_text(src)} dst={l3.addr_text(dst)} {l4.tuple_text(a, b)}"


def listing_line(tracker: Tracker, entry: Entry, now: float, modern: bool) -> str:
    """One entry's line, in the modern nf_conntrack form or the 2.6 ip_conntrack form the
    tutorial prints (no L3 prefix, no counters, mark or delta-time; `use=1`)."""
    proto = entry.proto
    l3 = entry.l3
    l4 = tracker.tracker_of(proto)
    state = l4.state_name(entry)
    counters = modern and entry.acct
    head = f"{l3.LISTING_PREFIX}{l4.name:<8} " if modern else f"{l4.name:<8} "
    parts = [f"{head}{proto} {seconds_left(entry, now)} "]
    if state is not None:
        parts.append(state + " ")
    parts.append(tuple_text(l3, l4, entry.orig))
    if counters:
        parts.append(_counters(entry, 0))
    if not entry.status & SEEN_REPLY:
        parts.append("[UNREPLIED] ")
    parts.append(tuple_text(l3, l4, entry.reply))
    if counters:
        parts.append(_counters(entry, 1))
    if entry.status & ASSURED:
        parts.append("[ASSURED] ")
    if not modern:
        parts.append(f"use={1 + entry.children}\n")
        return "".join(parts)
    parts.append("mark=0 zone=0 ")
    if entry.stamped:
        parts.append(f"delta-time={int(now - entry.created)} ")
    parts.append(f"use={2 + entry.children}\n")
    return "".join(parts)


# -- the listing, fast ---------------------------------------------------------------------
# A listing is rendered in one pass over a snapshot of each protocol's table, in chunks
# of CHUNK_LINES lines, so a reader gets its first bytes after one chunk and whoever holds
# the engine lock can let packets in between chunks.  A whole chunk is one C-level
# %-format: the lines' formats joined, their numbers in a row.  TCP and UDP lines without
# counters or delta-time (nearly all of them) have a format per flags and address pair,
# made once per listing with the addresses' text written in: the tuples of a TCP/UDP
# entry are the key and its mirror (no NAT here), so only seconds, state and ports vary.
# Nothing is cached in the entries: a text cache would cost ~140 bytes per entry, more
# than a quarter of the memory budget.  Other lines (ICMP, GRE, generic, accounting,
# timestamps) take listing_line() above.
CHUNK_LINES = 1024
_ADDRESSES_PORTS = struct.Struct("!QHH").unpack   # a key: both addresses as one number, ports


_ORIG_PAIR, _REPLY_PAIR = b"\x00o", b"\x00r"     # where a line template takes the addresses


def _line_templates(modern: bool, name: str, proto: int, with_state: bool) -> List[bytes]:
    """Templates of an IPv4 TCP/UDP line by status & (SEEN_REPLY | ASSURED), the flags
    written in.  Once the addresses are put in (_with_addresses) each is a %-format of:
    seconds, [state,] sport, dport, then the reply's ports."""
    head = (f"{ipv4.LISTING_PREFIX}{name:<8} {proto} %d " if modern
            else f"{name:<8} {proto} %d ")
    tail = "mark=0 zone=0 use=2\n" if modern else "use=1\n"
    state = "%s " if with_state else ""
    templates = []
    for status in range(SEEN_REPLY | ASSURED | 1):
        unreplied = "" if status & SEEN_REPLY else "[UNREPLIED] "
        assured = "[ASSURED] " if status & ASSURED else ""
        templates.append((head + state).encode("ascii") + _ORIG_PAIR
                         + ("sport=%d dport=%d " + unreplied).encode("ascii") + _REPLY_PAIR
                         + ("sport=%d dport=%d " + assured + tail).encode("ascii"))
    return templates


def _with_addresses(template: bytes, key: bytes) -> bytes:
    """A line template with the text of the key's two addresses (and their mirror) put in."""
    src, dst = ipv4.addresses(key)
    a, b = ipv4.addr_text(src).encode("ascii"), ipv4.addr_text(dst).encode("ascii")
    return (template.replace(_ORIG_PAIR, b"src=%s dst=%s " % (a, b))
            .replace(_REPLY_PAIR, b"src=%s dst=%s " % (b, a)))


def listing_snapshot(tracker: Tracker) -> List[Tuple[Tuple[int, int], List[Entry]]]:
    """((l3 family, proto), its table's values) per table: what a chunked listing walks
    while the table changes under it.  Each entry is there once per key (table_entries())."""
    return [(table_id, list(table.values()))
            for table_id, table in list(tracker.tables().items()) if table]


def table_entries(values: List[Entry]) -> Iterator[List[Entry]]:
    """A table's entries, each once, in listing order, CHUNK_LINES at a time.

    Both keys of an entry map to it and are inserted one after the other (a dict keeps
    insertion order through deletions), so the values are normally pairs and every other
    one is the list.  That is checked chunk by chunk, so the first chunk costs no walk of
    the whole table; from the first chunk where it fails (an entry whose two keys are one,
    a flow to itself) the rest is de-duplicated, each entry listed where it is first seen.
    An entry of a chunk that passed has both its keys in that chunk, so none is listed twice.
    """
    step = 2 * CHUNK_LINES
    for start in range(0, len(values), step):
        pairs = values[start:start + step]
        originals = pairs[::2]
        if pairs[1::2] != originals:
            rest = list(dict.fromkeys(values[start:]))
            for at in range(0, len(rest), CHUNK_LINES):
                yield rest[at:at + CHUNK_LINES]
            return
        yield originals


def listing_chunks(tracker: Tracker, now: float, modern: bool) -> Iterator[bytes]:
    """net/nf_conntrack (modern) or net/ip_conntrack in chunks of up to CHUNK_LINES lines.

    Entries expired by `now`, or removed from the table since the snapshot was taken
    (remove() clears timer_slot), are left out, as a kernel walker that reaches them
    after their removal does not see them.  Each chunk reads the entries as they are when
    it is made, so the caller holds the engine lock per next(), not for the whole walk.
    """
    flag_bits = SEEN_REPLY | ASSURED
    for (family, proto), entries in listing_snapshot(tracker):
        fast = family == ipv4.FAMILY and (proto == IPPROTO_TCP or proto == IPPROTO_UDP)
        names = None
        if fast:
            if proto == IPPROTO_TCP:
                names = tuple(n.encode("ascii") for n in tracker.l4[proto].state_names())
            templates = _line_templates(modern, tracker.l4_name(proto), proto, names is not None)
            # status & flag_bits -> {both addresses as one number: the line's %-format}
            formats = [{} for _ in templates]
        for chunk in table_entries(entries):
            # One %-format per chunk: the lines' formats joined, their values in a row.
            formats_used: List[bytes] = []
            use_format = formats_used.append
            values: list = []
            add_values = values.extend
            for entry in chunk:
                expires = entry.expires
                if expires <= now or entry.timer_slot is None:
                    continue             # expired, or gone from the table
                # (counters and created are both None unless accounting or timestamps are on)
                if not fast or entry.counters is not entry.created:
                    use_format(b"%s")
                    values.append(listing_line(tracker, entry, now, modern).encode("ascii"))
                    continue
                addresses, sport, dport = _ADDRESSES_PORTS(entry.orig)
                status = entry.status & flag_bits
                line = formats[status].get(addresses)
                if line is None:
                    line = formats[status][addresses] = _with_addresses(templates[status],
                                                                        entry.orig)
                use_format(line)
                # %d of the float seconds left truncates them, as int() would.
                if names is None:
                    add_values((expires - now, sport, dport, dport, sport))
                else:
                    add_values((expires - now, names[entry.l4[STATE]], sport, dport, dport, sport))
            if formats_used:
                yield b"".join(formats_used) % tuple(values)


def render_listing(tracker: Tracker, now: float, modern: bool) -> bytes:
    """net/nf_conntrack (modern) or net/ip_conntrack as bytes, entries expired by `now` left out."""
    return b"".join(listing_chunks(tracker, now, modern))


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
