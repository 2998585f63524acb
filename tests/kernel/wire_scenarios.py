#!/usr/bin/env python3
"""Kernel reference data for traffic that arrives from a wire (conntrack at PREROUTING).

For every scenario: two fresh namespaces joined by a veth pair (wirenet.py), the server's
nftables table (wirerules.py), `tcpdump -i any` (the cooked capture: the server's incoming
packets, tracked at PREROUTING with checksums verified, and its own packets, tracked at
OUTPUT) and `tcpdump -i nflog:5` (the kernel's verdict per packet) in the server namespace,
the traffic (this process pinned to one CPU so capture order is processing order; client
sockets are made in the client namespace), an optional wait, then a snapshot of the server's
/proc/net/nf_conntrack (wall-clock time before and after the read), its
/proc/net/stat/nf_conntrack and the nft counters. Stored under tests/data/wire/<name>/:
capture.pcap, nflog.pcap and snapshot.json (with `hooks: "wire"`).

    python3 tests/kernel/wire_scenarios.py [--out DIR] [--list] [NAME ...]

Conventions: the client is 10.99.0.1 and binds fixed ports, the server 10.99.0.2 (and, in
the forwarding scenarios, a far host 10.98.0.1 behind the server). Forged client packets are
put on the client's wire with AF_PACKET (nothing rewrites them); forged server packets leave
through a raw socket of the server (they pass its OUTPUT). What the server's stack would
answer to forged packets is dropped before conntrack by the scenario's `quiet` rules, or
absorbed by a bound socket; what the client's stack would answer, by its `client_rules`
(nft rules without `ct`, so the client still runs no conntrack).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import cooked  # noqa: E402
import forge  # noqa: E402
import netns  # noqa: E402
import pcapfile  # noqa: E402
import scenarios as loopback  # noqa: E402
import wirenet  # noqa: E402
import wirerules  # noqa: E402
from scenarios import (IP_MTU_DISCOVER, IP_PMTUDISC_DONT, checked_capture,  # noqa: E402
                       close_in_order, connect_refused, exchange, half_close, pause,
                       run_named, scenario_parser, send_icmp_requests)
from forge import ForgedTcp  # noqa: E402
from wirenet import CLIENT, CLIENT6, FAR, ROUTER, ROUTER6, SERVER, SERVER6  # noqa: E402

DATA_DIR = HERE.parent / "data" / "wire"
FORGED_MARK = 1                             # SO_MARK of the server's forged packets
NFLOG_WAIT = 10.0                           # the kernel flushes NFLOG batches every second

Cleanup = Optional[Callable[[], None]]


@dataclass
class WireScenario:
    name: str
    description: str
    traffic: Callable[["Wire"], Cleanup]     # runs in the server namespace
    wait: float = 0.5                       # seconds from end of traffic to the snapshot
    knobs: dict = field(default_factory=dict)          # server conntrack knobs to set
    quiet_rules: list = field(default_factory=list)    # nft output rules before conntrack
    input_rules: list = field(default_factory=list)
    client_rules: list = field(default_factory=list)   # nft output rules of the client
    mtu: Optional[int] = None               # of every veth end
    forward: bool = False                   # the server routes between client and far
    client_offload: bool = False            # the client's veth keeps checksum offload on
    family: str = "ip"                      # "ip6": IPv6 addresses, an `ip6` nft table


SCENARIOS: dict[str, WireScenario] = {}


def scenario(description: str, **options) -> Callable:
    def register(traffic: Callable[["Wire"], Cleanup]) -> Callable[["Wire"], Cleanup]:
        name = traffic.__name__
        SCENARIOS[name] = WireScenario(name, description, traffic, **options)
        return traffic
    return register


class Wire:
    """What a scenario's traffic uses: sockets on either side, the forged-packet injector."""

    def __init__(self, client_ns: str, far_ns: Optional[str] = None, ipv6: bool = False) -> None:
        self.client_ns, self.far_ns = client_ns, far_ns
        self._injector: Optional[wirenet.Injector] = None
        self.sockets: list[socket.socket] = []
        # The addresses and socket family of the scenario: IPv4, or IPv6 (ipv6=True).
        self.family = socket.AF_INET6 if ipv6 else socket.AF_INET
        self.client_addr, self.server_addr = (CLIENT6, SERVER6) if ipv6 else (CLIENT, SERVER)

    def _keep(self, sock: socket.socket) -> socket.socket:
        self.sockets.append(sock)
        return sock

    def client(self, kind: int, port: int = 0, proto: int = 0) -> socket.socket:
        """A socket of the client namespace, bound to CLIENT:port unless raw."""
        with wirenet.inside(self.client_ns):
            sock = socket.socket(self.family, kind, proto)
        return self._setup(sock, self.client_addr, port, kind)

    def server(self, kind: int, port: int = 0, proto: int = 0) -> socket.socket:
        return self._setup(socket.socket(self.family, kind, proto), self.server_addr, port, kind)

    def far(self, kind: int, port: int = 0) -> socket.socket:
        """A socket of the far namespace (forwarding scenarios), bound to FAR:port."""
        assert self.far_ns, "not a forwarding scenario"
        with wirenet.inside(self.far_ns):
            sock = socket.socket(socket.AF_INET, kind)
        return self._setup(sock, FAR, port, kind)

    def _setup(self, sock: socket.socket, addr: str, port: int, kind: int) -> socket.socket:
        self._keep(sock)
        if kind == socket.SOCK_RAW:
            return sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((addr, port))
        return sock

    def listener(self, port: int, far: bool = False) -> socket.socket:
        server = (self.far if far else self.server)(socket.SOCK_STREAM, port)
        server.listen(16)
        return server

    def connected_pair(self, listener: socket.socket,
                       sport: int) -> tuple[socket.socket, socket.socket]:
        client = self.client(socket.SOCK_STREAM, sport)
        client.connect(listener.getsockname())
        conn, _ = listener.accept()
        self._keep(conn).setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pause()
        return client, conn

    def inject(self, packet: bytes, dst_mac: Optional[str] = None) -> None:
        """Put a forged IPv4 packet on the client's end of the wire (to the server's MAC
        unless `dst_mac` names another)."""
        if self._injector is None:
            self._injector = wirenet.Injector(self.client_ns)
        self._injector.send(packet, dst_mac)

    def forger(self) -> "WireSender":
        sender = WireSender(self)
        self._keep(sender.raw)
        return sender

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        if self._injector:
            self._injector.close()


class WireSender:
    """Sends whole forged IPv4 packets the way each end would: the client's through the
    injector (they arrive at the server's PREROUTING), the server's through a raw socket of
    the server (they pass its OUTPUT). With `corrupt` set, the L4 checksum is made wrong."""

    def __init__(self, wire: Wire, gap: float = 0.02) -> None:
        self.wire = wire
        self.raw = socket.socket(wire.family, socket.SOCK_RAW, socket.IPPROTO_RAW)
        # Marked, so the quiet rules can tell a forged RST from one the stack answers with.
        self.raw.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, FORGED_MARK)
        self.gap = gap
        self.corrupt = False

    def send(self, packet: bytes) -> None:
        if packet[0] >> 4 == 6:
            self._send6(packet)
            return
        if self.corrupt:
            packet = packet[:20] + corrupted(packet[20:], packet[9])
        if packet[12:16] == socket.inet_aton(CLIENT):
            self.wire.inject(packet)
        else:
            self.raw.sendto(packet, (socket.inet_ntoa(packet[16:20]), 0))
            time.sleep(self.gap)

    def _send6(self, packet: bytes) -> None:
        """send() for an IPv6 packet (no extension headers when corrupt is set)."""
        if self.corrupt:
            packet = packet[:40] + corrupted(packet[40:], packet[6])
        if packet[8:24] == socket.inet_pton(socket.AF_INET6, CLIENT6):
            self.wire.inject(packet)
        else:
            self.raw.sendto(packet, (socket.inet_ntop(socket.AF_INET6, packet[24:40]), 0))
            time.sleep(self.gap)


def udp_round(client: socket.socket, server: socket.socket, request: bytes,
              response: bytes) -> None:
    client.sendto(request, server.getsockname())
    data, peer = server.recvfrom(65536)
    assert data == request
    server.sendto(response, peer)
    assert client.recvfrom(65536)[0] == response


def with_checksum(l4: bytes, proto: int, value: int) -> bytes:
    """The L4 header + payload with its checksum field overwritten."""
    at = wirerules.L4_CHECKSUM_OFFSET[proto]
    return l4[:at] + struct.pack("!H", value) + l4[at + 2:]


def corrupted(l4: bytes, proto: int) -> bytes:
    """The same L4 bytes with a wrong (non-zero) checksum."""
    at = wirerules.L4_CHECKSUM_OFFSET[proto]
    good = struct.unpack("!H", l4[at:at + 2])[0]
    return with_checksum(l4, proto, good ^ 0x5A5A)


def forged_syn(sport: int, dport: int) -> bytes:
    return forge.tcp_segment(CLIENT, SERVER, sport, dport, forge.SYN, 1000, 0,
                             options=forge.MSS_1460)


def forged_udp(sport: int, dport: int, payload: bytes, src: str = CLIENT,
               dst: str = SERVER) -> bytes:
    return forge.udp_datagram(src, dst, sport, dport, payload)


# --- TCP with real sockets ----------------------------------------------------------------

@scenario("TCP 10.99.0.1:41001 -> 10.99.0.2:8080 over the wire: handshake, data both ways, the "
          "client closes first, then the server; snapshot 1 s later (TIME_WAIT).", wait=1.0)
def wire_tcp_client_close(wire: Wire) -> Cleanup:
    return client_closes_first(wire, 41001)


def client_closes_first(wire: Wire, sport: int) -> Cleanup:
    """A connection from sport to the server's 8080: data both ways, the client's FIN first."""
    listener = wire.listener(8080)
    client, conn = wire.connected_pair(listener, sport)
    exchange(client, conn, b"hello", b"world")
    close_in_order(client, conn)
    return None


@scenario("TCP 41002 -> 8080 over the wire: handshake, data both ways, the server closes "
          "first, then the client; snapshot 1 s later (TIME_WAIT).", wait=1.0)
def wire_tcp_server_close(wire: Wire) -> Cleanup:
    listener = wire.listener(8080)
    client, conn = wire.connected_pair(listener, 41002)
    exchange(client, conn, b"hello", b"world")
    close_in_order(conn, client)
    return None


@scenario("TCP 41003 -> 8080 over the wire: data, client shutdown(SHUT_WR) (one FIN arrives), "
          "the server sends more data and keeps its side open; snapshot 2 s later (CLOSE_WAIT).",
          wait=2.0)
def wire_tcp_half_close(wire: Wire) -> Cleanup:
    listener = wire.listener(8080)
    client, conn = wire.connected_pair(listener, 41003)
    exchange(client, conn, b"request", b"partial")
    half_close(client, conn)
    return None


@scenario("TCP 41004 -> 8081 with nothing listening on the server: the SYN arrives (NEW), the "
          "server answers RST/ACK at OUTPUT (connection refused).")
def wire_tcp_refused(wire: Wire) -> Cleanup:
    connect_refused(wire.client(socket.SOCK_STREAM, 41004), (SERVER, 8081))
    return None


@scenario("TCP 41005 -> 8080 over the wire: handshake, data both ways, then the client aborts "
          "(SO_LINGER 0: its RST arrives in the middle of the stream); snapshot 2 s later.",
          wait=2.0)
def wire_tcp_rst_midstream(wire: Wire) -> Cleanup:
    listener = wire.listener(8080)
    client, conn = wire.connected_pair(listener, 41005)
    exchange(client, conn, b"hello", b"world")
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    pause()
    return None


@scenario("TCP 41006 -> 8082 with nothing listening, the server's RSTs dropped before conntrack: "
          "the client's SYN and its retransmissions (6.x: at 1 s and 2 s) arrive unanswered (every "
          "one NEW); the client gives up at 2.5 s, snapshot 0.2 s later (SYN_SENT; "
          "retransmissions do not refresh the timer).",
          wait=0.2, quiet_rules=["tcp sport 8082 drop"])
def wire_tcp_syn_retransmissions(wire: Wire) -> Cleanup:
    client = wire.client(socket.SOCK_STREAM, 41006)
    client.setblocking(False)
    try:
        client.connect((SERVER, 8082))
    except BlockingIOError:
        pass
    time.sleep(2.5)
    client.close()          # a socket in SYN_SENT closes silently: no 4th SYN at 3 s
    return None


# --- UDP with real sockets ----------------------------------------------------------------

@scenario("UDP 43001 -> 7001: three datagrams 0.1 s apart arrive at a bound socket that never "
          "answers; snapshot 3 s later.", wait=3.0)
def wire_udp_oneway(wire: Wire) -> Cleanup:
    wire.server(socket.SOCK_DGRAM, 7001)
    client = wire.client(socket.SOCK_DGRAM, 43001)
    for _ in range(3):
        client.sendto(b"one way", (SERVER, 7001))
        pause()
    return None


@scenario("UDP 43002 <-> 7002: one request arrives, one reply leaves; snapshot 3 s later.",
          wait=3.0)
def wire_udp_request_reply(wire: Wire) -> Cleanup:
    server = wire.server(socket.SOCK_DGRAM, 7002)
    client = wire.client(socket.SOCK_DGRAM, 43002)
    udp_round(client, server, b"request", b"reply")
    return None


@scenario("UDP 43003 <-> 7003: a request/reply, then another 2.5 s later (stream: more than 2 s "
          "after the entry's first packet); snapshot 1 s later.", wait=1.0)
def wire_udp_stream(wire: Wire) -> Cleanup:
    udp_stream_rounds(wire, 43003, 7003)
    return None


def udp_stream_rounds(wire: Wire, sport: int, dport: int) -> None:
    """A request/reply, then another 2.5 s later (a stream), 2.5 s before the snapshot wait."""
    server = wire.server(socket.SOCK_DGRAM, dport)
    client = wire.client(socket.SOCK_DGRAM, sport)
    for _ in range(2):
        udp_round(client, server, b"request", b"reply")
        time.sleep(2.5)


@scenario("UDP 43011 <-> 7011: a request/reply, and another 1 s later (within the first 2 s: "
          "no stream timeout, no ASSURED); snapshot 0.5 s later.")
def wire_udp_reply_within_2s(wire: Wire) -> Cleanup:
    server = wire.server(socket.SOCK_DGRAM, 7011)
    client = wire.client(socket.SOCK_DGRAM, 43011)
    for delay in (1.0, 0.0):
        udp_round(client, server, b"request", b"reply")
        time.sleep(delay)
    return None


@scenario("UDP 43004 -> 7004 with nothing bound on the server: the datagram arrives (NEW), the "
          "server answers ICMP port unreachable at OUTPUT (RELATED, reply direction); the entry "
          "stays [UNREPLIED].", wait=1.0)
def wire_udp_closed_port(wire: Wire) -> Cleanup:
    client = wire.client(socket.SOCK_DGRAM, 43004)
    client.sendto(b"anyone?", (SERVER, 7004))
    pause()
    return None


@scenario("UDP 43005 <-> 7005 with MTU 1280 on the wire and IP_PMTUDISC_DONT: a 3000-byte request "
          "arrives as three fragments (reassembled before PREROUTING's conntrack) and a 2000-byte "
          "reply leaves as two (conntrack saw it whole at OUTPUT).", mtu=1280)
def wire_udp_fragmented(wire: Wire) -> Cleanup:
    return fragmented_round(wire, 43005, 7005, (socket.IPPROTO_IP, IP_MTU_DISCOVER,
                                                IP_PMTUDISC_DONT))


def fragmented_round(wire: Wire, client_port: int, server_port: int,
                     may_fragment: tuple[int, int, int]) -> Cleanup:
    """A 3000-byte request and a 2000-byte reply, both ends allowed to fragment (the socket
    option `may_fragment` sets)."""
    server = wire.server(socket.SOCK_DGRAM, server_port)
    client = wire.client(socket.SOCK_DGRAM, client_port)
    for sock in (server, client):
        sock.setsockopt(*may_fragment)
    udp_round(client, server, b"q" * 3000, b"r" * 2000)
    pause()
    return None


# --- ICMP ------------------------------------------------------------------------------------

@scenario("ICMP from a raw socket of the client to the server: echo id 0x1234 twice and "
          "timestamp id 0x4321 (answered by the server at OUTPUT), information request 15 and "
          "address mask request 17 (not answered by Linux); snapshot 3 s later.", wait=3.0)
def wire_icmp_echo(wire: Wire) -> Cleanup:
    send_icmp_requests(wire.client(socket.SOCK_RAW, proto=socket.IPPROTO_ICMP), SERVER)
    return None


@scenario("ICMP without a request arriving (forged by the client): echo reply id 0x5555, "
          "timestamp reply id 0x5656, then unknown types 19 and 42 (all INVALID).")
def wire_icmp_reply_without_request(wire: Wire) -> Cleanup:
    for message in (forge.icmp_echo(0, 0x5555, 1, b"pong"),
                    forge.icmp_echo(14, 0x5656, 1, b"\0" * 12),
                    forge.icmp_message(19, 0, b"\0\0\0\0"),
                    forge.icmp_message(42, 0, b"\0\0\0\0")):
        wire.inject(forge.ipv4(CLIENT, SERVER, 1, message))
    return None


@scenario("ICMP errors arriving from the wire: the server sends UDP 43102 -> 10.99.0.1:7102 "
          "(nothing bound on the client, whose stack answers port unreachable: RELATED reply at "
          "PREROUTING); then forged: time exceeded from a router 10.99.0.3 about the same flow "
          "(RELATED reply) and port unreachable about a flow nobody sent, UDP 43103 -> 7103 "
          "(INVALID).", wait=1.0)
def wire_icmp_error_related(wire: Wire) -> Cleanup:
    server = wire.server(socket.SOCK_DGRAM, 43102)
    server.sendto(b"hello?", (CLIENT, 7102))
    pause(0.2)
    sent = forge.ipv4(SERVER, CLIENT, 17, forged_udp(43102, 7102, b"hello?", SERVER, CLIENT))
    wire.inject(forge.ipv4(ROUTER, SERVER, 1, forge.icmp_error(11, 0, sent)))
    unseen = forge.ipv4(SERVER, CLIENT, 17, forged_udp(43103, 7103, b"?", SERVER, CLIENT))
    wire.inject(forge.ipv4(CLIENT, SERVER, 1, forge.icmp_error(3, 3, unseen)))
    return None


# --- other protocols -----------------------------------------------------------------------

@scenario("IP protocol 253 (generic tracker) and GRE (47, version 0, no key) arriving from the "
          "client, twice each, and one packet of each back from the server's raw socket. Each "
          "stack answers what it cannot deliver with ICMP protocol unreachable: the server's "
          "leave (RELATED reply at OUTPUT), the client's arrive (RELATED at PREROUTING).")
def wire_generic_and_gre(wire: Wire) -> Cleanup:
    sender = wire.forger()
    gre = struct.pack("!HH", 0, 0x0800) + forge.ipv4("10.0.0.1", "10.0.0.2", 253, b"inner")
    for proto, payload in ((253, b"experimental" * 2), (47, gre)):
        sender.send(forge.ipv4(CLIENT, SERVER, proto, payload))
        sender.send(forge.ipv4(CLIENT, SERVER, proto, payload))
        sender.send(forge.ipv4(SERVER, CLIENT, proto, payload))
    return None


@scenario("ICMP errors arriving about a TCP connection 41401 -> 8080 (established, left open): "
          "fragmentation needed (3/4, MTU 1400) from the client and time exceeded from a router "
          "10.99.0.3, each quoting a segment the server sent (RELATED, original direction: an "
          "error about the reply direction travels the way the client's packets do); then port "
          "unreachable quoting a segment of port 41402, which no connection uses (INVALID).")
def wire_icmp_error_about_tcp(wire: Wire) -> Cleanup:
    listener = wire.listener(8080)
    client, conn = wire.connected_pair(listener, 41401)
    exchange(client, conn, b"hello", b"world")

    def quoted(dport: int) -> bytes:
        return forge.ipv4(SERVER, CLIENT, 6, forge.tcp_segment(SERVER, CLIENT, 8080, dport,
                                                               forge.ACK | forge.PSH, 7, 9))

    need_frag = forge.icmp_message(3, 4, struct.pack("!HH", 0, 1400), quoted(41401)[:28])
    wire.inject(forge.ipv4(CLIENT, SERVER, 1, need_frag))
    wire.inject(forge.ipv4(ROUTER, SERVER, 1, forge.icmp_error(11, 0, quoted(41401))))
    wire.inject(forge.ipv4(CLIENT, SERVER, 1, forge.icmp_error(3, 3, quoted(41402))))
    return None


# --- checksums -------------------------------------------------------------------------------

@scenario("Forged TCP SYNs arriving with nf_conntrack_checksum=1 (the server's RSTs dropped "
          "before conntrack): 10.99.0.1:42001 -> :6000 with a corrupted checksum (INVALID, no "
          "entry), the same SYN with a correct checksum (NEW), 42002 with checksum field 0 "
          "(INVALID: TCP has no 'no checksum').", quiet_rules=["tcp sport 6000 drop"])
def wire_tcp_bad_checksum(wire: Wire) -> Cleanup:
    wire.inject(forge.ipv4(CLIENT, SERVER, 6, corrupted(forged_syn(42001, 6000), 6)))
    wire.inject(forge.ipv4(CLIENT, SERVER, 6, forged_syn(42001, 6000)))
    wire.inject(forge.ipv4(CLIENT, SERVER, 6, with_checksum(forged_syn(42002, 6000), 6, 0)))
    return None


@scenario("Forged UDP arriving with nf_conntrack_checksum=1 at a bound socket 7201: 43201 with a "
          "corrupted checksum (INVALID, no entry), then the same datagram with a correct "
          "checksum (NEW).")
def wire_udp_bad_checksum(wire: Wire) -> Cleanup:
    wire.server(socket.SOCK_DGRAM, 7201)
    datagram = forged_udp(43201, 7201, b"checksum me")
    wire.inject(forge.ipv4(CLIENT, SERVER, 17, corrupted(datagram, 17)))
    wire.inject(forge.ipv4(CLIENT, SERVER, 17, datagram))
    return None


@scenario("Forged ICMP arriving with nf_conntrack_checksum=1: echo request id 0x2001 with a "
          "corrupted checksum (INVALID; the stack drops it, no reply), echo id 0x2002 correct "
          "(NEW, answered at OUTPUT); the server sends UDP 43202 -> 10.99.0.1:7202 (bound on the "
          "client), then a port unreachable about it with a corrupted checksum (INVALID) and "
          "the same error correct (RELATED reply).")
def wire_icmp_bad_checksum(wire: Wire) -> Cleanup:
    wire.inject(forge.ipv4(CLIENT, SERVER, 1,
                           corrupted(forge.icmp_echo(8, 0x2001, 1, b"bad"), 1)))
    wire.inject(forge.ipv4(CLIENT, SERVER, 1, forge.icmp_echo(8, 0x2002, 1, b"good")))
    wire.client(socket.SOCK_DGRAM, 7202)
    server = wire.server(socket.SOCK_DGRAM, 43202)
    server.sendto(b"to a bound port", (CLIENT, 7202))
    pause()
    sent = forge.ipv4(SERVER, CLIENT, 17,
                      forged_udp(43202, 7202, b"to a bound port", SERVER, CLIENT))
    error = forge.icmp_error(3, 3, sent)
    wire.inject(forge.ipv4(CLIENT, SERVER, 1, corrupted(error, 1)))
    wire.inject(forge.ipv4(CLIENT, SERVER, 1, error))
    return None


@scenario("Forged SCTP and UDP-Lite arriving with nf_conntrack_checksum=1 (the server's answers "
          "dropped before conntrack): an SCTP INIT 10.99.0.1:45201 -> :6000 with a corrupted "
          "CRC32c (INVALID, no entry), the same INIT correct (NEW); UDP-Lite 46201 -> 7201 with "
          "a corrupted checksum, a correct one, and 46202 -> 7202 covering the header only (all "
          "INVALID: the kernel sums UDP-Lite with UDP's protocol number 17 in the pseudo "
          "header); 46203 full coverage and 46204 header-only coverage, their sums made with "
          "17 (NEW).",
          quiet_rules=["ip protocol sctp drop", "ip protocol icmp drop"])
def wire_sctp_udplite_checksums(wire: Wire) -> Cleanup:
    init = forge.sctp_packet(45201, 6000, 0, forge.sctp_init(forge.SCTP_INIT, 0x11111111))
    wire.inject(forge.ipv4(CLIENT, SERVER, 132, corrupted(init, 132)))
    wire.inject(forge.ipv4(CLIENT, SERVER, 132, init))
    lite = forge.udplite_datagram(CLIENT, SERVER, 46201, 7201, b"lite payload")
    wire.inject(forge.ipv4(CLIENT, SERVER, 136, corrupted(lite, 136)))
    wire.inject(forge.ipv4(CLIENT, SERVER, 136, lite))
    header_only = forge.udplite_datagram(CLIENT, SERVER, 46202, 7202, b"lite payload",
                                         coverage=8)
    wire.inject(forge.ipv4(CLIENT, SERVER, 136, header_only[:8] + b"LITE" + header_only[12:]))
    # The kernel verifies UDP-Lite with UDP's protocol number in the pseudo header
    # (udplite_error() passes IPPROTO_UDP): only a sum made that way passes.
    for sport, coverage in ((46203, 0), (46204, 8)):
        as_udp = forge.udplite_datagram(CLIENT, SERVER, sport, 7203, b"lite payload",
                                        coverage=coverage, pseudo_proto=17)
        wire.inject(forge.ipv4(CLIENT, SERVER, 136, as_udp))
    return None


@scenario("The same corrupted checksums with nf_conntrack_checksum=0 (nothing verified): TCP SYN "
          "42003 -> 6000, UDP 43203 -> 7203 (bound) and ICMP echo id 0x2003 all arrive NEW and "
          "make entries (the server's stack still drops them: no answers).",
          knobs={"checksum": 0}, quiet_rules=["tcp sport 6000 drop"])
def wire_bad_checksums_unchecked(wire: Wire) -> Cleanup:
    wire.server(socket.SOCK_DGRAM, 7203)
    wire.inject(forge.ipv4(CLIENT, SERVER, 6, corrupted(forged_syn(42003, 6000), 6)))
    wire.inject(forge.ipv4(CLIENT, SERVER, 17, corrupted(forged_udp(43203, 7203, b"unchecked"),
                                                         17)))
    wire.inject(forge.ipv4(CLIENT, SERVER, 1,
                           corrupted(forge.icmp_echo(8, 0x2003, 1, b"unchecked"), 1)))
    return None


@scenario("Forged UDP 43401 -> 7401 (bound) whose IP header checksum is wrong: ip_rcv drops it "
          "before PREROUTING (no verdict, no entry, no stat); then the same datagram with a "
          "correct header (NEW).")
def wire_bad_ip_checksum(wire: Wire) -> Cleanup:
    wire.server(socket.SOCK_DGRAM, 7401)
    packet = forge.ipv4(CLIENT, SERVER, 17, forged_udp(43401, 7401, b"header"), ident=0x4401)
    broken = packet[:10] + bytes([packet[10] ^ 0x5A, packet[11]]) + packet[12:]
    wire.inject(broken)
    wire.inject(packet)
    return None


@scenario("Forged UDP with checksum 0 (none computed: never verified) 43301 -> 7301 (bound): "
          "NEW, the server's reply (ESTABLISHED reply) reaches a client port nobody bound, so the "
          "client's stack answers port unreachable about it (RELATED, original direction), then "
          "another zero-checksum datagram (ESTABLISHED).")
def wire_udp_checksum_zero(wire: Wire) -> Cleanup:
    server = wire.server(socket.SOCK_DGRAM, 7301)
    for payload in (b"no checksum", b"still none"):
        datagram = with_checksum(forged_udp(43301, 7301, payload), 17, 0)
        wire.inject(forge.ipv4(CLIENT, SERVER, 17, datagram))
        data, peer = server.recvfrom(4096)
        if payload == b"no checksum":
            server.sendto(b"reply", peer)
            pause()
    return None


@scenario("Forged UDP fragments arriving: 43006 -> 7006 as two fragments in order, 43007 -> 7007 "
          "last fragment first (PREROUTING defrag holds the first piece; the completed datagram "
          "is NEW), and a lone first fragment of 43008 -> 7008 (held: no verdict, no entry). "
          "Bound sockets absorb the datagrams.")
def wire_udp_forged_fragments(wire: Wire) -> Cleanup:
    for port in (7006, 7007, 7008):
        wire.server(socket.SOCK_DGRAM, port)
    for sport, dport, ident, order in ((43006, 7006, 0x1111, "in order"),
                                       (43007, 7007, 0x2222, "reversed"),
                                       (43008, 7008, 0x3333, "first only")):
        packet = forge.ipv4(CLIENT, SERVER, 17, forged_udp(sport, dport, b"F" * 64), ident=ident)
        pieces = forge.split_fragments(packet, 32)
        pieces = {"in order": pieces, "reversed": pieces[::-1], "first only": pieces[:1]}[order]
        for piece in pieces:
            wire.inject(piece)
    return None


@scenario("Forged UDP to 7402 (bound) with IP headers ip_rcv refuses before PREROUTING (no "
          "verdict, no entry, no stat): 43402 with a total length 20 bytes beyond the frame, "
          "43403 with a header length of 16 bytes (IHL 4), 43404 with version 6 in an IPv4 "
          "frame; then a correct datagram from 43405 (NEW).")
def wire_broken_ip_headers(wire: Wire) -> Cleanup:
    wire.server(socket.SOCK_DGRAM, 7402)

    def datagram(sport: int) -> bytes:
        return forge.ipv4(CLIENT, SERVER, 17, forged_udp(sport, 7402, b"broken"), ident=sport)

    def rewritten(packet: bytes, offset: int, value: bytes) -> bytes:
        """The packet with header bytes replaced and the header checksum made right again."""
        header = bytearray(packet[:20])
        header[offset:offset + len(value)] = value
        header[10:12] = b"\0\0"
        header[10:12] = forge.inet_checksum(bytes(header)).to_bytes(2, "big")
        return bytes(header) + packet[20:]

    too_long = datagram(43402)
    wire.inject(rewritten(too_long, 2, (len(too_long) + 20).to_bytes(2, "big")))
    wire.inject(rewritten(datagram(43403), 0, b"\x44"))
    wire.inject(rewritten(datagram(43404), 0, b"\x65"))
    wire.inject(datagram(43405))
    return None


@scenario("Checksum offload left on at the client's veth: TCP 41301 -> 8080 (handshake, data "
          "both ways, client closes first) and UDP 43601 -> 7601 (bound). The client's packets "
          "cross the veth as CHECKSUM_PARTIAL: the server's conntrack trusts them without "
          "verifying (all tracked normally), while the captured bytes carry only the "
          "pseudo-header sum, i.e. a wrong checksum. Snapshot 1 s later.",
          wait=1.0, client_offload=True)
def wire_offloaded_checksums(wire: Wire) -> Cleanup:
    listener = wire.listener(8080)
    client, conn = wire.connected_pair(listener, 41301)
    exchange(client, conn, b"partial", b"checksums")
    close_in_order(client, conn)
    wire.server(socket.SOCK_DGRAM, 7601)
    wire.client(socket.SOCK_DGRAM, 43601).sendto(b"offloaded", (SERVER, 7601))
    pause()
    return None


# --- forged TCP both ways: the client's segments arrive, the server's leave ----------------

# What the two stacks would answer to connections only forged packets know about: the server's
# RSTs (dropped before its conntrack) and the client's RSTs (dropped in its own output chain,
# an nft rule without `ct`: no conntrack there either).
FORGED_TCP_QUIET = [f"meta mark != {FORGED_MARK} tcp sport 6000 tcp flags & rst == rst drop"]
FORGED_TCP_CLIENT = ["tcp dport 6000 tcp flags & rst == rst drop"]


@scenario("Forged TCP 10.99.0.1:42601 -> :6000, the client's segments arriving with "
          "nf_conntrack_checksum=1: handshake, data both ways, then client data, a RST and a "
          "FIN/ACK each with a corrupted checksum (INVALID: the entry stays ESTABLISHED, no "
          "CLOSE), then the data again correct and the server's ACK.",
          quiet_rules=FORGED_TCP_QUIET, client_rules=FORGED_TCP_CLIENT)
def wire_tcp_bad_checksum_midstream(wire: Wire) -> Cleanup:
    sender = wire.forger()
    tcp = ForgedTcp(sender, (CLIENT, 42601), (SERVER, 6000))
    tcp.handshake()
    tcp.c("PA", data=b"hello")
    tcp.s("PA", data=b"world")
    tcp.c("A")
    sender.corrupt = True
    tcp.c("PA", data=b"corrupted", advance=False)
    tcp.c("RA", advance=False)
    tcp.c("FA", advance=False)
    sender.corrupt = False
    tcp.c("PA", data=b"corrupted")
    tcp.s("A")
    return None


# The loopback suite's forged TCP traffic, sent over the wire instead: the client's segments
# arrive (PREROUTING, checksums verified), the server's leave (OUTPUT). Each wire scenario
# wire_<name> runs loopback.<name>_traffic between 10.99.0.1 and 10.99.0.2:6000.
FORGED_TCP_OVER_THE_WIRE = {
    "tcp_forged_states": ("connections left in different states: 42501 SYN_RECV, 42502 "
                          "FIN_WAIT, 42503 CLOSE_WAIT, 42504 LAST_ACK, 42505 SYN_SENT2, 42506 "
                          "both FINs crossing; snapshot 2 s later", {"wait": 2.0}),
    "tcp_window_checks": ("42003: after a handshake and data, client data far beyond the "
                          "window, an ACK for data never sent, an old retransmission, then "
                          "normal data", {}),
    "tcp_simultaneous_open": ("42002: SYN both ways, SYN/ACK both ways, ACK both ways, then "
                              "data", {}),
    "tcp_ignored_packets": ("SYNs on an established connection (42004: the client's ignored, "
                            "the server's invalid) and a server ACK while in SYN_SENT (42005: "
                            "ignored)", {}),
    "tcp_odd_first_flags": ("first packets with odd flags arriving, each on its own port "
                            "42101-42111: F, none, SF, FA, SA, R, RA, SR, RF (INVALID, no "
                            "entry), then SU and SP (NEW)", {}),
    "tcp_ack_first_loose": ("an ACK arriving as first packet (tcp_loose=1): 42201 ACK, data, "
                            "the server's ACK, more data; 42202 a lone ACK", {}),
    "tcp_rst_checks": ("42401 server RST with seq below the client's ACK (INVALID); 42402 "
                       "server RST in window but not at the expected seq; 42403 client "
                       "RST/ACK arriving at the exact seq (CLOSE); MTU 9000, for the "
                       "server's 2000-byte segment", {"mtu": 9000}),
    "tcp_forged_close_and_reopen": ("42001: handshake, data both ways, client FIN, server "
                                    "ACK, server FIN, client ACK (TIME_WAIT), then a new SYN "
                                    "on the same ports (reopen)", {}),
    "tcp_ack_first_noloose": ("with tcp_loose=0: 42203 ACK and data arriving first (INVALID, "
                              "no entry), then a SYN from 42204", {"knobs": {"tcp_loose": 0}}),
    "tcp_ack_retransmissions": ("with tcp_timeout_max_retrans=100: 42301 handshake, 5 bytes "
                                "arriving, the server's ACK of them sent 5 times identically",
                                {"knobs": {"tcp_timeout_max_retrans": 100}}),
    "tcp_zero_window": ("42302: handshake, 5 bytes arriving, the server's ACK advertises a zero "
                        "window", {}),
    "tcp_rst_ignore_invalid": ("with tcp_ignore_invalid_rst=1: 42404 handshake, data both ways, "
                               "a server RST with seq below the client's ACK; MTU 9000, for "
                               "the server's 2000-byte segment",
                               {"knobs": {"tcp_ignore_invalid_rst": 1}, "mtu": 9000}),
    "tcp_window_scaling": ("42701 with window scale 7 and SACK permitted on both SYNs: 5000 "
                           "bytes arriving in the server's scaled window, a SACK beyond them "
                           "(INVALID), window 1 and data 40000 bytes ahead (INVALID), then "
                           "in-window data; MTU 9000, for the 5000-byte segment",
                           {"mtu": 9000}),
    "tcp_window_checks_be_liberal": ("with tcp_be_liberal=1: client data "
                                     "far beyond the window and the ACK for data never sent "
                                     "are accepted", {"knobs": {"tcp_be_liberal": 1},
                                                      "traffic": "tcp_window_checks"}),
    "tcp_max_retrans_small": ("with tcp_max_retrans=1 and tcp_timeout_max_retrans=100: "
                              "the server's ACK sent 5 times "
                              "(after the first repeat the entry gets the max_retrans "
                              "timeout)", {"knobs": {"tcp_max_retrans": 1,
                                                     "tcp_timeout_max_retrans": 100},
                                           "traffic": "tcp_ack_retransmissions"}),
    "tcp_close_expiry": ("42601 reset by the client's RST/ACK (CLOSE, 10 s), 42602 closed "
                         "normally (TIME_WAIT); snapshot 11 s later, after the CLOSE entry "
                         "expired", {"wait": 11.0}),
}


def _forged_tcp_over_the_wire(name: str) -> Callable[[Wire], Cleanup]:
    traffic = getattr(loopback, f"{name}_traffic")     # the loopback scenario's traffic

    def run(wire: Wire) -> Cleanup:
        traffic(wire.forger(), CLIENT, SERVER)
        return None
    return run


for _name, (_what, _options) in FORGED_TCP_OVER_THE_WIRE.items():
    _options = dict(_options)
    _traffic = _options.pop("traffic", _name)        # another scenario's traffic, other knobs
    SCENARIOS[f"wire_{_name}"] = WireScenario(
        f"wire_{_name}", f"Forged TCP over the wire, as the loopback {_traffic}: {_what}.",
        _forged_tcp_over_the_wire(_traffic), quiet_rules=FORGED_TCP_QUIET,
        client_rules=FORGED_TCP_CLIENT, **_options)


# --- IPv6 ------------------------------------------------------------------------------------
# Client fd00:99::1, server fd00:99::2 (wirenet.py: no DAD, no link-local addresses, no router
# solicitations, permanent neighbours); the server's table is `ip6 pctw`.

IPV6_DONTFRAG = 62                          # <linux/in6.h>
MLD_REPORTS_DROP = "icmpv6 type { mld-listener-report, mld2-listener-report } drop"


def forged_udp6(sport: int, dport: int, payload: bytes, src: str = CLIENT6,
                dst: str = SERVER6) -> bytes:
    return forge.ipv6(src, dst, 17, forge.udp_datagram(src, dst, sport, dport, payload))


def icmpv6_packet(src: str, dst: str, icmp_type: int, code: int = 0, rest: bytes = b"\0" * 4,
                  payload: bytes = b"", hop_limit: int = 64) -> bytes:
    return forge.ipv6(src, dst, 58, forge.icmpv6_message(src, dst, icmp_type, code, rest, payload),
                      hop_limit=hop_limit)


@scenario("TCP over IPv6 [fd00:99::1]:41601 -> [fd00:99::2]:8080 over the wire: handshake, data "
          "both ways, the client closes first, then the server; snapshot 1 s later (TIME_WAIT).",
          wait=1.0, family="ip6")
def wire_ipv6_tcp_client_close(wire: Wire) -> Cleanup:
    return client_closes_first(wire, 41601)


@scenario("UDP over IPv6: 43601 <-> 7601 a request arrives and a reply leaves; 43602 -> 7602 "
          "with nothing bound: the server's ICMPv6 port unreachable leaves RELATED (reply); "
          "TCP 41602 -> 8081 refused (RST/ACK at OUTPUT).", wait=1.0, family="ip6")
def wire_ipv6_udp_and_refused(wire: Wire) -> Cleanup:
    server = wire.server(socket.SOCK_DGRAM, 7601)
    udp_round(wire.client(socket.SOCK_DGRAM, 43601), server, b"request", b"reply")
    pause()
    wire.client(socket.SOCK_DGRAM, 43602).sendto(b"anyone?", (SERVER6, 7602))
    pause()
    connect_refused(wire.client(socket.SOCK_STREAM, 41602), (SERVER6, 8081))
    return None


@scenario("ICMPv6 echo from a raw socket of the client: id 0x6161 twice (answered by the server "
          "at OUTPUT), a node information query (139, unanswered); snapshot 1 s later.",
          wait=1.0, family="ip6")
def wire_ipv6_icmpv6_echo(wire: Wire) -> Cleanup:
    icmp = wire.client(socket.SOCK_RAW, proto=socket.IPPROTO_ICMPV6)
    for sequence in (1, 2):
        icmp.sendto(forge.icmp_echo(128, 0x6161, sequence, b"ping6" * 4), (SERVER6, 0))
        pause()
    icmp.sendto(struct.pack("!BBHHH", 139, 0, 0, 0, 0) + b"\0" * 16, (SERVER6, 0))
    pause()
    return None


@scenario("UDP over IPv6 43603 <-> 7603 with MTU 1280 on the wire and IPV6_DONTFRAG off: a "
          "3000-byte request arrives as three fragments (nf_defrag_ipv6 reassembles them before "
          "PREROUTING's conntrack) and a 2000-byte reply leaves as two.", mtu=1280,
          family="ip6")
def wire_ipv6_udp_fragmented(wire: Wire) -> Cleanup:
    return fragmented_round(wire, 43603, 7603, (socket.IPPROTO_IPV6, IPV6_DONTFRAG, 0))


WIRE6_FRAGMENTS = (
    # sport, identification, (offset, length) of each piece of the 72-byte UDP payload
    (43611, 0x61, [(0, 32), (32, 40)]),                 # in order
    (43612, 0x62, [(32, 40), (0, 32)]),                 # last piece first
    (43613, 0x63, [(0, 72)]),                           # atomic fragment (offset 0, M clear)
    (43614, 0x64, [(0, 32), (24, 24), (48, 24)]),       # overlap: the datagram is discarded
    (43615, 0x65, [(0, 32), (0, 32), (32, 40)]),        # an exact duplicate: dropped alone
    (43616, 0x66, [(0, 32), (32, 16), (24, 16), (48, 24)]),  # inside a run: a duplicate
    (43617, 0x67, [(0, 32)]),                           # a lone first piece: held
)


@scenario("Forged IPv6 UDP fragments arriving at bound sockets 7611-7618: in order, last piece "
          "first, an atomic fragment, a piece reaching back into held data (RFC 5722: the whole "
          "datagram is discarded, and the last piece opens a queue that never completes), an "
          "exact duplicate and a piece inside held data (dropped alone: the datagram "
          "completes), a lone first piece (held: no verdict), and 43618 -> 7618 a first piece "
          "of 36 bytes with M set (not a multiple of 8: nf_defrag_ipv6 lets it through as it "
          "is, and conntrack reads its UDP header).", family="ip6")
def wire_ipv6_forged_fragments(wire: Wire) -> Cleanup:
    for port in range(7611, 7619):
        wire.server(socket.SOCK_DGRAM, port)
    for sport, ident, sizes in WIRE6_FRAGMENTS:
        packet = forged_udp6(sport, sport - 36000, b"F" * 64)
        for piece in forge.ipv6_fragments(packet, sizes, ident):
            wire.inject(piece)
    odd = forge.ipv6_fragments(forged_udp6(43618, 7618, b"F" * 64), [(0, 36)], 0x68)
    wire.inject(odd[0])
    return None


@scenario("ICMPv6 arriving from the client: neighbour solicitation for the server (answered by "
          "an advertisement at OUTPUT), an unsolicited advertisement, a router solicitation and "
          "an MLDv2 report (all UNTRACKED, counted nowhere); an echo request with a corrupted "
          "checksum (INVALID at PREROUTING); UDP 43621 -> 7621 (bound) and a port unreachable "
          "from the router quoting the server's reply to it (RELATED), one quoting an unknown "
          "flow (INVALID); a TCP SYN with a bad checksum (INVALID).", family="ip6",
          quiet_rules=["tcp sport 6000 drop"])
def wire_ipv6_icmpv6_and_checksums(wire: Wire) -> Cleanup:
    server = wire.server(socket.SOCK_DGRAM, 7621)
    target = socket.inet_pton(socket.AF_INET6, SERVER6)
    lladdr = bytes([1, 1]) + bytes.fromhex(wirenet.CLIENT_MAC.replace(":", ""))
    wire.inject(icmpv6_packet(CLIENT6, SERVER6, 135, payload=target + lladdr, hop_limit=255))
    client_target = socket.inet_pton(socket.AF_INET6, CLIENT6)
    wire.inject(icmpv6_packet(CLIENT6, SERVER6, 136, rest=b"\x20\0\0\0",
                              payload=client_target, hop_limit=255))
    wire.inject(icmpv6_packet(CLIENT6, SERVER6, 133, hop_limit=255))
    wire.inject(icmpv6_packet(CLIENT6, SERVER6, 143, rest=b"\0" * 4, hop_limit=1))
    sender = wire.forger()
    sender.corrupt = True
    sender.send(icmpv6_packet(CLIENT6, SERVER6, 128, rest=struct.pack("!HH", 0x6363, 1),
                              payload=b"bad sum"))
    sender.send(forge.ipv6(CLIENT6, SERVER6, 6, forge.tcp_segment(
        CLIENT6, SERVER6, 41621, 6000, forge.SYN, 1000, 0, options=forge.MSS_1460)))
    sender.corrupt = False
    client = wire.client(socket.SOCK_DGRAM, 43621)
    client.sendto(b"hello?", (SERVER6, 7621))
    server.recvfrom(100)
    pause()
    reply = forged_udp6(7621, 43621, b"reply", src=SERVER6, dst=CLIENT6)
    wire.inject(icmpv6_packet(ROUTER6, SERVER6, 1, 4, payload=reply))
    unknown = forged_udp6(7699, 43699, b"?", src=SERVER6, dst=CLIENT6)
    wire.inject(icmpv6_packet(ROUTER6, SERVER6, 1, 4, payload=unknown))
    return None


# --- seen at PREROUTING, dropped by routing or IP option checks before INPUT -------------

def header_with(packet: bytes, options: bytes) -> bytes:
    """The packet (20-byte header) with IP options added, its lengths and header checksum
    made right."""
    header = bytearray(packet[:20])
    assert len(options) % 4 == 0
    header[0] = 0x40 | (5 + len(options) // 4)
    header[2:4] = (20 + len(options) + len(packet) - 20).to_bytes(2, "big")
    header[10:12] = b"\0\0"
    whole = bytes(header) + options
    whole = whole[:10] + forge.inet_checksum(whole).to_bytes(2, "big") + whole[12:]
    return whole + packet[20:]


def udp_from(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """A UDP datagram between any two addresses, its L4 checksum made for them."""
    return forge.ipv4(src, dst, 17, forged_udp(sport, dport, payload, src, dst), ident=sport)


# Sources ip_route_input_slow() calls martian (multicast, limited broadcast, 0/8, 127/8) or
# fib_validate_source() refuses (one of the server's own addresses), and two it accepts with
# rp_filter off (the link's broadcast, an address of another subnet).
MARTIAN_SOURCES = (("127.0.0.1", 44101), ("0.0.0.0", 44102), ("255.255.255.255", 44103),
                   ("224.0.0.5", 44104), (SERVER, 44105), ("10.99.0.255", 44106),
                   ("192.0.2.7", 44107))


@scenario("Forged UDP to 7801 (bound) arriving from martian sources: 127.0.0.1:44101, "
          "0.0.0.0:44102, 255.255.255.255:44103, 224.0.0.5:44104 and the server's own "
          "10.99.0.2:44105 (conntrack sees each at PREROUTING, routing drops it: no entry); "
          "10.99.0.255:44106 and 192.0.2.7:44107 (rp_filter off: delivered); then 10.99.0.1:44108 "
          "(NEW).", quiet_rules=["ip protocol icmp drop"])
def wire_martian_source(wire: Wire) -> Cleanup:
    wire.server(socket.SOCK_DGRAM, 7801)
    for src, sport in MARTIAN_SOURCES + ((CLIENT, 44108),):
        wire.inject(udp_from(src, SERVER, sport, 7801, b"martian?"))
    return None


@scenario("Forged UDP from 10.99.0.1 to destinations the server does not deliver "
          "(ip_forward=0): 127.0.0.1:7811 and 0.0.0.1:7812 (martian destinations), 10.5.5.5:7813 "
          "(no route) and 10.99.0.7:7814 (on the link, not the server's); then the limited "
          "broadcast 255.255.255.255:7815, the link broadcast 10.99.0.255:7816 and the server "
          "10.99.0.2:7817 (delivered). Sockets bound to 0.0.0.0 absorb what arrives.",
          quiet_rules=["ip protocol icmp drop"])
def wire_martian_destination(wire: Wire) -> Cleanup:
    for port in range(7811, 7818):
        any_address = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        wire._keep(any_address).bind(("0.0.0.0", port))
    for dst, dport in (("127.0.0.1", 7811), ("0.0.0.1", 7812), ("10.5.5.5", 7813),
                       ("10.99.0.7", 7814), ("255.255.255.255", 7815), ("10.99.0.255", 7816),
                       (SERVER, 7817)):
        wire.inject(udp_from(CLIENT, dst, 44200 + dport - 7800, dport, b"for whom?"))
    return None


# IP options: a router alert (valid), a record route whose length runs past the header, an
# option length of 1 (below the minimum 2), and NOPs with an end-of-list.
IP_OPTIONS = ((44301, bytes((0x94, 4, 0, 0))),
              (44302, bytes((0x07, 12, 4, 0))),
              (44303, bytes((0x44, 1, 0, 0))),
              (44304, bytes((1, 1, 1, 0))))


@scenario("Forged UDP to 7821 (bound) with IP options: 44301 router alert (delivered), 44302 a "
          "record route whose length runs past the header and 44303 an option length of 1 "
          "(ip_options_compile refuses both after PREROUTING: conntrack saw them, no entry; the "
          "server's parameter problem dropped before its conntrack), 44304 NOPs and end of "
          "list (delivered).", quiet_rules=["ip protocol icmp drop"])
def wire_bad_ip_options(wire: Wire) -> Cleanup:
    wire.server(socket.SOCK_DGRAM, 7821)
    for sport, options in IP_OPTIONS:
        wire.inject(header_with(udp_from(CLIENT, SERVER, sport, 7821, b"options"), options))
    return None


OTHER_HOST_MAC = "02:00:00:00:00:99"         # on no interface of the link
BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"


@scenario("Forged UDP to 10.99.0.2:7881 (bound) in Ethernet frames for another MAC: 44811 to "
          "02:00:00:00:00:99 (the server's stack marks it PACKET_OTHERHOST and ip_rcv drops it "
          "before PREROUTING: no verdict, no entry), 44812 to the broadcast MAC (PACKET_BROADCAST, "
          "delivered: NEW), 44813 to the server's MAC (NEW).")
def wire_other_host_frames(wire: Wire) -> Cleanup:
    wire.server(socket.SOCK_DGRAM, 7881)
    for sport, mac in ((44811, OTHER_HOST_MAC), (44812, BROADCAST_MAC), (44813, None)):
        wire.inject(udp_from(CLIENT, SERVER, sport, 7881, b"which host?"), mac)
    return None


def fragment_pair(sport: int, dport: int, ident: int) -> tuple[bytes, bytes]:
    packet = forge.ipv4(CLIENT, SERVER, 17, forged_udp(sport, dport, b"P" * 64), ident=ident)
    first, second = forge.split_fragments(packet, 32)
    return first, second


@scenario("Forged UDP fragments to 7831 (bound): 44401's first fragment with a bad IP header "
          "checksum (ip_rcv drops it: never reassembled), its second fragment (held), then its "
          "good first fragment (completes the datagram: NEW); 44402's first fragment bad, second "
          "fragment alone (held until the snapshot: no verdict).")
def wire_fragment_bad_header_checksum(wire: Wire) -> Cleanup:
    wire.server(socket.SOCK_DGRAM, 7831)
    first, second = fragment_pair(44401, 7831, 0x4401)
    broken = first[:10] + bytes([first[10] ^ 0x5A, first[11]]) + first[12:]
    for piece in (broken, second, first):
        wire.inject(piece)
    first, second = fragment_pair(44402, 7831, 0x4402)
    wire.inject(first[:10] + bytes([first[10] ^ 0x5A, first[11]]) + first[12:])
    wire.inject(second)
    return None


@scenario("Forged UDP fragments to 7841 (bound): 44501's first fragment twice, then its second "
          "(the duplicate is dropped, the datagram completes: NEW); 44502 complete, then its "
          "second fragment again (a new queue, held: no verdict); 44503 first, first again, "
          "second, second again.")
def wire_duplicate_fragments(wire: Wire) -> Cleanup:
    wire.server(socket.SOCK_DGRAM, 7841)
    first, second = fragment_pair(44501, 7841, 0x4501)
    for piece in (first, first, second):
        wire.inject(piece)
    first, second = fragment_pair(44502, 7841, 0x4502)
    for piece in (first, second, second):
        wire.inject(piece)
    first, second = fragment_pair(44503, 7841, 0x4503)
    for piece in (first, first, second, second):
        wire.inject(piece)
    return None


@scenario("GRE from the wire: version 1 (PPTP) call id 0x1234 twice from the client and call id "
          "0x5678 back from the server's raw socket; version 0 with a key 0xabcd (K bit) from "
          "the client. The stacks' protocol unreachables are dropped before conntrack.",
          quiet_rules=["ip protocol icmp drop"], client_rules=["ip protocol icmp drop"])
def wire_gre_versions(wire: Wire) -> Cleanup:
    sender = wire.forger()
    sender.send(forge.ipv4(CLIENT, SERVER, 47, forge.gre_v1(0x1234)))
    sender.send(forge.ipv4(CLIENT, SERVER, 47, forge.gre_v1(0x1234)))
    sender.send(forge.ipv4(SERVER, CLIENT, 47, forge.gre_v1(0x5678)))
    keyed = struct.pack("!HHI", 0x2000, 0x0800, 0xABCD) + forge.ipv4("10.0.0.1", "10.0.0.2",
                                                                      253, b"inner")
    sender.send(forge.ipv4(CLIENT, SERVER, 47, keyed))
    return None


@scenario("ICMP errors arriving about GRE (version 0, no key) the server sent to 10.99.0.1 (the "
          "client's protocol unreachable about it: RELATED reply), a forged time exceeded from a "
          "router 10.99.0.3 about the same flow (RELATED reply), and a port unreachable quoting "
          "GRE the server never sent to 10.99.0.9 (INVALID).",
          quiet_rules=["ip protocol icmp drop"])
def wire_icmp_error_about_gre(wire: Wire) -> Cleanup:
    sender = wire.forger()
    gre = struct.pack("!HH", 0, 0x0800) + forge.ipv4("10.0.0.1", "10.0.0.2", 253, b"inner")
    sent = forge.ipv4(SERVER, CLIENT, 47, gre)
    sender.send(sent)
    pause(0.2)
    wire.inject(forge.ipv4(ROUTER, SERVER, 1, forge.icmp_error(11, 0, sent)))
    unsent = forge.ipv4(SERVER, "10.99.0.9", 47, gre)
    wire.inject(forge.ipv4(CLIENT, SERVER, 1, forge.icmp_error(3, 3, unsent)))
    return None


@scenario("With nf_conntrack_checksum=0, forged TCP 10.99.0.1:42611 -> :6000: handshake and "
          "data, then client data and a FIN/ACK with corrupted checksums (not verified: "
          "accepted, the FIN moves the entry to CLOSE_WAIT), the server's ACK.",
          knobs={"checksum": 0}, quiet_rules=FORGED_TCP_QUIET,
          client_rules=FORGED_TCP_CLIENT)
def wire_tcp_bad_checksum_unchecked(wire: Wire) -> Cleanup:
    sender = wire.forger()
    tcp = ForgedTcp(sender, (CLIENT, 42611), (SERVER, 6000))
    tcp.handshake()
    tcp.c("PA", data=b"hello")
    tcp.s("A")
    sender.corrupt = True
    tcp.c("PA", data=b"unchecked")
    tcp.c("FA")
    sender.corrupt = False
    tcp.s("A")
    return None


@scenario("With nf_conntrack_udp_timeout=12 and nf_conntrack_udp_timeout_stream=45: UDP 44601 -> "
          "7851 one datagram (unreplied: 12 s), 44602 <-> 7852 request/reply and another 2.5 s "
          "later (stream: 45 s); snapshot 1 s later.",
          wait=1.0, knobs={"udp_timeout": 12, "udp_timeout_stream": 45})
def wire_udp_timeouts_changed(wire: Wire) -> Cleanup:
    wire.server(socket.SOCK_DGRAM, 7851)
    wire.client(socket.SOCK_DGRAM, 44601).sendto(b"one way", (SERVER, 7851))
    udp_stream_rounds(wire, 44602, 7852)
    return None


@scenario("With nf_conntrack_acct=1: TCP 41701 -> 8080 (handshake, data both ways, client closes "
          "first), UDP 44701 <-> 7861 request/reply and ICMP echo id 0x7001: the listing's "
          "packets= bytes= columns per direction; snapshot 1 s later.",
          wait=1.0, knobs={"acct": 1})
def wire_acct_counters(wire: Wire) -> Cleanup:
    listener = wire.listener(8080)
    client, conn = wire.connected_pair(listener, 41701)
    exchange(client, conn, b"count me", b"and me too")
    close_in_order(client, conn)
    udp_round(wire.client(socket.SOCK_DGRAM, 44701), wire.server(socket.SOCK_DGRAM, 7861),
              b"request", b"a longer reply")
    icmp = wire.client(socket.SOCK_RAW, proto=socket.IPPROTO_ICMP)
    icmp.sendto(forge.icmp_echo(8, 0x7001, 1, b"ping"), (SERVER, 0))
    pause()
    return None


@scenario("With nf_conntrack_timestamp=1: UDP 44801 <-> 7871 request/reply, then 44802 -> 7872 "
          "2 s later: the listing's delta-time= column (seconds since each entry was made); "
          "snapshot 1.5 s later.", wait=1.5, knobs={"timestamp": 1})
def wire_timestamps(wire: Wire) -> Cleanup:
    udp_round(wire.client(socket.SOCK_DGRAM, 44801), wire.server(socket.SOCK_DGRAM, 7871),
              b"request", b"reply")
    time.sleep(2.0)
    wire.server(socket.SOCK_DGRAM, 7872)
    wire.client(socket.SOCK_DGRAM, 44802).sendto(b"later", (SERVER, 7872))
    pause()
    return None


# --- the synthetic source's SCTP, replayed into the namespace -------------------------------

REPO = HERE.parent.parent
GENERATED_SCTP_SEEDS = (1, 2, 3, 6, 8)     # 1-3 end in SHUTDOWN, 6 and 8 stay up


def generated_sctp(seed: int) -> list[bytes]:
    """One SCTP association of the synthetic source (procfs_ct/sources/synthetic.py) made
    with `seed`, readdressed: its client becomes 10.99.0.1 and its server 10.99.0.2 (SCTP's
    CRC32c covers no IP address: the rest of each packet is as generated)."""
    import random
    sys.path.insert(0, str(REPO))
    from procfs_ct.sources.synthetic import World, sctp_association

    # Without the Ethernet header and the padding to the 60-byte minimum frame (a raw socket
    # would send the padding as part of the datagram).
    datagrams = [frame[14:14 + int.from_bytes(frame[16:18], "big")]
                 for _, frame in sctp_association(World(random.Random(seed), 0.0), 0)]
    client = datagrams[0][12:16]
    readdressed = []
    for datagram in datagrams:
        ends = (CLIENT, SERVER) if datagram[12:16] == client else (SERVER, CLIENT)
        header = bytearray(datagram[:20])
        header[12:16], header[16:20] = socket.inet_aton(ends[0]), socket.inet_aton(ends[1])
        header[10:12] = b"\0\0"
        header[10:12] = forge.inet_checksum(bytes(header)).to_bytes(2, "big")
        readdressed.append(bytes(header) + datagram[20:])
    return readdressed


@scenario("SCTP associations of the synthetic source (procfs-ct generate's mix, seeds 1, 2, 3, "
          "6, 8), readdressed to 10.99.0.1 -> 10.99.0.2 and sent one after another in order, 20 ms "
          "apart: the client's packets arrive (CRC32c verified), the server's leave its raw "
          "socket; the stacks' own answers (ABORT, protocol unreachable) are dropped before "
          "conntrack.",
          quiet_rules=[f"meta mark != {FORGED_MARK} ip protocol sctp drop",
                       "ip protocol icmp drop"],
          client_rules=["ip protocol sctp drop", "ip protocol icmp drop"])
def wire_generated_sctp(wire: Wire) -> Cleanup:
    sender = wire.forger()
    for seed in GENERATED_SCTP_SEEDS:
        for datagram in generated_sctp(seed):
            sender.send(datagram)
    return None


# --- forwarded traffic ---------------------------------------------------------------------

@scenario("Forwarded TCP 10.99.0.1:41201 -> 10.98.0.1:8080 through the server (ip_forward=1): "
          "handshake, data both ways, the client closes first, then the far host; conntrack "
          "meets each packet once, at PREROUTING; the capture also holds each one leaving the "
          "other veth (no conntrack there: no verdict). Snapshot 1 s later (TIME_WAIT).",
          wait=1.0, forward=True)
def wire_forward_tcp(wire: Wire) -> Cleanup:
    listener = wire.listener(8080, far=True)
    client, conn = wire.connected_pair(listener, 41201)
    exchange(client, conn, b"through", b"the router")
    close_in_order(client, conn)
    return None


@scenario("Forwarded UDP and ICMP through the server: UDP 43501 <-> 10.98.0.1:7501 request and "
          "reply; UDP 43502 -> 10.98.0.1:7502 with nothing bound (the far host's port "
          "unreachable is forwarded back: RELATED reply at PREROUTING); echo id 0x3001 to "
          "10.98.0.1 and its reply.", wait=1.0, forward=True)
def wire_forward_udp_icmp(wire: Wire) -> Cleanup:
    far = wire.far(socket.SOCK_DGRAM, 7501)
    client = wire.client(socket.SOCK_DGRAM, 43501)
    udp_round(client, far, b"request", b"reply")
    pause()
    wire.client(socket.SOCK_DGRAM, 43502).sendto(b"anyone?", (FAR, 7502))
    pause()
    icmp = wire.client(socket.SOCK_RAW, proto=socket.IPPROTO_ICMP)
    icmp.sendto(forge.icmp_echo(8, 0x3001, 1, b"ping"), (FAR, 0))
    pause()
    return None


# --- running ---------------------------------------------------------------------------------

def wait_for_records(path: Path, expected: int, timeout: float) -> None:
    """Until the nflog capture holds `expected` records (NFLOG batches arrive late)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size >= 24:
            if len(pcapfile.read_pcap(str(path))[1]) >= expected:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nflog capture did not reach {expected} records")


def run_inside(sc: WireScenario, out: Path, client_ns: str, far_ns: Optional[str]) -> None:
    """Everything that happens inside the server namespace."""
    os.sched_setaffinity(0, {0})
    for knob, value in sc.knobs.items():
        netns.write_knob(knob, value)
    quiet, client_rules = sc.quiet_rules, sc.client_rules
    if sc.family == "ip6":
        # The multicast listener reports of joining the addresses' groups repeat at random
        # for a while after the topology is made: out of the counters and the captures.
        quiet, client_rules = quiet + [MLD_REPORTS_DROP], client_rules + [MLD_REPORTS_DROP]
    rules = wirerules.build_ruleset(quiet, sc.input_rules, sc.family)
    netns.run("nft", "-f", "-", stdin=rules)
    if client_rules:
        netns.run("ip", "netns", "exec", client_ns, "nft", "-f", "-",
                  stdin=wirerules.build_client_ruleset(client_rules, sc.family))
    out.mkdir(parents=True, exist_ok=True)
    pcap, nflog = out / "capture.pcap", out / "nflog.pcap"
    capture = netns.Tcpdump(pcap, "any")
    try:
        log = netns.Tcpdump(nflog, f"nflog:{wirerules.NFLOG_GROUP}")
    except RuntimeError:
        capture.stop()
        raise
    wire = Wire(client_ns, far_ns, ipv6=sc.family == "ip6")
    try:
        pause(0.2)
        sc.traffic(wire)
        time.sleep(sc.wait)
        snap = netns.read_snapshot()
        nft_json = netns.run("nft", "-j", "list", "ruleset")
        counters = wirerules.counters_from_json(nft_json)
        wait_for_records(nflog, sum(sum(c[s] for s in wirerules.STATES)
                                    for c in counters.values()), NFLOG_WAIT)
        others = {role: wirenet.conntrack_count(name)
                  for role, name in (("client", client_ns), ("far", far_ns)) if name}
    finally:
        capture_stats = capture.stop()
        log_stats = log.stop()
        wire.close()
    frames = checked_capture(pcap, cooked.LINKTYPE_LINUX_SLL2, snap["before"],
                             [capture_stats, log_stats])
    if any(others.values()):
        raise RuntimeError(f"conntrack ran outside the server: {others}")
    log_type, log_frames = pcapfile.read_pcap(str(nflog))
    if log_type != cooked.LINKTYPE_NFLOG:
        raise RuntimeError(f"nflog link type {log_type}")
    cooked_frames = [cooked.cooked(f.data) for f in frames]
    states = wirerules.frame_states(cooked_frames, [cooked.log_record(f.data) for f in log_frames])
    for hook, outgoing in (("prerouting", False), ("output", True)):
        marked = wirerules.counts_of(
            states[g[0]] for g in cooked.datagram_groups([c.ip() for c in cooked_frames],
                                                         [c.outgoing for c in cooked_frames])
            if cooked_frames[g[0]].outgoing == outgoing)
        if marked != counters[hook]:
            raise RuntimeError(f"{hook}: logged verdicts {marked} disagree with counters "
                               f"{counters[hook]}")
    snapshot = {
        "scenario": sc.name,
        "description": sc.description,
        "kernel": netns.kernel_release(),
        "hz": netns.kernel_hz(),
        "profile": "linux",
        "hooks": "wire",
        "client": CLIENT6 if sc.family == "ip6" else CLIENT,
        "server": SERVER6 if sc.family == "ip6" else SERVER,
        "prefix_len": wirenet.PREFIX_LEN6 if sc.family == "ip6" else wirenet.PREFIX_LEN,
        "knobs_overrides": dict(sc.knobs),
        "max_entries": None,
        "mtu": sc.mtu,
        "wait": sc.wait,
        **snap,
        "counters": counters,
        "frames": len(frames),
        "frame_states": states,
        "forward": sc.forward,
        "client_offload": sc.client_offload,
        "other_conntrack_counts": others,
        "ruleset": rules,
        "tcpdump": capture_stats,
        "tcpdump_nflog": log_stats,
    }
    (out / "snapshot.json").write_text(json.dumps(snapshot, indent=1) + "\n")


def run_scenario(sc: WireScenario, out_root: Path) -> str:
    """Create both namespaces, run the scenario in the server's, always delete them."""
    client_ns, server_ns, far_ns = wirenet.namespace_names(sc.name)
    far_ns = far_ns if sc.forward else None
    tmp = out_root / (".tmp-" + sc.name)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        wirenet.create_topology(client_ns, server_ns, far_ns, sc.mtu, sc.client_offload,
                                ipv6=sc.family == "ip6")
        argv = ["ip", "netns", "exec", server_ns, sys.executable, str(Path(__file__).resolve()),
                "--inside", sc.name, "--out", str(tmp), "--client-ns", client_ns,
                *(["--far-ns", far_ns] if far_ns else [])]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(" | ".join(done.stderr.strip().splitlines()[-3:])
                               or f"exit {done.returncode}")
        final = out_root / sc.name
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        return "ok"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        wirenet.delete_topology(*(name for name in (client_ns, server_ns, far_ns) if name))


def main(argv: Optional[list[str]] = None) -> int:
    parser = scenario_parser(__doc__.split("\n")[0], DATA_DIR)
    parser.add_argument("--client-ns", help=argparse.SUPPRESS)
    parser.add_argument("--far-ns", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.inside:
        run_inside(SCENARIOS[args.inside], args.out, args.client_ns, args.far_ns)
        return 0
    return run_named(SCENARIOS, run_scenario, args, parser)

if __name__ == "__main__":
    sys.exit(main())
