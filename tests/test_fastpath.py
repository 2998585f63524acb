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

Every Ethernet capture also runs framed as the live tap hands packets over (Linux cooked
frames, SLL2): lo's outgoing copies alone (what the tap keeps), and each packet twice, the
outgoing copy then lo's looped-back incoming one (what `tcpdump -i lo` writes); the edge
flows also as a tap on an Ethernet interface sees them (the client's packets outgoing,
the server's received: PREROUTING, checksums verified).  The fast path takes outgoing
copies only; the rest must come out as the general path makes them.
"""
from __future__ import annotations

import json
import random
import threading
from itertools import takewhile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import pytest

import kernelhelp
from conftest import FakeClock, wait_until
from engine import fastpath, fastpath_tcp
from engine.build import (build_ethernet, build_icmp, build_icmp_datagram, build_icmpv6,
                          build_ipv4, build_ipv6, build_sctp, build_sctp_chunk, build_sctp_data,
                          build_sctp_init, build_sctp_sack, build_tcp, build_tcp_datagram,
                          build_udp, build_udp_datagram, tcp_options)
from engine.capture import PcapWriter, read_capture
from engine.core import Engine
from engine.ctstate import INVALID as INVALID_VERDICT
from engine.ctstate import CtState, Verdict
from engine.entry import ASSURED, SEEN_REPLY
from engine.fastpath_frag import HELD
from engine.hooks import LOCAL_OUT, PRE_ROUTING
from engine.linklayer import (ARPHRD_ETHER, ARPHRD_LOOPBACK, ETH_P_IPV6, LINKTYPE_ETHERNET,
                              LINKTYPE_LINUX_SLL2, PACKET_HOST, PACKET_OUTGOING, SLL2_HEADER)
from engine.packet import (ACK, FIN, IPPROTO_GRE, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP,
                           IPPROTO_TCP, IPPROTO_UDP, PSH, RST, SYN, URG)
from engine.replay import ReplayResult, replay
from engine.tcp_tables import VALID_FLAGS
from enginehelp import T0, make_engine, view_text
from procfs_ct.driver import EngineDriver
from procfs_ct.iptables_channel import handle_request
from procfs_ct.sources.synthetic import SyntheticTraffic

DATA = Path(__file__).resolve().parent / "data"
SCENARIOS = sorted(str(p.parent.relative_to(DATA)) for p in DATA.glob("*/*/snapshot.json")
                   if p.parent.parent.name in ("kernel", "wire", "kernel_helpers"))

# A cooked frame's packet type is at this offset of its SLL2 header.
PKTTYPE_AT = 10
LO_INDEX, ETH_INDEX = 1, 2
CLIENT = "10.1.0.1"                 # the edge flows' client: the tapped host of "eth0 tap"


def lo_tap(datagram: bytes) -> List[Tuple[int, int, int]]:
    """What a tap on lo hands over for a packet: its outgoing copy alone."""
    return [(LO_INDEX, ARPHRD_LOOPBACK, PACKET_OUTGOING)]


def lo_both_copies(datagram: bytes) -> List[Tuple[int, int, int]]:
    """What `tcpdump -i lo` writes for a packet: the outgoing copy, then the looped-back
    incoming one."""
    return [(LO_INDEX, ARPHRD_LOOPBACK, PACKET_OUTGOING), (LO_INDEX, ARPHRD_LOOPBACK, PACKET_HOST)]


def eth_tap(datagram: bytes) -> List[Tuple[int, int, int]]:
    """What a tap on the client's Ethernet interface hands over: its own packets outgoing,
    the others received (PREROUTING)."""
    sent = datagram[12:16] == bytes(map(int, CLIENT.split(".")))
    return [(ETH_INDEX, ARPHRD_ETHER, PACKET_OUTGOING if sent else PACKET_HOST)]


# How a capture's Ethernet frames are fed: as they are, or cooked (SLL2) as a tap hands them.
FRAMINGS = {"ethernet": None, "lo tap": lo_tap, "lo both copies": lo_both_copies}
EDGE_FRAMINGS = dict(FRAMINGS, **{"eth0 tap": eth_tap})


def reframed(capture: Path, framing: str, directory: Path,
             framings: Dict[str, object] = FRAMINGS) -> Path:
    """The Ethernet capture with each frame framed as `framing` says (SLL2 frames, as
    procfs_ct/sources/tap.py makes them); the capture itself for "ethernet"."""
    copies = framings[framing]
    if copies is None:
        return capture
    path = directory / f"{capture.stem}-{framing.replace(' ', '-')}.pcap"
    with open(capture, "rb") as source, open(path, "wb") as fileobj:
        writer = PcapWriter(fileobj, linktype=LINKTYPE_LINUX_SLL2, nanosecond=True)
        for ts, linktype, frame in read_capture(source):
            assert linktype == LINKTYPE_ETHERNET, capture
            for cooked_frame in cooked(frame, copies):            # type: ignore[arg-type]
                writer.write(ts, cooked_frame)
    return path


def cooked(frame: bytes, copies: Callable[[bytes], List[Tuple[int, int, int]]]) -> List[bytes]:
    """An Ethernet frame's datagram in the SLL2 frames `copies` says a tap hands over."""
    protocol, datagram = int.from_bytes(frame[12:14], "big"), frame[14:]
    return [SLL2_HEADER.pack(protocol, 0, index, arphrd, pkttype, 6, b"\2" * 6) + datagram
            for index, arphrd, pkttype in copies(datagram)]


def capture_linktype(path: Path) -> int:
    with open(path, "rb") as fileobj:
        return next(iter(read_capture(fileobj))).linktype


# Each scenario as captured; the Ethernet ones (kernel/, kernel_helpers/: captures on lo)
# also framed as a tap on lo hands them over.
FRAMED_SCENARIOS = [(scenario, framing) for scenario in SCENARIOS for framing in FRAMINGS
                    if framing == "ethernet"
                    or capture_linktype(DATA / scenario / "capture.pcap") == LINKTYPE_ETHERNET]


class CountingFastPath:
    """Engine.fast_path() wrapped: counts the frames its track() answered, and the packet
    types of the cooked ones."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.taken = 0
        self.pkttypes: set = set()
        made = Engine.fast_path

        def fast_path(engine: Engine, *args):
            track = made(engine, *args)
            if track is None:
                return None

            def counting(now: float, linktype: int, frame: bytes):
                verdict = track(now, linktype, frame)
                if verdict is not None:
                    self.taken += 1
                    if linktype == LINKTYPE_LINUX_SLL2:
                        self.pkttypes.add(frame[PKTTYPE_AT])
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
        # The defragmenters' counts and queues: fragments taken by either path.
        "defrag": [(defrag.stats.as_dict(), {key: (queue.created, queue.fragments, queue.runs)
                                              for key, queue in defrag._queues.items()},
                    list(defrag._lru))
                   for defrag in (result.engine.defrag, result.engine.defrag6)],
        "malformed": result.engine.malformed,
    }


def assert_same(general: dict, fast: dict) -> None:
    for part in general:
        if part == "verdicts":
            for index, (want, got) in enumerate(zip(general[part], fast[part])):
                assert got == want, f"frame {index}: {got} with the fast path, {want} without"
        assert fast[part] == general[part], f"{part} differ"


@pytest.mark.parametrize("scenario, framing", FRAMED_SCENARIOS,
                         ids=[f"{scenario}-{framing}" for scenario, framing in FRAMED_SCENARIOS])
def test_kernel_scenarios_same_with_and_without_fast_path(scenario, framing, tmp_path):
    capture = reframed(DATA / scenario / "capture.pcap", framing, tmp_path)
    general = engine_state(kernelhelp.replay_scenario(DATA / scenario, fast_path=False,
                                                      capture=capture))
    fast = engine_state(kernelhelp.replay_scenario(DATA / scenario, capture=capture))
    assert_same(general, fast)


@pytest.mark.parametrize("framing", FRAMINGS)
def test_fast_path_serves_the_kernel_scenarios(framing, monkeypatch, tmp_path):
    """The comparisons above are not vacuous: the fast path answers frames in the TCP,
    UDP, ICMP and GRE scenarios of kernel/ (an Ethernet capture on lo each), however
    framed, and cooked frames of packet type PACKET_OUTGOING only.  (The wire/ scenarios,
    cooked captures of a server's traffic, give it the server's outgoing packets.)"""
    counting = CountingFastPath(monkeypatch)
    served = {}
    for scenario, how in FRAMED_SCENARIOS:
        if how == framing:
            before = counting.taken
            kernelhelp.replay_scenario(DATA / scenario, capture=reframed(
                DATA / scenario / "capture.pcap", framing, tmp_path))
            served[scenario] = counting.taken - before
    for family in ("kernel/tcp_", "kernel/udp_", "kernel/icmp_", "kernel/gre_"):
        assert any(taken for name, taken in served.items() if name.startswith(family)), family
    assert sum(served.values()) >= 300, served
    assert counting.pkttypes <= {PACKET_OUTGOING}, counting.pkttypes


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


FRAMED_SETTINGS = [(framing, *setting) for framing in FRAMINGS for setting in KNOB_SETTINGS]
FRAMED_SETTING_IDS = [f"{framing}-{setting[0]}" for framing, *setting in FRAMED_SETTINGS]


@pytest.mark.parametrize("framing, name, knobs, max_entries", FRAMED_SETTINGS,
                         ids=FRAMED_SETTING_IDS)
def test_synthetic_mix_same_with_and_without_fast_path(framing, name, knobs, max_entries,
                                                       tmp_path, monkeypatch):
    capture = str(reframed(Path(synthetic_capture(tmp_path, 4)), framing, tmp_path))
    options = dict(knobs_overrides=knobs, max_entries=max_entries, ncpu=2,
                   ram_bytes=24 << 30)
    general = engine_state(replay(capture, fast_path=False, **options))
    counting = CountingFastPath(monkeypatch)
    fast = engine_state(replay(capture, **options))
    assert_same(general, fast)
    # (Thousands of frames each time; fewer than with the defaults when the table is full.)
    assert counting.taken >= 1000, (counting.taken, len(fast["verdicts"]))
    assert counting.pkttypes <= {PACKET_OUTGOING}, counting.pkttypes


def test_fast_path_only_where_it_applies():
    """Engine.fast_path() declines the engines whose packets it could not answer alike."""
    assert make_engine("linux").fast_path() is not None
    assert make_engine("linux").fast_path(LINKTYPE_LINUX_SLL2) is not None
    assert make_engine("tutorial").fast_path() is None                  # ip_conntrack
    assert make_engine("linux", fast_extraction=False).fast_path() is None
    assert make_engine("linux", default_hook=PRE_ROUTING).fast_path() is None
    listened = make_engine("linux")
    listened.listen(LOCAL_OUT, lambda hook, pkt, result, now: 1)
    assert listened.fast_path() is None


def test_declined_frame_changes_nothing(tmp_path):
    """A frame the fast path does not take leaves the engine as it was (the general path
    then starts from scratch): here every frame of the mix that it declines."""
    capture = synthetic_capture(tmp_path, 0.6, seed=5)
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
    # (Since IPv6, SCTP of known associations and IPv4 fragments are taken, 79 of the
    # ~3,700 frames here: SCTP INITs, protocol 253, odd TCP segments...; since IPv4's
    # refusals (INVALID before any entry: bad flags, a bad TCP offset or UDP length),
    # ICMPv6's untracked messages and the generic tracker's protocols are taken, fewer:
    # SCTP INITs, ICMP replies without a request, IPv6's first packets...)
    assert declined > 15, declined


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
    more than one type; PPTP's GRE beside plain GRE; UDP replies before and after 2 s; a
    datagram and an ACK with a wrong checksum."""
    c, s = "10.1.0.1", "10.1.0.2"
    stamps = tcp_options(timestamps=(1, 2))
    frames: List[Tuple[float, bytes]] = []

    def tcp(t, src, dst, sport, dport, corrupt=False, **kw):
        datagram = build_tcp_datagram(src, dst, sport, dport, **kw)
        if corrupt:                     # a wrong TCP checksum (PREROUTING finds it INVALID)
            datagram = datagram[:36] + bytes((datagram[36] ^ 0xFF,)) + datagram[37:]
        frames.append((T0 + t, build_ethernet(datagram)))

    # A connection opened by a SYN with window 0 and every option, then data both ways.
    syn_options = tcp_options(mss=1460, wscale=7, sack_perm=True, timestamps=(1, 0))
    tcp(0.0, c, s, 40000, 80, seq=1000, flags=SYN, window=0, options=syn_options)
    # A datagram from the server with a wrong UDP checksum: on eth0 the first packet
    # received (PREROUTING finds it INVALID), elsewhere one sent (not checked).
    bad = build_udp_datagram(s, c, 53, 5353, b"bad sum")
    frames.append((T0 + 0.05, build_ethernet(bad[:26] + bytes((bad[26] ^ 0xFF,)) + bad[27:])))
    tcp(0.1, s, c, 80, 40000, seq=5000, ack=1001, flags=SYN | ACK, window=512,
        options=tcp_options(mss=1460, wscale=2, sack_perm=True, timestamps=(9, 1)))
    tcp(0.2, c, s, 40000, 80, seq=1001, ack=5001, window=300, options=stamps)
    tcp(0.3, c, s, 40000, 80, seq=1001, ack=5001, flags=PSH | ACK, window=300,
        options=stamps, payload=b"GET / HTTP/1.0\r\n\r\n")
    for t in (0.4, 0.5, 0.6, 0.7, 0.8):                         # the same ACK, retransmitted
        tcp(t, s, c, 80, 40000, seq=5001, ack=1019, window=500, options=stamps)
    tcp(0.85, s, c, 80, 40000, seq=5001, ack=1019, window=500, options=stamps,
        corrupt=True)                                           # a checksum received wrong
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
    # Data whose end wraps past 2**32 (the ACK case's end, modulo 2**32), and its ACK.
    tcp(2.4, c, s, 40004, 84, seq=0xFFFFFFF0, flags=SYN, window=1024)
    tcp(2.5, s, c, 84, 40004, seq=300, ack=0xFFFFFFF1, flags=SYN | ACK, window=1024)
    tcp(2.6, c, s, 40004, 84, seq=0xFFFFFFF1, ack=301, window=1024)
    tcp(2.7, c, s, 40004, 84, seq=0xFFFFFFF1, ack=301, flags=PSH | ACK, window=1024,
        payload=bytes(40))
    tcp(2.8, s, c, 84, 40004, seq=301, ack=0x19, window=1024)
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


EDGE_SETTINGS = [(framing, *setting) for framing in EDGE_FRAMINGS for setting in KNOB_SETTINGS]


@pytest.mark.parametrize("framing, name, knobs, max_entries", EDGE_SETTINGS,
                         ids=[f"{framing}-{setting[0]}" for framing, *setting in EDGE_SETTINGS])
def test_edge_flows_same_with_and_without_fast_path(framing, name, knobs, max_entries,
                                                    tmp_path, monkeypatch):
    ethernet = write_capture(edge_frames(), tmp_path / "edges.pcap")
    counting = CountingFastPath(monkeypatch)
    replayed_alike(reframed(ethernet, framing, tmp_path, EDGE_FRAMINGS), knobs, max_entries)
    # On eth0 the fast path takes the client's first SYN alone: once a packet has been
    # received, outgoing ones could be its forwarded copies (engine/forwarding.py).
    assert counting.taken >= (1 if framing == "eth0 tap" else 8), counting.taken
    assert counting.pkttypes <= {PACKET_OUTGOING}, counting.pkttypes


class CountingAnswers:
    """A fast path case's maker in engine/fastpath.py (make_known_segment,
    make_icmp_error, make_fragment, make_known_sctp) wrapped: counts the frames the case it
    makes answered."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, maker: str) -> None:
        self.taken = 0
        made = getattr(fastpath, maker)

        def make(*args):
            case = made(*args)

            def counting(*args):
                verdict = case(*args)
                if verdict is not None:
                    self.taken += 1
                return verdict
            return counting
        monkeypatch.setattr(fastpath, maker, make)


def write_capture(frames: List[Tuple[float, bytes]], path: Path) -> Path:
    with open(path, "wb") as fileobj:
        writer = PcapWriter(fileobj)
        for ts, frame in frames:
            writer.write(ts, frame)
    return path


def replayed_alike(path: Path, knobs: Dict[str, int], max_entries: Optional[int]) -> None:
    """Replay the capture with and without the fast path (a table of 4 entries where the
    setting wants a full one) and require the same engine."""
    options = dict(knobs_overrides=knobs, max_entries=max_entries and 4, ncpu=2,
                   ram_bytes=24 << 30)
    assert_same(engine_state(replay(str(path), fast_path=False, **options)),
                engine_state(replay(str(path), **options)))


def answered_alike(frames: List[Tuple[float, bytes]], directory: Path, knobs: Dict[str, int],
                   max_entries: Optional[int], monkeypatch: pytest.MonkeyPatch,
                   maker: str) -> int:
    """Replay the frames with and without the fast path, require the same engine; how
    many frames the case `maker` makes answered."""
    counting = CountingAnswers(monkeypatch, maker)
    replayed_alike(write_capture(frames, directory / "frames.pcap"), knobs, max_entries)
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


# -- the live mount's engine thread (procfs_ct/driver.py) ----------------------------------
WAIT = 20.0                         # seconds a driver may take on a loaded machine


class TwoBatches:
    """A source handing over two batches, as the tap hands over ring blocks, the second
    once `gate` is set (what a test changes in between comes before it)."""

    def __init__(self, first: list, second: list) -> None:
        self.first, self.second = first, second
        self.gate = threading.Event()

    def __iter__(self) -> "TwoBatches":
        return self

    def __next__(self) -> tuple:
        raise StopIteration          # EngineDriver takes batches() when a source has it

    def batches(self):
        yield self.first
        self.gate.wait(WAIT)
        yield self.second


def tapped_mix(seconds: float) -> List[Tuple[float, int, bytes]]:
    """Seconds of the synthetic mix as a tap on lo hands it over."""
    return [(ts, LINKTYPE_LINUX_SLL2, frame)
            for ts, ethernet in takewhile(lambda item: item[0] < T0 + seconds,
                                          SyntheticTraffic(seed=7, start=T0).frames())
            for frame in cooked(ethernet, lo_tap)]


DROP_OUTPUT = "*filter\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j DROP\nCOMMIT\n"


def _restore_drop(driver: EngineDriver) -> None:
    """`iptables-restore` of a ruleset dropping everything sent, as the mount's channel
    applies it: under the engine lock, between two holds."""
    with driver.engine_lock:
        reply = handle_request(driver, json.dumps({"op": "restore", "text": DROP_OUTPUT})
                               .encode())
    assert json.loads(reply)["exit"] == 0, reply


def _listen(driver: EngineDriver) -> None:
    driver.listeners.append(lambda when, result: driver.heard.append(result))


def _write_knobs(driver: EngineDriver) -> None:
    driver.engine.knobs.write_text("udp_timeout", b"7\n")
    driver.engine.knobs.write_text("acct", b"1\n")


# What may change while a mount runs, between two batches: (the change, whether the fast
# path may go on answering after it).
RUN_TIME_CHANGES = {
    "iptables-restore installs chains": (_restore_drop, False),
    "a driver listener is registered": (_listen, False),
    "knob writes": (_write_knobs, True),
}


def drive_in_two(frames: list, change: Callable[[EngineDriver], None],
                 listened: bool) -> EngineDriver:
    """Frames fed by an EngineDriver (time stands still after the last frame), `change`
    made once the first half is fed; `listened`: a listener from the start (so the
    general path feeds every frame)."""
    half = len(frames) // 2
    source = TwoBatches(frames[:half], frames[half:])
    driver = EngineDriver(make_engine("linux"), source, clock=FakeClock(frames[-1][0] + 1))
    driver.heard = []                                       # type: ignore[attr-defined]
    if listened:
        _listen(driver)
    driver.start()
    try:
        assert wait_until(lambda: driver.stats.packets == half, WAIT), driver.stats
        driver.fast_after_first = driver.stats.fast_path    # type: ignore[attr-defined]
        change(driver)
        source.gate.set()
        assert wait_until(lambda: driver.stats.source_done, WAIT), driver.stats
    finally:
        driver.stop()
    assert driver.stats.packets == len(frames) and not driver.stats.packet_errors
    return driver


@pytest.mark.parametrize("change", RUN_TIME_CHANGES)
def test_driver_feeds_the_fast_path_and_asks_again_when_things_change(change):
    """The live mount's engine thread answers a tap's frames by the fast path while the
    engine allows it and no listener wants PacketResults, and asks again at every hold of
    the engine lock: chains installed or a listener registered at run time send every
    later frame down the general path; knob writes are read by the fast path itself.
    Either way the engine ends as the general path alone leaves it."""
    frames = tapped_mix(1.0)
    make_change, fast_after = RUN_TIME_CHANGES[change]
    general = drive_in_two(frames, make_change, listened=True)
    fast = drive_in_two(frames, make_change, listened=False)
    assert general.stats.fast_path == 0
    assert engine_state_of(fast.engine) == engine_state_of(general.engine)
    assert (view_text(fast.engine, "net/nf_conntrack", frames[-1][0] + 1)
            == view_text(general.engine, "net/nf_conntrack", frames[-1][0] + 1))
    half = len(frames) // 2
    assert fast.fast_after_first >= half // 2, (fast.fast_after_first, half)
    if fast_after:
        assert fast.stats.fast_path > fast.fast_after_first + half // 2
    else:
        assert fast.stats.fast_path == fast.fast_after_first
    if change == "a driver listener is registered":
        # Every frame fed after it is told, with its PacketResult (None: not IPv4...).
        assert len(fast.heard) == len(frames) - half
        assert sum(result is not None for result in fast.heard) >= half // 2


# -- IPv6 and IPv4 fragments (engine/fastpath.py's IPv6 twin, engine/fastpath_frag.py) -------

C6, S6 = "fd00::1", "fd00::2"
HOP_BY_HOP = 0


def ipv6_frame(src: str, dst: str, next_header: int, payload: bytes, **kw) -> bytes:
    return build_ethernet(build_ipv6(src, dst, next_header, payload, **kw), ethertype=ETH_P_IPV6)


def ipv6_edge_frames() -> List[Tuple[float, bytes]]:
    """IPv6 flows around the IPv6 twin's edges: a handshake (the table's first packet on
    the general path, then a second connection's SYN), ACKs and PSH|ACKs in window, a
    retransmission, a zero window, ACKs out of window and with a bad data offset, a FIN;
    UDP both ways, new and known, before and after 2 s, with a bad length; ICMPv6 echo and
    node information; what it must decline: a hop-by-hop header in front of UDP and TCP, a
    jumbogram's 0 payload length, a payload length past the frame, ICMPv6 errors, unknown
    types, replies without a request, neighbour discovery."""
    frames: List[Tuple[float, bytes]] = []
    stamps = tcp_options(timestamps=(1, 2))

    def tcp(t, src, dst, sport, dport, **kw):
        segment = build_tcp(src, dst, sport, dport, **kw)
        frames.append((T0 + t, ipv6_frame(src, dst, IPPROTO_TCP, segment)))

    def udp(t, src, dst, sport, dport, payload=b"q", **kw):
        frames.append((T0 + t, ipv6_frame(src, dst, IPPROTO_UDP,
                                          build_udp(src, dst, sport, dport, payload, **kw))))

    # UDP first: its table is made by the general path, then UDP both ways.
    for t, src, dst, sport, dport in ((0.0, C6, S6, 5000, 53), (0.1, S6, C6, 53, 5000),
                                      (0.2, C6, S6, 5001, 53), (0.3, C6, S6, 5000, 53),
                                      (2.5, C6, S6, 5000, 53), (2.6, S6, C6, 53, 5000),
                                      (2.7, S6, C6, 53, 5002)):
        udp(t, src, dst, sport, dport)
    udp(0.35, C6, S6, 5000, 53, length=200)                     # a UDP length past the end
    udp(0.36, C6, S6, 5000, 53, length=4)                       # shorter than its header
    for port in (40000, 40001):
        tcp(0.4 + port % 2, C6, S6, port, 80, seq=1000, flags=SYN, window=64000,
            options=tcp_options(mss=1440, wscale=7, sack_perm=True, timestamps=(1, 0)))
        tcp(0.5 + port % 2, S6, C6, 80, port, seq=5000, ack=1001, flags=SYN | ACK,
            window=64000, options=tcp_options(mss=1440, wscale=7, sack_perm=True,
                                              timestamps=(9, 1)))
        tcp(0.6 + port % 2, C6, S6, port, 80, seq=1001, ack=5001, window=500, options=stamps)
        tcp(0.7 + port % 2, C6, S6, port, 80, seq=1001, ack=5001, flags=PSH | ACK, window=500,
            options=stamps, payload=b"GET / HTTP/1.0\r\n\r\n")
        for t in (0.8, 0.85):                                   # the same ACK, retransmitted
            tcp(t + port % 2, S6, C6, 80, port, seq=5001, ack=1019, window=500, options=stamps)
        tcp(0.9 + port % 2, S6, C6, 80, port, seq=5001, ack=1019, flags=PSH | ACK,
            window=500, payload=b"x" * 300)
        tcp(0.92 + port % 2, C6, S6, port, 80, seq=1019, ack=5302, window=0)      # zero window
        tcp(0.94 + port % 2, C6, S6, port, 80, seq=900_000_000, ack=5302, window=500)  # outside
        tcp(0.95 + port % 2, C6, S6, port, 80, seq=1019, ack=5302, window=500,
            data_offset=4)                                      # a bad data offset
        tcp(0.96 + port % 2, C6, S6, port, 80, seq=1019, ack=5302, window=500,
            data_offset=15)                                     # past the segment
        tcp(0.98 + port % 2, C6, S6, port, 80, seq=1019, ack=5302, flags=FIN | ACK,
            window=500)
    # Declined: extension headers, lengths the parser refuses, ICMPv6.
    udp_segment = build_udp(C6, S6, 6000, 53, b"h")
    frames.append((T0 + 3.0, ipv6_frame(C6, S6, HOP_BY_HOP,
                                        bytes((IPPROTO_UDP, 0, 1, 4, 0, 0, 0, 0)) + udp_segment)))
    frames.append((T0 + 3.1, ipv6_frame(C6, S6, HOP_BY_HOP,
                                        bytes((IPPROTO_TCP, 0, 1, 4, 0, 0, 0, 0))
                                        + build_tcp(C6, S6, 40000, 80, seq=1020, ack=5302))))
    frames.append((T0 + 3.2, ipv6_frame(C6, S6, IPPROTO_UDP, udp_segment, payload_length=0)))
    frames.append((T0 + 3.3, ipv6_frame(C6, S6, IPPROTO_UDP, udp_segment, payload_length=99)))
    # ICMPv6: echo both ways, again, a node information query; a reply nobody asked for,
    # an unknown type, neighbour solicitation (untracked) and an error quoting the UDP flow
    # are the general path's.
    quote = build_ipv6(S6, C6, IPPROTO_UDP, build_udp(S6, C6, 53, 5000, b"q"))
    for t, src, dst, kind, ident, payload in (
            (3.4, C6, S6, 128, 5, b""), (3.5, S6, C6, 129, 5, b""), (3.6, C6, S6, 128, 5, b"x"),
            (3.7, S6, C6, 129, 5, b"x"), (3.8, C6, S6, 128, 6, b""), (3.9, S6, C6, 129, 7, b""),
            (4.0, C6, S6, 139, 8, bytes(8)), (4.1, S6, C6, 140, 8, bytes(8)),
            (4.2, C6, S6, 200, 9, b""), (4.3, C6, S6, 135, 0, bytes(20)),
            (4.4, C6, S6, 1, 0, quote)):
        frames.append((T0 + t, ipv6_frame(src, dst, IPPROTO_ICMPV6, build_icmpv6(
            src, dst, kind, ident=ident, payload=payload))))
    return frames


def fragment_frames() -> List[Tuple[float, bytes]]:
    """IPv4 fragments: a datagram in order, out of order (last first), with a duplicate,
    with overlapping pieces (the queue discarded), a lone first fragment left to time out,
    fragments of a TCP segment on a known connection, of an ICMP echo, and a reassembled
    datagram the fast path declines (UDP with a bad length: INVALID on the general path)."""
    c, s = "10.1.0.1", "10.1.0.2"
    frames: List[Tuple[float, bytes]] = []

    def fragments(t, src, dst, proto, l4, ident, order, size=24, **kw):
        pieces = [(offset, l4[offset:offset + size]) for offset in range(0, len(l4), size)]
        for index in order:
            offset, chunk = pieces[index]
            frames.append((T0 + t, build_ethernet(build_ipv4(
                src, dst, proto, chunk, ident=ident, frag_offset=offset,
                mf=offset + size < len(l4), **kw))))
            t += 0.01

    payload = bytes(range(70))
    udp = build_udp(c, s, 7000, 53, payload)
    fragments(0.0, c, s, IPPROTO_UDP, udp, 1, [0, 1, 2, 3])                 # in order
    fragments(0.1, s, c, IPPROTO_UDP, build_udp(s, c, 53, 7000, payload), 2,
              [3, 1, 2, 0])                                                 # out of order
    fragments(0.2, c, s, IPPROTO_UDP, udp, 3, [0, 1, 1, 2, 3])              # a duplicate
    fragments(0.3, c, s, IPPROTO_UDP, udp, 4, [0, 2], size=24)              # overlapping:
    fragments(0.33, c, s, IPPROTO_UDP, udp, 4, [1], size=32)                # discarded
    fragments(0.4, c, s, IPPROTO_UDP, build_udp(c, s, 7001, 53, payload), 5, [0])   # held
    fragments(0.5, c, s, IPPROTO_UDP, build_udp(c, s, 7001, 53, payload, length=300), 6,
              [3, 0, 1, 2])                                 # reassembled, then INVALID
    fragments(0.6, c, s, IPPROTO_ICMP, build_icmp(8, ident=9, payload=payload), 7,
              [1, 0, 2, 3])                                 # an echo request
    fragments(0.7, c, s, IPPROTO_UDP, build_udp(c, s, 7002, 53, payload), 8, [0, 1, 2, 3],
              df=True, tos=2)
    # A connection, then a segment of it in fragments (ACK in window, then a FIN).
    frames.append((T0 + 1.0, build_ethernet(build_tcp_datagram(c, s, 41000, 80, seq=1, flags=SYN))))
    frames.append((T0 + 1.1, build_ethernet(build_tcp_datagram(s, c, 80, 41000, seq=9, ack=2,
                                                               flags=SYN | ACK))))
    frames.append((T0 + 1.2, build_ethernet(build_tcp_datagram(c, s, 41000, 80, seq=2, ack=10))))
    frames.append((T0 + 1.25, build_ethernet(build_tcp_datagram(c, s, 41000, 80, seq=2, ack=10,
                                                                data_offset=4))))  # INVALID
    fragments(1.3, c, s, IPPROTO_TCP, build_tcp(c, s, 41000, 80, seq=2, ack=10, flags=PSH | ACK,
                                                payload=payload), 9, [0, 1, 2, 3])
    fragments(1.4, c, s, IPPROTO_TCP, build_tcp(c, s, 41000, 80, seq=72, ack=10, flags=FIN | ACK,
                                                payload=payload), 10, [3, 2, 1, 0])
    # Late: the held queue (ident 5) has timed out by now (ipfrag_time 30 s by default).
    fragments(40.0, c, s, IPPROTO_UDP, build_udp(c, s, 7001, 53, payload), 5, [1, 2, 3])
    fragments(40.1, c, s, IPPROTO_UDP, udp, 11, [0, 1, 2, 3])
    return frames


FRAGMENT_KNOB_SETTINGS = KNOB_SETTINGS + [
    ("ipfrag_time 1: queues time out", {"ipfrag_time": 1}, None),
    ("ipfrag thresholds low: eviction", {"ipfrag_high_thresh": 100, "ipfrag_low_thresh": 50},
     None),
]
NEW_EDGES = [(framing, kind, *setting) for framing in EDGE_FRAMINGS
             for kind in ("ipv6", "fragments") for setting in FRAGMENT_KNOB_SETTINGS]


@pytest.mark.parametrize("framing, kind, name, knobs, max_entries", NEW_EDGES,
                         ids=[f"{framing}-{kind}-{setting[0]}"
                              for framing, kind, *setting in NEW_EDGES])
def test_ipv6_and_fragment_flows_same_with_and_without_fast_path(
        framing, kind, name, knobs, max_entries, tmp_path, monkeypatch):
    """The IPv6 twin and the fragments' way: the same engine (the defragmenters' counts and
    queues too) and verdicts, however framed, under every knob setting (a full table of 4:
    early drops and refused entries)."""
    frames = ipv6_edge_frames() if kind == "ipv6" else fragment_frames()
    counting = CountingFastPath(monkeypatch)
    replayed_alike(reframed(write_capture(frames, tmp_path / f"{kind}.pcap"), framing, tmp_path,
                            EDGE_FRAMINGS), knobs, max_entries)
    if framing != "eth0 tap":           # (there, received frames come first: none taken)
        assert counting.taken >= 15, counting.taken


def fed_alike(events: list, knobs: Dict[str, int]) -> int:
    """Feed the frames (ts, frame) to two engines, one through the fast path, and write the
    knob writes (name, bytes) between them, as a mount's writes land between packets;
    require the same engine; the number of frames the fast path took."""
    states, taken = [], 0
    for use_fast in (False, True):
        engine = make_engine("linux", knobs_overrides=knobs, ncpu=2, ram_bytes=24 << 30)
        result = ReplayResult(engine)
        fast = engine.fast_path() if use_fast else None
        for event in events:
            if isinstance(event[1], bytes) and isinstance(event[0], str):
                engine.knobs.write_text(*event)
                continue
            ts, frame = event
            verdict = fast(ts, LINKTYPE_ETHERNET, frame) if fast is not None else None
            if verdict is None:
                outcome = engine.feed_frame(ts, LINKTYPE_ETHERNET, frame)
                verdict = None if outcome is None else outcome.verdict
            else:
                taken += 1
                if verdict is HELD:
                    verdict = None
            result.verdicts.append(verdict)
            result.dropped.append(False)
            result.at = ts
        engine.advance(result.at)
        states.append(engine_state(result))
    assert_same(*states)
    return taken


def test_knob_writes_mid_flow_same_with_and_without_fast_path():
    """Knob writes between the packets of IPv6 flows and fragmented datagrams: timeouts,
    the table's limit (then full: early drop), the ipfrag thresholds and time, read by
    the next packet or fragment on both paths."""
    v6, frags = ipv6_edge_frames(), fragment_frames()
    events: list = []
    writes = iter([("udp_timeout", b"5\n"), ("max", b"3\n"),
                   ("ipfrag_time", b"1\n"), ("tcp_timeout_established", b"7\n"),
                   ("ipfrag_low_thresh", b"10\n"), ("ipfrag_high_thresh", b"60\n"),
                   ("max", b"0\n"), ("ipfrag_high_thresh", b"4194304\n"),
                   ("ipfrag_low_thresh", b"3145728\n"), ("ipfrag_time", b"30\n")])
    for index, frame in enumerate(sorted(v6 + frags, key=lambda item: item[0])):
        events.append(frame)
        if index % 7 == 6:
            events.append(next(writes, ("icmp_timeout", b"9\n")))
    # A queue started under ipfrag_time 30 whose second fragment comes 2 s after a write
    # of 1: expired, the fragment starts a queue of its own; then one under 30 again.
    c, s = "10.1.0.1", "10.1.0.2"
    udp = build_udp(c, s, 7100, 53, bytes(40))
    for t, write, ident in ((50.0, b"1\n", 30), (60.0, b"30\n", 31)):
        first, second = (build_ethernet(build_ipv4(c, s, IPPROTO_UDP, piece, ident=ident,
                                                   frag_offset=offset, mf=not offset))
                         for offset, piece in ((0, udp[:24]), (24, udp[24:])))
        events += [(T0 + t, first), ("ipfrag_time", write), (T0 + t + 2, second)]
    assert fed_alike(events, {}) >= 30


def sctp_frames() -> List[Tuple[float, bytes]]:
    """SCTP associations over IPv4 and IPv6 around known_sctp()'s edges: the handshake (the
    INIT on the general path: no entry yet), DATA and SACK both ways, a DATA with the wrong
    tag (INVALID), HEARTBEAT and its ACK, a packet cut before its common header ends, a
    chunk of length 0 (the basic checks fail), a second INIT into the association, the
    shutdown, then an ABORT with the T bit on the other association; the last packet
    after the entries' timeouts."""
    frames: List[Tuple[float, bytes]] = []
    INIT, INIT_ACK, SACK, HB, HB_ACK, ABORT = 1, 2, 3, 4, 5, 6
    SHUTDOWN, SHUTDOWN_ACK, COOKIE_ECHO, COOKIE_ACK, SHUTDOWN_COMPLETE = 7, 8, 10, 11, 14
    for family, (c, s), port in (("v4", ("10.1.0.1", "10.1.0.2"), 3868),
                                 ("v6", (C6, S6), 3869)):
        def send(t, src, dst, vtag, chunks, cut=None):
            body = build_sctp(*((port + 10000, port) if src == c else (port, port + 10000)),
                              vtag, chunks)
            if cut is not None:
                body = body[:cut]
            if family == "v4":
                frame = build_ethernet(build_ipv4(src, dst, IPPROTO_SCTP, body))
            else:
                frame = ipv6_frame(src, dst, IPPROTO_SCTP, body)
            frames.append((T0 + t + (0.01 if family == "v6" else 0), frame))

        chunk = build_sctp_chunk
        send(0.0, c, s, 0, build_sctp_init(INIT, 0x1111, 1))
        send(0.1, s, c, 0x1111, build_sctp_init(INIT_ACK, 0x2222, 100,
                                                 parameters=chunk(7, b"cookie")[:0]))
        send(0.2, c, s, 0x2222, chunk(COOKIE_ECHO, b"cookie!!"))
        send(0.3, s, c, 0x1111, chunk(COOKIE_ACK))
        for i, t in enumerate((0.4, 0.5, 0.6)):
            send(t, c, s, 0x2222, build_sctp_data(1 + i, b"data"))
            send(t + 0.05, s, c, 0x1111, build_sctp_sack(1 + i))
        send(0.7, c, s, 0x9999, build_sctp_data(9, b"wrong tag"))
        send(0.75, c, s, 0x2222, chunk(HB, b"\0\1\0\x08info"))
        send(0.8, s, c, 0x1111, chunk(HB_ACK, b"\0\1\0\x08info"))
        send(0.85, c, s, 0x2222, build_sctp_data(4, b"x"), cut=10)
        send(0.9, c, s, 0x2222, build_sctp_data(4, b"x") + b"\0\0\0\0")
        send(0.95, c, s, 0, build_sctp_init(INIT, 0x3333, 50))
        if family == "v4":
            send(1.0, c, s, 0x2222, chunk(SHUTDOWN, b"\0\0\0\3"))
            send(1.1, s, c, 0x1111, chunk(SHUTDOWN_ACK))
            send(1.2, c, s, 0x2222, chunk(SHUTDOWN_COMPLETE))
        else:
            send(1.0, s, c, 0x2222, chunk(ABORT, flags=1))
        send(9000.0, c, s, 0x2222, build_sctp_data(5, b"late"))
    return sorted(frames, key=lambda frame: frame[0])


@pytest.mark.parametrize("framing, name, knobs, max_entries", EDGE_SETTINGS,
                         ids=[f"{framing}-{setting[0]}" for framing, *setting in EDGE_SETTINGS])
def test_sctp_same_with_and_without_fast_path(framing, name, knobs, max_entries, tmp_path,
                                             monkeypatch):
    """known_sctp(): the same engine and verdicts as the general path, however framed,
    under every knob setting; it answers the known associations' packets."""
    counting = CountingAnswers(monkeypatch, "make_known_sctp")
    replayed_alike(reframed(write_capture(sctp_frames(), tmp_path / "sctp.pcap"), framing,
                            tmp_path, EDGE_FRAMINGS), knobs, max_entries)
    if framing != "eth0 tap":
        assert counting.taken >= 20, counting.taken


def generic_frames() -> List[Tuple[float, bytes]]:
    """Protocols of the generic tracker (253, 99: the general path's) both ways, again after
    2 s, a datagram of a bare header (total length 20); GRE and 253 with a total length
    short of the header (malformed: no verdict, counted), which must not make or refresh an
    entry."""
    c, s = "10.1.0.1", "10.1.0.2"
    frames = []
    for t, src, dst, proto, body, kw in (
            (0.0, c, s, 253, b"experiment", {}), (0.1, s, c, 253, b"the reply", {}),
            (0.2, c, s, 253, b"once again", {}), (0.3, c, s, 99, b"", {}),
            (0.4, s, c, 99, b"", {}), (0.45, c, s, 99, b"", {}),
            (0.5, c, s, 253, b"short total", {"total_length": 16}),
            (0.6, c, s, IPPROTO_GRE, b"\x00\x00\x08\x00" + bytes(20), {}),
            (0.7, c, s, IPPROTO_GRE, b"\x00\x00\x08\x00" + bytes(20), {"total_length": 16}),
            (0.75, s, c, IPPROTO_GRE, b"\x00\x00\x08\x00" + bytes(20), {}),
            (0.8, c, s, IPPROTO_GRE, b"\x00\x00\x08\x00" + bytes(20), {"total_length": 12}),
            (2.5, c, s, 253, b"later, still", {}), (2.6, s, c, 99, b"later, still", {}),
            (700.0, c, s, 253, b"after the timeout", {})):
        # (Padded as a NIC pads: the bare header's frame is long enough to be read.)
        frames.append((T0 + t, build_ethernet(build_ipv4(src, dst, proto, body, **kw),
                                              pad=True)))
    return frames


GENERIC_SETTINGS = [(framing, *setting) for framing in EDGE_FRAMINGS
                    for setting in KNOB_SETTINGS + [("generic_timeout 1",
                                                     {"generic_timeout": 1}, None)]]


@pytest.mark.parametrize("framing, name, knobs, max_entries", GENERIC_SETTINGS,
                         ids=[f"{framing}-{setting[0]}" for framing, *setting in GENERIC_SETTINGS])
def test_short_total_length_same_with_and_without_fast_path(framing, name, knobs,
                                                            max_entries, tmp_path,
                                                            monkeypatch):
    """Datagrams whose total length is short of the header (malformed: parse_ipv4() refuses
    them) among GRE and generic flows: the same engine and verdicts (the fast path took
    such a GRE datagram as valid)."""
    counting = CountingFastPath(monkeypatch)
    replayed_alike(reframed(write_capture(generic_frames(), tmp_path / "generic.pcap"),
                            framing, tmp_path, EDGE_FRAMINGS), knobs, max_entries)
    if framing != "eth0 tap":
        assert counting.taken >= 1, counting.taken         # the GRE reply


def window_walk_frames(seed: int, segments: int = 400) -> List[Tuple[float, bytes]]:
    """Connections of the largest windows (scale 14 both ways) whose sequence numbers start
    near 2**32, then ACK and PSH|ACK segments both ways whose seq and ack are drawn around
    what each side sent last: the next ones, a little behind or ahead, half the sequence
    space away, anywhere -- so the window checks I-IV pass and fail with differences of
    sequence numbers in every range the ACK case compares them in (without `& M32`)."""
    rng = random.Random(seed)
    c, s = "10.7.0.1", "10.7.0.2"
    big = tcp_options(mss=1460, wscale=14)
    frames: List[Tuple[float, bytes]] = []
    t = 0.0

    def send(src, dst, sport, dport, **kw):
        nonlocal t
        t += 0.001
        frames.append((T0 + t, build_ethernet(build_tcp_datagram(src, dst, sport, dport,
                                                                  **kw))))

    def near(value: int) -> int:
        if rng.random() < 0.7:
            return value
        step = rng.choice((rng.randrange(1, 3000), -rng.randrange(1, 3000),
                           rng.randrange(1, 1 << 30), -rng.randrange(1, 1 << 30),
                           (1 << 31) + rng.randrange(-2, 3), rng.randrange(1 << 32)))
        return (value + step) & 0xFFFFFFFF

    for n, (client_isn, server_isn) in enumerate(((0xFFFFFF00, 0x7FFFFF00),
                                                  (0x7FFFFFF0, 0xFFFFFFF0),
                                                  (rng.randrange(1 << 32), 5))):
        sport = 41000 + n
        send(c, s, sport, 80, seq=client_isn, flags=SYN, window=65535, options=big)
        send(s, c, 80, sport, seq=server_isn, ack=client_isn + 1, flags=SYN | ACK,
             window=65535, options=big)
        sent = {c: (client_isn + 1) & 0xFFFFFFFF, s: (server_isn + 1) & 0xFFFFFFFF}
        send(c, s, sport, 80, seq=sent[c], ack=sent[s], window=65535)
        for _ in range(segments):
            src, dst = (c, s) if rng.random() < 0.5 else (s, c)
            payload = bytes(rng.choice((0, 0, 1, 100, 1400)))
            seq, ack = near(sent[src]), near(sent[dst])
            ports = (sport, 80) if src == c else (80, sport)
            send(src, dst, *ports, seq=seq, ack=ack, window=rng.choice((0, 1, 300, 65535, 65535, 65535)),
                 flags=rng.choice((ACK, PSH | ACK)), payload=payload)
            if seq == sent[src]:        # the next in order: its end is the next's seq
                sent[src] = (seq + len(payload)) & 0xFFFFFFFF
    return frames


@pytest.mark.parametrize("seed", range(3))
def test_window_checks_across_the_wrap_same_with_and_without_fast_path(seed, tmp_path,
                                                                       monkeypatch):
    """The ACK case's window checks and updates compare differences of sequence numbers
    instead of masking them: over segments in and out of window in every range of those
    differences it answers as linux_in_window() does, and takes many of them itself."""
    counting = CountingFastPath(monkeypatch)
    declined = CountingAnswers(monkeypatch, "make_known_segment")
    replayed_alike(write_capture(window_walk_frames(seed), tmp_path / "walk.pcap"), {}, None)
    # Of the 1,209 frames: the first SYNs and the ACK case's (counting), the segments it
    # left to known_segment() (out of window: IGNORE or INVALID).
    assert counting.taken - declined.taken > 300, (counting.taken, declined.taken)
    assert declined.taken > 300, declined.taken


@pytest.mark.parametrize("proto, payload", [(IPPROTO_UDP, b"\x13\x88\x00\x35"),
                                            (IPPROTO_UDP, b""), (IPPROTO_TCP, bytes(12)),
                                            (IPPROTO_ICMPV6, b"\x80\x00"),
                                            (IPPROTO_SCTP, bytes(8))])
def test_ipv6_datagram_ending_inside_its_header_is_declined_not_raised(proto, payload):
    """An IPv6 datagram whose payload ends inside its upper layer's header, the frame
    ending with it: the fast path declines it (the general path counts it), raising
    nothing -- it read a UDP header's length field beyond the frame (struct.error)."""
    engine = make_engine()
    fast = engine.fast_path()
    frame = build_ethernet(build_ipv6("fe80::1", "fe80::2", proto, payload),
                           ethertype=ETH_P_IPV6)
    before = repr(engine_state_of(engine))
    assert fast(T0, LINKTYPE_ETHERNET, frame) is None
    assert repr(engine_state_of(engine)) == before
    engine.feed_frame(T0, LINKTYPE_ETHERNET, frame)       # counted there, not raised


# -- known_segment()'s cases written out (engine/fastpath_tcp.py: sequenced, syn_ack,
# refused) against the general call they replace -------------------------------------------

class CountingCases:
    """engine/fastpath_tcp.py's case makers wrapped: by case, the segments it answered and
    those it declined to the general call (each must do both for a test to mean much)."""

    MAKERS = ("make_sequenced", "make_syn_ack", "make_refused")

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.taken = dict.fromkeys(self.MAKERS, 0)
        self.declined = dict.fromkeys(self.MAKERS, 0)
        for maker in self.MAKERS:
            monkeypatch.setattr(fastpath_tcp, maker, self._counting(maker))

    def _counting(self, maker: str) -> Callable:
        made = getattr(fastpath_tcp, maker)

        def make(*args):
            case = made(*args)

            def counting(*args):
                verdict = case(*args)
                if verdict is None:
                    self.declined[maker] += 1
                else:
                    self.taken[maker] += 1
                return verdict
            return counting
        return make


def _opened(sport: int, frames: List[Tuple[float, bytes]]) -> Tuple[Callable, Callable]:
    """Senders to and from the server of one connection on `sport`, appending to frames
    (a millisecond apart)."""
    c, s = "10.8.0.1", "10.8.0.2"

    def send(src, dst, sport_, dport, **kw):
        frames.append((T0 + 0.001 * len(frames),
                       build_ethernet(build_tcp_datagram(src, dst, sport_, dport, **kw))))
    return (lambda **kw: send(c, s, sport, 80, **kw)), (lambda **kw: send(s, c, 80, sport, **kw))


def segment_walk_frames(seed: int, connections: int = 80) -> List[Tuple[float, bytes]]:
    """Connections opened with SYNs of every option layout (none, MSS, MSS + SACK-permitted
    + timestamps + window scale, window scale alone), some starting near 2**32, answered by
    a SYN/ACK -- right, acking the wrong number, with a SACK block, without options -- or a
    RST (seq 0 or not, with the right ack, a wrong one, ack 0, no ACK, with options), some
    after an ignored reply ACK or a retransmitted SYN; the opened ones then walk through
    FIN|ACKs and ACKs both ways whose seq and ack are drawn around what each side sent
    (in window, a little off, anywhere), some repeated, some with a SACK block or a zero
    window, and now and then a SYN on the closing entry (ignored, or a challenge ACK's
    setup in LAST_ACK) -- so each case's checks pass and fail, and its declines are
    answered by the general call."""
    rng = random.Random(seed)
    frames: List[Tuple[float, bytes]] = []

    def near(value: int, keep: float = 0.7) -> int:
        if rng.random() < keep:
            return value
        step = rng.choice((1, -1, rng.randrange(1, 3000), -rng.randrange(1, 3000),
                           rng.randrange(1, 1 << 30), (1 << 31) + rng.randrange(-2, 3),
                           rng.randrange(1 << 32)))
        return (value + step) & 0xFFFFFFFF

    def syn_options():
        return rng.choice((b"", tcp_options(mss=1460),
                           tcp_options(mss=1460, sack_perm=True, timestamps=(7, 0),
                                       wscale=rng.choice((0, 7, 14, 15))),
                           tcp_options(wscale=rng.choice((2, 9)))))

    for n in range(connections):
        sport = 42000 + n
        client_isn = rng.choice((rng.randrange(1 << 32), 0xFFFFFFF0))
        server_isn = rng.choice((rng.randrange(1 << 32), 0xFFFFFFFE))
        to_s, to_c = _opened(sport, frames)
        senders = {"client": to_s, "server": to_c}

        to_s(seq=client_isn, flags=SYN, window=rng.choice((0, 1000, 65535)),
             options=syn_options())
        if rng.random() < 0.15:
            to_s(seq=client_isn, flags=SYN, window=65535)          # retransmitted
        if rng.random() < 0.1:
            to_c(seq=server_isn, ack=client_isn + 1, window=1000)  # ignored: last class ACK
        answer = rng.random()
        if answer < 0.3:
            # Refused: the RST's seq 0 or not, its ack right, off, 0 or absent.
            rst_ack = rng.choice((client_isn + 1, client_isn + 1, near(client_isn + 1, 0), 0))
            flags = rng.choice((RST | ACK, RST | ACK, RST, RST | ACK | PSH))
            to_c(seq=rng.choice((0, 0, server_isn)), ack=rst_ack & 0xFFFFFFFF, flags=flags,
                 window=rng.choice((0, 0, 512)),
                 options=tcp_options(timestamps=(1, 2)) if rng.random() < 0.1 else b"")
            if rng.random() < 0.3:
                to_c(seq=0, ack=(client_isn + 1) & 0xFFFFFFFF, flags=RST | ACK, window=0)
            continue
        synack_ack = (client_isn + 1) & 0xFFFFFFFF
        if answer < 0.4:
            to_c(seq=server_isn, ack=near(synack_ack, 0), flags=SYN | ACK, window=1000)
        options = rng.choice((b"", syn_options(), tcp_options(mss=1460, sack=((5, 9),))))
        to_c(seq=server_isn, ack=synack_ack, flags=SYN | ACK, options=options,
             window=rng.choice((0, 1000, 65535)), payload=b"" if rng.random() < 0.9 else b"s")
        sent = {"client": (client_isn + 1) & 0xFFFFFFFF,
                "server": (server_isn + 1) & 0xFFFFFFFF}
        to_s(seq=sent["client"], ack=sent["server"], window=65535)
        last = None
        for _ in range(rng.randrange(4, 14)):
            if last is not None and rng.random() < 0.1:
                senders[last[0]](**last[1])                         # the same again
                continue
            src, dst = ("client", "server") if rng.random() < 0.5 else ("server", "client")
            if rng.random() < 0.05:
                # A SYN on the closing entry: ignored (and, in LAST_ACK, a challenge ACK
                # expected from the peer).
                senders[src](seq=near(sent[src], 0), flags=SYN, window=1000)
                continue
            flags = rng.choice((ACK, ACK, PSH | ACK, FIN | ACK, FIN | PSH | ACK))
            payload = bytes(rng.choice((0, 0, 0, 1, 300)))
            seq, ack = near(sent[src]), near(sent[dst])
            options = rng.choice((b"", b"", tcp_options(timestamps=(3, 4)),
                                  tcp_options(sack=((seq, (seq + 10) & 0xFFFFFFFF),))
                                  if rng.random() < 0.2 else b""))
            kw = dict(seq=seq, ack=ack, flags=flags, payload=payload, options=options,
                      window=rng.choice((0, 500, 65535, 65535)))
            senders[src](**kw)
            last = (src, kw)
            if seq == sent[src]:
                sent[src] = (seq + len(payload) + (1 if flags & FIN else 0)) & 0xFFFFFFFF
    return frames


@pytest.mark.parametrize("name, knobs, max_entries", KNOB_SETTINGS,
                         ids=[setting[0] for setting in KNOB_SETTINGS])
@pytest.mark.parametrize("seed", range(3))
def test_segment_cases_same_as_the_general_call(seed, name, knobs, max_entries, tmp_path,
                                                monkeypatch):
    """known_segment()'s written-out cases answer every segment they take as
    TcpTracker.linux_segment() does, and decline the rest to it having changed nothing:
    the same engine with and without the fast path over the walk, each case taking some
    segments and declining others."""
    cases = CountingCases(monkeypatch)
    replayed_alike(write_capture(segment_walk_frames(seed), tmp_path / "segments.pcap"),
                   knobs, max_entries)
    if max_entries:     # a table of 4 entries: most connections are never made
        assert sum(cases.taken.values()) >= 1, cases.taken
        return
    assert all(taken >= 8 for taken in cases.taken.values()), cases.taken
    assert all(declined >= 1 for declined in cases.declined.values()), cases.declined


REFUSED_ISN = 3_000_000_000        # an ack of 0 is out of its window (a RST's is not)


def refused_frames(rst: Dict[str, int]) -> List[Tuple[float, bytes]]:
    """A SYN of seq REFUSED_ISN answered by the RST of `rst`'s fields."""
    frames: List[Tuple[float, bytes]] = []
    to_s, to_c = _opened(43000, frames)
    to_s(seq=REFUSED_ISN, flags=SYN, window=1000)
    to_c(**rst)
    return frames


def challenge_frames() -> List[Tuple[float, bytes]]:
    """A connection closed to LAST_ACK, a new SYN of the client there (ignored, a challenge
    ACK expected), the server's challenge ACK (ignored: not the last FIN's ACK), then the
    client's ACK of the last FIN (TIME_WAIT)."""
    frames: List[Tuple[float, bytes]] = []
    to_s, to_c = _opened(43001, frames)
    to_s(seq=1000, flags=SYN, window=1000)
    to_c(seq=5000, ack=1001, flags=SYN | ACK, window=1000)
    to_s(seq=1001, ack=5001, window=1000)
    to_c(seq=5001, ack=1001, flags=FIN | ACK, window=1000)      # FIN_WAIT
    to_s(seq=1001, ack=5002, flags=FIN | ACK, window=1000)      # LAST_ACK
    to_s(seq=9000, flags=SYN, window=1000)                      # ignored, flagged
    to_c(seq=5002, ack=1002, window=1000)                       # the challenge ACK
    to_s(seq=1002, ack=5002, window=1000)
    return frames


SEGMENT_CASE_FRAMES = {
    "RST|ACK seq 0, the SYN acked": (refused_frames(dict(seq=0, ack=REFUSED_ISN + 1,
                                                         flags=RST | ACK)), "make_refused", 1, 0),
    "RST|ACK ack 0": (refused_frames(dict(seq=0, ack=0, flags=RST | ACK)), "make_refused", 1, 0),
    "RST without ACK": (refused_frames(dict(seq=77, ack=0, flags=RST)), "make_refused", 1, 0),
    "RST|ACK acking beyond the SYN": (refused_frames(dict(seq=0, ack=REFUSED_ISN + 90_000,
                                                          flags=RST | ACK)), "make_refused", 0, 1),
    "a challenge ACK in LAST_ACK": (challenge_frames(), "make_sequenced", 3, 1),
}


@pytest.mark.parametrize("name", SEGMENT_CASE_FRAMES)
def test_segment_cases_take_what_they_were_written_for(name, tmp_path, monkeypatch):
    """Each case takes the segments of its cell it was written for and declines the others
    (the general call answering them); the engine comes out the same either way.  (The
    challenge: the FINs taken, the challenge ACK declined -- the general call clears the
    flag -- and the last ACK taken.)"""
    frames, maker, taken, declined = SEGMENT_CASE_FRAMES[name]
    cases = CountingCases(monkeypatch)
    replayed_alike(write_capture(frames, tmp_path / "case.pcap"), {}, None)
    assert (cases.taken[maker], cases.declined[maker]) == (taken, declined)
# -- new entries: a first SYN's options read by byte compares (synfast) ------------------------
# Each a first SYN's option bytes: Linux's two layouts new_tcp() reads by byte compares
# (engine/parse.py's linux_syn_options()), then near misses of the same lengths that must get
# parse_tcp_options()' walk -- each would come out wrong if a compare were left out.
MSS = b"\x02\x04\x05\xb4"
SACK_TIMESTAMP = b"\x04\x02\x08\x0a" + bytes(range(1, 9))
SYN_OPTION_CASES = {
    "none": b"",
    "mss alone": MSS,
    "linux, shift 7": MSS + SACK_TIMESTAMP + b"\x01\x03\x03\x07",
    "linux, shift 0": MSS + SACK_TIMESTAMP + b"\x01\x03\x03\x00",
    "linux, shift 14": MSS + SACK_TIMESTAMP + b"\x01\x03\x03\x0e",
    "linux, shift 15 (14 taken)": MSS + SACK_TIMESTAMP + b"\x01\x03\x03\x0f",
    # 4 bytes, not the MSS: SACK-permitted, or a window scale.
    "sack-permitted in the mss's place": b"\x04\x02\x01\x01",
    "window scale in the mss's place": b"\x01\x03\x03\x05",
    # 20 bytes, not Linux's layout: no SACK-permitted, no window scale, a window scale of
    # length 4 (past the options: the walk stops), an EOL where SACK-permitted goes, a
    # SACK-permitted of length 3, an MSS of length 3.
    "no sack-permitted": MSS + b"\x01\x01\x08\x0a" + bytes(8) + b"\x01\x03\x03\x07",
    "no window scale": MSS + SACK_TIMESTAMP + b"\x01\x01\x01\x01",
    "window scale of length 4": MSS + SACK_TIMESTAMP + b"\x01\x03\x04\x07",
    "eol before sack-permitted": MSS + b"\x00\x02\x08\x0a" + bytes(8) + b"\x01\x03\x03\x07",
    "sack-permitted of length 3": MSS + b"\x04\x03\x08\x0a" + bytes(8) + b"\x01\x03\x03\x07",
    "mss of length 3": b"\x02\x03\x05\xb4" + SACK_TIMESTAMP + b"\x01\x03\x03\x07",
    # Linux's layout and four NOPs more: 24 bytes.
    "linux and nops": MSS + SACK_TIMESTAMP + b"\x01\x03\x03\x07" + b"\x01" * 4,
}


def syn_option_frames() -> Tuple[List[Tuple[float, bytes]], int]:
    """A first SYN with each of SYN_OPTION_CASES, over IPv4 (with window 0, with a payload,
    too) and IPv6 (after a first SYN that makes its table on the general path), the
    handshakes of some of them completed (the window scale read is then used); and how
    many of the frames are IPv4 first SYNs (each one the fast path takes)."""
    c, s = "10.1.0.1", "10.1.0.2"
    frames: List[Tuple[float, bytes]] = []
    firsts = 0
    t = 0.0
    for n, options in enumerate(SYN_OPTION_CASES.values()):
        for window, payload in ((64000, b""), (0, b""), (5000, b"data on a SYN")):
            t += 0.01
            port = 41000 + 3 * n + (window == 0) + 2 * bool(payload)
            frames.append((T0 + t, build_ethernet(build_tcp_datagram(
                c, s, port, 80, seq=0xFFFFFF00 + n, flags=SYN, window=window,
                options=options, payload=payload))))
            firsts += 1
            if window == 64000 and n % 2:
                frames.append((T0 + t + 0.001, build_ethernet(build_tcp_datagram(
                    s, c, 80, port, seq=9000, ack=0xFFFFFF01 + n, flags=SYN | ACK,
                    window=500, options=options))))
                frames.append((T0 + t + 0.002, build_ethernet(build_tcp_datagram(
                    c, s, port, 80, seq=0xFFFFFF01 + n, ack=9001, window=300))))
        t += 0.01
        frames.append((T0 + t, ipv6_frame(C6, S6, IPPROTO_TCP, build_tcp(
            C6, S6, 42000 + n, 80, seq=7 + n, flags=SYN, window=1000, options=options))))
    return frames, firsts


SYN_OPTION_SETTINGS = [(framing, *setting) for framing in FRAMINGS for setting in KNOB_SETTINGS]


@pytest.mark.parametrize("framing, name, knobs, max_entries", SYN_OPTION_SETTINGS,
                         ids=[f"{framing}-{setting[0]}"
                              for framing, *setting in SYN_OPTION_SETTINGS])
def test_first_syn_options_same_with_and_without_fast_path(framing, name, knobs, max_entries,
                                                           tmp_path, monkeypatch):
    """Every first SYN above: the same entry (its packed state: the side's window scale and
    flags) with and without the fast path, under every knob setting (a full table of 4:
    new_tcp() declines, the general path early-drops); with room, each IPv4 first SYN is
    the fast path's."""
    frames, firsts = syn_option_frames()
    counting = CountingFastPath(monkeypatch)
    replayed_alike(reframed(write_capture(frames, tmp_path / "syns.pcap"), framing, tmp_path),
                   knobs, max_entries)
    if max_entries is None:
        assert counting.taken >= firsts, (counting.taken, firsts)


def test_syn_layouts_are_what_the_option_walk_reads():
    """parse.linux_syn_options() knows Linux's two SYN layouts as tcp_options() lays them
    out -- the MSS alone, MSS SACK_PERM TIMESTAMP NOP WSCALE -- and answers for them what
    parse_tcp_options()' walk reads (the shift, SACK-permitted); for other options of the
    same lengths it answers None, leaving them to the walk."""
    from engine.packet import TcpInfo
    from engine.parse import linux_syn_options, parse_tcp_options
    mss_only = tcp_options(mss=1460)
    linux = tcp_options(mss=1460, wscale=9, sack_perm=True, timestamps=(5, 0))
    assert (len(mss_only), len(linux)) == (4, 20)
    for options, want in ((mss_only, (None, False)), (linux, (9, True))):
        tcp = TcpInfo(SYN, 0, 0, 1000, 0, options=True)
        parse_tcp_options(tcp, options, 0, len(options))
        assert (tcp.wscale, tcp.sack_perm) == want
        framed = b"\xee" * 7 + options + b"\xee" * 3          # read in place, at an offset
        assert linux_syn_options(framed, 7, len(options)) == want
    near_misses = (tcp_options(wscale=9, sack_perm=True, timestamps=(5, 0)) + b"\x01" * 4,
                   tcp_options(mss=1460, timestamps=(5, 0)) + b"\x01" * 4,   # no SACK_PERM,
                   linux[:4] + b"\x01\x01" + linux[6:],      # (nor with the window scale)
                   linux[:16] + b"\x01\x01\x01\x01",                         # no WSCALE
                   b"\x01" * 20)                                             # NOPs
    for options in near_misses:                             # (no MSS, then the others)
        assert len(options) == 20
        assert linux_syn_options(options, 0, len(options)) is None, options.hex()
    assert linux_syn_options(linux, 0, 12) is None          # the layout cut short
# -- The per-frame prologue's reads: the TCP header's length by table, headers cut short --

def header_edge_frames() -> List[Tuple[float, bytes]]:
    """An established connection and a UDP flow, then segments both ways with every data
    offset byte's high nibble (0-15: short of the header, the header alone, options of
    zeros, past the segment) and low nibble (reserved bits and AE clear, or all set), and
    datagrams of both flows cut inside their TCP or UDP header -- the frame padded as a
    NIC pads it, or ending with the datagram (the header read runs past the frame)."""
    c, s = "10.9.0.1", "10.9.0.2"
    frames: List[Tuple[float, bytes]] = []
    t = 0.0

    def send(datagram: bytes, *, pad: bool = False, offset_byte: Optional[int] = None):
        nonlocal t
        t += 0.01
        frame = bytearray(build_ethernet(datagram, pad=pad))
        if offset_byte is not None:
            frame[14 + 20 + 12] = offset_byte       # Ethernet, IPv4, then the TCP header's
        frames.append((T0 + t, bytes(frame)))

    send(build_tcp_datagram(c, s, 42000, 80, seq=1000, flags=SYN))
    send(build_tcp_datagram(s, c, 80, 42000, seq=5000, ack=1001, flags=SYN | ACK))
    send(build_tcp_datagram(c, s, 42000, 80, seq=1001, ack=5001))
    send(build_udp_datagram(c, s, 5300, 53, b"query"))
    send(build_udp_datagram(s, c, 53, 5300, b"answer"))
    sent = {c: 1001, s: 5001}
    for nibble in range(16):
        for low in (0x0, 0xF):
            for src, dst, ports in ((c, s, (42000, 80)), (s, c, (80, 42000))):
                payload = bytes(24)
                send(build_tcp_datagram(src, dst, *ports, seq=sent[src], ack=sent[dst],
                                        flags=PSH | ACK, payload=payload),
                     offset_byte=nibble << 4 | low)
                if nibble == 5:             # in order: the next segment follows it
                    sent[src] += len(payload)
    for short in (0, 4, 12, 19):            # bytes of the TCP header in the datagram
        for pad in (True, False):
            segment = build_tcp(c, s, 42000, 80, seq=sent[c], ack=sent[s])[:short]
            send(build_ipv4(c, s, IPPROTO_TCP, segment), pad=pad)
    for short in (0, 4, 6, 7):              # bytes of the UDP header in the datagram
        for pad in (True, False):
            send(build_ipv4(c, s, IPPROTO_UDP, build_udp(c, s, 5300, 53, b"q")[:short]),
                 pad=pad)
    send(build_udp_datagram(c, s, 5300, 53, b"still known"))
    send(build_tcp_datagram(s, c, 80, 42000, seq=sent[s], ack=sent[c], flags=ACK))
    return frames


def test_data_offsets_and_cut_headers_same_with_and_without_fast_path(tmp_path, monkeypatch):
    """The TCP header's length read from a table of the data offset byte, and the TCP and
    UDP headers read before the datagram's length is compared with them (struct.error
    where the frame ends first): every offset and every cut header answered as the
    general path answers it, the well-formed segments and datagrams taken."""
    counting = CountingFastPath(monkeypatch)
    replayed_alike(write_capture(header_edge_frames(), tmp_path / "headers.pcap"), {}, None)
    # Taken: the SYN, the first UDP datagram and the known ones, the segments of data
    # offset 5 both ways (ACK case) and 6-11 (known_segment(): options of zeros), the last
    # two -- not the offsets short of the header or past the segment, nor the cut headers.
    assert counting.taken >= 5 + 2 * 2 * 7 + 2, counting.taken


def test_cut_headers_are_declined_without_a_change():
    """A TCP or UDP datagram cut inside its header, in a frame that ends with it: the fast
    path declines it, raising nothing and changing nothing (its expiry aside: none due),
    while the frame ends before the fields it reads; once they are in the frame (TCP's
    first 16 bytes; UDP's length, in a datagram of 28 bytes or more), the datagram is
    refused as the general path refuses a truncated header: INVALID, counted in `invalid`
    and nothing else."""
    engine = make_engine()
    fast = engine.fast_path()
    for _, frame in header_edge_frames()[:5]:
        assert fast(T0, LINKTYPE_ETHERNET, frame) is not None
    c, s = "10.9.0.1", "10.9.0.2"
    for proto, header, read in ((IPPROTO_TCP, build_tcp(c, s, 42000, 80, seq=1001), 16),
                                (IPPROTO_UDP, build_udp(c, s, 5300, 53, b"q"), 8)):
        for short in range(len(header) if proto == IPPROTO_UDP else 20):
            frame = build_ethernet(build_ipv4(c, s, proto, header[:short]))
            before = engine_state_of(engine)
            verdict = fast(T0 + 1, LINKTYPE_ETHERNET, frame)
            if short < read:
                assert verdict is None, (proto, short)
                assert repr(engine_state_of(engine)) == repr(before)
                continue
            assert verdict == INVALID_VERDICT, (proto, short)
            before[0]["invalid"] += 1
            assert repr(engine_state_of(engine)) == repr(before)


def refusal_frames() -> List[Tuple[float, bytes]]:
    """Datagrams conntrack refuses before any entry is made or touched, around an
    established TCP connection, a UDP flow and an ICMP echo: every flags byte error()
    refuses on the entry (both ways) and on a tuple without one, data offsets short of
    the header and past the segment, UDP lengths under 8 and past the datagram; ICMP
    replies and other non-request queries without an entry, and the same over IPv6 (the
    general path's); then the flows' next packets, taken as before."""
    c, s = "10.6.0.1", "10.6.0.2"
    c6, s6 = "2001:db8::1", "2001:db8::2"
    frames: List[Tuple[float, bytes]] = []

    def send(datagram: bytes, offset_byte: Optional[int] = None) -> None:
        ipv6 = datagram[0] >> 4 == 6
        frame = bytearray(build_ethernet(datagram, ethertype=ETH_P_IPV6) if ipv6
                          else build_ethernet(datagram))
        if offset_byte is not None:
            frame[14 + 20 + 12] = offset_byte
        frames.append((T0 + 0.01 * len(frames), bytes(frame)))

    send(build_tcp_datagram(c, s, 43000, 80, seq=1000, flags=SYN))
    send(build_tcp_datagram(s, c, 80, 43000, seq=5000, ack=1001, flags=SYN | ACK))
    send(build_tcp_datagram(c, s, 43000, 80, seq=1001, ack=5001))
    send(build_udp_datagram(c, s, 5400, 53, b"query"))
    send(build_udp_datagram(s, c, 53, 5400, b"answer"))
    send(build_icmp_datagram(c, s, 8, ident=7, seq=1))
    send(build_icmp_datagram(s, c, 0, ident=7, seq=1))
    refused = [flags for flags in range(256) if not VALID_FLAGS["linux"][flags]]
    assert len(refused) > 100
    for flags in refused[::3]:
        send(build_tcp_datagram(c, s, 43000, 80, seq=1001, ack=5001, flags=flags))
        send(build_tcp_datagram(s, c, 80, 43000, seq=5001, ack=1001, flags=flags))
        send(build_tcp_datagram(c, s, 43001, 80, seq=9000, flags=flags))      # no entry
        send(build_ipv6(c6, s6, IPPROTO_TCP, build_tcp(c6, s6, 43002, 80, flags=flags)))
    for nibble in (0, 1, 4, 15):            # short of the header; past the segment
        send(build_tcp_datagram(c, s, 43000, 80, seq=1001, ack=5001, payload=bytes(8)),
             offset_byte=nibble << 4)
        send(build_tcp_datagram(c, s, 43003, 80, seq=1, payload=bytes(8)),
             offset_byte=nibble << 4)
    for length in (0, 7, 14, 200):          # the datagram holds 8 + 5 bytes
        send(build_ipv4(c, s, IPPROTO_UDP, build_udp(c, s, 5400, 53, b"q" * 5, length=length)))
        send(build_ipv4(c, s, IPPROTO_UDP, build_udp(c, s, 5401, 53, b"q" * 5, length=length)))
        send(build_ipv6(c6, s6, IPPROTO_UDP, build_udp(c6, s6, 5402, 53, b"q" * 5,
                                                       length=length)))
    for icmp_type in (0, 14, 16, 18, 9, 10):     # replies, router advertisement/solicitation
        send(build_icmp_datagram(c, s, icmp_type, ident=99, seq=1))
    send(build_icmp_datagram(s, c, 0, ident=7, seq=2))       # a reply to a known echo
    send(build_tcp_datagram(s, c, 80, 43000, seq=5001, ack=1001, flags=PSH | ACK,
                            payload=b"hello"))
    send(build_udp_datagram(c, s, 5400, 53, b"again"))
    return frames


def test_refused_datagrams_are_invalid_on_the_fast_path_as_on_the_general_one(tmp_path,
                                                                             monkeypatch):
    """IPv4 datagrams refused before any entry (TCP flags error() refuses, with or
    without an entry; a TCP data offset short of the header or past the segment; a UDP
    length under 8 or past the datagram): the fast path answers INVALID and counts
    `invalid`, the general path's answer; IPv6's, and ICMP queries that are not requests
    without an entry (INVALID too, from IcmpTracker.new()), are left to the general path.
    Same engine either way."""
    counting = CountingAnswers(monkeypatch, "_make_invalid")
    frames = refusal_frames()
    replayed_alike(write_capture(frames, tmp_path / "refusals.pcap"), {}, None)
    flags_refused = len([f for f in range(256) if not VALID_FLAGS["linux"][f]][::3])
    # Per refused flags byte: both ways on the entry and one without (not IPv6's); the
    # 8 offsets, the 8 IPv4 lengths (not the ICMP types).
    assert counting.taken == 3 * flags_refused + 8 + 8, counting.taken
    result = replay(str(tmp_path / "refusals.pcap"))
    # The flows' next packets after all that: found as before (nothing was touched).
    assert result.verdicts[-3:] == [Verdict(CtState.ESTABLISHED, True),
                                    Verdict(CtState.ESTABLISHED, True),
                                    Verdict(CtState.ESTABLISHED, False)]



def test_icmpv6_messages_left_untracked_are_answered_untracked(tmp_path, monkeypatch):
    """ICMPv6 neighbour discovery and MLD messages (icmpv6.NOT_TRACKED_TYPES): UNTRACKED on
    the fast path as on the general one, no entry, no stat -- and a replay records them
    as UNTRACKED, not as a held fragment's NOTSEEN; a redirect (137, neither tracked nor
    left untracked) and an error quoting a flow still take the general path."""
    from engine.icmpv6 import NOT_TRACKED_TYPES
    counting = CountingFastPath(monkeypatch)
    frames = [(T0, ipv6_frame(C6, S6, IPPROTO_ICMPV6,
                              build_icmpv6(C6, S6, 128, ident=5, seq=1)))]
    for icmp_type in sorted(NOT_TRACKED_TYPES) + [137]:
        frames.append((T0 + 0.1 * len(frames), ipv6_frame(
            C6, "ff02::1", IPPROTO_ICMPV6,
            build_icmpv6(C6, "ff02::1", icmp_type, payload=bytes(16)))))
    quote = build_ipv6(S6, C6, IPPROTO_UDP, build_udp(S6, C6, 53, 5000, b"q"))
    frames.append((T0 + 2, ipv6_frame(C6, S6, IPPROTO_ICMPV6,
                                      build_icmpv6(C6, S6, 1, code=4, payload=quote))))
    frames.append((T0 + 3, ipv6_frame(S6, C6, IPPROTO_ICMPV6,
                                      build_icmpv6(S6, C6, 129, ident=5, seq=1))))
    path = write_capture(frames, tmp_path / "nd.pcap")
    replayed_alike(path, {}, None)
    # Taken: the untracked ones and the echo reply (the request makes IPv6's ICMPv6 table:
    # the general path's).
    assert counting.taken == len(NOT_TRACKED_TYPES) + 1, counting.taken
    result = replay(str(path))
    assert result.verdicts[1:1 + len(NOT_TRACKED_TYPES)] == [
        Verdict(CtState.UNTRACKED, False)] * len(NOT_TRACKED_TYPES)
    assert len(result.engine.tracker) == 1



def test_generic_protocols_are_taken_as_the_general_path_takes_them(tmp_path, monkeypatch):
    """Protocols of the generic tracker over IPv4 (253, 50 ESP, 41 IPv6-in-IPv4): an entry
    of the addresses alone, the generic timeout on each packet, SEEN_REPLY from the reply,
    never ASSURED; the first packet of each protocol makes its table on the general path,
    the next flows' first packets make entries here.  Under a generic timeout of 300 s the
    entries run out and a flow starts again.  UDP-Lite
    (its own tracker) and protocol 58 inside IPv4 (ICMPv6's tracker: INVALID) are left
    to the general path.  Same engine either way."""
    counting = CountingFastPath(monkeypatch)
    frames: List[Tuple[float, bytes]] = []
    # What follows the IP header: read as ports 5000 -> 53, a UDP-Lite coverage of 0 and a
    # checksum by the trackers that read one; nothing by the generic tracker.
    payload = bytes.fromhex("13880035" "00001234") + bytes(4)
    t = 0.0
    for proto in (253, 50, 41, 136, 58):
        for host in (1, 2, 3):
            c, s = f"10.7.{proto}.{host}", "10.7.0.250"
            for src, dst in ((c, s), (s, c), (c, s)):
                t += 0.5
                frames.append((T0 + t, build_ethernet(build_ipv4(src, dst, proto, payload))))
    frames.append((T0 + 2000, build_ethernet(build_ipv4("10.7.253.1", "10.7.0.250", 253,
                                                        payload))))
    path = write_capture(frames, tmp_path / "generic.pcap")
    knobs = {"generic_timeout": 300}
    replayed_alike(path, knobs, None)
    # Taken: of 253, 50 and 41, all but the first packet (9 - 1 each), and the last.
    assert counting.taken == 3 * 8 + 1, counting.taken
    # And as the table stands after the flows (before their timers ran out).
    assert_same(engine_state(replay(str(path), fast_path=False, at=T0 + t,
                                    knobs_overrides=knobs)),
                engine_state(replay(str(path), at=T0 + t, knobs_overrides=knobs)))
    result = replay(str(path), at=T0 + t)
    entries = {entry.proto: entry for entry in result.engine.tracker.entries()
               if entry.proto in (50, 41)}
    assert set(entries) == {50, 41}
    assert all(entry.status & SEEN_REPLY and not entry.status & ASSURED
               for entry in entries.values())



def tftp_expecting_engine(c: str, s: str) -> Engine:
    """An engine with one expectation pending: a TFTP read request from c (port 5000) to
    s under a CT rule, then the chains and listeners detached (the fast path is allowed)."""
    from engine.chains import Chains
    from engine.rules import Ruleset
    ct_tftp = "*raw\n-A OUTPUT -p udp -m udp --dport 69 -j CT --helper tftp\nCOMMIT\n"
    request = build_ethernet(build_udp_datagram(c, s, 5000, 69, b"\x00\x01file\x00octet\x00"))
    chains = Chains(Engine("linux"), Ruleset.load_restore(ct_tftp))
    chains.feed_frame(T0, LINKTYPE_ETHERNET, request)
    eng = chains.engine
    assert len(eng.tracker.expects) == 1
    eng.chains = None
    eng.early_listeners.clear()
    eng.listeners.clear()
    return eng



# -- round 11 (fragfast): fragments filed straight by Defragmenter.file(), SCTP chunk lists
# read for SctpTracker.chunks_packet() ------------------------------------------------------

def mixed_fragment_frames() -> List[Tuple[float, bytes]]:
    """IPv4 fragments whose datagrams the fast path (option-less fragments:
    Defragmenter.file()) and the general path (fragments with IP options: feed()) share:
    a datagram whose first fragment has options and whose others have none, in and out of
    order, and the other way round; a non-final fragment cut to a multiple of 8 (its
    queue then holds too little: it waits, and times out); Not-ECT mixed with CE (the
    datagram dropped); DF on some fragments only (the reassembled DF from the largest);
    a short frame padded past its total length."""
    c, s = "10.1.0.1", "10.1.0.2"
    router_alert = b"\x94\x04\x00\x00"
    frames: List[Tuple[float, bytes]] = []

    def send(t, l4, ident, offset, size, *, options=b"", tos=0, df=False, last=None,
             proto=IPPROTO_UDP):
        piece = l4[offset:offset + size]
        more = offset + size < len(l4) if last is None else not last
        frames.append((T0 + t, build_ethernet(build_ipv4(
            c, s, proto, piece, ident=ident, frag_offset=offset, mf=more, options=options,
            tos=tos, df=df), pad=True)))

    udp = build_udp(c, s, 7300, 53, bytes(range(56)))          # 64 bytes: 3 pieces of 24
    for t, ident, order, with_options in ((0.0, 21, (0, 1, 2), {0}), (0.1, 22, (2, 1, 0), {0}),
                                          (0.2, 23, (0, 1, 2), {1, 2}),
                                          (0.3, 24, (1, 0, 2, 0), {0})):
        for index in order:
            send(t, udp, ident, index * 24, 24,
                 options=router_alert if index in with_options else b"")
            t += 0.01
    # A non-final piece of 20 bytes: cut to 16, the datagram never whole.
    send(0.4, udp, 25, 0, 20)
    send(0.41, udp, 25, 16, 48)
    # ECN: Not-ECT then CE -- dropped at reassembly; ECT(0) then CE -- CE kept.
    for ident, tos_pair in ((26, (0, 3)), (27, (2, 3))):
        send(0.5, udp, ident, 0, 32, tos=tos_pair[0])
        send(0.51, udp, ident, 32, 32, tos=tos_pair[1])
    # DF on the smaller fragment only, then on the larger only.
    send(0.6, udp, 28, 0, 16, df=True)
    send(0.61, udp, 28, 16, 48)
    send(0.62, udp, 29, 0, 16)
    send(0.63, udp, 29, 16, 48, df=True)
    # An 8-byte last piece: a 42-byte frame padded to 60.
    send(0.7, udp, 30, 0, 56)
    send(0.71, udp, 30, 56, 8)
    send(40.0, udp, 31, 0, 24)          # after ident 25's queue timed out
    send(40.01, udp, 31, 24, 40)
    return frames


@pytest.mark.parametrize("framing, name, knobs, max_entries", EDGE_SETTINGS,
                         ids=[f"{framing}-{setting[0]}" for framing, *setting in EDGE_SETTINGS])
def test_fragments_with_and_without_options_same_with_and_without_fast_path(
        framing, name, knobs, max_entries, tmp_path, monkeypatch):
    """fragment() files an option-less fragment with Defragmenter.file(), past feed()'s
    tests: its queue is the one the general path's fragments of the same datagram (with
    options) go to, and what it holds the same, however framed."""
    counting = CountingAnswers(monkeypatch, "make_fragment")
    replayed_alike(reframed(write_capture(mixed_fragment_frames(), tmp_path / "mixed.pcap"),
                            framing, tmp_path, EDGE_FRAMINGS), knobs, max_entries)
    if framing != "eth0 tap":
        assert counting.taken >= 15, counting.taken


def sctp_bundle_frames() -> List[Tuple[float, bytes]]:
    """SCTP packets of several chunks on known associations (IPv4, padded to 60 bytes
    where short, and IPv6): DATA and SACK bundled both ways, a chunk type without a
    transition row (ECNE, 12) before and after ones with a row (ERROR, SHUTDOWN), a
    HEARTBEAT with another tag alone (IGNORE: a restarted peer?) and its ACK with that tag
    (accepted), a HEARTBEAT ACK with another tag bundled after DATA (INVALID), a COOKIE ACK
    out of place (INVALID: only first)."""
    frames: List[Tuple[float, bytes]] = []
    INIT, INIT_ACK, HB, HB_ACK, SHUTDOWN, ERROR, COOKIE_ECHO, COOKIE_ACK, ECNE = (
        1, 2, 4, 5, 7, 9, 10, 11, 12)
    for family, (c, s), port in (("v4", ("10.1.0.1", "10.1.0.2"), 3870),
                                 ("v6", (C6, S6), 3871)):
        def send(t, src, dst, vtag, chunks):
            body = build_sctp(*((port + 10000, port) if src == c else (port, port + 10000)),
                              vtag, chunks)
            if family == "v4":
                frame = build_ethernet(build_ipv4(src, dst, IPPROTO_SCTP, body), pad=True)
            else:
                frame = ipv6_frame(src, dst, IPPROTO_SCTP, body)
            frames.append((T0 + t + (0.01 if family == "v6" else 0), frame))

        chunk = build_sctp_chunk
        send(0.0, c, s, 0, build_sctp_init(INIT, 0x1111, 1))
        send(0.1, s, c, 0x1111, build_sctp_init(INIT_ACK, 0x2222, 100))
        send(0.2, c, s, 0x2222, chunk(COOKIE_ECHO, b"cookie!!") + build_sctp_data(1, b"a"))
        send(0.3, s, c, 0x1111, chunk(COOKIE_ACK) + build_sctp_sack(1))
        send(0.4, c, s, 0x2222, build_sctp_sack(5) + build_sctp_data(2, b"bb"))
        send(0.45, s, c, 0x1111, build_sctp_data(6, b"c") + build_sctp_sack(2))
        send(0.5, c, s, 0x2222, chunk(ECNE, b"\0\0\0\1") + chunk(ERROR))
        send(0.55, s, c, 0x1111, chunk(ERROR) + chunk(ECNE, b"\0\0\0\1"))
        send(0.6, c, s, 0x2222, chunk(ECNE, b"\0\0\0\2"))                 # row-less alone
        send(0.65, c, s, 0x2222, build_sctp_data(3, b"d") + chunk(HB_ACK, b"\0\1\0\x04"))
        send(0.7, s, c, 0x7777, chunk(HB, b"\0\1\0\x04"))                  # IGNORE
        send(0.75, c, s, 0x8888, chunk(HB_ACK, b"\0\1\0\x04"))             # the new tag
        send(0.8, c, s, 0x8888, chunk(HB_ACK, b"\0\1\0\x04") + build_sctp_data(4, b"e"))
        send(0.85, c, s, 0x8888, build_sctp_data(4, b"e") + chunk(COOKIE_ACK))
        send(0.9, c, s, 0x8888, build_sctp_data(5, b"f") + chunk(SHUTDOWN, b"\0\0\0\6"))
        send(0.95, c, s, 0x8888, chunk(SHUTDOWN, b"\0\0\0\6") + chunk(ECNE, b"\0\0\0\3"))
        send(1.0, s, c, 0x7777, build_sctp_sack(5))
    return sorted(frames, key=lambda frame: frame[0])


@pytest.mark.parametrize("framing, name, knobs, max_entries", EDGE_SETTINGS,
                         ids=[f"{framing}-{setting[0]}" for framing, *setting in EDGE_SETTINGS])
def test_sctp_bundles_same_with_and_without_fast_path(framing, name, knobs, max_entries,
                                                      tmp_path, monkeypatch):
    """known_sctp() reads the tag and the chunks within the datagram (a padded frame's
    padding is no chunk) for chunks_packet(), which passes over chunks without a
    transition row: the same engine and verdicts as the general path's SctpTracker.packet()
    on parse_sctp()'s SctpInfo, however framed."""
    counting = CountingAnswers(monkeypatch, "make_known_sctp")
    replayed_alike(reframed(write_capture(sctp_bundle_frames(), tmp_path / "bundles.pcap"),
                            framing, tmp_path, EDGE_FRAMINGS), knobs, max_entries)
    if framing != "eth0 tap":
        assert counting.taken >= 20, counting.taken


# -- one due test for timers and expectations (TimerWheel.hold()) --------------------------

def test_an_expectation_running_out_is_expired_by_the_next_datagram():
    """The fast path asks `now >= timers.next_due` alone: the wheel holds the
    expectations' next_due too.  An expectation running out before any entry's timer is
    expired by the next datagram -- on the fast path as Tracker.process() would -- so that
    datagram's new flow is taken (admit() declines while one is pending)."""
    import ipaddress
    from engine import ipv4
    from engine.ctstate import CtState
    from engine.expect import Expectation
    from engine.helpers.registry import helper_named
    c, s = "10.4.0.1", "10.4.0.2"
    for fast in (True, False):
        eng = Engine("linux")
        track = eng.fast_path()
        frames = [build_ethernet(build_udp_datagram(c, s, 5000 + n, 69, b"x"))
                  for n in range(3)]

        def feed(t, frame):
            verdict = track(t, LINKTYPE_ETHERNET, frame) if fast else None
            return verdict if verdict is not None else eng.feed_frame(t, LINKTYPE_ETHERNET,
                                                                    frame)

        feed(T0, frames[0])                                  # a master: 30 s to live
        tracker = eng.tracker
        master = next(tracker.entries())
        exp = Expectation(master, helper_named("tftp"), ipv4, IPPROTO_UDP,
                          int(ipaddress.IPv4Address(s)), int(ipaddress.IPv4Address(c)),
                          None, 5000)
        assert tracker.expects.add(exp, 1, 5, 100, T0) is None
        assert tracker.timers.next_due == T0 + 5
        if fast:
            assert track(T0 + 1, LINKTYPE_ETHERNET, frames[1]) is None  # one is pending
            eng.feed_frame(T0 + 1, LINKTYPE_ETHERNET, frames[1])
        else:
            feed(T0 + 1, frames[1])
        verdict = feed(T0 + 6, frames[2])                    # it ran out at T0 + 5
        assert len(tracker.expects) == 0 and tracker.stats["expect_delete"] == 1
        assert verdict.state == CtState.NEW and eng.count == 3
        if fast:
            assert track(T0 + 6.5, LINKTYPE_ETHERNET, build_ethernet(build_udp_datagram(
                c, s, 5009, 69, b"x"))) is not None          # and new flows are taken


def test_an_expected_flow_s_next_datagram_is_related_on_the_fast_path():
    """ORIGINAL_VERDICTS by the entry's status: a datagram of an expected flow (EXPECTED,
    no reply seen yet) is RELATED, the same on the fast path as on the general one; once
    the reply is seen, ESTABLISHED.  A TFTP read request under a CT rule files the
    expectation; the chains then go (the fast path takes no packet while they are there)."""
    c, s = "10.4.0.1", "10.4.0.2"
    data = build_ethernet(build_udp_datagram(s, c, 7000, 5000, b"\x00\x03\x00\x01data"))
    answer = build_ethernet(build_udp_datagram(c, s, 5000, 7000, b"\x00\x04\x00\x01"))
    states = {}
    for fast in (True, False):
        eng = tftp_expecting_engine(c, s)
        track = eng.fast_path()
        assert track is not None
        first = eng.feed_frame(T0 + 1, LINKTYPE_ETHERNET, data)    # consumes it: RELATED
        verdicts = [first.state]
        for t, frame in ((T0 + 2, data), (T0 + 3, answer), (T0 + 4, data)):
            verdict = track(t, LINKTYPE_ETHERNET, frame) if fast else None
            if fast:
                assert verdict is not None                      # taken
            else:
                verdict = eng.feed_frame(t, LINKTYPE_ETHERNET, frame)
            verdicts.append((verdict.state, verdict.reply))
        states[fast] = (verdicts, [(e.status, e.expires) for e in eng.tracker.entries()])
    assert states[True] == states[False]
    assert states[True][0] == [CtState.RELATED, (CtState.RELATED, False),
                               (CtState.ESTABLISHED, True), (CtState.ESTABLISHED, False)]
