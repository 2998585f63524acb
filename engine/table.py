"""The conntrack table: entries by key, one dict per (layer 3, protocol), and hash chains.

Both keys of every entry map to it, so a packet of either direction finds its entry with
one dict lookup; the direction of a hit is whether the key is the entry's reply key.
The hash chains exist only to choose early-drop victims the way the kernel does (from the
new tuple's bucket: engine/early_drop.py).  Insertion and removal count the kernel's
`insert`, `delete` and `delete_list` events in the shared stats dict.
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Tuple

from . import ipv4
from .entry import CONFIRMED, ORIGINAL, REPLY, Entry
from .packet import IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP

TableId = Tuple[int, int]           # (l3 family, protocol number)
Keyed = Dict[bytes, Entry]


class ConnTable:
    def __init__(self, buckets: int, stats: Dict[str, int]) -> None:
        self.stats = stats
        # The common tables first, so listings keep the order TCP, UDP, ICMP, others.
        self._tables: Dict[TableId, Keyed] = {
            (ipv4.FAMILY, IPPROTO_TCP): {}, (ipv4.FAMILY, IPPROTO_UDP): {},
            (ipv4.FAMILY, IPPROTO_ICMP): {}}
        self.count = 0                  # live entries (len(); an attribute to read without a call)
        self.buckets = max(int(buckets), 1)
        self._chains: List[Optional[Entry]] = [None] * self.buckets

    def __len__(self) -> int:
        return self.count

    def table(self, family: int, proto: int) -> Keyed:
        """The key -> entry dict of one (l3, protocol) (made on first use)."""
        table = self._tables.get((family, proto))
        if table is None:
            table = self._tables[(family, proto)] = {}
        return table

    def tables(self) -> Dict[TableId, Keyed]:
        """(l3 family, protocol) -> its key -> entry dict (both keys of each entry)."""
        return self._tables

    def entries(self) -> Iterator[Entry]:
        """Live entries, each once (table by table, in insertion order within one)."""
        for table in list(self._tables.values()):
            for key, entry in table.items():
                # The original key's slot; an entry whose keys are equal (generic
                # protocol to itself) has that one slot only.
                if key is entry.orig:
                    yield entry

    def holds(self, entry: Entry) -> bool:
        """Whether `entry` itself (not another with its keys) is in the table."""
        table = self._tables.get((entry.l3.FAMILY, entry.proto))
        return table is not None and table.get(entry.orig) is entry

    def lookup(self, family: int, proto: int, key: bytes) -> Optional[Tuple[Entry, int]]:
        """(entry, direction) of the entry holding this key, or None."""
        table = self._tables.get((family, proto))
        entry = table.get(key) if table is not None else None
        if entry is None:
            return None
        # The reply key wins when both are equal: the kernel finds the reply direction.
        return entry, REPLY if key == entry.reply else ORIGINAL

    def bucket(self, key: bytes) -> int:
        """The hash chain of an original key (also the early-drop victims' chain)."""
        return hash(key) % self.buckets

    def chain(self, bucket: int) -> Iterator[Entry]:
        """The entries of one hash chain, newest first."""
        node = self._chains[bucket]
        while node is not None:
            yield node
            node = node.hnext

    def insert(self, entry: Entry, table: Optional[Keyed] = None) -> None:
        """Put a confirmed entry in (both keys, its chain); counts `insert`.  `table`: its
        (l3, protocol) dict, when the caller has it at hand (the fast path: no lookup)."""
        if table is None:
            table = self.table(entry.l3.FAMILY, entry.proto)
        orig = entry.orig
        table[orig] = entry
        table[entry.reply] = entry
        entry.status |= CONFIRMED
        self.count += 1
        chains = self._chains
        b = hash(orig) % self.buckets   # bucket(), without its call: once per new entry
        entry.hnext = chains[b]
        chains[b] = entry
        self.stats["insert"] += 1

    def remove(self, entry: Entry) -> bool:
        """Unlink an entry (expiry, early drop, RST kill); False if it was not in."""
        # holds(), inlined: once per entry expired or killed.
        table = self._tables.get((entry.l3.FAMILY, entry.proto))
        orig = entry.orig
        if table is None or table.get(orig) is not entry:
            return False
        del table[orig]
        table.pop(entry.reply, None)
        self.count -= 1
        b = hash(orig) % self.buckets   # bucket(), without its call
        node, prev = self._chains[b], None
        while node is not None and node is not entry:
            prev, node = node, node.hnext
        if node is not None:
            if prev is None:
                self._chains[b] = node.hnext
            else:
                prev.hnext = node.hnext
        entry.hnext = None
        stats = self.stats
        stats["delete"] += 1
        stats["delete_list"] += 1
        return True
