"""The table as JSON-ready records (--state-file), and back, every field checked.

A record: `tuple` is the original direction (src, dst, proto, a, b) of an entry (the
reply follows from it), `family` 10 for an IPv6 entry (absent for IPv4, as in files
written before IPv6 was tracked), `status` its status bits, `left` the seconds to its expiry, `l4`
the protocol tracker's own state (engine/l4.py export_l4), and `counters`/`age` only if the
entry has them.  Restoring checks every field as strictly as the engine itself would make
it (states, flags, timers within what a knob can set, tuples within their sizes): a record
that could not have come from a running engine is refused, with the field and value named.
"""
from __future__ import annotations

from typing import Any, Callable, Collection, Dict, Iterable, List, Optional

from . import ipv4, ipv6
from .entry import ORIGINAL, STATUS_BITS, CONFIRMED, Entry
from .knobs import HZ, INT_MAX
from .l3 import l3_of
from .l4 import L4Tracker, checked_list, checked_seconds, checked_uint
from .table import ConnTable

MAX_TIMEOUT = INT_MAX // HZ     # seconds: the longest timer any knob can set
MAX_AGE = float(1 << 32)        # seconds: an entry older than ~136 years was not saved by us

TrackerOf = Callable[[int], L4Tracker]
ALL_FAMILIES = (ipv4.FAMILY, ipv6.FAMILY)


def export_entries(table: ConnTable, tracker_of: TrackerOf, now: float) -> List[dict]:
    """Every live entry as a record; times relative to `now`."""
    return export_records(table.entries(), table, tracker_of, now)


def export_records(entries: Iterable[Entry], table: ConnTable, tracker_of: TrackerOf,
                   now: float) -> List[dict]:
    """The records of those of `entries` still in `table`: a saver that lists the entries
    once and exports them a slice at a time (releasing the engine lock between slices)
    skips what expired or was killed meanwhile.  Times relative to `now`."""
    saved = []
    for entry in entries:
        if not table.holds(entry):
            continue
        left = entry.expires - now
        if left <= 0:
            continue                # due: the next expire() would remove it anyway
        record: Dict[str, Any] = {
            "tuple": list(entry.tuple(ORIGINAL)), "status": entry.status & ~CONFIRMED,
            "left": left, "l4": tracker_of(entry.proto).export_l4(entry, now)}
        if entry.l3 is not ipv4:
            record["family"] = entry.l3.FAMILY
        if entry.counters is not None:
            record["counters"] = list(entry.counters)
        if entry.created is not None:
            record["age"] = now - entry.created
        saved.append(record)
    return saved


def entries_from_records(records: Any, tracker_of: TrackerOf, saved_at: float,
                         now: float, families: Collection[int] = ALL_FAMILIES) -> List[Entry]:
    """The entries of saved records still alive at `now` (expiry = saved_at + left);
    `families`: the layer-3 families this conntrack tracks.

    Raises ValueError("table entry N: field: why") for the first bad record, before
    anything is changed."""
    if not isinstance(records, list):
        raise ValueError("entries: not a list")
    parsed = []
    for index, record in enumerate(records):
        try:
            entry = _entry_from_record(record, tracker_of, saved_at, now, families)
        except KeyError as exc:
            raise ValueError(f"table entry {index}: no {exc} field") from None
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"table entry {index}: {exc}") from None
        if entry is not None:
            parsed.append(entry)
    return parsed


def _entry_from_record(record: Any, tracker_of: TrackerOf, saved_at: float,
                       now: float, families: Collection[int]) -> Optional[Entry]:
    if not isinstance(record, dict):
        raise ValueError("not an object")
    unknown = set(record) - {"tuple", "status", "left", "l4", "counters", "age", "family"}
    if unknown:
        raise ValueError(f"unknown field {sorted(unknown)[0]!r}")
    family = checked_uint(record.get("family", ipv4.FAMILY), 8, "family")
    if family not in families:
        raise ValueError(f"family: {family} is not a layer-3 family this conntrack tracks")
    l3 = l3_of(family)
    src, dst, proto, a, b = (checked_uint(v, bits, "tuple") for v, bits in
                             zip(checked_list(record["tuple"], 5, "tuple"),
                                 (l3.ADDR_BITS, l3.ADDR_BITS, 8, 16, 16)))
    tracker = tracker_of(proto)
    status = checked_uint(record["status"], 32, "status")
    if status & ~STATUS_BITS:
        raise ValueError(f"status: {status:#x} has bits no entry carries")
    left = checked_seconds(record["left"], "left", 0.0, MAX_TIMEOUT)
    expires = saved_at + left
    # Check everything before deciding the entry ran out: a bad file is bad either way.
    age = checked_seconds(record["age"], "age", 0.0, MAX_AGE) if "age" in record else None
    counters = None
    if "counters" in record:
        counters = [checked_uint(v, 64, "counters")
                    for v in checked_list(record["counters"], 4, "counters")]
    l4 = tracker.restore_l4(record["l4"], saved_at)
    parts = tracker.invert(a, b)
    if parts is None:
        raise ValueError("tuple has no reply direction")
    if expires <= now:
        return None
    orig = l3.key(src, dst, a, b)
    entry = Entry(orig, l3.mirror_key(orig, *parts), now, proto, l3)
    entry.status = status
    entry.expires = expires
    entry.created = None if age is None else saved_at - age
    entry.counters = counters
    entry.l4 = l4
    return entry
