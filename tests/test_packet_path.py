"""One packet path: every way into the engine gives the same results, and the hooks confirm.

The engine has these entry points for a packet: feed_frame() (with the fast extraction of
the common datagram, or without it), feed_datagram() (the link layer already stripped) and
the tracker itself (Tracker.process, then confirm) on a parsed Packet.  They must agree
packet by packet, in the tables they leave and in the stat counters, on every stored
capture -- so a fast path can only ever be an extraction step in front of the shared one.

Confirmation (nf_conntrack_confirm): a new entry enters the table only when its packet
leaves its last hook (POSTROUTING when sent, INPUT when received for this host); a hook
that drops the packet first leaves no entry and counts no insert.
"""
from __future__ import annotations

from itertools import takewhile
from pathlib import Path

import pytest

from engine.capture import read_capture
from engine.core import NF_ACCEPT, NF_DROP, Engine
from engine.ctstate import CtState
from engine.hooks import FORWARD, LOCAL_IN, LOCAL_OUT, POST_ROUTING, PRE_ROUTING, Hook
from engine.build import IPV6_FRAGMENT
from engine.linklayer import LINKTYPE_ETHERNET, ip_version, strip_ip
from engine.parse import ParseError, parse_ipv4
from engine.parse_ipv6 import parse_ipv6
from engine.routing import routing_drops
from engine.build import build_ethernet, build_tcp_datagram, build_udp_datagram, ip_to_int
from enginehelp import GiB, T0, lines, make_engine, udp, view_text
from procfs_ct.sources.synthetic import SyntheticTraffic

DATA = Path(__file__).resolve().parent / "data"
CAPTURES = sorted(str(p.relative_to(DATA)) for p in DATA.rglob("*.pcap"))


def frames_of(name: str) -> list:
    if name == "synthetic":
        # Five seconds of the synthetic source: thousands of flows of every protocol.
        return [(ts, LINKTYPE_ETHERNET, frame) for ts, frame in
                takewhile(lambda f: f[0] < T0 + 5, SyntheticTraffic(seed=3, start=T0).frames())]
    with open(DATA / name, "rb") as f:
        return [(fr.ts, fr.linktype, fr.data) for fr in read_capture(f)]


def via_feed_frame(engine: Engine, frames: list) -> list:
    return [engine.feed_frame(ts, lt, data) for ts, lt, data in frames]


def via_feed_datagram(engine: Engine, frames: list) -> list:
    out = []
    for ts, lt, data in frames:
        datagram, hook = strip_ip(lt, data)
        out.append(None if datagram is None else
                   engine.feed_datagram(ts, datagram, engine.default_hook if hook is None
                                        else hook))
    return out


def via_tracker(engine: Engine, frames: list, unseen: list) -> list:
    """Parse each whole datagram and hand it to the tracker, confirming as the last hook
    does (captures without fragments only: the defragmenter sits in front of this).  The
    datagrams conntrack does not see at all (`unseen`: a header ip_rcv drops, a forwarded
    copy leaving) are left out: what comes before the tracker decides those; what routing
    drops after PREROUTING (engine/routing.py) is not confirmed."""
    out = []
    for (ts, lt, data), skip in zip(frames, unseen):
        datagram, hook = strip_ip(lt, data)
        if datagram is None or skip:
            out.append(None)
            continue
        parse = parse_ipv6 if ip_version(datagram) == 6 else parse_ipv4
        pkt = parse(datagram, engine.default_hook if hook is None else hook)
        if isinstance(pkt, ParseError):
            out.append(pkt)
            continue
        result = engine.tracker.process(pkt, ts)
        header = datagram if ip_version(datagram) == 4 else None    # (IPv4 options only)
        if pkt.hook == PRE_ROUTING and routing_drops(pkt.src, pkt.dst, header, engine.host):
            engine.tracker.discard(result)      # routing drops it after PREROUTING
        else:
            engine.tracker.confirm(result, ts)
        out.append(result)
    return out


def is_fragment(datagram: bytes) -> bool:
    """An IPv4 fragment (MF or an offset), or an IPv6 datagram with a fragment header first."""
    if ip_version(datagram) == 6:
        return datagram[6] == IPV6_FRAGMENT
    return bool(datagram[6] & 0x3F or datagram[7])


def summary(results: list) -> list:
    return [None if r is None else r if isinstance(r, ParseError) else
            (r.state, r.reply, r.hook, r.entry is not None) for r in results]


def outcome(engine: Engine, frames: list, feed) -> tuple:
    results = feed(engine, frames)
    end = frames[-1][0] + 0.001 if frames else T0
    engine.advance(end)
    return (summary(results), view_text(engine, "net/nf_conntrack", end),
            dict(engine.tracker.stats))


def fresh(profile: str, **kw) -> Engine:
    return Engine(profile, ram_bytes=24 * GiB, ncpu=2, **kw)


@pytest.mark.parametrize("profile", ["linux", "tutorial"])
@pytest.mark.parametrize("capture", CAPTURES + ["synthetic"])
def test_every_entry_point_gives_the_same_results(capture, profile):
    frames = frames_of(capture)
    assert frames
    reference = outcome(fresh(profile), frames, via_feed_frame)
    assert outcome(fresh(profile, fast_extraction=False), frames, via_feed_frame) == reference
    assert outcome(fresh(profile), frames, via_feed_datagram) == reference
    fragmented = any(r is None for r in reference[0]) and any(
        (d := strip_ip(lt, data)[0]) is not None and is_fragment(d) for _, lt, data in frames)
    if not fragmented:
        unseen = [s is None for s in reference[0]]
        assert outcome(fresh(profile), frames,
                       lambda eng, fr: via_tracker(eng, fr, unseen)) == reference


def test_the_fast_extraction_is_taken_and_declines_what_it_cannot_do(monkeypatch):
    """The comparison above means something only if both ways are really used."""
    import engine.core
    taken = []
    real = engine.core.extract_ipv4

    def watched(data, off, hook):
        pkt = real(data, off, hook)
        taken.append(pkt is not None)
        return pkt
    monkeypatch.setattr(engine.core, "extract_ipv4", watched)
    eng = fresh("linux")
    via_feed_frame(eng, frames_of("synthetic"))
    assert taken.count(True) > 1000 and taken.count(False) > 100



@pytest.mark.parametrize("fragment", [{"ip_mf": True}, {"ip_frag_offset": 8}],
                         ids=["first, more to come", "not the first"])
@pytest.mark.parametrize("build", [build_udp_datagram, build_tcp_datagram], ids=["udp", "tcp"])
def test_a_fragment_that_reads_like_a_whole_datagram_waits_for_the_defragmenter(build, fragment):
    """Its header and lengths are those of a complete datagram (the fast extraction's other
    checks pass); only the fragment field says otherwise: conntrack must not see it before
    reassembly, on either path."""
    frame = build_ethernet(build("10.0.0.1", "10.0.0.2", 5000, 53, **fragment))
    for fast in (True, False):
        eng = fresh("linux", fast_extraction=fast)
        assert eng.feed_frame(T0, LINKTYPE_ETHERNET, frame) is None
        assert eng.count == 0 and eng.tracker.stats["new"] == 0


# -- hooks and confirmation -------------------------------------------------------------------
def hook_log(eng: Engine, drop_at=None, drop_first: int = 1):
    """Record (hook, state, count of entries) at every hook; drop the first `drop_first`
    packets at `drop_at`."""
    seen = []
    dropped = []

    def listener(hook, pkt, result, now):
        seen.append((hook, result.state, eng.count))
        if hook == drop_at and len(dropped) < drop_first:
            dropped.append(pkt)
            return NF_DROP
        return NF_ACCEPT
    for hook in Hook:
        eng.listen(hook, listener)
    return seen


def test_a_sent_packet_meets_output_then_postrouting_and_is_confirmed_after():
    eng = make_engine("linux")
    seen = hook_log(eng)
    result = udp(eng, T0, "10.0.0.1", "10.0.0.2", 1000, 53)
    assert seen == [(LOCAL_OUT, CtState.NEW, 0), (POST_ROUTING, CtState.NEW, 0)]
    assert eng.count == 1 and result.entry is not None and not result.pending
    assert result.hook == LOCAL_OUT and result.entry.confirmed
    assert eng.tracker.stats["insert"] == 1


def test_a_received_packet_meets_prerouting_then_input_or_forward():
    eng = make_engine("linux", local_addresses=[ip_to_int("10.0.0.2")])
    seen = hook_log(eng)
    to_us = build_udp_datagram("10.0.0.1", "10.0.0.2", 1000, 53, b"x")
    eng.feed_datagram(T0, to_us, PRE_ROUTING)
    assert [h for h, _, _ in seen] == [PRE_ROUTING, LOCAL_IN]
    seen.clear()
    passing = build_udp_datagram("10.0.0.1", "10.0.0.9", 1000, 53, b"x")
    result = eng.feed_datagram(T0, passing, PRE_ROUTING)
    assert [h for h, _, _ in seen] == [PRE_ROUTING, FORWARD, POST_ROUTING]
    assert result.hook == PRE_ROUTING and eng.count == 2


@pytest.mark.parametrize("drop_at", [LOCAL_OUT, POST_ROUTING])
def test_a_first_packet_dropped_before_confirmation_leaves_no_entry(drop_at):
    """The entry is thrown away with its packet: no entry, no `insert`; the next packet of
    the flow is NEW again and this time makes the entry."""
    eng = make_engine("linux")
    hook_log(eng, drop_at=drop_at)
    first = udp(eng, T0, "10.0.0.1", "10.0.0.2", 1000, 53)
    assert first.dropped and first.state == CtState.NEW and first.entry is None
    assert eng.count == 0 and lines(eng, T0) == []
    assert eng.tracker.stats["insert"] == 0
    again = udp(eng, T0 + 1, "10.0.0.1", "10.0.0.2", 1000, 53)
    assert again.state == CtState.NEW and not again.dropped
    assert eng.count == 1 and eng.tracker.stats["insert"] == 1


def test_a_dropped_packet_of_a_confirmed_flow_keeps_the_entry():
    eng = make_engine("linux")
    hook_log(eng, drop_at=LOCAL_IN, drop_first=1)
    udp(eng, T0, "10.0.0.1", "10.0.0.2", 1000, 53)                  # sent: confirmed
    reply = eng.feed_datagram(T0 + 0.1, build_udp_datagram("10.0.0.2", "10.0.0.1", 53, 1000,
                                                           b"y"), PRE_ROUTING)
    assert reply.dropped and reply.state == CtState.ESTABLISHED and reply.reply
    assert eng.count == 1 and eng.tracker.stats["insert"] == 1


def test_an_incoming_first_packet_dropped_at_input_leaves_no_entry():
    eng = make_engine("tutorial")
    hook_log(eng, drop_at=LOCAL_IN)
    datagram = build_udp_datagram("10.0.0.1", "10.0.0.2", 1000, 53, b"x")
    assert eng.feed_datagram(T0, datagram, PRE_ROUTING).dropped
    assert eng.count == 0
    assert eng.tracker.stats["insert"] == 0 and eng.tracker.stats["new"] == 1
    assert eng.feed_datagram(T0 + 1, datagram, PRE_ROUTING).state == CtState.NEW
    assert eng.count == 1


def test_a_frame_received_from_a_wire_meets_routing_on_the_feed_frame_path():
    """feed_frame's inlined path skips the routing check: it holds only because the fast
    extraction declines PRE_ROUTING (checksums to verify).  A martian received frame must
    still be dropped after PREROUTING and leave no entry."""
    martian = build_ethernet(build_udp_datagram("127.0.0.9", "10.0.0.1", 4000, 53))
    eng = fresh("linux", default_hook=PRE_ROUTING)
    result = eng.feed_frame(T0, LINKTYPE_ETHERNET, martian)
    assert result is not None and result.dropped
    assert eng.count == 0 and eng.tracker.stats["new"] == 1


def test_a_replay_shows_the_table_at_its_last_frame_or_at_the_time_asked():
    """replay() without `at` renders the table as of the last frame fed; with `at`, frames
    after it are not fed and the table is shown at `at`."""
    import io
    from engine.capture import PcapWriter
    from engine.replay import replay
    capture = io.BytesIO()
    writer = PcapWriter(capture)
    for n, sport in enumerate((4000, 4001, 4002)):
        writer.write(T0 + 10 * n, build_ethernet(build_udp_datagram("10.0.0.1", "10.0.0.2",
                                                                    sport, 53)))
    capture.seek(0)
    whole = replay(capture, profile="linux", ram_bytes=24 * GiB, ncpu=2)
    assert whole.at == T0 + 20 and len(whole.verdicts) == 3
    # udp_timeout 30: the first flow has 10 s left at the last frame.
    assert sorted(line.split()[4] for line in whole.text().splitlines()) == ["10", "20", "30"]
    capture.seek(0)
    cut = replay(capture, profile="linux", ram_bytes=24 * GiB, ncpu=2, at=T0 + 15)
    assert cut.at == T0 + 15 and len(cut.verdicts) == 2
