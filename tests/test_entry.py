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
