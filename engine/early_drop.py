"""Making room in a full table (spec §7.2): which unassured entries go, and whether any can.

nf_conntrack (linux): every unassured entry of the first of 8 hash chains, starting at the
new tuple's, that holds any.  ip_conntrack (tutorial): the oldest unassured entry of the
new tuple's own chain only.  ASSURED entries are never early-dropped: the tutorial's "it
will not be erased if we reach the maximum possible tracked connections".
"""
from __future__ import annotations

from typing import List

from .entry import ASSURED, Entry
from .table import ConnTable

EARLY_DROP_BUCKETS = 8          # modern: chains scanned for victims (NF_CT_EVICTION_RANGE)


def has_room(count: int, limit: int) -> bool:
    """Does one more entry fit?  0 = no limit; a negative ip_conntrack max is always over."""
    return limit == 0 or count + 1 <= limit


def unassured_in_chain(table: ConnTable, bucket: int) -> List[Entry]:
    """Unassured entries of one chain, newest first."""
    return [entry for entry in table.chain(bucket) if not entry.status & ASSURED]


def early_drop_victims(table: ConnTable, key: bytes, modern: bool) -> List[Entry]:
    """The entries to remove so that the entry with this original key fits; [] if none can."""
    start = table.bucket(key)
    if modern:
        for i in range(EARLY_DROP_BUCKETS):
            victims = unassured_in_chain(table, (start + i) % table.buckets)
            if victims:
                return victims
        return []
    victims = unassured_in_chain(table, start)
    return victims[-1:]              # the oldest: chains are newest first
