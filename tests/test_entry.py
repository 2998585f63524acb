"""engine/entry.py: an entry's layer 3 and protocol, held by its class."""
from __future__ import annotations

from engine import ipv4, ipv6
from engine.entry import Entry, HelpedEntry


def test_proto_and_l3_read_back_and_one_class_serves_each_pair():
    """Entry(...) picks a subclass per (class, l3, proto): made once, then reused, so a
    table of any size holds a handful of classes, not one per entry."""
    tcp4 = Entry(b"k" * 12, b"r" * 12, 5.0, 6, ipv4)
    udp6 = Entry(b"k" * 36, b"r" * 36, 5.0, 17, ipv6)
    helped = HelpedEntry(b"k" * 12, b"r" * 12, 5.0, 6, ipv4)
    assert (tcp4.proto, tcp4.l3, udp6.proto, udp6.l3) == (6, ipv4, 17, ipv6)
    assert (helped.proto, helped.l3, helped.children, helped.helper) == (6, ipv4, 0, None)
    assert isinstance(tcp4, Entry) and isinstance(helped, HelpedEntry)
    assert type(Entry(b"x" * 12, b"y" * 12, 6.0, 6, ipv4)) is type(tcp4)
    assert type(tcp4) is not type(udp6) and type(helped) is not type(tcp4)
    assert Entry(b"x" * 12, b"y" * 12, 6.0).proto == 0       # the defaults: ipv4, no proto


def test_optional_parts_cost_a_plain_entry_nothing():
    """counters, created and a mark live in one Extras object made on the first of them:
    a plain entry is 96 bytes with the collector's header (112 with three slots of its
    own), and writing a part's empty value makes no Extras."""
    import sys
    entry = Entry(b"k" * 12, b"r" * 12, 5.0, 6, ipv4)
    assert sys.getsizeof(entry) == 96
    assert (entry.counters, entry.created, entry.mark, entry.ext) == (None, None, 0, None)
    assert entry.l4 == 5.0                  # the creation time, till the tracker sets its state
    entry.counters, entry.created, entry.mark = None, None, 0
    assert entry.ext is None and not entry.acct and not entry.stamped
    entry.mark = 7
    assert (entry.mark, entry.counters, entry.created) == (7, None, None)
    entry.counters, entry.created = [1, 2, 3, 4], 4.5
    assert (entry.counters, entry.created, entry.mark) == ([1, 2, 3, 4], 4.5, 7)
    assert entry.acct and entry.stamped
    entry.mark = 0
    assert entry.mark == 0 and entry.counters == [1, 2, 3, 4]
