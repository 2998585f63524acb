"""SCTP associations in the synthetic traffic and in `procfs-ct generate` captures: real
packets (correct CRC32c, the peer's verification tag) that the SCTP tracker follows from
INIT to ESTABLISHED [ASSURED] and, for most, through SHUTDOWN to CLOSED."""
from __future__ import annotations

import collections
import random
import subprocess

from conftest import child_env, procfs_ct_command
from engine.capture import read_capture
from engine.core import Engine
from engine.ctstate import CtState
from engine.hooks import PRE_ROUTING
from engine.linklayer import LINKTYPE_ETHERNET, strip_link
from engine.packet import IPPROTO_SCTP
from engine.parse import parse_ipv4
from engine.sctp_tables import (COOKIE_ACK, COOKIE_ECHO, INIT, INIT_ACK, SHUTDOWN,
                                SHUTDOWN_ACK, SHUTDOWN_COMPLETE)
from procfs_ct.sources.synthetic import MIX, World, sctp_association

T0 = 1_700_000_000.0


def sctp_packets(seed: int, count: int):
    """(ts, parsed packet, frame) of `count` associations started 400 s apart."""
    world = World(random.Random(seed), T0)
    for index in range(count):
        for t, frame in sctp_association(world, int(index * 400e6)):
            datagram, _ = strip_link(LINKTYPE_ETHERNET, frame)
            yield T0 + t / 1e6, parse_ipv4(datagram, PRE_ROUTING), frame


def test_sctp_is_declared_in_the_mix():
    assert MIX["sctp"][0] is sctp_association


def test_every_packet_has_a_good_crc_and_the_association_its_chunk_sequence():
    openings, shutdowns = 0, 0
    for index in range(30):
        packets = [pkt for _, pkt, _ in sctp_packets(index, 1)]
        assert all(pkt.proto == IPPROTO_SCTP and pkt.sctp.checksum_ok and pkt.sctp.chunks_ok
                   for pkt in packets)
        first = [pkt.sctp.chunks[0][0] for pkt in packets]
        openings += first[:4] == [INIT, INIT_ACK, COOKIE_ECHO, COOKIE_ACK]
        shutdowns += first[-3:] == [SHUTDOWN, SHUTDOWN_ACK, SHUTDOWN_COMPLETE]
        assert packets[0].sctp.vtag == 0                    # an INIT carries tag 0
    assert openings == 30
    assert 5 < shutdowns < 30                               # most, not all, are closed


def test_same_seed_same_bytes():
    assert ([frame for _, _, frame in sctp_packets(5, 3)]
            == [frame for _, _, frame in sctp_packets(5, 3)])
    assert ([frame for _, _, frame in sctp_packets(5, 3)]
            != [frame for _, _, frame in sctp_packets(6, 3)])


def test_tracker_follows_the_associations_without_an_invalid_packet():
    eng = Engine("linux", ram_bytes=1 << 34, ncpu=2, default_hook=PRE_ROUTING)
    states = collections.Counter()
    for ts, _, frame in sctp_packets(9, 40):
        states[eng.feed_frame(ts, LINKTYPE_ETHERNET, frame).state] += 1
    assert states[CtState.INVALID] == 0
    assert states[CtState.NEW] == 40


def test_generated_capture_replays_to_assured_sctp_associations(tmp_path):
    capture = tmp_path / "generated.pcap"
    done = subprocess.run(procfs_ct_command() + ["generate", "--out", str(capture),
                                                 "--seconds", "5", "--seed", "3"],
                          capture_output=True, text=True, env=child_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    with open(capture, "rb") as fileobj:
        protocols = collections.Counter(frame.data[23] for frame in read_capture(fileobj))
    assert protocols[IPPROTO_SCTP] > 100
    shown = subprocess.run(procfs_ct_command() + ["replay", str(capture), "--profile", "linux"],
                           capture_output=True, text=True, env=child_env(), timeout=300)
    assert shown.returncode == 0, shown.stderr
    sctp = [line.split() for line in shown.stdout.splitlines() if " sctp " in line]
    established = [fields for fields in sctp if fields[2:4] == ["sctp", "132"]
                   and fields[5] == "ESTABLISHED" and "[ASSURED]" in fields]
    assert len(established) >= 10
    assert {fields[5] for fields in sctp} >= {"ESTABLISHED", "CLOSED"}


def test_an_association_never_goes_back_in_time():
    for seed in range(30):
        times = [ts for ts, _, _ in sctp_packets(seed, 1)]
        assert times == sorted(times)
