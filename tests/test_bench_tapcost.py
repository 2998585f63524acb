"""bench/tapcost.py reads bench/instructions.py's count() as that module returns it (a
dict of counts by name since `--cache` came): the two drifted apart once, and tapcost
then failed at its first stage.  callgrind itself is not run here (valgrind is a bench
tool, not a test dependency): count() is replaced by one of the same shape."""
from __future__ import annotations

import inspect

from bench import blast, instructions, tapcost
from bench.udpframes import LINK_HEADER
from engine.linklayer import SLL2_HEADER


def test_per_frame_is_the_instructions_difference_over_the_frames(monkeypatch):
    counts = {True: 5_000_000, False: 1_000_000}

    def fake_count(code: str, tree: str) -> dict:
        work = ", True, " in code
        return {"instructions": counts[work]}
    monkeypatch.setattr(tapcost, "count", fake_count)
    assert tapcost.per_frame("decode", 1_000, "/nowhere") == 4_000.0
    assert tapcost.per_frame("pull", 1_000, "/nowhere", tapcost.Traffic(1024, 1, 64)) == 4_000.0


def test_the_traffic_is_blasts_flows_each_one_datagram_and_the_counted_frames_follow_one_pass():
    # bench/main.py's worst shapes: 65,536 flows by destination address or by source port.
    for traffic in (tapcost.Traffic(1024, 65536, 1), tapcost.Traffic(1024, 1, 64)):
        assert traffic.flows == 65536
        first_pass = tapcost.sent(0, traffic.flows, traffic)
        assert len({datagram for _, datagram in first_pass}) == 65536
        assert tapcost.sent(traffic.flows, 3, traffic) == [
            (traffic.flows + n, first_pass[n][1]) for n in range(3)]
    by_source = tapcost.sent(0, 2049, tapcost.Traffic(1024, 1, 64))
    ports = [(int.from_bytes(d[20:22], "big"), int.from_bytes(d[22:24], "big"))
             for _, d in by_source]
    assert ports[0] == (40000, 9000) and ports[1023] == (40000, 10023)
    assert ports[1024] == (40001, 9000) and ports[2048] == (40002, 9000)
    by_address = tapcost.sent(65535, 2, tapcost.Traffic(1024, 65536, 1))
    assert [d[16:20] for _, d in by_address] == [bytes((127, 1, 0, 0)), bytes((127, 0, 0, 1))]


def test_the_rings_frames_are_the_packet_senders_datagrams_round_after_round(monkeypatch,
                                                                            tmp_path):
    # What the tap benchmark's packet sender puts on lo (bench/blast.py's frames: lo's link
    # header, then bench/udpframes.py's datagram), as the tap hands it on (an SLL2 header,
    # then the datagram): the warm-up pass, then the counted frames, which go round again.
    monkeypatch.setattr(tapcost, "cache_path", lambda name: str(tmp_path / name))
    traffic = tapcost.Traffic(8, 2, 3)
    sent = [frame[len(LINK_HEADER):] for frame in blast._frames(8, 2, 3)]
    assert len(sent) == traffic.flows == 24
    warm_up = tapcost.read_ring(*tapcost.ring_of(traffic.flows, traffic, first=0))
    counted = tapcost.read_ring(*tapcost.ring_of(30, traffic))
    assert [frame[SLL2_HEADER.size:] for _, _, frame in warm_up] == sent
    assert [frame[SLL2_HEADER.size:] for _, _, frame in counted] == sent + sent[:6]


def test_tapcost_counts_with_instructions_count_whose_result_is_a_dict_by_name():
    # The fake above must have count()'s shape: a Dict[str, int] with "instructions".
    assert tapcost.count is instructions.count
    assert "Dict[str, int]" in str(inspect.signature(instructions.count).return_annotation)


def test_every_stage_runs_as_count_would_run_it(monkeypatch, tmp_path):
    # What callgrind runs is per_frame()'s code in a fresh interpreter: run here, with a
    # small traffic (the traffic once reached the stages as a plain tuple: all failed).
    ran = []

    def running_count(code: str, tree: str) -> dict:
        exec(code, {})
        ran.append(code)
        return {"instructions": len(ran)}
    monkeypatch.setattr(tapcost, "count", running_count)
    monkeypatch.setattr(tapcost, "cache_path", lambda name: str(tmp_path / name))
    try:
        for stage in tapcost.STAGES:
            tapcost.per_frame(stage, 700, "/nowhere", tapcost.Traffic(8, 2, 3))
    finally:
        tapcost.COLLECTOR.uninstall()            # the mount's policy, installed by the stages
    assert len(ran) == 2 * len(tapcost.STAGES)
