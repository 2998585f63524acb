"""IPv4 reassembly before conntrack (engine/defrag.py).

Spec: conntrack.md 8 -- fragments are held until the datagram is whole and are
invisible to conntrack until then (observed: "UDP fragment 1 (MF) -> nothing;
fragment 2 -> NEW; lone first fragment -> nothing"); ipfrag_high_thresh 4194304,
ipfrag_low_thresh 3145728, ipfrag_time 30 s.  Overlap/duplicate rules follow
Linux inet_frag_queue_insert() (RFC 5722 applied to IPv4).
"""
from __future__ import annotations

from pathlib import Path

from engine.build import build_ipv4, build_udp, checksum_valid
from engine.capture import datagrams, read_capture
from engine.defrag import Defragmenter
from engine.hooks import LOCAL_OUT, PRE_ROUTING
from engine.packet import IPPROTO_UDP, Packet
from engine.parse import parse_ipv4

DATA = Path(__file__).parent / "data"
A, B = "10.0.0.1", "10.0.0.2"


def udp_datagram(payload_size: int, ident: int = 0x4242, **ip) -> bytes:
    payload = bytes(i % 251 for i in range(payload_size))
    return build_ipv4(A, B, IPPROTO_UDP, build_udp(A, B, 5000, 6000, payload), ident=ident, **ip)


def fragment(datagram: bytes, pieces: list[tuple[int, int]], *, last_mf: bool = False,
             df: bool = False, tos: int | None = None) -> list[bytes]:
    """Fragments of datagram's payload, one per (offset, length) in bytes, with
    MF set on all but the one reaching the end (as a router would cut them)."""
    ident = int.from_bytes(datagram[4:6], "big")
    payload = datagram[20:]
    tos = datagram[1] if tos is None else tos
    out = []
    for offset, length in pieces:
        more = offset + length < len(payload) or last_mf
        out.append(build_ipv4(A, B, IPPROTO_UDP, payload[offset:offset + length], ident=ident,
                              mf=more, frag_offset=offset, df=df, tos=tos))
    return out


def feed_all(defrag: Defragmenter, fragments: list[bytes], now: float = 0.0,
             hook: int = PRE_ROUTING) -> list:
    return [defrag.feed(f, now, hook) for f in fragments]


def test_non_fragment_passes_through_unchanged():
    defrag = Defragmenter()
    datagram = udp_datagram(100)
    assert defrag.feed(datagram, 0.0) is datagram
    assert defrag.stats.reasm_reqds == 0


def test_in_order_fragments_reassemble_to_the_original_datagram():
    """Spec 8: the first fragment yields nothing, the last one the whole datagram."""
    original = udp_datagram(3000)
    pieces = fragment(original, [(0, 1480), (1480, 1480), (2960, 48)])
    results = feed_all(Defragmenter(), pieces)
    assert results[:2] == [None, None]
    assert results[2] == original                     # header rebuilt: same bytes, valid checksum
    assert checksum_valid(results[2][:20])


def test_out_of_order_fragments_reassemble():
    original = udp_datagram(3000)
    pieces = fragment(original, [(0, 1480), (1480, 1480), (2960, 48)])
    defrag = Defragmenter()
    assert feed_all(defrag, [pieces[2], pieces[0]]) == [None, None]
    assert defrag.feed(pieces[1], 0.5) == original
    assert (defrag.stats.reasm_reqds, defrag.stats.reasm_oks, defrag.stats.held_bytes) == (3, 1, 0)
    packet = parse_ipv4(original, PRE_ROUTING)
    assert isinstance(packet, Packet) and packet.l4_checksum_ok and packet.udp_len == 3008


def test_lone_first_fragment_is_held_and_expires_at_ipfrag_time():
    """Spec 8: a lone fragment creates nothing and is discarded when the timer expires."""
    defrag = Defragmenter(timeout=30.0)
    first, last = fragment(udp_datagram(100), [(0, 64), (64, 44)])
    assert defrag.feed(first, 100.0) is None
    assert defrag.expire(129.9) == 0 and defrag.stats.queues == 1
    assert defrag.expire(130.0) == 1
    assert (defrag.stats.timeouts, defrag.stats.reasm_fails, defrag.stats.held_bytes) == (1, 1, 0)
    assert defrag.feed(last, 131.0) is None            # its partner is gone: a new queue


def test_reassembly_timer_runs_from_the_first_fragment():
    """ip_frag_queue() never re-arms the timer: later fragments do not extend it."""
    defrag = Defragmenter(timeout=30.0)
    a, b, c = fragment(udp_datagram(200), [(0, 64), (64, 64), (128, 80)])
    defrag.feed(a, 0.0)
    defrag.feed(b, 29.0)
    assert defrag.feed(c, 30.0) is None                # the queue died at 30.0 first
    assert defrag.stats.timeouts == 1


def test_timeout_knob_applies_at_run_time():
    defrag = Defragmenter(timeout=30.0)
    defrag.feed(fragment(udp_datagram(100), [(0, 64)])[0], 0.0)
    defrag.timeout = 5.0
    assert defrag.expire(5.0) == 1


def test_overlapping_fragment_discards_the_whole_queue():
    """RFC 5722 as Linux applies it: overlap -> every fragment of the datagram is dropped."""
    original = udp_datagram(200)
    defrag = Defragmenter()
    first, second = fragment(original, [(0, 104), (96, 112)])   # 96..104 overlaps
    assert defrag.feed(first, 0.0) is None
    assert defrag.feed(second, 0.0) is None
    assert (defrag.stats.overlaps, defrag.stats.reasm_fails, defrag.stats.queues) == (1, 1, 0)
    # The correct remainder arriving later cannot complete the discarded datagram.
    assert defrag.feed(fragment(original, [(104, 104)])[0], 0.1) is None
    assert defrag.stats.held_bytes == 20 + 104


def test_fragment_overlapping_from_the_left_discards_the_queue():
    original = udp_datagram(200)
    defrag = Defragmenter()
    feed_all(defrag, fragment(original, [(96, 112)]))
    assert defrag.feed(fragment(original, [(0, 104)])[0], 0.0) is None
    assert defrag.stats.overlaps == 1 and defrag.stats.queues == 0


def test_exact_duplicate_is_ignored_and_queue_completes():
    original = udp_datagram(200)
    a, b = fragment(original, [(0, 104), (104, 104)])
    defrag = Defragmenter()
    assert feed_all(defrag, [a, a]) == [None, None]
    assert defrag.stats.duplicates == 1 and defrag.stats.overlaps == 0
    assert defrag.feed(b, 0.0) == original


def test_fragment_inside_a_contiguous_run_counts_as_duplicate():
    """inet_frag_queue_insert(): a fragment lying within one run of held data is a
    duplicate (dropped, queue kept), even if not byte-for-byte the same fragment."""
    original = udp_datagram(200)
    defrag = Defragmenter()
    feed_all(defrag, fragment(original, [(0, 64), (64, 64)]))          # one run 0..128
    assert defrag.feed(fragment(original, [(32, 64)])[0], 0.0) is None
    assert defrag.stats.duplicates == 1
    assert defrag.feed(fragment(original, [(128, 80)])[0], 0.0) == original


def test_fragment_spanning_two_separate_runs_is_an_overlap():
    """Out-of-order fragments start their own run: 0..64 and 128..192 are two runs,
    so 32..160 overlaps both and discards the queue."""
    original = udp_datagram(200)
    defrag = Defragmenter()
    feed_all(defrag, fragment(original, [(128, 80), (0, 64)]))
    defrag.feed(fragment(original, [(32, 64)])[0], 0.0)
    assert defrag.stats.overlaps == 1 and defrag.stats.queues == 0


def test_adjacent_runs_filed_out_of_order_stay_separate():
    """A fragment filed before the tail starts its own run even when it touches the
    next one (fragrun_create()), so 0..64 + 64..128 fed in reverse are two runs and a
    copy of 32..96 is an overlap, not a duplicate."""
    original = udp_datagram(200)
    defrag = Defragmenter()
    feed_all(defrag, fragment(original, [(64, 64), (0, 64)]))
    defrag.feed(fragment(original, [(32, 64)])[0], 0.0)
    assert (defrag.stats.overlaps, defrag.stats.duplicates, defrag.stats.queues) == (1, 0, 0)


def test_reassembled_datagram_over_65535_bytes_is_dropped():
    """ip_frag_reasm(): header + payload > 65535 -> 'Oversized IP packet', queue dropped."""
    defrag = Defragmenter()
    last = build_ipv4(A, B, IPPROTO_UDP, b"z" * 16, ident=9, frag_offset=65528)
    first = build_ipv4(A, B, IPPROTO_UDP, b"a" * 65504, ident=9, mf=True)
    middle = build_ipv4(A, B, IPPROTO_UDP, b"m" * 24, ident=9, mf=True, frag_offset=65504)
    assert feed_all(defrag, [last, first, middle]) == [None, None, None]
    assert (defrag.stats.oversized, defrag.stats.reasm_fails, defrag.stats.reasm_oks) == (1, 1, 0)
    assert defrag.stats.held_bytes == 0


def test_largest_possible_datagram_reassembles():
    original = udp_datagram(65535 - 28, ident=10)
    pieces = [(offset, min(8192, 65515 - offset)) for offset in range(0, 65515, 8192)]
    results = feed_all(Defragmenter(), fragment(original, pieces))
    assert results[-1] == original and len(original) == 65535


def test_memory_over_high_thresh_evicts_least_recently_fed_queues_to_low_thresh():
    """2.6 ip_evictor(): over ipfrag_high_thresh, drop oldest queues until <= low_thresh."""
    defrag = Defragmenter(high_thresh=3000, low_thresh=2000)
    datagrams_by_id = {ident: udp_datagram(1600, ident=ident) for ident in (1, 2, 3, 4)}
    halves = {ident: fragment(d, [(0, 800), (800, 808)]) for ident, d in datagrams_by_id.items()}
    defrag.feed(halves[1][0], 0.0)            # 820 bytes held each
    defrag.feed(halves[2][0], 1.0)
    defrag.feed(halves[3][0], 2.0)            # 2460
    assert defrag.stats.evictions == 0
    defrag.feed(halves[4][0], 3.0)            # 3280 > 3000 -> evict 1 and 2 -> 1640
    assert (defrag.stats.evictions, defrag.stats.held_bytes, defrag.stats.queues) == (2, 1640, 2)
    assert defrag.feed(halves[1][1], 4.0) is None                 # evicted: no completion
    assert defrag.feed(halves[3][1], 4.0) == datagrams_by_id[3]
    assert defrag.feed(halves[4][1], 4.0) == datagrams_by_id[4]


def test_eviction_order_is_least_recently_fed_not_oldest_created():
    defrag = Defragmenter(high_thresh=2000, low_thresh=1700)
    one = fragment(udp_datagram(2400, ident=1), [(0, 800), (800, 800), (1600, 808)])
    two = fragment(udp_datagram(1600, ident=2), [(0, 800), (800, 808)])
    defrag.feed(one[0], 0.0)
    defrag.feed(two[0], 1.0)
    defrag.feed(one[1], 2.0)                  # 2460 > 2000: queue 2 was fed least recently
    assert defrag.stats.evictions == 1 and defrag.stats.held_bytes == 1640
    assert defrag.feed(one[2], 3.0) == udp_datagram(2400, ident=1)


def test_thresholds_are_settable_at_run_time():
    defrag = Defragmenter()
    defrag.feed(fragment(udp_datagram(1600), [(0, 800)])[0], 0.0)
    defrag.high_thresh, defrag.low_thresh = 1000, 500
    defrag.feed(fragment(udp_datagram(1600, ident=7), [(0, 800)])[0], 0.0)
    assert defrag.stats.evictions == 2 and defrag.stats.held_bytes == 0


def test_prerouting_and_output_fragments_reassemble_separately():
    """The kernel keys queues by defrag user too: conntrack-in and conntrack-out differ."""
    original = udp_datagram(200)
    a, b = fragment(original, [(0, 104), (104, 104)])
    defrag = Defragmenter()
    assert defrag.feed(a, 0.0, PRE_ROUTING) is None
    assert defrag.feed(b, 0.0, LOCAL_OUT) is None
    assert defrag.stats.queues == 2
    assert defrag.feed(b, 0.0, PRE_ROUTING) == original


def test_different_ident_or_address_are_different_datagrams():
    original = udp_datagram(200, ident=1)
    a, _ = fragment(original, [(0, 104), (104, 104)])
    _, other_b = fragment(udp_datagram(200, ident=2), [(0, 104), (104, 104)])
    defrag = Defragmenter()
    assert feed_all(defrag, [a, other_b]) == [None, None]
    assert defrag.stats.queues == 2


def test_non_final_fragment_is_cut_to_a_multiple_of_8_bytes():
    """ip_frag_queue(): 'end &= ~7' for fragments with MF; the cut bytes are lost."""
    original = udp_datagram(100)
    payload = original[20:]
    first = build_ipv4(A, B, IPPROTO_UDP, payload[:13], ident=0x4242, mf=True)
    rest = build_ipv4(A, B, IPPROTO_UDP, payload[8:], ident=0x4242, frag_offset=8)
    defrag = Defragmenter()
    assert defrag.feed(first, 0.0) is None
    assert defrag.stats.held_bytes == 28
    assert defrag.feed(rest, 0.0) == original


def test_inconsistent_final_fragments_discard_the_queue():
    original = udp_datagram(200)
    defrag = Defragmenter()
    defrag.feed(fragment(original, [(104, 104)])[0], 0.0)             # ends at 208
    short_last = build_ipv4(A, B, IPPROTO_UDP, b"x" * 8, ident=0x4242, frag_offset=104)
    assert defrag.feed(short_last, 0.0) is None                       # a second, different end
    assert defrag.stats.reasm_fails == 1 and defrag.stats.queues == 0
    defrag.feed(fragment(original, [(104, 104)])[0], 0.0)
    beyond = build_ipv4(A, B, IPPROTO_UDP, b"x" * 16, ident=0x4242, mf=True, frag_offset=208)
    assert defrag.feed(beyond, 0.0) is None                           # data past the end
    assert defrag.stats.reasm_fails == 2


def test_zero_length_fragment_discards_the_queue():
    defrag = Defragmenter()
    defrag.feed(fragment(udp_datagram(200), [(0, 104)])[0], 0.0)
    empty = build_ipv4(A, B, IPPROTO_UDP, b"abc", ident=0x4242, mf=True, frag_offset=104)
    assert defrag.feed(empty, 0.0) is None                            # 3 bytes cut to 0
    assert defrag.stats.reasm_fails == 1 and defrag.stats.queues == 0


def test_reassembled_header_keeps_first_fragment_options_and_sets_df_like_linux():
    """ip_frag_reasm(): header of the offset-0 fragment; DF set only if the largest
    fragment carried DF; total length fixed; offset 0, MF clear."""
    payload = build_udp(A, B, 1, 2, b"p" * 92)
    first = build_ipv4(A, B, IPPROTO_UDP, payload[:56], ident=3, mf=True, df=True,
                       options=b"\x01\x01\x01\x00")
    last = build_ipv4(A, B, IPPROTO_UDP, payload[56:], ident=3, frag_offset=56, df=True)
    whole = feed_all(Defragmenter(), [last, first])[1]
    assert whole == build_ipv4(A, B, IPPROTO_UDP, payload, ident=3, df=True,
                               options=b"\x01\x01\x01\x00")
    mixed_last = build_ipv4(A, B, IPPROTO_UDP, payload[56:], ident=3, frag_offset=56)
    small_df_first = build_ipv4(A, B, IPPROTO_UDP, payload[:8], ident=3, mf=True, df=True)
    rest = build_ipv4(A, B, IPPROTO_UDP, payload[8:56], ident=3, mf=True, frag_offset=8)
    whole = feed_all(Defragmenter(), [small_df_first, rest, mixed_last])[2]
    assert int.from_bytes(whole[6:8], "big") == 0         # largest fragment had no DF


def test_ecn_congestion_mark_on_one_fragment_marks_the_datagram():
    """RFC 3168 / ip_frag_ecn_table: ECT + CE -> CE; Not-ECT mixed with ECT -> dropped."""
    original = udp_datagram(200, tos=0x02)                  # ECT(0)
    a, b = fragment(original, [(0, 104), (104, 104)])
    b_ce = fragment(original, [(104, 104)], tos=0x03)[0]
    whole = feed_all(Defragmenter(), [a, b_ce])[1]
    assert whole[1] == 0x03 and checksum_valid(whole[:20])
    not_ect = fragment(original, [(104, 104)], tos=0x00)[0]
    defrag = Defragmenter()
    assert feed_all(defrag, [a, not_ect]) == [None, None]
    assert defrag.stats.reasm_fails == 1 and defrag.stats.reasm_oks == 0


def test_fragments_from_a_real_capture_reassemble():
    """veth capture: 'UDP, length 3000' sent as three fragments each way at MTU 1500."""
    defrag = Defragmenter()
    whole = []
    with open(DATA / "veth_ethernet_usec.pcap", "rb") as f:
        for ts, datagram, hook in datagrams(read_capture(f), PRE_ROUTING):
            result = defrag.feed(datagram, ts, hook)
            if result is not None and result is not datagram:
                whole.append(result)
    assert [len(w) for w in whole] == [3028, 3028]
    assert (defrag.stats.reasm_reqds, defrag.stats.reasm_oks, defrag.stats.queues) == (6, 2, 0)
    packet = parse_ipv4(whole[0], PRE_ROUTING)
    assert (packet.sport, packet.dport, packet.udp_len, packet.l4_checksum_ok) == (40002, 7777, 3008, True)
