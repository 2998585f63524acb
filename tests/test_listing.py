"""The listing walk: each entry once, in insertion order, chunk by chunk (engine/render.py)."""
from __future__ import annotations

import math

import pytest

from engine import render
from engine.build import build_ipv4, build_tcp_datagram
from engine.packet import ACK, LOCAL_OUT, PSH, SYN
from engine.render import listing_chunks, render_listing, table_entries
from tests.enginehelp import T0, icmp, lines, make_engine, udp


def ports_listed(text_lines: list) -> list:
    return [int(line.split("sport=")[1].split()[0]) for line in text_lines]


def test_a_flow_to_itself_has_one_key_and_is_still_listed_once_in_place():
    eng = make_engine()
    udp(eng, T0, "10.0.0.1", "10.0.0.2", 1000, 53)
    udp(eng, T0, "127.0.0.1", "127.0.0.1", 7777, 7777)   # orig key == reply key
    udp(eng, T0, "127.0.0.1", "127.0.0.1", 8888, 8888)
    udp(eng, T0, "10.0.0.1", "10.0.0.2", 1001, 53)
    listed = lines(eng, T0 + 1)
    assert ports_listed(listed) == [1000, 7777, 8888, 1001]
    values = list(eng.tracker.conns.table(2, 17).values())
    assert len(values) == 6                                # two flows to themselves: one key
    assert [e for chunk in table_entries(values) for e in chunk] == list(dict.fromkeys(values))


def test_the_pairs_shortcut_and_its_fallback_list_each_entry_once_in_place(monkeypatch):
    monkeypatch.setattr(render, "CHUNK_LINES", 2)
    a, b, c, d, s, t = (object() for _ in range(6))
    cases = [[a, a, b, b, c, c], [a, a, b, b, s, c, c], [s, t, a, a, b, b], [a, a, b, b, c],
             [a, b, a, b, c, c], [a, a, b, s, b, c, c, d, d], []]
    for values in cases:
        chunks = list(table_entries(values))
        assert all(0 < len(chunk) <= 2 for chunk in chunks), values
        assert [e for chunk in chunks for e in chunk] == list(dict.fromkeys(values)), values


def _chunked_listing(monkeypatch, first_lines: int, chunk_lines: int, ports: range):
    """A table of UDP flows to the given ports, and its modern listing in small chunks."""
    monkeypatch.setattr(render, "FIRST_CHUNK_LINES", first_lines)
    monkeypatch.setattr(render, "CHUNK_LINES", chunk_lines)
    eng = make_engine()
    for port in ports:
        udp(eng, T0, "10.0.0.1", "10.0.0.2", port, 53)
    return eng, listing_chunks(eng.tracker, T0 + 1, modern=True)


def test_chunks_leave_out_entries_removed_or_expired_after_the_snapshot(monkeypatch):
    eng, chunks = _chunked_listing(monkeypatch, 2, 2, range(1000, 1006))
    tracker = eng.tracker
    first = next(chunks).decode()
    assert ports_listed(first.splitlines()) == [1000, 1001]
    # Between two chunks the engine goes on: 1003 is removed, 1005 expires before `now`.
    for entry in list(tracker.entries()):
        port = entry.tuple()[3]
        if port == 1003:
            tracker.remove(entry)
        if port == 1005:
            entry.expires = T0 + 0.5
    rest = b"".join(chunks).decode()
    assert ports_listed(rest.splitlines()) == [1002, 1004]


def test_the_chunked_walk_equals_the_line_by_line_rendering_in_both_formats():
    eng = make_engine()
    for port in range(2000, 2100):
        udp(eng, T0, "192.168.1.10", "10.1.2.3", port, 53)
        if port % 3 == 0:
            udp(eng, T0 + 0.5, "10.1.2.3", "192.168.1.10", 53, port)
    for modern in (True, False):
        by_line = "".join(render.listing_line(eng.tracker, entry, T0 + 2, modern)
                          for entry in eng.tracker.entries())
        assert render_listing(eng.tracker, T0 + 2, modern).decode() == by_line


def _gateway_table(eng, conversations: int, knob_changes: dict) -> float:
    """A gateway's mix, fed as real datagrams: ~400 clients x 50 servers, TCP through the
    handshake and data or left at SYN_SENT, UDP answered or not, ICMP echo answered or not,
    GRE and a protocol without a tracker; `knob_changes` {conversation: {knob: value}}
    switches accounting/timestamps on and off on the way.  Returns the time of the last."""
    t = T0
    for n in range(conversations):
        for knob, value in knob_changes.get(n, {}).items():
            eng.knobs.set(knob, value)
        client = f"10.1.{n % 400 // 200}.{n % 200 + 1}"
        server = f"192.168.{1 + n % 2}.{(n * 7) % 50 + 10}"
        cport, kind = 1024 + n // 400, n % 8
        t = T0 + n * 0.001
        if kind in (0, 1):
            seq, sseq = 1000 * n, 5000 * n + 7
            syn = build_tcp_datagram(client, server, cport, 443, seq=seq, flags=SYN, window=64240)
            eng.feed_datagram(t, syn, LOCAL_OUT)
            if kind == 0:
                for src, dst, sp, dp, s, a, flags in (
                        (server, client, 443, cport, sseq, seq + 1, SYN | ACK),
                        (client, server, cport, 443, seq + 1, sseq + 1, ACK),
                        (client, server, cport, 443, seq + 1, sseq + 1, PSH | ACK)):
                    datagram = build_tcp_datagram(src, dst, sp, dp, seq=s, ack=a, flags=flags,
                                                  window=64240, payload=b"G" * (flags & PSH))
                    eng.feed_datagram(t, datagram, LOCAL_OUT)
        elif kind in (2, 3):
            udp(eng, t, client, server, cport, 53)
            if kind == 2:
                udp(eng, t, server, client, 53, cport)
        elif kind in (4, 5):
            icmp(eng, t, client, server, 8, ident=n, seq=1)
            if kind == 4:
                icmp(eng, t, server, client, 0, ident=n, seq=1)
        elif kind == 6:
            eng.feed_datagram(t, build_ipv4(client, server, 47, b"\x00\x00\x08\x00" + b"g" * 20),
                              LOCAL_OUT)
        else:
            eng.feed_datagram(t, build_ipv4(client, server, 253, b"s" * 28), LOCAL_OUT)
    return t


@pytest.mark.parametrize("changes", [
    {},                                                                      # all plain
    {0: {"acct": 1, "timestamp": 1}},                                        # all with extras
    {700: {"acct": 1}, 1500: {"timestamp": 1}, 2300: {"acct": 0, "timestamp": 0}},  # mixed
], ids=["plain", "accounting+timestamps", "mixed"])
def test_a_gateway_table_lists_byte_for_byte_as_the_line_by_line_rendering(changes):
    """The chunked fast paths (a format per flags, address texts made once per listing,
    TCP/UDP/ICMP in place) against listing_line() per entry, on a table with many distinct
    addresses and every protocol, in both formats."""
    eng = make_engine()
    last = _gateway_table(eng, 3000, changes)
    now = last + 1.5
    tracker = eng.tracker
    assert len(tracker) > 2000              # (GRE and generic entries: one per address pair)
    assert len({entry.orig[:4] for entry in tracker.entries()}) >= 400     # many addresses
    assert {tracker.l4_name(entry.proto) for entry in tracker.entries()} >= {
        "tcp", "udp", "icmp", "gre", "unknown"}
    for modern in (True, False):
        by_line = "".join(render.listing_line(tracker, entry, now, modern)
                          for entry in tracker.entries())
        assert render_listing(tracker, now, modern).decode() == by_line
    if changes:
        assert "packets=" in by_line or "delta-time=" in render_listing(tracker, now, True).decode()


def test_the_rest_of_a_table_is_copied_after_its_first_chunk_without_listing_anything_twice(
        monkeypatch):
    """The first chunk comes from the front of the live dict (no copy of the whole table
    before the first bytes); the copy the rest walks, taken at the second chunk, skips the
    first chunk's entries even when some of them, and others, left the table in between."""
    eng, chunks = _chunked_listing(monkeypatch, 4, 8, range(1000, 1020))
    tracker = eng.tracker
    assert ports_listed(next(chunks).decode().splitlines()) == [1000, 1001, 1002, 1003]
    for entry in list(tracker.entries()):
        if entry.tuple()[3] in (1001, 1003, 1004, 1010):
            tracker.remove(entry)
    udp(eng, T0, "10.0.0.1", "10.0.0.2", 1001, 53)       # back, as a new entry at the end
    udp(eng, T0, "10.0.0.1", "10.0.0.2", 1020, 53)
    rest = ports_listed(b"".join(chunks).decode().splitlines())
    assert rest == [p for p in range(1005, 1020) if p != 1010] + [1001, 1020]


# 2**31 - 20.3: now + k for k >= 21 crosses a power of two, where the float step doubles
# and now + k is rounded, so int((now + k) - now) is k - 1 there.
@pytest.mark.parametrize("now", [T0 + 0.3, 2.0 ** 31 - 20.3], ids=["T0", "binade"])
def test_seconds_and_addresses_list_as_listing_line_around_second_boundaries(now):
    """The fast path's seconds (spans of expiry times that list as one value, kept per
    run) and address texts (made from a prefix's text and an octet's) against
    listing_line(): runs of expiries a float step either side of whole seconds, and
    a new client address per line over several prefixes and every last octet."""
    eng = make_engine()
    for n in range(1200):
        udp(eng, T0, f"10.{n % 3}.{n // 256}.{n % 256}", "192.168.0.1", 1024 + n, 53)
    steps = (-2, -1, 0, 1, 2)        # float steps from now + k
    for i, entry in enumerate(eng.tracker.entries()):
        k = 5 + i // 50 if i < 1000 else 5 + i % 7      # runs, then scattered values
        expires = now + k
        for _ in range(abs(steps[i % 5])):
            expires = math.nextafter(expires, math.inf if steps[i % 5] > 0 else -math.inf)
        entry.expires = expires
    seconds = {render.seconds_left(entry, now) for entry in eng.tracker.entries()}
    assert len(seconds) > 20                  # both sides of many boundaries are listed
    for modern in (True, False):
        by_line = "".join(render.listing_line(eng.tracker, entry, now, modern)
                          for entry in eng.tracker.entries())
        assert render_listing(eng.tracker, now, modern).decode() == by_line
