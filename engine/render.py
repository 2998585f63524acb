"""The /proc text of the table: ip_conntrack, nf_conntrack, the stat files, expectations.

Formats are byte-exact against spec §1-2: every token is followed by one space, the
line ends with `use=N` and a newline.
"""
from __future__ import annotations

import functools
import itertools
import math
import struct
from typing import Dict, Iterator, List, Tuple

from . import ipv4
from .entry import ASSURED, SEEN_REPLY, Entry
from .packet import IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP
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
    parts.append(f"mark={entry.mark} zone=0 ")
    if entry.stamped:
        parts.append(f"delta-time={int(now - entry.created)} ")
    parts.append(f"use={2 + entry.children}\n")
    return "".join(parts)


# -- the listing, fast ---------------------------------------------------------------------
# A listing is rendered in one pass over each protocol's table, in chunks (a small first
# one, then CHUNK_LINES lines), so a reader gets its first bytes after a few dozen lines'
# work and whoever holds the engine lock can let packets in between chunks.  A whole chunk
# is one C-level %-format: the lines' formats joined, their values in a row.  TCP, UDP and
# ICMP lines without counters or delta-time (nearly all of them) take a format per flags
# (SEEN_REPLY, ASSURED), and the text of each address is made once per listing and
# looked up by the address as a number: a real table has thousands of distinct
# addresses, so the text is cached per address, not per line or per address pair (a
# per-pair format only pays when one pair fills the table); a new address's text is its
# /24 prefix's text (cached too) and its last octet's.  The seconds left go into the
# format as ints (see listing_chunks).  Tried and dropped: each address as four %d
# octets with no cache (1.4-2.5x slower: %d of a small int costs more than a %s and a
# dict hit).  The tuples of an entry are
# its key and the key's mirror (no NAT here), so a TCP/UDP line is its seconds, state,
# two address texts and two ports.  Nothing is cached in the entries: a text cache would
# cost ~140 bytes per entry, more than a quarter of the memory budget.  Other lines (GRE,
# generic, accounting, timestamps) take listing_line() above.
FIRST_CHUNK_LINES = 64      # the first chunk of a table: about what `head -1` reads (8 KiB)
CHUNK_LINES = 1024
_KEY_FIELDS = struct.Struct("!IIHH").unpack     # src, dst, sport (ICMP id), dport (type, code)
_FLAG_BITS = SEEN_REPLY | ASSURED


def _line_formats(modern: bool, name: str, proto: int, with_state: bool) -> Tuple[bytes, ...]:
    """%-formats of a TCP/UDP line by status & (SEEN_REPLY | ASSURED), taking: seconds,
    [state,] src, dst, sport, dport, then the reply's src, dst, sport, dport."""
    return _formats(modern, name, proto, ("%s " if with_state else ""),
                    "sport=%d dport=%d ")


def _icmp_formats(modern: bool, name: str, proto: int) -> Tuple[bytes, ...]:
    """%-formats of an ICMP line by status, taking: seconds, src, dst, type and code (one
    text), id, then the reply's src, dst, type and code, id."""
    return _formats(modern, name, proto, "", "%sid=%d ")


# Made once per combination, not per listing: building them is ~60 us of the ~300 us the
# first chunk of a listing costs when the daemon has been idle (`head -1`).
@functools.lru_cache(maxsize=None)
def _formats(modern: bool, name: str, proto: int, state: str, l4: str) -> Tuple[bytes, ...]:
    head = (f"{ipv4.LISTING_PREFIX}{name:<8} {proto} %d " if modern
            else f"{name:<8} {proto} %d ")
    tail = "mark=0 zone=0 use=2\n" if modern else "use=1\n"
    formats = []
    for status in range(_FLAG_BITS + 1):
        unreplied = "" if status & SEEN_REPLY else "[UNREPLIED] "
        assured = "[ASSURED] " if status & ASSURED else ""
        formats.append((f"{head}{state}src=%s dst=%s {l4}{unreplied}"
                        f"src=%s dst=%s {l4}{assured}{tail}").encode("ascii"))
    return tuple(formats)


class _TypeCodeTexts(dict):
    """ICMP type << 8 | code -> `type=T code=C ` as bytes, made on first use."""

    def __missing__(self, type_code: int) -> bytes:
        text = self[type_code] = b"type=%d code=%d " % (type_code >> 8, type_code & 255)
        return text


class _PrefixTexts(dict):
    """An address's first three octets (address >> 8) -> `a.b.c.` as bytes, made on first
    use: the clients of a server come from a few prefixes, so a new address's text is
    one lookup and one concatenation."""

    def __missing__(self, prefix: int) -> bytes:
        text = self[prefix] = b"%d.%d.%d." % (prefix >> 16, (prefix >> 8) & 255, prefix & 255)
        return text


_OCTETS = tuple(b"%d" % octet for octet in range(256))


def seconds_span(seconds: int, now: float) -> Tuple[float, float]:
    """The expiry times (lo, hi) between which every expiry, bounds included, lists as
    `seconds` left at `now` (seconds_left()).  float subtraction is monotonic, so checking
    the two bounds with the same arithmetic makes the span exact."""
    lo = now + seconds
    while int(lo - now) < seconds:
        lo = math.nextafter(lo, math.inf)
    hi = now + (seconds + 1)
    while int(hi - now) > seconds:
        hi = math.nextafter(hi, -math.inf)
    return lo, hi


def table_entries(values: List[Entry], first: int = 0) -> Iterator[List[Entry]]:
    """A table's entries, each once, in listing order: `first` of them (if not 0), then
    CHUNK_LINES at a time.

    Both keys of an entry map to it and are inserted one after the other (a dict keeps
    insertion order through deletions), so the values are normally pairs and every other
    one is the list.  That is checked chunk by chunk, so the first chunk costs no walk of
    the whole table; from the first chunk where it fails (an entry whose two keys are one,
    a flow to itself) the rest is de-duplicated, each entry listed where it is first seen.
    An entry of a chunk that passed has both its keys in that chunk, so none is listed twice.
    """
    start = 0
    size = first or CHUNK_LINES
    while start < len(values):
        pairs = values[start:start + 2 * size]
        originals = pairs[::2]
        if pairs[1::2] != originals:
            rest = list(dict.fromkeys(values[start:]))
            if first and start == 0:
                yield rest[:first]
                rest = rest[first:]
            for at in range(0, len(rest), CHUNK_LINES):
                yield rest[at:at + CHUNK_LINES]
            return
        yield originals
        start += 2 * size
        size = CHUNK_LINES


def table_chunks(table: Dict[bytes, Entry]) -> Iterator[List[Entry]]:
    """table_entries() of a live table, without copying it all before the first chunk.

    The first FIRST_CHUNK_LINES entries come from the front of the dict; the copy of its
    values that the rest walks is taken when the next chunk is wanted (the table may have
    changed in between).  Entries are only appended to a dict and deletions keep the order,
    so the entries of the first chunk that are still there are still at the front of the
    copy, each with both its keys: they are skipped, and nothing is listed twice.
    """
    head = list(itertools.islice(table.values(), 2 * FIRST_CHUNK_LINES))
    yield from table_entries(head, FIRST_CHUNK_LINES)
    if len(head) < 2 * FIRST_CHUNK_LINES:
        return
    seen = set(head)
    values = list(table.values())
    skip = 0
    for value in values:
        if value not in seen:
            break
        skip += 1
    yield from table_entries(values[skip:])


def listing_snapshot(tracker: Tracker) -> List[Tuple[Tuple[int, int], Dict[bytes, Entry]]]:
    """((l3 family, proto), its table) for each non-empty table at the start of a listing,
    in order."""
    return [(table_id, table) for table_id, table in list(tracker.tables().items()) if table]


def listing_chunks(tracker: Tracker, now: float, modern: bool) -> Iterator[bytes]:
    """net/nf_conntrack (modern) or net/ip_conntrack in chunks of up to CHUNK_LINES lines.

    Entries expired by `now`, or removed from the table before their chunk is made
    (remove() clears timer_slot), are left out, as a kernel walker that reaches them
    after their removal does not see them.  Each chunk reads the entries as they are when
    it is made, so the caller holds the engine lock per next(), not for the whole walk.
    """
    addresses: Dict[int, bytes] = {}      # address as a number -> its text, made once
    address_text = addresses.get
    type_codes = _TypeCodeTexts()
    prefix_texts = _PrefixTexts()
    # Seconds left as ints for %d (a float costs ~150 ns more there): the entries of a
    # table made together expire together, so the span of expiry times that list as the
    # same seconds (seconds_span) is kept for the last two runs seen.  A span is worked out
    # when one value misses twice in a row, so a table of scattered expiries pays no spans.
    seconds = seconds_before = missed = -1
    lo = hi = lo_before = hi_before = math.inf
    for (family, proto), table in listing_snapshot(tracker):
        if not modern and family != ipv4.FAMILY:
            continue                     # ip_conntrack (the compat file too) lists IPv4 only
        # The fast formats are IPv4's; other families' lines take listing_line().
        v4 = family == ipv4.FAMILY
        ports = v4 and (proto == IPPROTO_TCP or proto == IPPROTO_UDP)
        icmp = v4 and proto == IPPROTO_ICMP
        names = None
        if ports and proto == IPPROTO_TCP:
            names = tuple(n.encode("ascii") for n in tracker.l4[proto].state_names())
        if ports:
            formats = _line_formats(modern, tracker.l4_name(proto), proto, names is not None)
        elif icmp:
            formats = _icmp_formats(modern, tracker.l4_name(proto), proto)
        for chunk in table_chunks(table):
            # One %-format per chunk: the lines' formats joined, their values in a row.
            formats_used: List[bytes] = []
            use_format = formats_used.append
            values: list = []
            add_values = values.extend
            for entry in chunk:
                expires = entry.expires
                if expires <= now or entry.timer_slot is None:
                    continue             # expired, or gone from the table
                # (ext is None unless accounting, timestamps or a mark are on for the entry;
                # the formats print mark=0 and the plain use=, so such an entry and a
                # helper's master with expected children take listing_line())
                if entry.ext is not None or entry.children or not (ports or icmp):
                    use_format(b"%s")
                    values.append(listing_line(tracker, entry, now, modern).encode("ascii"))
                    continue
                src, dst, sport, dport = _KEY_FIELDS(entry.orig)
                # (a lookup that may miss, inline: a server's table has a new client per line)
                a = address_text(src)
                if a is None:
                    a = addresses[src] = prefix_texts[src >> 8] + _OCTETS[src & 255]
                b = address_text(dst)
                if b is None:
                    b = addresses[dst] = prefix_texts[dst >> 8] + _OCTETS[dst & 255]
                use_format(formats[entry.status & _FLAG_BITS])
                if lo <= expires <= hi:
                    left = seconds
                elif lo_before <= expires <= hi_before:
                    left = seconds_before
                else:
                    left = int(expires - now)
                    if left == missed:          # a second miss in a row on this value: a run
                        seconds_before, lo_before, hi_before = seconds, lo, hi
                        seconds = left
                        lo, hi = seconds_span(left, now)
                    missed = left
                if names is not None:
                    add_values((left, names[entry.l4[STATE]], a, b, sport, dport,
                                b, a, dport, sport))
                elif ports:
                    add_values((left, a, b, sport, dport, b, a, dport, sport))
                else:                    # ICMP: the id in the sport place, type and code in dport
                    add_values((left, a, b, type_codes[dport], sport,
                                b, a, type_codes[entry.reply[10] << 8 | entry.reply[11]], sport))
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
