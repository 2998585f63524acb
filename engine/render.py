"""The /proc text of the table: ip_conntrack, nf_conntrack, the stat files, expectations.

Formats are byte-exact against spec §1-2: every token is followed by one space, the
line ends with `use=N` and a newline.
"""
from __future__ import annotations

import functools
import itertools
import math
import struct
from typing import Dict, Iterator, List, Optional, Tuple

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
# (SEEN_REPLY, ASSURED) and, for TCP, per state (the state's name is in the format, not a
# value: one conversion a line fewer), and the text of each address is made once per listing and
# looked up by the address as a number: a real table has thousands of distinct
# addresses, so the text is cached per address, not per line or per address pair (a
# per-pair format only pays when one pair fills the table); a new address's text is its
# /24 prefix's text (cached too) and its last octet's.  The seconds left go in as text
# (see ChunkRenderer).  Tried and dropped: each address as four %d
# octets with no cache (1.4-2.5x slower: %d of a small int costs more than a %s and a
# dict hit).  The tuples of an entry are
# its key and the key's mirror (no NAT here), so a TCP/UDP line is its seconds, two
# address texts and two ports.  Nothing is cached in the entries: a text cache would
# cost ~140 bytes per entry, more than a quarter of the memory budget.  Other lines (GRE,
# generic, accounting, timestamps) take listing_line() above.
FIRST_CHUNK_LINES = 64      # the first chunk of a table: about what `head -1` reads (8 KiB)
CHUNK_LINES = 1024
_KEY_FIELDS = struct.Struct("!IIHH").unpack     # src, dst, sport (ICMP id), dport (type, code)
_FLAG_BITS = SEEN_REPLY | ASSURED
_STATE_SHIFT = 3        # a TCP line's format: state << 3 | status & _FLAG_BITS (< 8)


def _line_formats(modern: bool, name: str, proto: int,
                  states: Optional[Tuple[str, ...]]) -> Tuple[bytes, ...]:
    """%-formats of a TCP/UDP line, taking: seconds, src, dst, sport, dport, then the
    reply's src, dst, sport, dport, every value as text.  Without `states` (UDP) there is
    one per status & (SEEN_REPLY | ASSURED); with them (TCP) one per state and status, at
    state << _STATE_SHIFT | status & (SEEN_REPLY | ASSURED): the state name is part of the
    format, not a value (one conversion a line fewer)."""
    if states is None:
        return _formats(modern, name, proto, "", "sport=%d dport=%d ")
    return tuple(itertools.chain.from_iterable(
        _formats(modern, name, proto, state + " ", "sport=%d dport=%d ") for state in states))


def _icmp_formats(modern: bool, name: str, proto: int) -> Tuple[bytes, ...]:
    """%-formats of an ICMP line by status, taking: seconds, src, dst, type and code (one
    text), id, then the reply's src, dst, type and code, id."""
    return _formats(modern, name, proto, "", "%sid=%d ")


# Made once per combination, not per listing: building them is ~60 us of the ~300 us the
# first chunk of a listing costs when the daemon has been idle (`head -1`).
@functools.lru_cache(maxsize=None)
def _formats(modern: bool, name: str, proto: int, state: str, l4: str) -> Tuple[bytes, ...]:
    """The formats of one state by status & _FLAG_BITS, padded to 1 << _STATE_SHIFT."""
    head = (f"{ipv4.LISTING_PREFIX}{name:<8} {proto} %s " if modern
            else f"{name:<8} {proto} %s ")
    tail = "mark=0 zone=0 use=2\n" if modern else "use=1\n"
    formats = []
    for status in range(1 << _STATE_SHIFT):
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


class TableChunks:
    """table_entries() of a live table, without copying it all before the first chunk; an
    iterator of chunks (lists of entries).

    The first FIRST_CHUNK_LINES entries come from the front of the dict; the copy of its
    values that the rest walks is taken when the next chunk is wanted (the table may have
    changed in between).  Entries are only appended to a dict and deletions keep the order,
    so the entries of the first chunk that are still there are still at the front of the
    copy, each with both its keys: they are skipped, and nothing is listed twice.

    rest() says which chunks are still to come without walking on (forked children render
    them: procfs_ct/forkrender.py).
    """

    def __init__(self, table: Dict[bytes, Entry]) -> None:
        self._table = table
        self._walked = _Walked()
        # (the walk is a generator of its own, not a method: a generator that held this
        # object would make a cycle, kept until a full collection if never finished)
        self._chunks = _walk(table, self._walked)

    def __iter__(self) -> "TableChunks":
        return self

    def __next__(self) -> List[Entry]:
        return next(self._chunks)

    def rest(self) -> Optional[List[Tuple[List[Entry], int, int]]]:
        """The chunks still to come as (values, start, stop): each lists the entries
        values[start:stop:2] of a copy of the table (rest_entries()), the walk itself not
        moved; the same entries in the same order as the walk would list if the table
        stayed as it is now.  None once the walk has met an entry under one key (a flow to
        itself): it de-duplicates, and only in process."""
        walked = self._walked
        if walked.deduplicated:
            return None
        if walked.head is None:                         # not started: all of it
            values, start = list(self._table.values()), 0
        elif len(walked.head) < 2 * FIRST_CHUNK_LINES:  # the head was all of it
            return []
        elif walked.values is None:                     # the head listed, no copy yet
            values, start = _copy_after_head(self._table, walked.head)
        else:
            values, start = walked.values, walked.next
        step = 2 * CHUNK_LINES
        return [(values, at, min(at + step, len(values))) for at in range(start, len(values), step)]


class _Walked:
    """How far a TableChunks walk has gone."""
    __slots__ = ("head", "values", "next", "deduplicated")

    def __init__(self) -> None:
        self.head: Optional[List[Entry]] = None     # the first values, once taken
        self.values: Optional[List[Entry]] = None   # the copy the rest walks, once taken
        self.next = 0                   # where in values the next chunk starts
        self.deduplicated = False       # the walk met an entry with one key: no pairs


def _walk(table: Dict[bytes, Entry], walked: _Walked) -> Iterator[List[Entry]]:
    """TableChunks' walk, saying in `walked` how far it has gone."""
    head = walked.head = list(itertools.islice(table.values(), 2 * FIRST_CHUNK_LINES))
    yield from table_entries(head, FIRST_CHUNK_LINES)
    if len(head) < 2 * FIRST_CHUNK_LINES:
        return
    values, walked.next = _copy_after_head(table, head)
    walked.values = values
    size = CHUNK_LINES
    while walked.next < len(values):        # table_entries(values[walked.next:]), inline
        start = walked.next
        pairs = values[start:start + 2 * size]
        originals = pairs[::2]
        if pairs[1::2] != originals:
            walked.deduplicated = True
            yield from table_entries(values[start:])
            return
        walked.next = start + 2 * size
        yield originals


def _copy_after_head(table: Dict[bytes, Entry], head: List[Entry]) -> Tuple[List[Entry], int]:
    """A copy of the table's values, and where the entries after `head` start in it."""
    values = list(table.values())
    seen = set(head)
    skip = 0
    for value in values:
        if value not in seen:
            break
        skip += 1
    return values, skip


def rest_entries(values: List[Entry], start: int, stop: int) -> List[Entry]:
    """The entries of a chunk of TableChunks.rest(): values[start:stop:2], each entry's two
    keys being a pair of values there (checked: a table changed under the copy, or an
    entry with one key, would list entries twice or leave some out)."""
    originals = values[start:stop:2]
    if values[start + 1:stop:2] != originals:
        raise ValueError(f"the table's values {start}..{stop} are not in pairs")
    return originals


def listing_snapshot(tracker: Tracker) -> List[Tuple[Tuple[int, int], Dict[bytes, Entry]]]:
    """((l3 family, proto), its table) for each non-empty table at the start of a listing,
    in order."""
    return [(table_id, table) for table_id, table in list(tracker.tables().items()) if table]


class _TableFormats:
    """What the fast loop needs to know of one table: whether its lines take the port or the
    ICMP formats (else listing_line()), whether the TCP state picks the format too, the
    formats."""
    __slots__ = ("ports", "icmp", "states", "formats")

    def __init__(self, tracker: Tracker, family: int, proto: int, modern: bool) -> None:
        # The fast formats are IPv4's; other families' lines take listing_line().
        v4 = family == ipv4.FAMILY
        self.ports = v4 and (proto == IPPROTO_TCP or proto == IPPROTO_UDP)
        self.icmp = v4 and proto == IPPROTO_ICMP
        self.states = False
        self.formats: Tuple[bytes, ...] = ()
        if self.ports:
            names = tuple(tracker.l4[proto].state_names()) if proto == IPPROTO_TCP else None
            self.states = names is not None
            self.formats = _line_formats(modern, tracker.l4_name(proto), proto, names)
        elif self.icmp:
            self.formats = _icmp_formats(modern, tracker.l4_name(proto), proto)


# One chunk of a listing to render: its table's formats and its entries.
ListingJob = Tuple[_TableFormats, List[Entry]]
# One chunk of the rest of a listing (ListingWalk.rest()): its table's formats and the
# entries values[start:stop:2] of a copy of the table (rest_entries()).
RestJob = Tuple[_TableFormats, List[Entry], int, int]


class ListingWalk:
    """The chunks of net/nf_conntrack (modern) or net/ip_conntrack, in order, as entries
    still to be rendered (an iterator of ListingJob): table by table, each as TableChunks
    walks it.  rest() gives the chunks still to come, for forked children."""

    def __init__(self, tracker: Tracker, modern: bool) -> None:
        self._tracker, self._modern = tracker, modern
        # ip_conntrack (the compat file too) lists IPv4 only.
        self._tables = [(family, proto, table)
                        for (family, proto), table in listing_snapshot(tracker)
                        if modern or family == ipv4.FAMILY]
        self._started = 0               # tables started (the last one is being walked)
        self._walk: Optional[TableChunks] = None
        self._formats: Optional[_TableFormats] = None

    def __iter__(self) -> "ListingWalk":
        return self

    def __next__(self) -> ListingJob:
        while True:
            if self._walk is None:
                if self._started == len(self._tables):
                    raise StopIteration
                family, proto, table = self._tables[self._started]
                self._started += 1
                self._formats = _TableFormats(self._tracker, family, proto, self._modern)
                self._walk = TableChunks(table)
            chunk = next(self._walk, None)
            if chunk is not None:
                return self._formats, chunk
            self._walk = None

    def rest(self) -> Optional[List[RestJob]]:
        """The chunks still to come, as they would be walked if the tables stayed as they
        are now (copies of the tables not started are taken here: call it under the
        engine lock); the walk itself does not move.  None if an entry is listed under one
        key (a flow to itself: the walk de-duplicates those tables, in process only)."""
        tracker = self._tracker
        if sum(len(table) for table in tracker.tables().values()) != 2 * len(tracker):
            return None
        jobs: List[RestJob] = []
        if self._walk is not None:
            ranges = self._walk.rest()
            if ranges is None:
                return None
            jobs.extend((self._formats, values, start, stop) for values, start, stop in ranges)
        for family, proto, table in self._tables[self._started:]:
            formats = _TableFormats(tracker, family, proto, self._modern)
            ranges = TableChunks(table).rest()
            jobs.extend((formats, values, start, stop) for values, start, stop in ranges)
        return jobs


class ChunkRenderer:
    """Renders one chunk of a listing at `now` (render()), keeping what one chunk learns for
    the next: the address texts and the spans of expiry times that list as one value.
    What is kept changes how fast, never what: any chunk renders to the same bytes whatever
    was rendered before it (a forked child renders every N-th chunk with a copy of it)."""

    def __init__(self, tracker: Tracker, now: float, modern: bool) -> None:
        self.tracker, self.now, self.modern = tracker, now, modern
        self.addresses: Dict[int, bytes] = {}     # address as a number -> its text, made once
        self.seconds: Dict[int, bytes] = {}       # seconds left -> their text, made once
        self.type_codes = _TypeCodeTexts()
        self.prefix_texts = _PrefixTexts()
        # The seconds left go in as text for a %s: a %d is the decimal conversion every
        # line (~400 instructions; a float's would cost more still), a %s of a text made
        # once ~100.  The entries of a table made together expire together, so the span of
        # expiry times that list as the same seconds (seconds_span) is kept, with its text,
        # for the last two runs seen; a span is worked out when one value misses twice in
        # a row, so a table of scattered expiries pays no spans, only a lookup of the text.
        # The ports stay %d: a port's text cached per listing lost (a server's clients'
        # ports and a pair's ports seldom repeat; a lookup and a miss cost more than the
        # conversion: callgrind, bench/RESULTS.md round 10).
        # (text, lo, hi, text_before, lo_before, hi_before, missed seconds)
        self.spans = (b"", math.inf, math.inf, b"", math.inf, math.inf, -1)

    def render(self, job: ListingJob) -> bytes:
        """The chunk's lines; b"" if every entry of it expired or left the table.

        Entries expired by `now`, or removed from the table before their chunk is made
        (remove() clears timer_slot), are left out, as a kernel walker that reaches them
        after their removal does not see them."""
        table, chunk = job
        tracker, now, modern = self.tracker, self.now, self.modern
        ports, icmp, states, formats = table.ports, table.icmp, table.states, table.formats
        addresses = self.addresses
        address_text = addresses.get
        seconds_texts = self.seconds
        type_codes, prefix_texts = self.type_codes, self.prefix_texts
        seconds, lo, hi, seconds_before, lo_before, hi_before, missed = self.spans
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
            if lo <= expires <= hi:
                left = seconds
            elif lo_before <= expires <= hi_before:
                left = seconds_before
            else:
                value = int(expires - now)
                left = seconds_texts.get(value)
                if left is None:
                    left = seconds_texts[value] = b"%d" % value
                if value == missed:         # a second miss in a row on this value: a run
                    seconds_before, lo_before, hi_before = seconds, lo, hi
                    seconds = left
                    lo, hi = seconds_span(value, now)
                missed = value
            if ports:
                if states:
                    use_format(formats[entry.l4[STATE] << _STATE_SHIFT
                                       | entry.status & _FLAG_BITS])
                else:
                    use_format(formats[entry.status & _FLAG_BITS])
                add_values((left, a, b, sport, dport, b, a, dport, sport))
            else:                    # ICMP: the id in the sport place, type and code in dport
                use_format(formats[entry.status & _FLAG_BITS])
                add_values((left, a, b, type_codes[dport], sport,
                            b, a, type_codes[entry.reply[10] << 8 | entry.reply[11]], sport))
        self.spans = (seconds, lo, hi, seconds_before, lo_before, hi_before, missed)
        if not formats_used:
            return b""
        return b"".join(formats_used) % tuple(values)


class ListingChunks:
    """net/nf_conntrack (modern) or net/ip_conntrack in chunks of up to CHUNK_LINES lines,
    an iterator: each next() renders the next chunk that has a line.

    Each chunk reads the entries as they are when it is made, so the caller holds the
    engine lock per next(), not for the whole walk.  The walk is in two parts so that the
    rest of it can be rendered elsewhere (procfs_ct/forkrender.py: forked children, each
    rendering every N-th chunk of what is left): `walk.rest()` the chunks still to come,
    `renderer.render(job)` the text of one.  `entries` is the table's size when the
    listing began.
    """

    def __init__(self, tracker: Tracker, now: float, modern: bool) -> None:
        self.entries = len(tracker)
        self.walk = ListingWalk(tracker, modern)
        self.renderer = ChunkRenderer(tracker, now, modern)

    def __iter__(self) -> "ListingChunks":
        return self

    def __next__(self) -> bytes:
        render = self.renderer.render
        for job in self.walk:
            text = render(job)
            if text:
                return text
        raise StopIteration


def listing_chunks(tracker: Tracker, now: float, modern: bool) -> ListingChunks:
    """net/nf_conntrack (modern) or net/ip_conntrack in chunks (ListingChunks)."""
    return ListingChunks(tracker, now, modern)


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
