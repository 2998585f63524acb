"""The listing walk: each entry once, in insertion order, chunk by chunk (engine/render.py)."""
from __future__ import annotations

from engine import render
from engine.render import listing_chunks, render_listing, table_entries
from tests.enginehelp import T0, lines, make_engine, udp


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


def test_chunks_leave_out_entries_removed_or_expired_after_the_snapshot(monkeypatch):
    monkeypatch.setattr(render, "CHUNK_LINES", 2)
    eng = make_engine()
    for port in range(1000, 1006):
        udp(eng, T0, "10.0.0.1", "10.0.0.2", port, 53)
    tracker = eng.tracker
    chunks = listing_chunks(tracker, T0 + 1, modern=True)
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
