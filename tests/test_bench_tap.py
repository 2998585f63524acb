"""bench/run's tap section: every traffic shape from both of bench/blast.py's senders, the
headline the worst shape as the packet sender offers it, the socket sender's figures kept
beside it.  The measuring (_bench_tap_shape: namespaces, the tap, 20 s a rate) is replaced
by fixed answers; what is checked is which figure becomes the headline."""
from __future__ import annotations

import argparse

from bench import main as bench_main
from bench.common import Figure

# Highest rate held, by sender and shape: the socket sender's worst shape is another one.
HELD = {"packet": {"1,024 flows": 260_000.0, "65,536 flows to 65,536 addresses": 205_000.0,
                   "65,536 flows from 64 source ports": 230_000.0},
        "socket": {"1,024 flows": 200_000.0, "65,536 flows to 65,536 addresses": 190_000.0,
                   "65,536 flows from 64 source ports": None}}


def run_section(monkeypatch) -> list[Figure]:
    asked = []

    def shape(shape: str, ports: int, addresses: int, sources: int, seconds: int,
              sender: str):
        asked.append((shape, sender))
        return HELD[sender][shape], [Figure(f"{shape} {sender}", HELD[sender][shape], None, "pps")]
    monkeypatch.setattr(bench_main, "_bench_tap_shape", shape)
    figures = bench_main.bench_tap(argparse.Namespace(quick=True))
    assert asked == [(s, sender) for s in bench_main.TAP_SHAPES for sender in ("packet", "socket")]
    return figures


def test_the_headline_is_the_worst_shape_offered_by_the_packet_sender(monkeypatch):
    headline = run_section(monkeypatch)[0]
    assert headline.ours == 205_000.0 and headline.reference == 200_000
    assert "65,536 flows to 65,536 addresses" in headline.name and "packet sender" in headline.name


def test_the_socket_senders_figures_stay_beside_the_headline(monkeypatch):
    figures = run_section(monkeypatch)
    assert [f.name for f in figures[1:]] == [f"{s} {sender}" for s in bench_main.TAP_SHAPES
                                            for sender in ("packet", "socket")]
    note = figures[0].note
    assert "1,024 flows: packet sender 260000, socket sender 200000 pps" in note
    assert "65,536 flows from 64 source ports: packet sender 230000, socket sender 0 pps" in note
