"""`--source sockets`: the host's TCP/UDP sockets (psutil) mirrored as conntrack entries.

Most tests hand the mirror fake psutil tuples and check the listing of an Engine (profile
linux) fed with the frames of one poll; time is a number.  One test uses real sockets on
127.0.0.1 (no root needed); one compares with the kernel's own table in a namespace.

Kernel facts the mapping relies on (docs/spec/conntrack.md §4.2, §4.8, §5.1, §10 namespace 2):
a picked-up ACK makes `ESTABLISHED [UNREPLIED]`, the reply sets SEEN_REPLY and the next
packet ASSURED; orig FIN -> FIN_WAIT, reply ACK -> CLOSE_WAIT, reply FIN -> LAST_ACK,
orig ACK -> TIME_WAIT; an RST moves an entry to CLOSE (10 s); UDP with a reply shows 30 s.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import pytest

from engine.core import Engine
from enginehelp import view_text
from procfs_ct.sources.sockets import (SocketMirror, open_sockets, parse_sockets_spec,
                                       reduce_connections)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

addr = namedtuple("addr", "ip port")
sconn = namedtuple("sconn", "fd family type laddr raddr status pid")   # psutil's shape
TCP, UDP = socket.SOCK_STREAM, socket.SOCK_DGRAM
HOST = "10.0.0.1"
PEER = "198.51.100.7"
T0 = 1_700_000_000.0
GiB = 1 << 30


def conn(kind, local, remote, status, family=socket.AF_INET):
    return sconn(-1, family, kind, addr(*local), addr(*remote) if remote else (), status, None)


def make_engine() -> Engine:
    return Engine("linux", ram_bytes=24 * GiB, ncpu=2)


class FakeHost:
    """A mutable socket list standing in for psutil, and a mirror and engine fed from it."""

    def __init__(self, *connections) -> None:
        self.connections = list(connections)
        self.mirror = SocketMirror(connections=lambda: self.connections,
                                   local_addresses=lambda: {HOST, "127.0.0.1"})
        self.engine = make_engine()
        self.verdicts: list[str] = []

    def poll(self, now: float) -> list[str]:
        self.verdicts = [str(self.engine.feed_frame(ts, linktype, frame))
                         for ts, linktype, frame in self.mirror.poll(now)]
        return self.listing(now + 0.5)

    def listing(self, now: float) -> list[str]:
        return view_text(self.engine, "net/nf_conntrack", now).splitlines()


def summary(line: str) -> tuple:
    """(seconds, state or '-', original 'src:sport>dst:dport', flags) of a listing line."""
    tokens = line.split()
    state = "-" if tokens[5].startswith("src=") else tokens[5]
    fields = [t.split("=", 1)[1] for t in tokens if t.startswith(("src=", "dst=", "sport=",
                                                                    "dport="))][:4]
    flags = tuple(t for t in tokens if t.startswith("["))
    return int(tokens[4]), state, f"{fields[0]}:{fields[2]}>{fields[1]}:{fields[3]}", flags


# -- state mapping ---------------------------------------------------------------------------
@pytest.mark.parametrize("status, seconds, state, flags", [
    ("ESTABLISHED", 431999, "ESTABLISHED", ("[ASSURED]",)),
    ("SYN_SENT", 119, "SYN_SENT", ("[UNREPLIED]",)),
    ("FIN_WAIT1", 119, "FIN_WAIT", ("[ASSURED]",)),
    ("FIN_WAIT2", 59, "CLOSE_WAIT", ("[ASSURED]",)),
    ("CLOSE_WAIT", 59, "CLOSE_WAIT", ("[ASSURED]",)),
    ("LAST_ACK", 29, "LAST_ACK", ("[ASSURED]",)),
    ("CLOSING", 29, "LAST_ACK", ("[ASSURED]",)),
    ("TIME_WAIT", 119, "TIME_WAIT", ("[ASSURED]",)),
])
def test_outgoing_tcp_socket_state_maps_to_closest_conntrack_state(status, seconds, state,
                                                                     flags):
    """A client socket HOST:41000 -> PEER:443 in each TCP state gives one entry with the
    client as original direction, in the conntrack state its packets lead to (spec §4.2):
    e.g. FIN_WAIT2 = our FIN acknowledged = conntrack CLOSE_WAIT, 60 s."""
    host = FakeHost(conn(TCP, (HOST, 41000), (PEER, 443), status))
    assert [summary(line) for line in host.poll(T0)] == [
        (seconds, state, f"{HOST}:41000>{PEER}:443", flags)]


def test_syn_recv_socket_is_an_incoming_half_open_connection():
    """SYN_RECV: the peer's SYN and our SYN/ACK -> `59 SYN_RECV`, peer as original side."""
    host = FakeHost(conn(TCP, (HOST, 22), None, "LISTEN"),
                    conn(TCP, (HOST, 22), (PEER, 50001), "SYN_RECV"))
    assert [summary(line) for line in host.poll(T0)] == [
        (59, "SYN_RECV", f"{PEER}:50001>{HOST}:22", ())]
    assert host.verdicts == ["NEW", "ESTABLISHED reply"]


def test_connection_to_a_listening_port_has_the_peer_as_original_side():
    """An ESTABLISHED socket on a port we listen on was accepted: the peer connected."""
    host = FakeHost(conn(TCP, (HOST, 22), None, "LISTEN"),
                    conn(TCP, (HOST, 22), (PEER, 50000), "ESTABLISHED"))
    assert [summary(line) for line in host.poll(T0)] == [
        (431999, "ESTABLISHED", f"{PEER}:50000>{HOST}:22", ("[ASSURED]",))]
    # Picked up (spec §6): NEW, the first reply ESTABLISHED reply, then ESTABLISHED.
    assert host.verdicts == ["NEW", "ESTABLISHED reply", "ESTABLISHED"]


def test_packets_from_the_peer_are_seen_at_prerouting_ours_at_output():
    """SLL packet type: PACKET_OUTGOING (4) for our packets, PACKET_HOST (0) for the peer's."""
    mirror = SocketMirror(connections=lambda: [conn(TCP, (HOST, 41000), (PEER, 443),
                                                    "ESTABLISHED")],
                          local_addresses=lambda: {HOST})
    pkttypes = [int.from_bytes(frame[:2], "big") for _, _, frame in mirror.poll(T0)]
    assert pkttypes == [4, 0, 4]


def test_connected_udp_socket_is_one_datagram_each_way():
    """Connected UDP: request and reply -> replied entry, 30 s (spec §5.1), not ASSURED."""
    host = FakeHost(conn(UDP, (HOST, 53000), ("9.9.9.9", 53), "NONE"))
    assert [summary(line) for line in host.poll(T0)] == [
        (29, "-", f"{HOST}:53000>9.9.9.9:53", ())]


def test_listening_closed_and_unconnected_sockets_make_no_entries():
    host = FakeHost(conn(TCP, ("0.0.0.0", 22), None, "LISTEN"),
                    conn(UDP, ("0.0.0.0", 5353), None, "NONE"),
                    conn(TCP, (HOST, 41009), (PEER, 443), "CLOSE"))
    assert host.poll(T0) == []


def test_ipv4_mapped_ipv6_sockets_are_ipv4_and_real_ipv6_is_skipped():
    """A dual-stack socket talking to ::ffff:a.b.c.d is IPv4 traffic for conntrack."""
    socks = reduce_connections([
        conn(TCP, ("::ffff:10.0.0.1", 41000), ("::ffff:198.51.100.7", 443), "ESTABLISHED",
             socket.AF_INET6),
        conn(TCP, ("2001:db8::1", 41001), ("2001:db8::2", 443), "ESTABLISHED",
             socket.AF_INET6)])
    assert [(s.local, s.remote) for s in socks] == [((HOST, 41000), (PEER, 443))]


def test_both_ends_of_a_loopback_connection_are_one_entry():
    """Client 40011 and the accepted socket on listening port 8080 are one connection."""
    host = FakeHost(conn(TCP, ("127.0.0.1", 8080), None, "LISTEN"),
                    conn(TCP, ("127.0.0.1", 40011), ("127.0.0.1", 8080), "ESTABLISHED"),
                    conn(TCP, ("127.0.0.1", 8080), ("127.0.0.1", 40011), "ESTABLISHED"))
    assert [summary(line) for line in host.poll(T0)] == [
        (431999, "ESTABLISHED", "127.0.0.1:40011>127.0.0.1:8080", ("[ASSURED]",))]


# -- changes between polls ---------------------------------------------------------------------
def test_unchanged_sockets_are_not_emitted_again():
    """Only new sockets and state changes make packets: the timer runs down between polls."""
    host = FakeHost(conn(UDP, (HOST, 53000), ("9.9.9.9", 53), "NONE"))
    host.poll(T0)
    assert host.mirror.poll(T0 + 10) == []
    assert [summary(line)[0] for line in host.listing(T0 + 10.5)] == [19]


def test_syn_sent_then_established_completes_the_handshake():
    """SYN_SENT, then ESTABLISHED at the next poll: SYN/ACK and ACK follow the SYN (not a
    pickup), and the entry is `ESTABLISHED [ASSURED]` (spec §10: SYN_RECV -> ESTABLISHED)."""
    host = FakeHost(conn(TCP, (HOST, 41000), (PEER, 443), "SYN_SENT"))
    host.poll(T0)
    host.connections = [conn(TCP, (HOST, 41000), (PEER, 443), "ESTABLISHED")]
    assert [summary(line) for line in host.poll(T0 + 1)] == [
        (431999, "ESTABLISHED", f"{HOST}:41000>{PEER}:443", ("[ASSURED]",))]
    assert host.verdicts == ["ESTABLISHED reply", "ESTABLISHED"]


def test_established_then_close_wait_sends_only_the_new_packets():
    host = FakeHost(conn(TCP, (HOST, 41000), (PEER, 443), "ESTABLISHED"))
    host.poll(T0)
    host.connections = [conn(TCP, (HOST, 41000), (PEER, 443), "CLOSE_WAIT")]
    assert [summary(line) for line in host.poll(T0 + 1)] == [
        (59, "CLOSE_WAIT", f"{HOST}:41000>{PEER}:443", ("[ASSURED]",))]
    assert host.verdicts == ["ESTABLISHED reply", "ESTABLISHED"]     # peer FIN, our ACK


def test_vanished_connection_after_a_fin_is_closed_to_time_wait():
    """Socket gone after our FIN was acknowledged (FIN_WAIT2): the peer's FIN and our ACK
    are supplied -> `119 TIME_WAIT` (spec §10: reply FA ... orig A -> TIME_WAIT)."""
    host = FakeHost(conn(TCP, (HOST, 41000), (PEER, 443), "FIN_WAIT2"))
    host.poll(T0)
    host.connections = []
    assert [summary(line) for line in host.poll(T0 + 1)] == [
        (119, "TIME_WAIT", f"{HOST}:41000>{PEER}:443", ("[ASSURED]",))]


def test_vanished_established_connection_is_reset_to_close():
    """Socket gone without any FIN: an RST -> `9 CLOSE` (spec §10: RA in window -> CLOSE)."""
    host = FakeHost(conn(TCP, (HOST, 41000), (PEER, 443), "ESTABLISHED"))
    host.poll(T0)
    host.connections = []
    assert [summary(line) for line in host.poll(T0 + 1)] == [
        (9, "CLOSE", f"{HOST}:41000>{PEER}:443", ("[ASSURED]",))]


def test_vanished_unanswered_syn_is_left_to_time_out():
    host = FakeHost(conn(TCP, (HOST, 41000), (PEER, 443), "SYN_SENT"))
    host.poll(T0)
    host.connections = []
    assert host.mirror.poll(T0 + 1) == []


# -- the iterator and the spec -----------------------------------------------------------------
def test_iterator_polls_and_close_stops_it():
    """Each poll's frames come out stamped with the poll's time; close() ends the iterator
    after the current poll's frames, without polling again."""
    calls = []

    def connections():
        calls.append(1)
        return [conn(UDP, (HOST, 53000 + len(calls)), ("9.9.9.9", 53), "NONE")]

    mirror = SocketMirror(0.01, connections=connections, local_addresses=lambda: {HOST},
                          clock=lambda: T0)
    frames = iter(mirror)
    first = [next(frames), next(frames)]          # poll 1: request and reply
    assert [ts for ts, _, _ in first] == [T0, T0]
    next(frames)                                  # poll 2: a new socket's request
    mirror.close()
    assert len(list(frames)) == 1                 # its reply; then no further poll
    assert len(calls) == 2


def test_sockets_spec_takes_an_optional_poll_interval():
    from procfs_ct.cli import UsageError
    assert parse_sockets_spec("sockets") == 1.0
    assert parse_sockets_spec("sockets:0.25") == 0.25
    for bad in ("sockets:0", "sockets:-1", "sockets:x", "sockets:inf"):
        with pytest.raises(UsageError):
            parse_sockets_spec(bad)


# -- real sockets ------------------------------------------------------------------------------
def test_real_loopback_connection_is_mirrored_without_root():
    """A TCP connection made here on 127.0.0.1, read back through psutil: one ESTABLISHED
    ASSURED entry, client port as the original source."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    try:
        engine = make_engine()
        for ts, linktype, frame in open_sockets("sockets").poll(T0):
            engine.feed_frame(ts, linktype, frame)
        cport, sport = client.getsockname()[1], server.getsockname()[1]
        ours = [summary(line) for line in view_text(engine, "net/nf_conntrack", T0).splitlines()
                if f"sport={sport} " in line or f"dport={sport} " in line]
        assert ours == [(432000, "ESTABLISHED", f"127.0.0.1:{cport}>127.0.0.1:{sport}",
                         ("[ASSURED]",))]
    finally:
        for sock in (client, accepted, server):
            sock.close()


NFT_RULESET = """\
table ip pct {
    chain out {
        type filter hook output priority 0; policy accept;
        ct state new counter
    }
}
"""


@pytest.mark.kernel
def test_mirror_agrees_with_the_kernel_on_states_in_a_namespace():
    """Real sockets in a namespace whose kernel tracks them: ESTABLISHED, TIME_WAIT (client
    closed first), CLOSE_WAIT (client half-closed) and a UDP request/reply give the same
    entries, states and flags in the mirror as in /proc/net/nf_conntrack."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    name = f"pct-sock{os.getpid()}"
    if subprocess.run(["ip", "netns", "add", name], capture_output=True).returncode:
        pytest.skip("ip netns add failed")
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "netns", "exec", name, "nft", "-f", "-"], input=NFT_RULESET,
                       text=True, check=True)
        done = subprocess.run(["ip", "netns", "exec", name, sys.executable, str(Path(__file__))],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout.splitlines()[-1])
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    kernel = sorted(summary(line)[1:] for line in result["kernel"])
    mirror = sorted(summary(line)[1:] for line in result["mirror"])
    assert mirror == kernel, result
    assert ("TIME_WAIT", "127.0.0.1:40101>127.0.0.1:8080", ("[ASSURED]",)) in kernel


def _inside_namespace() -> None:
    """Make the sockets, then print the kernel's listing and the mirror's (as JSON)."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 8080))
    server.listen(8)
    keep = [server]
    for port in (40101, 40102, 40103):
        client = socket.socket()
        client.bind(("127.0.0.1", port))
        client.connect(("127.0.0.1", 8080))
        accepted, _ = server.accept()
        client.sendall(b"x")
        accepted.recv(10)
        if port == 40101:                   # client closes first -> TIME_WAIT
            client.close()
            accepted.recv(10)
            accepted.close()
        elif port == 40102:                 # client half-closes -> CLOSE_WAIT
            client.shutdown(socket.SHUT_WR)
            accepted.recv(10)
            keep += [client, accepted]
        else:
            keep += [client, accepted]
    udp_server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp_server.bind(("127.0.0.1", 7777))
    udp_client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp_client.bind(("127.0.0.1", 40104))
    udp_client.connect(("127.0.0.1", 7777))
    udp_client.send(b"q")
    data, peer = udp_server.recvfrom(10)
    udp_server.sendto(b"a", peer)
    udp_client.recv(10)
    keep += [udp_server, udp_client]
    time.sleep(0.3)
    engine = make_engine()
    now = time.time()
    for ts, linktype, frame in open_sockets("sockets").poll(now):
        engine.feed_frame(ts, linktype, frame)
    with open("/proc/net/nf_conntrack") as listing:
        kernel = listing.read().splitlines()
    mirror = view_text(engine, "net/nf_conntrack", now).splitlines()
    print(json.dumps({"kernel": kernel, "mirror": mirror}))


if __name__ == "__main__":
    _inside_namespace()
