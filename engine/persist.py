"""The table as JSON-ready records (--state-file), and back, every field checked.

A record: `tuple` is the original direction (src, dst, proto, a, b) of an IPv4 entry (the
reply follows from it), `status` its status bits, `left` the seconds to its expiry, `l4`
the protocol tracker's own state (engine/l4.py export_l4), and `counters`/`age` only if the
entry has them.  Restoring checks every field as strictly as the engine itself would make
it (states, flags, timers within what a knob can set, tuples within their sizes): a record
that could not have come from a running engine is refused, with the field and value named.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from . import ipv4
from .entry import ORIGINAL, STATUS_BITS, CONFIRMED, Entry
from .knobs import HZ, INT_MAX
from .l4 import L4Tracker, checked_list, checked_seconds, checked_uint
from .table import ConnTable

MAX_TIMEOUT = INT_MAX // HZ     # seconds: the longest timer any knob can set
MAX_AGE = float(1 << 32)        # seconds: an entry older than ~136 years was not saved by us

TrackerOf = Callable[[int], L4Tracker]


def export_entries(table: ConnTable, tracker_of: TrackerOf, now: float) -> List[dict]:
    """Every live entry as a record; times relative to `now`."""
    saved = []
    for entry in table.entries():
        left = entry.expires - now
        if left <= 0:
            continue                # due: the next expire() would remove it anyway
        record: Dict[str, Any] = {
            "tuple": list(entry.tuple(ORIGINAL)), "status": entry.status & ~CONFIRMED,
            "left": left, "l4": tracker_of(entry.proto).export_l4(entry, now)}
        if entry.counters is not None:
            record["counters"] = list(entry.counters)
        if entry.created is not None:
            record["age"] = now - entry.created
        saved.append(record)
    return saved


def entries_from_records(records: Any, tracker_of: TrackerOf, saved_at: float,
                         now: float) -> List[Entry]:
    """The entries of saved records still alive at `now` (expiry = saved_at + left).

    Raises ValueError("table entry N: field: why") for the first bad record, before
    anything is changed."""
    if not isinstance(records, list):
        raise ValueError("entries: not a list")
    parsed = []
    for index, record in enumerate(records):
        try:
            entry = _entry_from_record(record, tracker_of, saved_at, now)
        except KeyError as exc:
            raise ValueError(f"table entry {index}: no {exc} field") from None
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"table entry {index}: {exc}") from None
        if entry is not None:
            parsed.append(entry)
    return parsed


def _entry_from_record(record: Any, tracker_of: TrackerOf, saved_at: float,
                       now: float) -> Optional[Entry]:
    if not isinstance(record, dict):
        raise ValueError("not an object")
    unknown = set(record) - {"tuple", "status", "left", "l4", "counters", "age"}
    if unknown:
        raise ValueError(f"unknown field {sorted(unknown)[0]!r}")
    src, dst, proto, a, b = (checked_uint(v, bits, "tuple") for v, bits in
                             zip(checked_list(record["tuple"], 5, "tuple"),
                                 (32, 32, 8, 16, 16)))
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
    orig = ipv4.key(src, dst, a, b)
    entry = Entry(orig, ipv4.mirror_key(orig, *parts), now, proto, ipv4)
    entry.status = status
    entry.expires = expires
    entry.created = None if age is None else saved_at - age
    entry.counters = counters
    entry.l4 = l4
    return entry
