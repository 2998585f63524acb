"""The fast path (engine/fastpath.py) against the general path: the same capture replayed
with it and without it must leave the same engine, bit for bit, and give every frame the
same verdict.

"The same engine": every entry with all its fields (keys, status, expiry, creation time,
the packed TCP state, counters, mark, timer filing), each table's key order (the listings
walk it), the hash chains (early drop picks victims from them), the timer wheel's filings,
the stat counters and the listings.  The captures: every kernel scenario stored under
tests/data/ (the kernel's own answer for each is checked by tests/test_differential.py and
tests/test_wire_differential.py, so the general path is the kernel's), and seconds of the
synthetic mix the benchmark replays, under knob settings that steer the fast path's
choices (accounting, timestamps, a full table, liberal windows, retransmission limits).
Each comparison also requires that the fast path took frames: a comparison it sat out
could not fail.
"""
from __future__ import annotations

from itertools import takewhile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

import kernelhelp
from engine import fastpath
from engine.build import (build_ethernet, build_icmp_datagram, build_ipv4, build_tcp_datagram,
                          build_udp_datagram, tcp_options)
from engine.capture import PcapWriter, read_capture
from engine.core import Engine
from engine.hooks import LOCAL_OUT, PRE_ROUTING
from engine.packet import ACK, FIN, IPPROTO_GRE, PSH, RST, SYN, URG
from engine.replay import ReplayResult, replay
from enginehelp import T0, make_engine
from procfs_ct.sources.synthetic import SyntheticTraffic

DATA = Path(__file__).resolve().parent / "data"
SCENARIOS = sorted(str(p.parent.relative_to(DATA)) for p in DATA.glob("*/*/snapshot.json")
                   if p.parent.parent.name in ("kernel", "wire", "kernel_helpers"))


class CountingFastPath:
    """Engine.fast_path() wrapped: counts the frames its track() answered."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.taken = 0
        made = Engine.fast_path

        def fast_path(engine: Engine):
            track = made(engine)
            if track is None:
                return None

            def counting(now: float, linktype: int, frame: bytes):
                verdict = track(now, linktype, frame)
                if verdict is not None:
                    self.taken += 1
                return verdict
            return counting
        monkeypatch.setattr(Engine, "fast_path", fast_path)


def engine_state(result: ReplayResult) -> dict:
    """Everything the two paths must agree on, as plain values."""
    tracker = result.engine.tracker
    conns = tracker.conns

    def entry_fields(entry) -> tuple:
        l4 = entry.l4
        return (type(entry).__name__, entry.orig, entry.reply, entry.status, entry.expires,
                entry.created, bytes(l4) if isinstance(l4, bytearray) else l4,
                entry.counters, entry.mark, entry.ext is None, entry.timer_slot)

    tables = {table_id: [(key, entry.orig) for key, entry in table.items()]
              for table_id, table in conns.tables().items()}
    chains = {bucket: [entry.orig for entry in conns.chain(bucket)]
              for bucket in range(conns.buckets) if conns._chains[bucket] is not None}
    timers = tracker.timers
    filings = {second: [entry.orig for entry in bucket]
               for second, (_, bucket) in timers._buckets.items()}
    return {
        "entries": [entry_fields(entry) for entry in tracker.entries()],
        "tables": tables,
        "chains": chains,
        "timer buckets": filings,
        "timer seconds": sorted(timers._seconds),
        "timer near": [(when, entry.orig) for when, _, entry in sorted(timers._near)],
        "next due": timers.next_due,
        "stats": dict(tracker.stats),
        "verdicts": list(result.verdicts),
        "dropped": list(result.dropped),
        "listing": result.text("nf_conntrack"),
        "stat file": result.text("stat"),
        "at": result.at,
    }


def assert_same(general: dict, fast: dict) -> None:
    for part in general:
        if part == "verdicts":
            for index, (want, got) in enumerate(zip(general[part], fast[part])):
                assert got == want, f"frame {index}: {got} with the fast path, {want} without"
        assert fast[part] == general[part], f"{part} differ"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_kernel_scenarios_same_with_and_without_fast_path(scenario):
    general = engine_state(kernelhelp.replay_scenario(DATA / scenario, fast_path=False))
    fast = engine_state(kernelhelp.replay_scenario(DATA / scenario))
    assert_same(general, fast)


def test_fast_path_serves_the_kernel_scenarios(monkeypatch):
    """The comparisons above are not vacuous: the fast path answers frames in the TCP,
    UDP, ICMP and GRE scenarios of kernel/ (an Ethernet capture on lo each; the wire/
    scenarios are cooked captures of received traffic, which it leaves alone)."""
    counting = CountingFastPath(monkeypatch)
    served = {}
    for scenario in SCENARIOS:
        before = counting.taken
        kernelhelp.replay_scenario(DATA / scenario)
        served[scenario] = counting.taken - before
    for family in ("kernel/tcp_", "kernel/udp_", "kernel/icmp_", "kernel/gre_"):
        assert any(taken for name, taken in served.items() if name.startswith(family)), family
    assert sum(served.values()) >= 300, served


def synthetic_capture(directory: Path, seconds: float, seed: int = 3) -> str:
    """Seconds of the synthetic mix (what `procfs-ct generate` and the benchmark use) as
    a pcap of Ethernet frames."""
    path = directory / f"mix-{seed}.pcap"
    frames = takewhile(lambda frame: frame[0] < T0 + seconds,
                       SyntheticTraffic(seed=seed, start=T0).frames())
    with open(path, "wb") as fileobj:
        writer = PcapWriter(fileobj)
        for ts, frame in frames:
            writer.write(ts, frame)
    return str(path)


# Knob settings that change what the fast path must reproduce or must leave alone.
KNOB_SETTINGS: List[Tuple[str, Dict[str, int], Optional[int]]] = [
    ("defaults", {}, None),
    ("accounting and timestamps", {"acct": 1, "timestamp": 1}, None),
    ("a full table: early drops", {}, 300),
    ("liberal windows", {"tcp_be_liberal": 1}, None),
    ("retransmission limit 0", {"tcp_max_retrans": 0}, None),
    ("short timeouts: expiry mid-capture", {"udp_timeout": 1, "udp_timeout_stream": 2,
                                            "tcp_timeout_established": 2, "icmp_timeout": 1,
                                            "gre_timeout": 1, "tcp_timeout_syn_sent": 1},
     None),
    ("timeouts above max_retrans", {"tcp_timeout_max_retrans": 5,
                                    "tcp_timeout_unacknowledged": 7}, None),
]


@pytest.mark.parametrize("name, knobs, max_entries", KNOB_SETTINGS,
                         ids=[setting[0] for setting in KNOB_SETTINGS])
def test_synthetic_mix_same_with_and_without_fast_path(name, knobs, max_entries, tmp_path,
                                                       monkeypatch):
    capture = synthetic_capture(tmp_path, 4)
    options = dict(knobs_overrides=knobs, max_entries=max_entries, ncpu=2,
                   ram_bytes=24 << 30)
    general = engine_state(replay(capture, fast_path=False, **options))
    counting = CountingFastPath(monkeypatch)
    fast = engine_state(replay(capture, **options))
    assert_same(general, fast)
    # (Thousands of frames each time; fewer than with the defaults when the table is full.)
    assert counting.taken >= 1000, (counting.taken, len(fast["verdicts"]))


def test_fast_path_only_where_it_applies():
    """Engine.fast_path() declines the engines whose packets it could not answer alike."""
    assert make_engine("linux").fast_path() is not None
    assert make_engine("tutorial").fast_path() is None                  # ip_conntrack
    assert make_engine("linux", fast_extraction=False).fast_path() is None
    assert make_engine("linux", default_hook=PRE_ROUTING).fast_path() is None
    listened = make_engine("linux")
    listened.listen(LOCAL_OUT, lambda hook, pkt, result, now: 1)
    assert listened.fast_path() is None


def test_declined_frame_changes_nothing(tmp_path):
    """A frame the fast path does not take leaves the engine as it was (the general path
    then starts from scratch): here every frame of the mix that it declines."""
    capture = synthetic_capture(tmp_path, 0.3, seed=5)
    engine = make_engine("linux")
    track = engine.fast_path()
    declined = 0
    with open(capture, "rb") as fileobj:
        for ts, linktype, frame in read_capture(fileobj):
            before = repr(engine_state_of(engine))
            if track(ts, linktype, frame) is None:
                declined += 1
                assert repr(engine_state_of(engine)) == before
                engine.feed_frame(ts, linktype, frame)
    assert declined > 100


def engine_state_of(engine: Engine) -> tuple:
    tracker = engine.tracker
    return (dict(tracker.stats), len(tracker),
            [(e.orig, e.status, e.expires, e.timer_slot, bytes(e.l4)
              if isinstance(e.l4, bytearray) else e.l4, e.counters)
             for e in tracker.entries()], tracker.timers.next_due)


def edge_frames() -> List[Tuple[float, bytes]]:
    """Flows built byte by byte around the fast path's edges: SYNs with a window of 0,
    with payload, with and without options; identical ACKs (retransmissions) and a zero
    window; SACK blocks and windows it must leave to the general path; ICMP queries of
    more than one type; PPTP's GRE beside plain GRE; UDP replies before and after 2 s."""
    c, s = "10.1.0.1", "10.1.0.2"
    stamps = tcp_options(timestamps=(1, 2))
    frames: List[Tuple[float, bytes]] = []

    def tcp(t, src, dst, sport, dport, **kw):
        frames.append((T0 + t, build_ethernet(build_tcp_datagram(src, dst, sport, dport, **kw))))

    # A connection opened by a SYN with window 0 and every option, then data both ways.
    syn_options = tcp_options(mss=1460, wscale=7, sack_perm=True, timestamps=(1, 0))
    tcp(0.0, c, s, 40000, 80, seq=1000, flags=SYN, window=0, options=syn_options)
    tcp(0.1, s, c, 80, 40000, seq=5000, ack=1001, flags=SYN | ACK, window=512,
        options=tcp_options(mss=1460, wscale=2, sack_perm=True, timestamps=(9, 1)))
    tcp(0.2, c, s, 40000, 80, seq=1001, ack=5001, window=300, options=stamps)
    tcp(0.3, c, s, 40000, 80, seq=1001, ack=5001, flags=PSH | ACK, window=300,
        options=stamps, payload=b"GET / HTTP/1.0\r\n\r\n")
    for t in (0.4, 0.5, 0.6, 0.7, 0.8):                         # the same ACK, retransmitted
        tcp(t, s, c, 80, 40000, seq=5001, ack=1019, window=500, options=stamps)
    tcp(0.9, s, c, 80, 40000, seq=5001, ack=1019, window=0, options=stamps)     # zero window
    tcp(1.0, s, c, 80, 40000, seq=5001, ack=1019, window=500,
        options=tcp_options(timestamps=(3, 4), sack=((900, 1000),)))            # a SACK block
    tcp(1.1, c, s, 40000, 80, seq=900_000_000, ack=5001, window=300)            # far outside
    tcp(1.2, c, s, 40000, 80, seq=1019, ack=5001, flags=PSH | ACK | URG, window=300,
        payload=b"x")                                            # flags it does not take
    tcp(1.3, c, s, 40000, 80, seq=1019, ack=5001, flags=FIN | ACK, window=300)
    # SYNs without options, one carrying data, one with window 0; an ACK for none.
    tcp(2.0, c, s, 40001, 81, seq=7, flags=SYN, window=0, payload=b"data on a SYN")
    tcp(2.1, c, s, 40002, 82, seq=70, flags=SYN, window=1024)
    tcp(2.2, c, s, 40002, 82, seq=70, flags=SYN, window=1024)                  # again
    tcp(2.3, c, s, 40003, 83, seq=1, ack=1, window=1024)
    # ICMP: echo, timestamp, a reply nobody asked for.
    for t, src, dst, kind in ((3.0, c, s, 8), (3.1, s, c, 0), (3.2, c, s, 13), (3.3, s, c, 14),
                              (3.4, s, c, 0), (3.5, c, s, 8)):
        frames.append((T0 + t, build_ethernet(build_icmp_datagram(src, dst, kind, ident=77))))
    # GRE: plain (keys 0) both ways, then PPTP (version 1, PPP, call id 9).
    plain = b"\x00\x00\x08\x00" + bytes(20)
    pptp = b"\x30\x01\x88\x0b\x00\x04\x00\x09" + bytes(4)
    for t, src, dst, body in ((4.0, c, s, plain), (4.1, s, c, plain), (4.2, c, s, plain),
                              (4.3, c, s, pptp), (4.4, s, c, pptp)):
        frames.append((T0 + t, build_ethernet(build_ipv4(src, dst, IPPROTO_GRE, body))))
    # UDP: a reply within 2 s, then traffic after it (the stream timeout, ASSURED).
    for t, src, dst, sport, dport in ((5.0, c, s, 5000, 53), (5.5, s, c, 53, 5000),
                                      (6.0, c, s, 5000, 53), (8.0, c, s, 5000, 53),
                                      (8.1, s, c, 53, 5000)):
        frames.append((T0 + t, build_ethernet(build_udp_datagram(src, dst, sport, dport,
                                                                 b"q"))))
    return frames


@pytest.mark.parametrize("name, knobs, max_entries", KNOB_SETTINGS,
                         ids=[setting[0] for setting in KNOB_SETTINGS])
def test_edge_flows_same_with_and_without_fast_path(name, knobs, max_entries, tmp_path,
                                                    monkeypatch):
    path = tmp_path / "edges.pcap"
    with open(path, "wb") as fileobj:
        writer = PcapWriter(fileobj)
        for ts, frame in edge_frames():
            writer.write(ts, frame)
    options = dict(knobs_overrides=knobs, max_entries=max_entries and 4, ncpu=2,
                   ram_bytes=24 << 30)
    general = engine_state(replay(str(path), fast_path=False, **options))
    counting = CountingFastPath(monkeypatch)
    fast = engine_state(replay(str(path), **options))
    assert_same(general, fast)
    assert counting.taken >= 8, counting.taken


class CountingAnswers:
    """A fast path case's maker in engine/fastpath.py (make_known_segment,
    make_icmp_error) wrapped: counts the frames the case it makes answered."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, maker: str) -> None:
        self.taken = 0
        made = getattr(fastpath, maker)

        def make(tracker):
            case = made(tracker)

            def counting(*args):
                verdict = case(*args)
                if verdict is not None:
                    self.taken += 1
                return verdict
            return counting
        monkeypatch.setattr(fastpath, maker, make)


def answered_alike(frames: List[Tuple[float, bytes]], directory: Path, knobs: Dict[str, int],
                   max_entries: Optional[int], monkeypatch: pytest.MonkeyPatch,
                   maker: str) -> int:
    """Replay the frames with and without the fast path, require the same engine; how
    many frames the case `maker` makes answered."""
    path = directory / "frames.pcap"
    with open(path, "wb") as fileobj:
        writer = PcapWriter(fileobj)
        for ts, frame in frames:
            writer.write(ts, frame)
    options = dict(knobs_overrides=knobs, max_entries=max_entries and 4, ncpu=2,
                   ram_bytes=24 << 30)
    general = engine_state(replay(str(path), fast_path=False, **options))
    counting = CountingAnswers(monkeypatch, maker)
    assert_same(general, engine_state(replay(str(path), **options)))
    return counting.taken


def closing_edge_frames() -> List[Tuple[float, bytes]]:
    """TCP flows around known_segment()'s cases: a simultaneous open, a SYN/ACK with a
    wrong ack then the right one, FINs both ways with a retransmitted FIN and a FIN
    carrying data, the ACKs of the closing states, a RST to a SYN_SENT, a RST with a wrong
    seq and one out of window answering a FIN (the timer shortened), a SYN on an
    ESTABLISHED entry (ignored) and on a TIME_WAIT one (reopened: declined), a flags byte
    TcpTracker.error() refuses, a SACK block."""
    c, s = "10.2.0.1", "10.2.0.2"
    frames: List[Tuple[float, bytes]] = []

    def tcp(t, src, dst, sport, dport, **kw):
        frames.append((T0 + t, build_ethernet(build_tcp_datagram(src, dst, sport, dport, **kw))))

    def to_s(t, port, **kw):
        tcp(t, c, s, port, 80, **kw)

    def to_c(t, port, **kw):
        tcp(t, s, c, 80, port, **kw)

    # Simultaneous open: SYNs cross (SYN_SENT2), SYN/ACKs cross, then data.
    to_s(0.0, 41000, seq=100, flags=SYN, window=1000)
    to_c(0.1, 41000, seq=900, flags=SYN, window=1000)
    to_s(0.2, 41000, seq=100, ack=901, flags=SYN | ACK, window=1000)
    to_c(0.3, 41000, seq=900, ack=101, flags=SYN | ACK, window=1000)
    to_s(0.4, 41000, seq=101, ack=901, window=1000)
    to_c(0.5, 41000, seq=901, ack=101, window=1000)
    to_s(0.6, 41000, seq=101, ack=901, flags=PSH | ACK, window=1000, payload=b"hi")
    # A SYN/ACK acking the wrong sequence number, then the right one, and the rest of the
    # handshake; a SYN again on the ESTABLISHED entry (IG), then a SACK block.
    to_s(1.0, 41001, seq=5000, flags=SYN, window=2000,
         options=tcp_options(mss=1460, sack_perm=True))
    to_c(1.1, 41001, seq=8000, ack=77777, flags=SYN | ACK, window=2000)
    to_c(1.2, 41001, seq=8000, ack=5001, flags=SYN | ACK, window=2000,
         options=tcp_options(mss=1460, sack_perm=True))
    to_c(1.25, 41001, seq=8000, ack=5001, flags=SYN | ACK, window=2000)     # retransmitted
    to_s(1.3, 41001, seq=5001, ack=8001, window=2000)
    to_s(1.4, 41001, seq=5001, ack=8001, flags=PSH | ACK, window=2000, payload=b"x" * 10)
    to_s(1.5, 41001, seq=4000, flags=SYN, window=2000)                      # ignored SYN
    to_c(1.6, 41001, seq=8001, ack=5008, window=2000,
         options=tcp_options(sack=((5009, 5011),)))
    to_c(1.65, 41001, seq=8001, ack=5011, flags=SYN | FIN, window=2000)     # invalid flags
    # FINs both ways: the client's carries data and is sent twice; the closing ACKs.
    to_s(2.0, 41001, seq=5011, ack=8001, flags=FIN | PSH | ACK, window=2000, payload=b"bye")
    to_s(2.1, 41001, seq=5011, ack=8001, flags=FIN | PSH | ACK, window=2000, payload=b"bye")
    to_c(2.2, 41001, seq=8001, ack=5015, window=2000)                       # CLOSE_WAIT
    to_c(2.3, 41001, seq=8001, ack=5015, flags=FIN | ACK, window=2000)     # LAST_ACK
    to_s(2.4, 41001, seq=5015, ack=8002, window=2000)                       # TIME_WAIT
    to_s(2.5, 41001, seq=5015, ack=8002, window=2000)                       # again
    to_s(2.6, 41001, seq=9000, flags=SYN, window=2000)                      # reopens
    # A RST answering a SYN (SYN_SENT, no reply yet: the entry goes).
    to_s(3.0, 41002, seq=300, flags=SYN, window=1000)
    to_c(3.1, 41002, seq=0, ack=301, flags=RST | ACK, window=0)
    # An assured connection (ended below: a RST with a wrong seq, refused; one a little
    # off, kept for a challenge ACK; the peer's FIN out of window, refused; the exact RST).
    to_s(4.0, 41003, seq=10, flags=SYN, window=1000)
    to_c(4.1, 41003, seq=20, ack=11, flags=SYN | ACK, window=1000)
    to_s(4.2, 41003, seq=11, ack=21, window=1000)
    to_c(4.3, 41003, seq=21, ack=11, flags=PSH | ACK, window=1000, payload=b"abc")
    to_s(4.4, 41003, seq=11, ack=24, window=1000)
    # Another: a FIN, the peer's FIN out of window (invalid: the timer shortened when
    # more than 120 s were left), a RST in a closing state (accepted as it is).
    to_s(5.0, 41004, seq=10, flags=SYN, window=1000)
    to_c(5.1, 41004, seq=20, ack=11, flags=SYN | ACK, window=1000)
    to_s(5.2, 41004, seq=11, ack=21, window=1000)
    to_c(5.3, 41004, seq=21, ack=11, window=1000)
    to_s(5.4, 41004, seq=11, ack=21, flags=FIN | ACK, window=1000)
    to_c(5.45, 41004, seq=1_000_000, ack=12, flags=FIN | ACK, window=1000)
    to_c(5.5, 41004, seq=3_000_000_000, ack=12, flags=RST | ACK, window=0)
    to_c(5.6, 41004, seq=3_000_000_000, ack=12, flags=FIN | ACK, window=1000)
    # The first connection's end, once its first timer filing (the SYN's) has passed and
    # the entry was filed again at its expiry: the refused FIN's shortened timer is then
    # before that filing and must be filed anew.
    to_c(130.5, 41003, seq=5, flags=RST, window=0)                          # below maxack
    to_c(130.6, 41003, seq=30, flags=RST, window=0)                         # in window, not exact
    to_s(130.65, 41003, seq=1_000_000, ack=24, flags=FIN | ACK, window=1000)    # refused
    to_c(130.7, 41003, seq=24, flags=RST, window=0)
    return frames


# known_segment() also re-arms the timer of a refused FIN/RST that shortened it: only
# with more than 120 s left (here after the RST kept for a challenge ACK) and more than
# tcp_timeout_unacknowledged, which it is shortened to.
CLOSING_KNOB_SETTINGS = KNOB_SETTINGS + [
    ("long CLOSE: a refused FIN shortens the timer", {"tcp_timeout_close": 1000}, None)]


@pytest.mark.parametrize("name, knobs, max_entries", CLOSING_KNOB_SETTINGS,
                         ids=[setting[0] for setting in CLOSING_KNOB_SETTINGS])
def test_closing_flows_same_with_and_without_fast_path(name, knobs, max_entries, tmp_path,
                                                       monkeypatch):
    """known_segment()'s cases (engine/fastpath_tcp.py) answer as the general path does,
    and it takes most of these segments (those it declines: the invalid flags, the SYN
    that reopens, and those of an engine whose timers or table it cannot serve)."""
    taken = answered_alike(closing_edge_frames(), tmp_path, knobs, max_entries, monkeypatch,
                           "make_known_segment")
    assert taken >= 20, taken


def icmp_error_frames() -> List[Tuple[float, bytes]]:
    """ICMP errors around icmp_error()'s edges: quoting a UDP and a TCP flow either way,
    from the peer and from a router; quoting no known flow; sent to another destination
    than the flow's; quotes it leaves to the general path: with IP options, a non-first
    fragment, cut before the ports, quoting ICMP; and a type above the last known one."""
    c, s, router = "10.3.0.1", "10.3.0.2", "10.3.0.254"
    frames: List[Tuple[float, bytes]] = []

    def add(t, datagram):
        frames.append((T0 + t, build_ethernet(datagram)))

    def error(t, src, dst, quoted, icmp_type=3, code=3, cut=28):
        add(t, build_icmp_datagram(src, dst, icmp_type, code, payload=quoted[:cut]))

    udp = build_udp_datagram(c, s, 6000, 53, b"query")
    answer = build_udp_datagram(s, c, 53, 6000, b"answer")
    syn = build_tcp_datagram(c, s, 42000, 443, seq=1, flags=SYN, window=1000)
    add(0.0, udp)
    error(0.1, s, c, udp)                                   # the peer: port unreachable
    error(0.2, router, c, udp, icmp_type=11, code=0)        # a router: time exceeded
    add(0.3, answer)
    error(0.4, c, s, answer)                                # about the reply direction
    error(0.5, s, router, udp)                              # not to the flow's destination
    error(0.6, s, c, build_udp_datagram(c, s, 6001, 53, b"q"))     # no such flow
    add(1.0, syn)
    error(1.1, router, c, syn, icmp_type=3, code=1)
    error(1.2, router, c, syn, cut=48)                      # the quote longer than 28
    error(1.3, router, c, syn, cut=23)                      # cut before the ports
    # Cut inside the ports, their last bytes after the datagram (link padding: not read).
    frames.append((T0 + 1.35, build_ethernet(build_icmp_datagram(router, c, 3, 1,
                                                                 payload=syn[:22])) + syn[22:24]))
    error(1.4, router, c, build_udp_datagram(c, s, 6000, 53, b"q", ip_options=b"\x01" * 4))
    error(1.5, router, c, build_udp_datagram(c, s, 6000, 53, b"q", ip_frag_offset=8))
    ping = build_icmp_datagram(c, s, 8, ident=5)
    add(2.0, ping)
    error(2.1, router, c, ping)                             # quoting ICMP
    add(2.2, build_icmp_datagram(s, c, 40))                  # type 40: refused
    return frames


@pytest.mark.parametrize("name, knobs, max_entries", KNOB_SETTINGS,
                         ids=[setting[0] for setting in KNOB_SETTINGS])
def test_icmp_errors_same_with_and_without_fast_path(name, knobs, max_entries, tmp_path,
                                                     monkeypatch):
    """icmp_error() (engine/fastpath_icmp.py) answers as Tracker._related() does, and
    takes the errors quoting TCP or UDP in an option-less, unfragmented header."""
    taken = answered_alike(icmp_error_frames(), tmp_path, knobs, max_entries, monkeypatch,
                           "make_icmp_error")
    assert taken >= 7, taken
