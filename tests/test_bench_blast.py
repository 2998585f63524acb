"""bench/blast.py's senders make the same traffic as the tap sees it, on lo in a throw-away
namespace of bench/system.py (its DROP_RULESET, as bench/main.py's tap section).

Each sender's datagrams are read by the project's Tap (outgoing-only filter on lo) inside
the namespace (this file, run as a script under `ip netns exec`) and fed to an Engine; the
pytest side compares the packet senders' (a transmit ring, and sendmmsg) with the socket
sender's: the same number of frames, each once, as PACKET_OUTGOING IPv4 on lo; the same
bytes in the same order but for the IP id and the checksums; the packet senders' checksums
valid (the socket sender's IP header checksum too: its UDP checksum is left to lo's
"hardware", CHECKSUM_PARTIAL, so the tap sees the pseudo-header sum only); and the same
table in the engine.  The traffic: 4 ports x 3 addresses (lcm 12) from 2 source ports, 24
flows, sent 5 times: 120 datagrams, more than the transmit ring's 96 slots (lcm(24, 32)),
so the ring is walked past its end and its first frames sent again.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (str(ROOT), str(HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from bench import system  # noqa: E402
from bench.packetring import TxRing  # noqa: E402
from bench.udpframes import one_round  # noqa: E402
from engine.build import checksum_valid, pseudo_header_sum  # noqa: E402
from engine.linklayer import SLL2_HEADER  # noqa: E402

PORTS, ADDRESSES, SOURCES, ROUNDS = 4, 3, 2, 5
FLOWS = SOURCES * math.lcm(PORTS, ADDRESSES)
SENDERS = ("socket", "packet", "packet-sendmmsg")   # bench/blast.py's
PACKET_OUTGOING = 4
ETH_P_IP = 0x0800
# Bytes of an IPv4/UDP datagram that may differ between the senders: the IP id, the IP
# header checksum (it covers the id) and the UDP checksum (see the module text).
IP_ID, IP_CHECKSUM, UDP_CHECKSUM = slice(4, 6), slice(10, 12), slice(26, 28)


def capture(sender: str) -> dict:
    """What the tap read of ROUNDS rounds of `sender`, in a namespace of its own."""
    if system.available():
        pytest.skip(system.available())
    with system.Namespace(ruleset=system.DROP_RULESET) as ns:
        done = subprocess.run(["ip", "netns", "exec", ns.name, sys.executable, __file__, sender],
                              capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def captured() -> dict:
    return {sender: capture(sender) for sender in SENDERS}


def datagrams(result: dict) -> list[bytes]:
    return [bytes.fromhex(frame)[SLL2_HEADER.size:] for frame in result["frames"]]


def masked(datagram: bytes) -> bytes:
    out = bytearray(datagram)
    for field in (IP_ID, IP_CHECKSUM, UDP_CHECKSUM):
        out[field] = b"\0\0"
    return bytes(out)


def udp_checksum_valid(datagram: bytes) -> bool:
    src, dst = int.from_bytes(datagram[12:16], "big"), int.from_bytes(datagram[16:20], "big")
    return checksum_valid(datagram[20:], pseudo_header_sum(src, dst, 17, len(datagram) - 20))


def partial_udp_checksum(datagram: bytes) -> int:
    """What a CHECKSUM_PARTIAL datagram carries until the device completes it: the
    pseudo-header's sum folded to 16 bits, uncomplemented."""
    src, dst = int.from_bytes(datagram[12:16], "big"), int.from_bytes(datagram[16:20], "big")
    total = pseudo_header_sum(src, dst, 17, len(datagram) - 20)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


@pytest.mark.kernel
@pytest.mark.parametrize("sender", SENDERS)
def test_the_tap_sees_each_datagram_once_as_outgoing_ipv4_on_lo(captured, sender):
    result = captured[sender]
    assert result["sent"] == ROUNDS * FLOWS
    assert len(result["frames"]) == ROUNDS * FLOWS
    assert result["stats"]["duplicates_skipped"] == 0 and result["stats"]["kernel_drops"] == 0
    for frame in result["frames"]:
        protocol, _, ifindex, _, pkttype, _, _ = SLL2_HEADER.unpack_from(bytes.fromhex(frame))
        assert (protocol, ifindex, pkttype) == (ETH_P_IP, result["lo"], PACKET_OUTGOING)


@pytest.mark.kernel
@pytest.mark.parametrize("sender", ("packet", "packet-sendmmsg"))
def test_the_packet_senders_frames_are_the_socket_senders_but_for_id_and_checksums(
        captured, sender):
    ours, sockets = datagrams(captured[sender]), datagrams(captured["socket"])
    assert [masked(d) for d in ours] == [masked(d) for d in sockets]
    # The tap's link-layer header too (protocol, lo, outgoing, lo's source address).
    assert {frame[:2 * SLL2_HEADER.size] for frame in captured[sender]["frames"]} == \
        {frame[:2 * SLL2_HEADER.size] for frame in captured["socket"]["frames"]}
    first = sockets[0]
    # What the comparison rests on: the socket sender's header as Linux writes it.
    assert (first[0], first[1], first[6] & 0x40, first[8], first[9]) == (0x45, 0, 0x40, 64, 17)
    assert len(first) == 20 + 8 + 32 and first[28:] == b"x" * 32
    for datagram in ours:
        assert checksum_valid(datagram[:20]) and udp_checksum_valid(datagram)
    for datagram in sockets:
        assert checksum_valid(datagram[:20])
        assert int.from_bytes(datagram[UDP_CHECKSUM], "big") == partial_udp_checksum(datagram)
    assert len({d[IP_ID] for d in ours[:FLOWS]}) == FLOWS      # the id: the flow's number


@pytest.mark.kernel
@pytest.mark.parametrize("sender", ("packet", "packet-sendmmsg"))
def test_the_engine_tracks_both_senders_as_the_same_table(captured, sender):
    def keyed(lines: list[str]) -> list[str]:        # without the seconds left (5th token)
        return sorted(" ".join(line.split()[:4] + line.split()[5:]) for line in lines)
    assert len(captured[sender]["listing"]) == FLOWS
    assert keyed(captured[sender]["listing"]) == keyed(captured["socket"]["listing"])


def test_one_round_is_every_flow_once_in_the_socket_senders_order():
    frames = one_round(PORTS, ADDRESSES, SOURCES)
    flows = [(int.from_bytes(d[20:22], "big"), d[16:20], int.from_bytes(d[22:24], "big"))
             for d in frames]
    assert len(set(flows)) == FLOWS == len(frames)
    assert flows[:2] == [(40000, bytes((127, 0, 0, 1)), 9000), (40000, bytes((127, 0, 0, 2)), 9001)]
    assert flows[12] == (40001, bytes((127, 0, 0, 1)), 9000)


def test_the_socket_sender_addresses_message_n_to_frame_ns_destination():
    # No socket needed: destination_batches() only fills sendmmsg's headers for an fd.
    from bench.blast import IoVec, destination_batches
    keep: list = []
    destination_batches(-1, PORTS, ADDRESSES, IoVec(), keep)
    names = [bytes(name) for name in keep if len(bytes(name)) == 16]   # the sockaddr_ins
    frames = one_round(PORTS, ADDRESSES, 1)
    assert [(name[4:8], name[2:4]) for name in names] == [(d[16:20], d[22:24]) for d in frames]


@pytest.mark.parametrize("frames, why", [([bytes(97)], "longer than 96 bytes"),
                                         ([bytes(60)] * 65537, "more than 1048576")])
def test_a_ring_that_cannot_hold_the_frames_is_refused_before_any_socket(frames, why):
    with pytest.raises(ValueError, match=why):
        TxRing("lo", frames)


# ---------------------------------------------------------------------------------------------
# The helper side: runs inside the namespace (python3 tests/test_bench_blast.py SENDER)
# ---------------------------------------------------------------------------------------------
def scenario(sender: str) -> dict:
    import socket
    from bench.blast import blast
    from engine.core import Engine
    from enginehelp import view_text
    from procfs_ct.sources.tap import Tap
    wanted = ROUNDS * FLOWS
    tap = Tap(["lo"])
    sent = blast(0, wanted, PORTS, ADDRESSES, SOURCES, sender)
    frames: list = []
    quiet_until = time.monotonic() + 10
    while time.monotonic() < quiet_until:
        batch = tap.take_ready()
        frames += batch
        if len(frames) >= wanted and not batch:   # then 0.5 s more for a copy too many
            quiet_until = min(quiet_until, time.monotonic() + 0.5)
        tap.wait_ready(0.05)
    tap.close()
    engine = Engine("linux")
    for ts, linktype, frame in frames:
        engine.feed_frame(ts, linktype, frame)
    now = max(ts for ts, _, _ in frames) if frames else time.time()
    return {"sent": sent["sent"], "frames": [frame.hex() for _, _, frame in frames],
            "stats": tap.poll_stats().__dict__, "lo": socket.if_nametoindex("lo"),
            "listing": view_text(engine, "net/nf_conntrack", now).splitlines()}


if __name__ == "__main__":
    print(json.dumps(scenario(sys.argv[1])))
