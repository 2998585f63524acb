"""nf_defrag_ipv6 without FUSE (engine/defrag6.py): reassembly before tracking, the frag6
knobs (timeout on the fake clock, memory thresholds), RFC 5722 overlaps discarding the
whole datagram, duplicates, atomic fragments, and what the kernel lets through unreassembled
(a non-final fragment not a multiple of 8 long; a first fragment without its whole
upper-layer header)."""
from __future__ import annotations

import struct

from engine.build import build_ipv6, build_tcp, build_udp, ipv6_fragments
from engine.ctstate import CtState
from engine.defrag6 import Defragmenter6
from engine.hooks import LOCAL_OUT, PRE_ROUTING
from engine.packet import IPPROTO_TCP, IPPROTO_UDP, SYN
from engine.parse_ipv6 import parse_ipv6
from enginehelp import T0, make_engine

A, B = "fd00::1", "fd00::2"
PAYLOAD = bytes(range(256)) * 8                   # 2048 bytes of UDP data


def whole(sport: int = 40000, payload: bytes = PAYLOAD) -> bytes:
    return build_ipv6(A, B, IPPROTO_UDP, build_udp(A, B, sport, 9000, payload))


def test_fragments_in_any_order_give_back_the_datagram():
    datagram = whole()
    for order in ([0, 1, 2], [2, 0, 1], [1, 2, 0]):
        defrag = Defragmenter6()
        pieces = ipv6_fragments(datagram, 1024, ident=7, order=order)
        assert [defrag.feed(p, T0) for p in pieces[:-1]] == [None, None]
        assert defrag.feed(pieces[-1], T0) == datagram
        assert defrag.stats.reasm_oks == 1 and defrag.stats.queues == 0
        assert defrag.stats.held_bytes == 0


def test_the_engine_tracks_the_reassembled_datagram_once():
    eng = make_engine()
    results = [eng.feed_datagram(T0, p, PRE_ROUTING)
               for p in ipv6_fragments(whole(), 1024, ident=1)]
    assert results[:2] == [None, None] and results[2].state == CtState.NEW
    assert eng.tracker.stats["new"] == 1 and eng.tracker.stats["invalid"] == 0
    [entry] = eng.tracker.entries()
    assert entry.orig == parse_ipv6(whole(), PRE_ROUTING).key


def test_hooks_and_identifications_keep_separate_queues():
    defrag = Defragmenter6()
    one = ipv6_fragments(whole(), 1024, ident=1)
    two = ipv6_fragments(whole(1), 1024, ident=2)
    assert defrag.feed(one[0], T0, PRE_ROUTING) is None
    assert defrag.feed(one[1], T0, LOCAL_OUT) is None          # another defrag user
    assert defrag.feed(two[0], T0) is None
    assert defrag.stats.queues == 3


def test_an_incomplete_datagram_expires_at_frag6_timeout():
    eng = make_engine()
    assert eng.knobs["frag6_timeout"] == 60
    eng.knobs.set("frag6_timeout", 5)
    first, second, third = ipv6_fragments(whole(), 1024, ident=3)
    assert eng.feed_datagram(T0, first, PRE_ROUTING) is None
    eng.advance(T0 + 4.9)
    assert eng.defrag6.stats.queues == 1
    eng.advance(T0 + 5)
    assert eng.defrag6.stats.queues == 0 and eng.defrag6.stats.timeouts == 1
    # The rest alone never completes it.
    assert eng.feed_datagram(T0 + 5, second, PRE_ROUTING) is None
    assert eng.feed_datagram(T0 + 5, third, PRE_ROUTING) is None
    assert len(eng.tracker) == 0


def test_memory_over_high_thresh_evicts_down_to_low_thresh():
    eng = make_engine()
    eng.knobs.set("frag6_low_thresh", 2000)
    eng.knobs.set("frag6_high_thresh", 3000)
    for ident in range(4):                       # four first fragments of ~1.1 kB each
        eng.feed_datagram(T0 + ident, ipv6_fragments(whole(ident), 1024, ident=ident)[0],
                          PRE_ROUTING)
    stats = eng.defrag6.stats
    assert stats.evictions >= 2 and stats.held_bytes <= 3000
    assert stats.queues == 4 - stats.evictions
    # The oldest queues went first: ident 0 can no longer complete.
    rest = ipv6_fragments(whole(0), 1024, ident=0)[1:]
    assert [eng.feed_datagram(T0 + 9, p, PRE_ROUTING) for p in rest] == [None, None]


def test_an_overlap_discards_the_whole_datagram():
    datagram = whole()
    pieces = ipv6_fragments(datagram, 1024, ident=4)
    # A forged fragment covering bytes 1016..1039 overlaps the first (0..1023).
    header = bytearray(pieces[1][:40])
    forged_data = bytes(24)
    header[4:6] = (8 + len(forged_data)).to_bytes(2, "big")
    forged = bytes(header) + struct.pack("!BBHI", IPPROTO_UDP, 0, 1016 | 1, 4) + forged_data
    defrag = Defragmenter6()
    assert defrag.feed(pieces[0], T0) is None
    assert defrag.feed(forged, T0) is None
    assert defrag.stats.overlaps == 1 and defrag.stats.queues == 0
    # The fragments still to come open a new queue that never completes (RFC 5722).
    assert defrag.feed(pieces[1], T0) is None
    assert defrag.feed(pieces[2], T0) is None
    assert defrag.stats.reasm_oks == 0


def test_an_exact_duplicate_is_dropped_alone():
    datagram = whole()
    first, second, third = ipv6_fragments(datagram, 1024, ident=5)
    defrag = Defragmenter6()
    assert defrag.feed(first, T0) is None
    assert defrag.feed(first, T0) is None
    assert defrag.stats.duplicates == 1
    assert defrag.feed(second, T0) is None
    assert defrag.feed(third, T0) == datagram


def test_an_atomic_fragment_passes_without_its_fragment_header():
    datagram = whole(payload=b"small")
    [atomic] = ipv6_fragments(datagram, 1024, ident=6)
    assert atomic != datagram and atomic[6] == 44
    eng = make_engine()
    assert eng.defrag6.feed(atomic, T0) == datagram
    assert eng.feed_datagram(T0, atomic, PRE_ROUTING).state == CtState.NEW


def test_what_is_no_fragment_passes_untouched():
    defrag = Defragmenter6()
    for datagram in (whole(), build_ipv6(A, B, 59, bytes(8)), whole()[:60]):
        assert defrag.feed(datagram, T0) is datagram
    assert defrag.stats.reasm_reqds == 0


def test_an_unaligned_non_final_fragment_kills_its_queue_and_goes_on_as_it_is():
    datagram = whole()
    pieces = ipv6_fragments(datagram, 1024, ident=8)
    odd = bytearray(pieces[1][:-3])                         # 1021 bytes, MF still set
    odd[4:6] = (len(odd) - 40).to_bytes(2, "big")
    eng = make_engine()
    assert eng.feed_datagram(T0, pieces[0], PRE_ROUTING) is None
    result = eng.feed_datagram(T0, bytes(odd), PRE_ROUTING)
    # Conntrack sees a non-first fragment: no protocol found, INVALID.
    assert result.state == CtState.INVALID and eng.tracker.stats["invalid"] == 1
    assert eng.defrag6.stats.queues == 0 and eng.defrag6.passed_unreassembled == 1


def test_a_first_fragment_without_its_whole_tcp_header_goes_on_as_it_is():
    # 16 bytes (a multiple of 8) of a 20-byte TCP header: RFC 8200 4.5's incomplete first
    # fragment, which nf_ct_frag6_gather() lets through to conntrack.
    segment = build_tcp(A, B, 40000, 22, flags=SYN)
    header = bytearray(build_ipv6(A, B, 44, b""))
    header[4:6] = (8 + 16).to_bytes(2, "big")
    cut = bytes(header) + struct.pack("!BBHI", IPPROTO_TCP, 0, 1, 9) + segment[:16]
    eng = make_engine()
    assert eng.defrag6.feed(cut, T0) is cut
    assert eng.feed_datagram(T0, cut, PRE_ROUTING).state == CtState.INVALID
    assert eng.defrag6.stats.queues == 0
