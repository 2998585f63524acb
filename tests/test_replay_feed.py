"""engine.replay's two feeding loops: _feed_fast() (the fast path called by a list
comprehension per batch of capture columns, what a plain replay runs) against _feed_each()
(frame by frame, what a replay with `at` or rules runs), both with the same fast path.

The capture mixes what each loop must get right: frames the fast path takes, frames it
declines (the general path answers, at that frame's turn), IPv4 fragments it holds (HELD,
a verdict equal to an UNTRACKED one: None in the verdicts), received datagrams routing drops
(a martian source: `dropped` at their index), a frame conntrack never sees (ARP), over many
batches (READ_CHUNK made small: records straddle chunk ends).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from engine import capture, replay as replay_module
from engine.build import build_ethernet, build_udp_datagram
from engine.capture import CapturedFrame, read_capture_batches, read_capture_columns
from engine.core import Engine
from engine.linklayer import LINKTYPE_ETHERNET
from engine.replay import ReplayResult, replay
from enginehelp import T0
from pcapnghelp import write_pcapng
from test_fastpath import (CLIENT, EDGE_FRAMINGS, engine_state, assert_same, fragment_frames,
                           reframed, write_capture)

SMALL_CHUNK = 512                   # a few frames a batch


def mixed_frames() -> list:
    """fragment_frames() (fragments held, reassembled, declined; a TCP connection) with
    datagrams around them: answered by the client's peer, and from a martian source."""
    frames = list(fragment_frames())
    server = "10.1.0.2"
    for n in range(40):
        t = T0 + 2.0 + n * 0.01
        frames.append((t, build_ethernet(build_udp_datagram(CLIENT, server, 5000 + n % 7,
                                                            53, b"q" * n))))
        frames.append((t + 0.001, build_ethernet(build_udp_datagram(server, CLIENT, 53,
                                                                    5000 + n % 7, b"a"))))
        if n % 9 == 4:              # received from 127.0.0.1: routing drops it
            frames.append((t + 0.002, build_ethernet(build_udp_datagram(
                "127.0.0.1", CLIENT, 6000 + n, 53, b"m"))))
        if n % 13 == 6:             # ARP: conntrack never sees it
            frames.append((t + 0.003, b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + bytes(28)))
    return frames


@pytest.fixture
def mixed_capture(tmp_path: Path) -> str:
    """The mix as a tap on the client's interface hands it over (SLL2: its own datagrams
    outgoing, the others received)."""
    ethernet = write_capture(mixed_frames(), tmp_path / "mixed.pcap")
    return str(reframed(ethernet, "eth0 tap", tmp_path, EDGE_FRAMINGS))


def fed_each(path: str) -> ReplayResult:
    """The capture through _feed_each() with the fast path, as replay() finishes a replay."""
    engine = Engine("linux")
    result = ReplayResult(engine)
    with open(path, "rb") as fileobj:
        replay_module._feed_each(result, read_capture_columns(fileobj), None,
                                 engine.fast_path())
    engine.advance(result.at)
    return result


def test_the_batched_loop_feeds_as_the_frame_by_frame_loop(mixed_capture, monkeypatch):
    monkeypatch.setattr(capture, "READ_CHUNK", SMALL_CHUNK)
    batches = []
    real = replay_module._feed_fast

    def counting(result, columns, fast):
        real(result, (batches.append(batch) or batch for batch in columns), fast)

    monkeypatch.setattr(replay_module, "_feed_fast", counting)
    fast = replay(mixed_capture)
    assert len(batches) > 10                    # the plain replay took _feed_fast(), in batches
    each = fed_each(mixed_capture)
    assert_same(engine_state(each), engine_state(fast))
    # The mix holds what the loops must handle.
    verdicts = fast.verdicts
    assert sum(fast.dropped) == 4               # the martian datagrams, at their own index
    assert all(str(verdicts[index]) == "NEW" for index, dropped in enumerate(fast.dropped)
               if dropped)
    assert verdicts.count(None) >= 20           # held fragments and ARP frames
    assert not any(verdict is replay_module.HELD for verdict in verdicts)


def test_a_verdict_equal_to_held_is_kept(tmp_path, monkeypatch):
    """HELD is found by identity: an UNTRACKED verdict that equals it stays a verdict."""
    untracked = replay_module.Verdict(replay_module.HELD.state, False)
    assert untracked == replay_module.HELD and untracked is not replay_module.HELD
    made = Engine.fast_path

    def answering(engine: Engine, *args):
        track = made(engine, *args)
        return lambda now, linktype, frame: (untracked if frame[23] == 17 and frame[-1:] == b"u"
                                             else track(now, linktype, frame))

    monkeypatch.setattr(Engine, "fast_path", answering)
    frames = [(T0 + n, build_ethernet(build_udp_datagram(CLIENT, "10.1.0.2", 7000, 53,
                                                         b"u" if n % 2 else b"x")))
              for n in range(6)]
    verdicts = replay(str(write_capture(frames, tmp_path / "u.pcap"))).verdicts
    assert [verdict is untracked for verdict in verdicts] == [False, True] * 3


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_columns_are_the_batches(kind, tmp_path, monkeypatch):
    """read_capture_columns() zipped is read_capture_batches(), batch for batch."""
    monkeypatch.setattr(capture, "READ_CHUNK", SMALL_CHUNK)
    frames = mixed_frames()
    path = tmp_path / f"mixed.{kind}"
    if kind == "pcap":
        write_capture(frames, path)
    else:
        write_pcapng(path, [CapturedFrame(ts, LINKTYPE_ETHERNET, frame)
                            for ts, frame in frames],
                     lambda frame: int(frame.data[-1:] == b"a"), ["eth1", "eth2"])
    with open(path, "rb") as fileobj:
        columns = list(read_capture_columns(fileobj))
    with open(path, "rb") as fileobj:
        batches = list(read_capture_batches(fileobj))
    assert len(columns) == len(batches) > 10
    assert [list(zip(*batch)) for batch in columns] == batches
    assert [frame for batch in columns for frame in batch.frames] == [f for _, f in frames]
