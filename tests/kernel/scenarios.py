#!/usr/bin/env python3
"""Kernel reference data for the differential suite: traffic scenarios run on a real kernel.

For every scenario: a fresh network namespace `pct-<name>`, lo up, the nftables ruleset of
ruleset.py, tcpdump on lo, the scenario's traffic (run inside the namespace, pinned to one
CPU so capture order is processing order), an optional wait so timers count down, then a
snapshot of /proc/net/nf_conntrack (wall-clock time before and after the read),
/proc/net/stat/nf_conntrack and the nft counters. Stored under tests/data/kernel/<name>/:
capture.pcap and snapshot.json.

    python3 tests/kernel/scenarios.py [--out DIR] [--list] [NAME ...]

Conventions: real sockets use 127.0.0.1 only (clients bind fixed ports, so listings are
reproducible); forged packets go between 127.0.0.1 (client) and 127.0.0.2:6000 (server) or
other 127.0.0.2-9 peers, and the input chain drops everything to/from those peers after
conntrack, so the local stack never answers them.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
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

import forge  # noqa: E402
import netns  # noqa: E402
import pcapfile  # noqa: E402
import ruleset  # noqa: E402
from forge import ForgedTcp, RawSender  # noqa: E402

DATA_DIR = HERE.parent / "data" / "kernel"
LOCAL = "127.0.0.1"
PEER = "127.0.0.2"
MAX_CAPTURE_BYTES = 200_000
IP_MTU_DISCOVER, IP_PMTUDISC_DONT = 10, 0   # <linux/in.h>; Python's socket module lacks them
# IPv6: real sockets use ::1; forged packets go between fd00::1 and fd00::2-9 (the scenario
# makes fd00::/64 local, as 127/8 is), and the input chain drops those peers' packets.
LOCAL6, CLIENT6, PEER6 = "::1", "fd00::1", "fd00::2"
IPV6_DONTFRAG = 62                          # <linux/in6.h>

Cleanup = Optional[Callable[[], None]]


@dataclass
class Scenario:
    name: str
    description: str
    traffic: Callable[[], Cleanup]          # runs inside the namespace; returns a cleanup
    wait: float = 0.5                       # seconds from end of traffic to the snapshot
    knobs: dict = field(default_factory=dict)       # per-namespace conntrack knobs to set
    input_rules: list = field(default_factory=list)  # extra nft input-chain rules
    lo_mtu: Optional[int] = None
    conntrack_max: Optional[int] = None     # lower the global limit during the traffic
    family: str = "ip"                      # the nft table family: "ip6" for IPv6 scenarios
    helpers: tuple = ()                     # (name, "tcp"/"udp", port): nft ct helper attached


SCENARIOS: dict[str, Scenario] = {}
# Listings a scenario's traffic took while it ran (take_expect_snapshot), for snapshot.json.
EXPECT_SNAPSHOTS: list = []


def take_expect_snapshot(label: str) -> None:
    """Read /proc/net/nf_conntrack_expect and nf_conntrack now, mid-traffic (while an
    expectation exists), with wall-clock times around the reads."""
    before = time.time()
    with open("/proc/net/nf_conntrack_expect") as listing:
        expect = listing.read()
    with open("/proc/net/nf_conntrack") as listing:
        table = listing.read()
    after = time.time()
    EXPECT_SNAPSHOTS.append({"label": label, "before": before, "after": after,
                             "at": (before + after) / 2, "expect": expect.splitlines(),
                             "listing": table.splitlines()})


def scenario(description: str, **options) -> Callable:
    def register(traffic: Callable[[], Cleanup]) -> Callable[[], Cleanup]:
        name = traffic.__name__
        SCENARIOS[name] = Scenario(name, description, traffic, **options)
        return traffic
    return register


# --- small socket helpers ---------------------------------------------------------------

def pause(seconds: float = 0.1) -> None:
    time.sleep(seconds)


def family_of(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def tcp_listener(port: int, address: str = LOCAL) -> socket.socket:
    server = socket.socket(family_of(address), socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((address, port))
    server.listen(16)
    return server


def tcp_client(sport: int, address: str = LOCAL) -> socket.socket:
    client = socket.socket(family_of(address), socket.SOCK_STREAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.bind((address, sport))
    return client


def tcp_connected_pair(server: socket.socket, sport: int) -> tuple[socket.socket, socket.socket]:
    client = tcp_client(sport, server.getsockname()[0])
    client.connect(server.getsockname()[:2])
    conn, _ = server.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pause()
    return client, conn


def exchange(client: socket.socket, conn: socket.socket, request: bytes, response: bytes) -> None:
    client.sendall(request)
    assert conn.recv(4096) == request
    conn.sendall(response)
    assert client.recv(4096) == response
    pause()


def connect_refused(client: socket.socket, address: tuple[str, int]) -> None:
    """connect() to a port nobody listens on: the SYN is answered by RST/ACK."""
    try:
        client.connect(address)
        raise AssertionError("connect to a closed port succeeded")
    except ConnectionRefusedError:
        pass
    pause()


def close_in_order(first: socket.socket, second: socket.socket) -> None:
    """One end closes, the other reads the end of the stream and closes too."""
    first.close()
    assert second.recv(4096) == b""
    pause()
    second.close()
    pause()


def half_close(client: socket.socket, conn: socket.socket) -> None:
    """The client shuts its sending side (one FIN); the server sends more and stays open."""
    client.shutdown(socket.SHUT_WR)
    assert conn.recv(4096) == b""
    pause()
    conn.sendall(b"more data after the client's FIN")
    client.recv(4096)
    pause()


def send_icmp_requests(icmp: socket.socket, dst: str) -> None:
    """Echo id 0x1234 twice, timestamp 0x4321, information request 15, address mask 17."""
    for sequence in (1, 2):
        icmp.sendto(forge.icmp_echo(8, 0x1234, sequence, b"ping" * 8), (dst, 0))
        pause()
    icmp.sendto(forge.icmp_echo(13, 0x4321, 1, b"\0" * 12), (dst, 0))
    pause()
    icmp.sendto(forge.icmp_echo(15, 0x1515, 1), (dst, 0))
    pause()
    icmp.sendto(forge.icmp_echo(17, 0x1717, 1, b"\0" * 4), (dst, 0))
    pause()


def udp_socket(port: int, address: str = LOCAL) -> socket.socket:
    sock = socket.socket(family_of(address), socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    return sock


def closing(*socks: socket.socket) -> Callable[[], None]:
    def close() -> None:
        for sock in socks:
            sock.close()
    return close


# --- TCP with real sockets ----------------------------------------------------------------

@scenario("TCP 41001->8080: handshake, data both ways, client closes first, then the server; "
          "snapshot 1 s later (TIME_WAIT).", wait=1.0)
def tcp_client_close() -> Cleanup:
    server = tcp_listener(8080)
    client, conn = tcp_connected_pair(server, 41001)
    exchange(client, conn, b"hello", b"world")
    close_in_order(client, conn)
    return closing(server)


@scenario("TCP 41002->8080: handshake, data both ways, the server closes first, then the "
          "client; snapshot 1 s later (TIME_WAIT).", wait=1.0)
def tcp_server_close() -> Cleanup:
    server = tcp_listener(8080)
    client, conn = tcp_connected_pair(server, 41002)
    exchange(client, conn, b"hello", b"world")
    close_in_order(conn, client)
    return closing(server)


@scenario("TCP 41003->8080: data, client shutdown(SHUT_WR) (one FIN), server sends more data "
          "and keeps its side open; snapshot 2 s later (CLOSE_WAIT).", wait=2.0)
def tcp_half_close() -> Cleanup:
    server = tcp_listener(8080)
    client, conn = tcp_connected_pair(server, 41003)
    exchange(client, conn, b"request", b"partial")
    half_close(client, conn)
    return closing(client, conn, server)


@scenario("TCP 41004->8081 with nothing listening: SYN answered by RST/ACK (connection refused).")
def tcp_refused() -> Cleanup:
    client = tcp_client(41004)
    connect_refused(client, (LOCAL, 8081))
    return closing(client)


@scenario("TCP 41005->8080: handshake, data both ways, then the client aborts (SO_LINGER 0: RST "
          "in the middle of the stream); snapshot 2 s later.", wait=2.0)
def tcp_rst_midstream() -> Cleanup:
    server = tcp_listener(8080)
    client, conn = tcp_connected_pair(server, 41005)
    exchange(client, conn, b"hello", b"world")
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    pause()
    return closing(conn, server)


@scenario("TCP 41006->8082 whose SYNs the input chain drops: the client retransmits its SYN "
          "(6.x: linear timeouts, at about 1 s and 2 s); snapshot about 2.8 s after the first SYN "
          "(SYN_SENT; the timer is not refreshed by retransmissions).", wait=0.2,
          input_rules=["tcp dport 8082 drop"])
def tcp_syn_dropped() -> Cleanup:
    client = tcp_client(41006)
    client.setblocking(False)
    try:
        client.connect((LOCAL, 8082))
    except BlockingIOError:
        pass
    time.sleep(2.6)
    return closing(client)


@scenario("TCP 41007->8080: the server closes first (conntrack TIME_WAIT), then the client "
          "connects again from the same port: the SYN reopens the entry; data, left open.",
          wait=1.0)
def tcp_reopen_time_wait() -> Cleanup:
    server = tcp_listener(8080)
    client, conn = tcp_connected_pair(server, 41007)
    exchange(client, conn, b"first", b"one")
    conn.close()
    assert client.recv(4096) == b""
    client.close()
    pause(0.3)
    client, conn = tcp_connected_pair(server, 41007)
    exchange(client, conn, b"second", b"two")
    return closing(client, conn, server)


@scenario("TCP: 15 short connections (ports 44001-44015 -> 8080, data, client closes first), "
          "15 UDP request/reply exchanges (44101-44115 -> 7044) and 10 ICMP echoes.", wait=1.0)
def many_short_flows() -> Cleanup:
    server = tcp_listener(8080)
    for port in range(44001, 44016):
        client, conn = tcp_connected_pair(server, port)
        client.sendall(b"ping")
        conn.recv(4096)
        conn.sendall(b"pong")
        client.recv(4096)
        client.close()
        conn.recv(4096)
        conn.close()
    udp_server = udp_socket(7044)
    for port in range(44101, 44116):
        sock = udp_socket(port)
        sock.sendto(b"q", (LOCAL, 7044))
        data, peer = udp_server.recvfrom(4096)
        udp_server.sendto(b"a", peer)
        sock.recvfrom(4096)
        sock.close()
    icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    for ident in range(0x4400, 0x440A):
        icmp.sendto(forge.icmp_echo(8, ident, 1, b"x" * 8), (LOCAL, 0))
        pause(0.02)
    pause()
    return closing(server, udp_server, icmp)


# --- TCP with forged segments -------------------------------------------------------------

@scenario("Forged TCP 127.0.0.1:42001 -> 127.0.0.2:6000: handshake, data both ways, client "
          "FIN, server ACK, server FIN, client ACK (TIME_WAIT), then a new SYN on the same "
          "ports (reopen: NEW, fresh SYN_SENT).")
def tcp_forged_close_and_reopen() -> Cleanup:
    raw = RawSender()
    tcp_forged_close_and_reopen_traffic(raw, LOCAL, PEER)
    return raw.close


def tcp_forged_close_and_reopen_traffic(sender, client: str, server: str) -> None:
    """The traffic of tcp_forged_close_and_reopen between any two hosts (also sent over the wire)."""
    tcp = ForgedTcp(sender, (client, 42001), (server, 6000))
    tcp.handshake()
    tcp.c("PA", data=b"hello")
    tcp.s("A")
    tcp.s("PA", data=b"world!")
    tcp.c("A")
    tcp.c("FA")
    tcp.s("A")
    tcp.s("FA")
    tcp.c("A")
    tcp.c("S", seq=tcp.next["c"] + 100000, advance=True)


@scenario("Forged simultaneous open 127.0.0.1:42002 <-> 127.0.0.2:6000: SYN both ways, "
          "SYN/ACK both ways, ACK both ways, then data.")
def tcp_simultaneous_open() -> Cleanup:
    raw = RawSender()
    tcp_simultaneous_open_traffic(raw, LOCAL, PEER)
    return raw.close


def tcp_simultaneous_open_traffic(sender, client: str, server: str) -> None:
    """The traffic of tcp_simultaneous_open between any two hosts (also sent over the wire)."""
    tcp = ForgedTcp(sender, (client, 42002), (server, 6000))
    client_isn, server_isn = tcp.next["c"], tcp.next["s"]
    tcp.c("S")
    tcp.s("S")
    tcp.c("SA", seq=client_isn)
    tcp.s("SA", seq=server_isn)
    tcp.c("A")
    tcp.s("A")
    tcp.c("PA", data=b"simultaneous")
    tcp.s("A")


@scenario("Forged TCP 127.0.0.1:42003 -> 127.0.0.2:6000 window checks: after a handshake and "
          "data, data far beyond the window, an ACK for data never sent, an old retransmission, "
          "then normal data.")
def tcp_window_checks() -> Cleanup:
    raw = RawSender()
    tcp_window_checks_traffic(raw, LOCAL, PEER)
    return raw.close


def tcp_window_checks_traffic(sender, client: str, server: str) -> None:
    """The traffic of tcp_window_checks between any two hosts (also sent over the wire)."""
    tcp = ForgedTcp(sender, (client, 42003), (server, 6000))
    client_isn = tcp.next["c"]
    tcp.handshake()
    tcp.c("PA", data=b"d" * 100)
    tcp.s("A")
    tcp.c("PA", seq=tcp.next["c"] + 1_000_000, data=b"far")        # beyond window
    tcp.c("A", ack=tcp.next["s"] + 1_000_000)                        # ACK over upper bound
    tcp.c("PA", seq=client_isn + 1, data=b"d" * 100)                 # old retransmission
    tcp.s("PA", data=b"e" * 50)
    tcp.c("A")
    tcp.c("PA", data=b"f" * 10)
    tcp.s("A")


@scenario("Forged TCP: SYNs on an established connection (127.0.0.1:42004 -> 127.0.0.2:6000: "
          "original SYN ignored, reply SYN invalid), and a reply ACK while in SYN_SENT "
          "(42005: ignored, but the entry has seen a reply).")
def tcp_ignored_packets() -> Cleanup:
    raw = RawSender()
    tcp_ignored_packets_traffic(raw, LOCAL, PEER)
    return raw.close


def tcp_ignored_packets_traffic(sender, client: str, server: str) -> None:
    """The traffic of tcp_ignored_packets between any two hosts (also sent over the wire)."""
    tcp = ForgedTcp(sender, (client, 42004), (server, 6000))
    tcp.handshake()
    tcp.c("PA", data=b"established")
    tcp.s("A")
    tcp.c("S", seq=tcp.next["c"] + 5000)
    tcp.s("S", seq=tcp.next["s"] + 5000)
    other = ForgedTcp(sender, (client, 42005), (server, 6000))
    other.c("S")
    other.s("A", seq=other.next["s"] + 7, ack=other.next["c"])


@scenario("Forged TCP first packets with odd flags, each on its own port 42101-42111 -> "
          "127.0.0.2:6000: F, none, SF, FA, SA, R, RA, SR, RF (all INVALID, no entry), then "
          "SU and SP (NEW, SYN_SENT).")
def tcp_odd_first_flags() -> Cleanup:
    raw = RawSender()
    tcp_odd_first_flags_traffic(raw, LOCAL, PEER)
    return raw.close


def tcp_odd_first_flags_traffic(sender, client: str, server: str) -> None:
    """The traffic of tcp_odd_first_flags between any two hosts (also sent over the wire)."""
    for port, letters in zip(range(42101, 42112),
                             ("F", "", "SF", "FA", "SA", "R", "RA", "SR", "RF", "SU", "SP")):
        ForgedTcp(sender, (client, port), (server, 6000)).c(letters,
                                                            ack=0 if "A" not in letters else 777)


@scenario("Forged TCP with an ACK as first packet (tcp_loose=1, the default): 127.0.0.1:42201 "
          "ACK, data, reply ACK, more data; 42202 a lone ACK (loose pickup).")
def tcp_ack_first_loose() -> Cleanup:
    raw = RawSender()
    tcp_ack_first_loose_traffic(raw, LOCAL, PEER)
    return raw.close


def tcp_ack_first_loose_traffic(sender, client: str, server: str) -> None:
    """The traffic of tcp_ack_first_loose between any two hosts (also sent over the wire)."""
    tcp = ForgedTcp(sender, (client, 42201), (server, 6000))
    tcp.c("A")
    tcp.c("PA", data=b"picked up")
    tcp.s("A")
    tcp.c("PA", data=b"more")
    ForgedTcp(sender, (client, 42202), (server, 6000), client_isn=90000).c("A")


@scenario("Forged TCP with an ACK as first packet and tcp_loose=0: 127.0.0.1:42203 ACK, data "
          "(INVALID, no entry), then a proper SYN from 42204.", knobs={"tcp_loose": 0})
def tcp_ack_first_noloose() -> Cleanup:
    raw = RawSender()
    tcp_ack_first_noloose_traffic(raw, LOCAL, PEER)
    return raw.close


def tcp_ack_first_noloose_traffic(sender, client: str, server: str) -> None:
    """The traffic of tcp_ack_first_noloose between any two hosts (also sent over the wire)."""
    tcp = ForgedTcp(sender, (client, 42203), (server, 6000))
    tcp.c("A")
    tcp.c("PA", data=b"not picked up")
    ForgedTcp(sender, (client, 42204), (server, 6000)).c("S")


@scenario("Forged TCP 127.0.0.1:42301 -> 127.0.0.2:6000 with tcp_timeout_max_retrans=100: "
          "handshake, 5 bytes of data, then the server's pure ACK of it sent 5 times "
          "identically (4th identical ACK and later: max_retrans timer).",
          knobs={"tcp_timeout_max_retrans": 100})
def tcp_ack_retransmissions() -> Cleanup:
    raw = RawSender()
    tcp_ack_retransmissions_traffic(raw, LOCAL, PEER)
    return raw.close


def tcp_ack_retransmissions_traffic(sender, client: str, server: str) -> None:
    """The traffic of tcp_ack_retransmissions between any two hosts (also sent over the wire)."""
    tcp = ForgedTcp(sender, (client, 42301), (server, 6000))
    tcp.handshake()
    tcp.c("PA", data=b"hello")
    for _ in range(5):
        tcp.s("A")


@scenario("Forged TCP 127.0.0.1:42302 -> 127.0.0.2:6000: handshake, 5 bytes of data, the "
          "server's ACK advertises a zero window.")
def tcp_zero_window() -> Cleanup:
    raw = RawSender()
    tcp_zero_window_traffic(raw, LOCAL, PEER)
    return raw.close


def tcp_zero_window_traffic(sender, client: str, server: str) -> None:
    """The traffic of tcp_zero_window between any two hosts (also sent over the wire)."""
    tcp = ForgedTcp(sender, (client, 42302), (server, 6000))
    tcp.handshake()
    tcp.c("PA", data=b"hello")
    tcp.s("A", window=0)


@scenario("Forged TCP RST checks to 127.0.0.2:6000: 42401 reply RST with seq below the "
          "client's ACK (INVALID); 42402 reply RST in window but not at the expected seq "
          "(kept state, CLOSE timer); 42403 client RST/ACK at the exact seq (CLOSE).")
def tcp_rst_checks() -> Cleanup:
    raw = RawSender()
    tcp_rst_checks_traffic(raw, LOCAL, PEER)
    return raw.close


def tcp_rst_checks_traffic(sender, client: str, server: str) -> None:
    """The traffic of tcp_rst_checks between any two hosts (also sent over the wire)."""
    first = ForgedTcp(sender, (client, 42401), (server, 6000))
    first.handshake()
    first.c("PA", data=b"x" * 20)
    first.s("PA", data=b"y" * 2000)
    first.c("A")
    first.s("R", seq=first.next["s"] - 1000)
    second = ForgedTcp(sender, (client, 42402), (server, 6000))
    second.handshake()
    second.c("PA", data=b"x" * 20)
    second.s("A")
    second.s("R", seq=second.next["s"] + 100)
    third = ForgedTcp(sender, (client, 42403), (server, 6000))
    third.handshake()
    third.c("PA", data=b"x" * 20)
    third.s("A")
    third.c("RA")


@scenario("Forged TCP 127.0.0.1:42404 -> 127.0.0.2:6000 with tcp_ignore_invalid_rst=1: "
          "handshake, data both ways, reply RST with seq below the client's ACK.",
          knobs={"tcp_ignore_invalid_rst": 1})
def tcp_rst_ignore_invalid() -> Cleanup:
    raw = RawSender()
    tcp_rst_ignore_invalid_traffic(raw, LOCAL, PEER)
    return raw.close


def tcp_rst_ignore_invalid_traffic(sender, client: str, server: str) -> None:
    """The traffic of tcp_rst_ignore_invalid between any two hosts (also sent over the wire)."""
    tcp = ForgedTcp(sender, (client, 42404), (server, 6000))
    tcp.handshake()
    tcp.c("PA", data=b"x" * 20)
    tcp.s("PA", data=b"y" * 2000)
    tcp.c("A")
    tcp.s("R", seq=tcp.next["s"] - 1000)


@scenario("Forged TCP connections to 127.0.0.2:6000 left in different states: 42501 SYN_RECV "
          "(S, SA), 42502 FIN_WAIT (client FIN), 42503 CLOSE_WAIT (client FIN, server ACK), "
          "42504 LAST_ACK (then server FIN), 42505 SYN_SENT2 (SYN both ways), 42506 both FINs "
          "crossing; snapshot 2 s later.", wait=2.0)
def tcp_forged_states() -> Cleanup:
    raw = RawSender()
    tcp_forged_states_traffic(raw, LOCAL, PEER)
    return raw.close


def tcp_forged_states_traffic(sender, client: str, server: str) -> None:
    """The traffic of tcp_forged_states between any two hosts (also sent over the wire)."""
    syn_recv = ForgedTcp(sender, (client, 42501), (server, 6000))
    syn_recv.c("S")
    syn_recv.s("SA")
    for port, steps in ((42502, ("cFA",)), (42503, ("cFA", "sA")),
                        (42504, ("cFA", "sA", "sFA")), (42506, ("cFA", "sFA"))):
        tcp = ForgedTcp(sender, (client, port), (server, 6000))
        tcp.handshake()
        tcp.c("PA", data=b"data")
        tcp.s("A")
        for step in steps:
            getattr(tcp, step[0])(step[1:])
    sent2 = ForgedTcp(sender, (client, 42505), (server, 6000))
    sent2.c("S")
    sent2.s("S")


@scenario("Forged TCP to 127.0.0.2:6000: 42601 is reset (client RST/ACK: CLOSE, 10 s), 42602 "
          "closes normally (TIME_WAIT); snapshot 11 s later, after the CLOSE entry expired.",
          wait=11.0)
def tcp_close_expiry() -> Cleanup:
    raw = RawSender()
    tcp_close_expiry_traffic(raw, LOCAL, PEER)
    return raw.close


def tcp_close_expiry_traffic(sender, client: str, server: str) -> None:
    """The traffic of tcp_close_expiry between any two hosts (also sent over the wire)."""
    reset = ForgedTcp(sender, (client, 42601), (server, 6000))
    reset.handshake()
    reset.c("PA", data=b"bye")
    reset.s("A")
    reset.c("RA")
    closed = ForgedTcp(sender, (client, 42602), (server, 6000))
    closed.handshake()
    closed.c("FA")
    closed.s("FA")
    closed.c("A")


WSCALE_SACK_OPTIONS = forge.MSS_1460 + b"\x01\x03\x03\x07" + b"\x04\x02\x01\x01"


def sack_block(left: int, right: int) -> bytes:
    return b"\x01\x01\x05\x0a" + struct.pack("!II", left & 0xFFFFFFFF, right & 0xFFFFFFFF)


@scenario("Forged TCP 127.0.0.1:42701 -> 127.0.0.2:6000 with window scale 7 and SACK permitted "
          "on both SYNs: the server's scaled window 100 (12800 bytes) lets the client send 5000 "
          "bytes; a SACK block beyond the client's data (INVALID); then window 1 (128 bytes) and "
          "data 40000 bytes ahead (INVALID); then in-window data.")
def tcp_window_scaling() -> Cleanup:
    raw = RawSender()
    tcp_window_scaling_traffic(raw, LOCAL, PEER)
    return raw.close


def tcp_window_scaling_traffic(sender, client: str, server: str) -> None:
    """The traffic of tcp_window_scaling between any two hosts (also sent over the wire)."""
    tcp = ForgedTcp(sender, (client, 42701), (server, 6000))
    tcp.c("S", options=WSCALE_SACK_OPTIONS)
    tcp.s("SA", options=WSCALE_SACK_OPTIONS)
    tcp.c("A", window=512)
    tcp.s("A", window=100)
    tcp.c("PA", data=b"w" * 5000, window=512)
    end = tcp.next["c"]
    tcp.s("A", ack=end - 5000, window=100,
          options=sack_block(end - 4000, end + 3000))               # SACK over upper bound
    tcp.s("A", window=1)
    tcp.c("PA", seq=tcp.next["c"] + 40000, data=b"x" * 100, window=512)
    tcp.c("PA", data=b"y" * 100, window=512)
    tcp.s("A", window=100)


# --- UDP -------------------------------------------------------------------------------------

@scenario("UDP 43001 -> 7001: three datagrams 0.1 s apart to a bound socket that never "
          "answers; snapshot 3 s later.", wait=3.0)
def udp_oneway() -> Cleanup:
    server = udp_socket(7001)
    client = udp_socket(43001)
    for _ in range(3):
        client.sendto(b"one way", (LOCAL, 7001))
        pause()
    return closing(client, server)


@scenario("UDP 43002 <-> 7002: one request, one reply; snapshot 3 s later.", wait=3.0)
def udp_request_reply() -> Cleanup:
    server = udp_socket(7002)
    client = udp_socket(43002)
    client.sendto(b"request", (LOCAL, 7002))
    data, peer = server.recvfrom(4096)
    server.sendto(b"reply", peer)
    client.recvfrom(4096)
    return closing(client, server)


@scenario("UDP 43003 <-> 7003: a request/reply, then another 2.5 s later (the stream rule "
          "needs more than 2 s since the entry's first packet); snapshot 1 s later.", wait=1.0)
def udp_stream() -> Cleanup:
    server = udp_socket(7003)
    client = udp_socket(43003)
    for _ in range(2):
        client.sendto(b"request", (LOCAL, 7003))
        data, peer = server.recvfrom(4096)
        server.sendto(b"reply", peer)
        client.recvfrom(4096)
        time.sleep(2.5)
    return closing(client, server)


@scenario("UDP 43011 <-> 7011: a request/reply, and another 1 s later (within the first 2 s: "
          "no stream timeout, no ASSURED); snapshot 0.5 s later.")
def udp_reply_within_2s() -> Cleanup:
    server = udp_socket(7011)
    client = udp_socket(43011)
    for delay in (1.0, 0.0):
        client.sendto(b"request", (LOCAL, 7011))
        data, peer = server.recvfrom(4096)
        server.sendto(b"reply", peer)
        client.recvfrom(4096)
        time.sleep(delay)
    return closing(client, server)


@scenario("UDP 43004 -> 7004 with nothing bound: the kernel answers ICMP port unreachable "
          "(RELATED, reply direction); the entry stays [UNREPLIED].", wait=1.0)
def udp_closed_port() -> Cleanup:
    client = udp_socket(43004)
    client.sendto(b"anyone?", (LOCAL, 7004))
    pause()
    return closing(client)


@scenario("UDP 43005 <-> 7005 over lo with MTU 1280 and IP_PMTUDISC_DONT: a 3000-byte request "
          "and a 2000-byte reply, each leaving as fragments (conntrack saw whole datagrams).",
          lo_mtu=1280)
def udp_fragmented() -> Cleanup:
    return fragmented_exchange(LOCAL, 43005, 7005, (socket.IPPROTO_IP, IP_MTU_DISCOVER,
                                                    IP_PMTUDISC_DONT))


def fragmented_exchange(address: str, client_port: int, server_port: int,
                        may_fragment: tuple[int, int, int]) -> Cleanup:
    """A 3000-byte request and a 2000-byte reply between two sockets on `address`, both
    allowed to fragment (the socket option `may_fragment` sets) over a 1280-byte MTU."""
    server = udp_socket(server_port, address)
    client = udp_socket(client_port, address)
    for sock in (server, client):
        sock.setsockopt(*may_fragment)
    client.sendto(b"q" * 3000, (address, server_port))
    data, peer = server.recvfrom(65536)
    assert len(data) == 3000
    server.sendto(b"r" * 2000, peer)
    assert len(client.recvfrom(65536)[0]) == 2000
    pause()
    return closing(client, server)


@scenario("Forged UDP fragments 127.0.0.1 -> 127.0.0.2: a datagram 43006 -> 7006 sent as two "
          "fragments in order, and one 43007 -> 7007 sent last fragment first (OUTPUT defrag "
          "holds the first piece; the completed datagram is NEW).")
def udp_forged_fragments() -> Cleanup:
    raw = RawSender()
    for sport, dport, ident, reverse in ((43006, 7006, 0x1111, False),
                                         (43007, 7007, 0x2222, True)):
        datagram = forge.udp_datagram(LOCAL, PEER, sport, dport, b"F" * 64)
        packet = forge.ipv4(LOCAL, PEER, 17, datagram, ident=ident)
        pieces = forge.split_fragments(packet, 32)
        for piece in (reversed(pieces) if reverse else pieces):
            raw.send(piece)
    return raw.close


@scenario("A lone first fragment of UDP 127.0.0.1:43008 -> 127.0.0.2:7008, put on lo with "
          "AF_PACKET (it skips OUTPUT; PREROUTING defrag holds it: no classification, no entry); "
          "a lone first fragment 43009 -> 7009 through OUTPUT (held there, never on the wire); "
          "then an ordinary forged datagram 43010 -> 7010.")
def lone_first_fragment() -> Cleanup:
    raw = RawSender()
    for sport, ident, inject in ((43008, 0x3333, True), (43009, 0x4444, False)):
        datagram = forge.udp_datagram(LOCAL, PEER, sport, sport - 36000, b"L" * 64)
        first = forge.split_fragments(forge.ipv4(LOCAL, PEER, 17, datagram, ident=ident), 32)[0]
        if inject:
            forge.inject_on_lo(first)
        else:
            raw.send(first)
    raw.send(forge.ipv4(LOCAL, PEER, 17, forge.udp_datagram(LOCAL, PEER, 43010, 7010, b"w")))
    return raw.close


@scenario("Table full: the global nf_conntrack_max lowered to 8 for the traffic. UDP from "
          "46001-46012 to a bound 7046: the first 8 make entries, the other 4 are dropped at "
          "OUTPUT (sendto fails with EPERM; never captured, never counted by nft); then 46001 "
          "sends again.", conntrack_max=8)
def table_full() -> Cleanup:
    server = udp_socket(7046)
    refused = 0
    for port in range(46001, 46013):
        sock = udp_socket(port)
        try:
            sock.sendto(b"fill", (LOCAL, 7046))
        except PermissionError:
            refused += 1
        sock.close()
        pause(0.02)
    again = udp_socket(46001)
    again.sendto(b"again", (LOCAL, 7046))
    pause()
    if refused != 4:
        raise AssertionError(f"expected 4 refused sends, got {refused}")
    return closing(again, server)


# --- ICMP ------------------------------------------------------------------------------------

@scenario("ICMP requests from a raw ICMP socket to 127.0.0.1: echo id 0x1234 twice (answered), "
          "timestamp id 0x4321 (answered), information request 15 and address mask request 17 "
          "(not answered by Linux); snapshot 3 s later.", wait=3.0)
def icmp_echo() -> Cleanup:
    icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    send_icmp_requests(icmp, LOCAL)
    return closing(icmp)


@scenario("ICMP without a request, from a raw ICMP socket to 127.0.0.1: echo reply id 0x5555, "
          "timestamp reply id 0x5656 (INVALID), then unknown types 19 and 42 (INVALID).")
def icmp_reply_without_request() -> Cleanup:
    icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    icmp.sendto(forge.icmp_echo(0, 0x5555, 1, b"pong"), (LOCAL, 0))
    pause()
    icmp.sendto(forge.icmp_echo(14, 0x5656, 1, b"\0" * 12), (LOCAL, 0))
    pause()
    for icmp_type in (19, 42):
        icmp.sendto(forge.icmp_message(icmp_type, 0, b"\0\0\0\0"), (LOCAL, 0))
        pause()
    return closing(icmp)


@scenario("Forged ICMP errors 127.0.0.2 -> 127.0.0.1 quoting flows conntrack never saw: port "
          "unreachable about UDP 43100 -> 7100, host unreachable about TCP 43101 -> 6000 "
          "(INVALID).")
def icmp_error_no_flow() -> Cleanup:
    raw = RawSender()
    quoted_udp = forge.ipv4(LOCAL, PEER, 17, forge.udp_datagram(LOCAL, PEER, 43100, 7100, b"?"))
    raw.send(forge.ipv4(PEER, LOCAL, 1, forge.icmp_error(3, 3, quoted_udp)))
    quoted_tcp = forge.ipv4(LOCAL, PEER, 6, forge.tcp_segment(LOCAL, PEER, 43101, 6000,
                                                              forge.SYN, 1, 0))
    raw.send(forge.ipv4(PEER, LOCAL, 1, forge.icmp_error(3, 1, quoted_tcp)))
    return raw.close


@scenario("Forged UDP 127.0.0.1:43102 -> 127.0.0.2:7102, then ICMP errors about it: port "
          "unreachable from 127.0.0.2 and time exceeded from a router 127.0.0.3 (RELATED reply), "
          "port unreachable sent to 127.0.0.5 instead of the flow's source (INVALID), and an "
          "error from 127.0.0.1 quoting the reply direction (RELATED).")
def icmp_error_related() -> Cleanup:
    raw = RawSender()
    request = forge.ipv4(LOCAL, PEER, 17, forge.udp_datagram(LOCAL, PEER, 43102, 7102, b"req"))
    raw.send(request)
    raw.send(forge.ipv4(PEER, LOCAL, 1, forge.icmp_error(3, 3, request)))
    raw.send(forge.ipv4("127.0.0.3", LOCAL, 1, forge.icmp_error(11, 0, request)))
    raw.send(forge.ipv4(PEER, "127.0.0.5", 1, forge.icmp_error(3, 3, request)))
    reply = forge.ipv4(PEER, LOCAL, 17, forge.udp_datagram(PEER, LOCAL, 7102, 43102, b"rep"))
    raw.send(forge.ipv4(LOCAL, PEER, 1, forge.icmp_error(3, 3, reply)))
    return raw.close


# --- other protocols ---------------------------------------------------------------------------

@scenario("IP protocol 253 (generic tracker): two packets from a raw socket to 127.0.0.1, and a "
          "forged exchange 127.0.0.1 -> 127.0.0.2 and back.")
def generic_proto253() -> Cleanup:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, 253)
    for _ in range(2):
        sock.sendto(b"experimental" * 2, (LOCAL, 0))
        pause()
    raw = RawSender()
    raw.send(forge.ipv4(LOCAL, PEER, 253, b"there"))
    raw.send(forge.ipv4(PEER, LOCAL, 253, b"back again"))
    return closing(sock, raw.sock)


@scenario("IP protocol 47 (GRE version 0, no key) forged 127.0.0.1 -> 127.0.0.2, twice, and one "
          "packet back.")
def gre_proto47() -> Cleanup:
    raw = RawSender()
    gre = struct.pack("!HH", 0, 0x0800) + forge.ipv4("10.0.0.1", "10.0.0.2", 253, b"inner")
    raw.send(forge.ipv4(LOCAL, PEER, 47, gre))
    raw.send(forge.ipv4(LOCAL, PEER, 47, gre))
    raw.send(forge.ipv4(PEER, LOCAL, 47, gre))
    return raw.close


# --- SCTP, UDP-Lite, enhanced GRE and protocols the kernel refuses -------------------------

SCTP_CLIENT_TAG, SCTP_SERVER_TAG = 0x11111111, 0x22222222


class ForgedSctp:
    """Both ends of one forged SCTP association 127.0.0.1:port <-> 127.0.0.2:6000.

    `c(vtag, chunks)` sends client -> server, `s(vtag, chunks)` server -> client; the
    verification tags are passed explicitly, so wrong ones can be sent on purpose.
    The tags agreed in setup() are SCTP_CLIENT_TAG (the client's, which the server puts
    in its packets) and SCTP_SERVER_TAG."""

    def __init__(self, sender: RawSender, port: int, client: str = LOCAL,
                 server: str = PEER) -> None:
        self.sender, self.port = sender, port
        self.client, self.server = client, server

    def c(self, vtag: int, *chunks: bytes) -> None:
        packet = forge.sctp_packet(self.port, 6000, vtag, b"".join(chunks))
        self.sender.send(forge.ip_packet(self.client, self.server, 132, packet))

    def s(self, vtag: int, *chunks: bytes) -> None:
        packet = forge.sctp_packet(6000, self.port, vtag, b"".join(chunks))
        self.sender.send(forge.ip_packet(self.server, self.client, 132, packet))

    def setup(self) -> None:
        """INIT, INIT ACK, COOKIE ECHO, COOKIE ACK (RFC 4960 5.1)."""
        self.c(0, forge.sctp_init(forge.SCTP_INIT, SCTP_CLIENT_TAG))
        self.s(SCTP_CLIENT_TAG, forge.sctp_init(forge.SCTP_INIT_ACK, SCTP_SERVER_TAG))
        self.c(SCTP_SERVER_TAG, forge.sctp_chunk(forge.SCTP_COOKIE_ECHO, b"cookie!!"))
        self.s(SCTP_CLIENT_TAG, forge.sctp_chunk(forge.SCTP_COOKIE_ACK))

    def data_both_ways(self) -> None:
        """DATA each way, each acknowledged by a SACK in the same packet as the answer."""
        self.c(SCTP_SERVER_TAG, forge.sctp_data(1, b"hello"))
        sack = forge.sctp_chunk(forge.SCTP_SACK, struct.pack("!IIHH", 1, 65536, 0, 0))
        self.s(SCTP_CLIENT_TAG, sack, forge.sctp_data(1, b"world"))
        self.c(SCTP_SERVER_TAG, sack)


@scenario("Forged SCTP associations to 127.0.0.2:6000: 45001 setup, data both ways, heartbeat, "
          "graceful shutdown (SHUTDOWN, SHUTDOWN ACK, SHUTDOWN COMPLETE: CLOSED); 45002 setup, "
          "data and an ICMP port unreachable about it (ESTABLISHED); 45003 INIT and INIT ACK only (COOKIE_WAIT); 45004 stops after "
          "COOKIE ECHO (COOKIE_ECHOED); 45005 stops after the client's SHUTDOWN (SHUTDOWN_SENT); "
          "45006 after the server's (SHUTDOWN_RECD); 45007 after the SHUTDOWN ACK "
          "(SHUTDOWN_ACK_SENT).")
def sctp_association() -> Cleanup:
    raw = RawSender()
    full = ForgedSctp(raw, 45001)
    full.setup()
    full.data_both_ways()
    full.c(SCTP_SERVER_TAG, forge.sctp_heartbeat(forge.SCTP_HEARTBEAT))
    full.s(SCTP_CLIENT_TAG, forge.sctp_heartbeat(forge.SCTP_HEARTBEAT_ACK))
    full.c(SCTP_SERVER_TAG, forge.sctp_chunk(forge.SCTP_SHUTDOWN, struct.pack("!I", 1)))
    full.s(SCTP_CLIENT_TAG, forge.sctp_chunk(forge.SCTP_SHUTDOWN_ACK))
    full.c(SCTP_SERVER_TAG, forge.sctp_chunk(forge.SCTP_SHUTDOWN_COMPLETE))
    established = ForgedSctp(raw, 45002)
    established.setup()
    established.data_both_ways()
    # An ICMP error about it, found through the quoted ports (RELATED reply).
    quoted = forge.ipv4(LOCAL, PEER, 132, forge.sctp_packet(45002, 6000, SCTP_SERVER_TAG,
                                                            forge.sctp_data(2, b"lost")))
    raw.send(forge.ipv4(PEER, LOCAL, 1, forge.icmp_error(3, 3, quoted)))
    waiting = ForgedSctp(raw, 45003)
    waiting.c(0, forge.sctp_init(forge.SCTP_INIT, SCTP_CLIENT_TAG))
    waiting.s(SCTP_CLIENT_TAG, forge.sctp_init(forge.SCTP_INIT_ACK, SCTP_SERVER_TAG))
    echoed = ForgedSctp(raw, 45004)
    echoed.c(0, forge.sctp_init(forge.SCTP_INIT, SCTP_CLIENT_TAG))
    echoed.s(SCTP_CLIENT_TAG, forge.sctp_init(forge.SCTP_INIT_ACK, SCTP_SERVER_TAG))
    echoed.c(SCTP_SERVER_TAG, forge.sctp_chunk(forge.SCTP_COOKIE_ECHO, b"cookie!!"))
    shutdown = forge.sctp_chunk(forge.SCTP_SHUTDOWN, struct.pack("!I", 1))
    for port, client_shuts, acked in ((45005, True, False), (45006, False, False),
                                      (45007, True, True)):
        assoc = ForgedSctp(raw, port)
        assoc.setup()
        if client_shuts:
            assoc.c(SCTP_SERVER_TAG, shutdown)
        else:
            assoc.s(SCTP_CLIENT_TAG, shutdown)
        if acked:
            assoc.s(SCTP_CLIENT_TAG, forge.sctp_chunk(forge.SCTP_SHUTDOWN_ACK))
    return raw.close


@scenario("Forged SCTP to 127.0.0.2:6000, packets the tracker refuses or treats specially: 45101 "
          "setup, DATA with a wrong vtag each way, a SACK bundled before a COOKIE ECHO, then "
          "ABORT (own vtag; CLOSED); 45102 DATA (vtag 0) before any INIT; 45103 INIT with a non-zero vtag; 45104 COOKIE ACK, 45105 ABORT, "
          "45106 SHUTDOWN COMPLETE as first packets; 45107 INIT bundled with DATA; 45108 "
          "HEARTBEAT first (HEARTBEAT_SENT) and its ACK; 45109 setup then ABORT from the server "
          "with the T bit and the client's tag; 45110 INIT sent twice, 3 s apart (retransmission); 45111 "
          "setup, SHUTDOWN, then a new INIT; 45112 setup and an ABORT with a wrong vtag; "
          "45113 a zero-length chunk; 45114 a packet without chunks.")
def sctp_checks() -> Cleanup:
    raw = RawSender()
    wrong = ForgedSctp(raw, 45101)
    wrong.setup()
    wrong.c(0x0BAD0BAD, forge.sctp_data(1, b"wrong tag"))
    wrong.s(0x0BAD0BAD, forge.sctp_data(1, b"wrong tag"))
    wrong.c(SCTP_SERVER_TAG, forge.sctp_data(1, b"right tag"))
    sack = forge.sctp_chunk(forge.SCTP_SACK, struct.pack("!IIHH", 1, 65536, 0, 0))
    wrong.c(SCTP_SERVER_TAG, sack, forge.sctp_chunk(forge.SCTP_COOKIE_ECHO, b"cookie!!"))
    wrong.c(SCTP_SERVER_TAG, forge.sctp_chunk(forge.SCTP_ABORT))
    ForgedSctp(raw, 45102).c(0, forge.sctp_data(1, b"no INIT yet"))
    ForgedSctp(raw, 45103).c(0x1234, forge.sctp_init(forge.SCTP_INIT, SCTP_CLIENT_TAG))
    ForgedSctp(raw, 45104).c(SCTP_SERVER_TAG, forge.sctp_chunk(forge.SCTP_COOKIE_ACK))
    ForgedSctp(raw, 45105).c(SCTP_SERVER_TAG, forge.sctp_chunk(forge.SCTP_ABORT))
    ForgedSctp(raw, 45106).c(SCTP_SERVER_TAG, forge.sctp_chunk(forge.SCTP_SHUTDOWN_COMPLETE))
    ForgedSctp(raw, 45107).c(0, forge.sctp_init(forge.SCTP_INIT, SCTP_CLIENT_TAG),
                             forge.sctp_data(1, b"bundled"))
    heartbeat = ForgedSctp(raw, 45108)
    heartbeat.c(0x33333333, forge.sctp_heartbeat(forge.SCTP_HEARTBEAT))
    heartbeat.s(0x44444444, forge.sctp_heartbeat(forge.SCTP_HEARTBEAT_ACK))
    aborted = ForgedSctp(raw, 45109)
    aborted.setup()
    aborted.s(SCTP_SERVER_TAG, forge.sctp_chunk(forge.SCTP_ABORT, flags=forge.SCTP_FLAG_T))
    twice = ForgedSctp(raw, 45110)
    twice.c(0, forge.sctp_init(forge.SCTP_INIT, SCTP_CLIENT_TAG))
    pause(3.0)      # the retransmission does not renew the timer: 3 s less left
    twice.c(0, forge.sctp_init(forge.SCTP_INIT, SCTP_CLIENT_TAG))
    restart = ForgedSctp(raw, 45111)
    restart.setup()
    restart.c(SCTP_SERVER_TAG, forge.sctp_chunk(forge.SCTP_SHUTDOWN, struct.pack("!I", 1)))
    restart.c(0, forge.sctp_init(forge.SCTP_INIT, 0x55555555))
    bad_abort = ForgedSctp(raw, 45112)
    bad_abort.setup()
    bad_abort.c(0x0BAD0BAD, forge.sctp_chunk(forge.SCTP_ABORT))
    ForgedSctp(raw, 45113).c(0, struct.pack("!BBH", forge.SCTP_INIT, 0, 0) + b"\0" * 16)
    ForgedSctp(raw, 45114).c(0)
    return raw.close


@scenario("Forged UDP-Lite (protocol 136) 127.0.0.1 -> 127.0.0.2: 46001 full coverage, a "
          "reply, one more and an ICMP port unreachable about it; 46002 coverage 8 (the header only) and 20 (part of the payload); 46003 "
          "coverage 4 (below the header); 46004 coverage beyond the datagram; 46005 "
          "checksum 0 (UDP-Lite requires one); 46006 a 6-byte header (truncated).")
def udplite_coverage() -> Cleanup:
    raw = RawSender()

    def send(src: str, dst: str, sport: int, dport: int, **options) -> None:
        datagram = forge.udplite_datagram(src, dst, sport, dport, b"lite payload 0123456789",
                                          **options)
        raw.send(forge.ipv4(src, dst, 136, datagram))

    send(LOCAL, PEER, 46001, 7001)
    send(PEER, LOCAL, 7001, 46001)
    send(LOCAL, PEER, 46001, 7001)      # after a reply: ASSURED at once, no 2 s rule as UDP's
    quoted = forge.ipv4(LOCAL, PEER, 136, forge.udplite_datagram(LOCAL, PEER, 46001, 7001, b"?"))
    raw.send(forge.ipv4(PEER, LOCAL, 1, forge.icmp_error(3, 3, quoted)))
    send(LOCAL, PEER, 46002, 7002, coverage=8)
    send(LOCAL, PEER, 46002, 7002, coverage=20)
    send(LOCAL, PEER, 46003, 7003, coverage=4)
    send(LOCAL, PEER, 46004, 7004, coverage=40)
    send(LOCAL, PEER, 46005, 7005, checksum=0)
    raw.send(forge.ipv4(LOCAL, PEER, 136, struct.pack("!HHH", 46006, 7006, 0)))
    return raw.close


@scenario("Forged enhanced GRE (version 1, PPTP) 127.0.0.1 <-> 127.0.0.2: call id 0x1234 out and "
          "call id 0x5678 back (two entries: no PPTP helper maps keys), an ICMP error from "
          "127.0.0.2 quoting the call-id 0x1234 packet (RELATED), one carrying IPv4 instead of "
          "PPP, one 4 bytes short (keys 0); then ICMP errors quoting a GRE version 0 packet (RELATED to its entry) and "
          "GRE to 127.0.0.3 nobody sent (INVALID).")
def gre_enhanced() -> Cleanup:
    raw = RawSender()
    out = forge.ipv4(LOCAL, PEER, 47, forge.gre_v1(0x1234))
    raw.send(out)
    raw.send(forge.ipv4(PEER, LOCAL, 47, forge.gre_v1(0x5678)))
    # Before any entry with keys 0 exists: found through the call id or not at all.
    raw.send(forge.ipv4(PEER, LOCAL, 1, forge.icmp_error(3, 3, out)))
    raw.send(forge.ipv4(LOCAL, PEER, 47, forge.gre_v1(0x1111, protocol=0x0800)))
    raw.send(forge.ipv4(LOCAL, PEER, 47, struct.pack("!HH", 0x2001, forge.GRE_PROTO_PPP)))
    plain = forge.ipv4(LOCAL, PEER, 47, struct.pack("!HH", 0, 0x0800) + b"\0" * 8)
    raw.send(plain)
    for quoted in (plain, forge.ipv4(LOCAL, "127.0.0.3", 47, forge.gre_v1(0x9999))):
        raw.send(forge.ipv4(PEER, LOCAL, 1, forge.icmp_error(3, 3, quoted)))
    return raw.close


@scenario("IP protocols the kernel hands to a tracker that is not theirs, or to none: 58 "
          "(ICMPv6) over IPv4, an echo request and a reply, 127.0.0.1 <-> 127.0.0.2; 33 (DCCP, "
          "not built into this kernel) and 136 too short for UDP-Lite's ports, for comparison.")
def foreign_protocols() -> Cleanup:
    raw = RawSender()
    echo = forge.icmp_message(128, 0, struct.pack("!HH", 0x77, 1), b"v6 over v4")
    raw.send(forge.ipv4(LOCAL, PEER, 58, echo))
    raw.send(forge.ipv4(PEER, LOCAL, 58, forge.icmp_message(129, 0, struct.pack("!HH", 0x77, 1))))
    raw.send(forge.ipv4(LOCAL, PEER, 33, b"\x9c\x41\x17\x70" + b"\0" * 12))
    raw.send(forge.ipv4(LOCAL, PEER, 136, b"\x9c"))
    return raw.close


WSCALE_7 = forge.MSS_1460 + b"\x01\x03\x03\x07"     # MSS, NOP, window scale 7


@scenario("Forged TCP to 127.0.0.2:6000: a SYN with window scale 7, a second SYN (later sequence "
          "number), SYN/ACK with window scale 7, the client's ACK; the client's window is always "
          "100. Then the server sends 1000 bytes twice, the second beyond an unscaled window. The second "
          "SYN of 42801 has only an MSS option, of 42802 no options, of 42803 window scale 7 too.")
def tcp_syn_options_reset() -> Cleanup:
    raw = RawSender()
    for port, second_options in ((42801, forge.MSS_1460), (42802, b""), (42803, WSCALE_7)):
        conn = ForgedTcp(raw, (LOCAL, port), (PEER, 6000))
        conn.c("S", options=WSCALE_7, window=100)
        conn.next["c"] = 5000
        if second_options:
            conn.c("S", options=second_options, window=100)
        else:        # ForgedTcp puts an MSS option on every SYN: this one is built by hand
            segment = forge.tcp_segment(LOCAL, PEER, port, 6000, forge.SYN, 5000, 0, window=100)
            raw.send(forge.ipv4(LOCAL, PEER, 6, segment))
            conn.next["c"] = 5001
        conn.s("SA", options=WSCALE_7)
        conn.c("A", window=100)
        conn.s("A", data=b"x" * 1000)
        conn.s("A", data=b"y" * 1000)
    return raw.close


# --- IPv6 over lo ------------------------------------------------------------------------------

@scenario("TCP over IPv6 [::1]:41601 -> [::1]:8080: handshake, data both ways, client closes "
          "first, then the server; snapshot 1 s later (TIME_WAIT).", wait=1.0, family="ip6")
def tcp6_client_close() -> Cleanup:
    server = tcp_listener(8080, LOCAL6)
    client, conn = tcp_connected_pair(server, 41601)
    exchange(client, conn, b"hello", b"world")
    close_in_order(client, conn)
    return closing(server)


@scenario("TCP over IPv6 [::1]:41602 -> [::1]:8081 with nothing listening: SYN answered by "
          "RST/ACK (connection refused).", family="ip6")
def tcp6_refused() -> Cleanup:
    client = tcp_client(41602, LOCAL6)
    connect_refused(client, (LOCAL6, 8081))
    return closing(client)


@scenario("UDP over IPv6 [::1]:43601 <-> [::1]:7601: request and reply, then a second request.",
          family="ip6")
def udp6_request_reply() -> Cleanup:
    server = udp_socket(7601, LOCAL6)
    client = udp_socket(43601, LOCAL6)
    client.sendto(b"question", (LOCAL6, 7601))
    data, peer = server.recvfrom(4096)
    server.sendto(b"answer", peer)
    client.recvfrom(4096)
    pause()
    client.sendto(b"again", (LOCAL6, 7601))
    server.recvfrom(4096)
    pause()
    return closing(client, server)


@scenario("UDP over IPv6 [::1]:43602 -> [::1]:7602, nothing listening: the ICMPv6 port "
          "unreachable quoting it is RELATED.", family="ip6")
def udp6_closed_port() -> Cleanup:
    client = udp_socket(43602, LOCAL6)
    client.sendto(b"anyone?", (LOCAL6, 7602))
    pause()
    return closing(client)


@scenario("ICMPv6 echo requests to ::1 from a raw ICMPv6 socket (id 0x6161 twice, answered by the "
          "kernel), and a node information query (139, unanswered).", family="ip6")
def icmpv6_echo() -> Cleanup:
    icmp = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    for sequence in (1, 2):
        icmp.sendto(forge.icmp_echo(128, 0x6161, sequence, b"ping6" * 4), (LOCAL6, 0))
        pause()
    icmp.sendto(struct.pack("!BBHHH", 139, 0, 0, 0, 0) + b"\0" * 16, (LOCAL6, 0))
    pause()
    return closing(icmp)


@scenario("UDP over IPv6 [::1]:43603 <-> [::1]:7603 over lo with MTU 1280 and IPV6_DONTFRAG "
          "off: a 3000-byte request and a 2000-byte reply, each leaving as fragments "
          "(conntrack saw whole datagrams).", lo_mtu=1280, family="ip6")
def udp6_fragmented() -> Cleanup:
    return fragmented_exchange(LOCAL6, 43603, 7603, (socket.IPPROTO_IPV6, IPV6_DONTFRAG, 0))


def forged_udp6(sport: int, dport: int, payload: bytes, src: str = CLIENT6,
                dst: str = PEER6) -> bytes:
    return forge.ipv6(src, dst, 17, forge.udp_datagram(src, dst, sport, dport, payload))


@scenario("Forged IPv6 UDP fragments fd00::1 -> fd00::2: 43611 -> 7611 in two fragments in "
          "order; 43612 -> 7612 last fragment first; 43613 -> 7613 an atomic fragment "
          "(offset 0, M clear); 43614 -> 7614 a second fragment reaching back into the first "
          "(RFC 5722: OUTPUT's defrag drops the whole datagram, and the last piece waits in "
          "a new queue: none of it reaches lo); 43616 -> 7616 the same with a piece lying "
          "inside what is held (a duplicate: dropped alone, the datagram completes); "
          "43615 -> 7615 an exact duplicate of a first fragment, then the rest.", family="ip6")
def udp6_forged_fragments() -> Cleanup:
    raw = RawSender()
    for sport, ident, sizes in ((43611, 0x61, [(0, 32), (32, 40)]),
                                (43612, 0x62, [(32, 40), (0, 32)]),
                                (43613, 0x63, [(0, 72)]),
                                (43614, 0x64, [(0, 32), (24, 24), (48, 24)]),
                                (43616, 0x66, [(0, 32), (32, 16), (24, 16), (48, 24)]),
                                (43615, 0x65, [(0, 32), (0, 32), (32, 40)])):
        packet = forged_udp6(sport, sport - 36000, b"F" * 64)
        for piece in forge.ipv6_fragments(packet, sizes, ident):
            try:
                raw.send(piece)
            except PermissionError:         # NF_DROP at OUTPUT (the overlap): sendto fails
                pause(0.02)
    return raw.close


@scenario("Forged ICMPv6 fd00::1 -> fd00::2: neighbour solicitation and advertisement, router "
          "solicitation, MLD report and MLDv2 report (all UNTRACKED); a UDP flow 43621 -> 7621 "
          "and a port unreachable from fd00::2 quoting it (RELATED), one quoting an unknown "
          "flow (INVALID), a packet too big and a time exceeded about the flow (RELATED), "
          "a lone echo reply (INVALID).", family="ip6")
def icmpv6_messages() -> Cleanup:
    raw = RawSender()

    def icmpv6(src: str, dst: str, icmp_type: int, code: int = 0, rest: bytes = b"\0" * 4,
               payload: bytes = b"", hop_limit: int = 255) -> None:
        message = forge.icmpv6_message(src, dst, icmp_type, code, rest, payload)
        raw.send(forge.ipv6(src, dst, 58, message, hop_limit=hop_limit))

    target = socket.inet_pton(socket.AF_INET6, PEER6)
    icmpv6(CLIENT6, PEER6, 135, payload=target)                           # NS
    icmpv6(CLIENT6, PEER6, 136, rest=b"\x60\0\0\0", payload=target)      # NA
    icmpv6(CLIENT6, PEER6, 133)                                           # RS
    icmpv6(CLIENT6, PEER6, 131, rest=b"\0" * 4, payload=target, hop_limit=1)   # MLD report
    icmpv6(CLIENT6, PEER6, 143, rest=b"\0" * 4, hop_limit=1)                   # MLDv2 report
    flow = forged_udp6(43621, 7621, b"hello")
    raw.send(flow)
    icmpv6(PEER6, CLIENT6, 1, 4, payload=flow, hop_limit=64)
    icmpv6(PEER6, CLIENT6, 1, 4, payload=forged_udp6(43622, 7622, b"?"), hop_limit=64)
    icmpv6(PEER6, CLIENT6, 2, 0, rest=struct.pack("!I", 1280), payload=flow, hop_limit=64)
    icmpv6(PEER6, CLIENT6, 3, 0, payload=flow, hop_limit=64)
    icmpv6(CLIENT6, PEER6, 129, rest=struct.pack("!HH", 0x6262, 1), hop_limit=64)
    return raw.close


@scenario("Forged TCP over IPv6 [fd00::1]:42001 -> [fd00::2]:6000: handshake, data both ways, "
          "FINs both ways (TIME_WAIT), then a new SYN on the same ports (reopen).", family="ip6")
def tcp6_forged_close_and_reopen() -> Cleanup:
    raw = RawSender()
    tcp_forged_close_and_reopen_traffic(raw, CLIENT6, PEER6)
    return raw.close


@scenario("Forged SCTP over IPv6 [fd00::1]:45601 -> [fd00::2]:6000: setup, data both ways, "
          "graceful shutdown (CLOSED); 45602 setup and data (ESTABLISHED); 45603 a lone INIT "
          "(CLOSED, with the closed timeout).", family="ip6")
def sctp6_association() -> Cleanup:
    raw = RawSender()
    full = ForgedSctp(raw, 45601, CLIENT6, PEER6)
    full.setup()
    full.data_both_ways()
    full.c(SCTP_SERVER_TAG, forge.sctp_chunk(forge.SCTP_SHUTDOWN, struct.pack("!I", 1)))
    full.s(SCTP_CLIENT_TAG, forge.sctp_chunk(forge.SCTP_SHUTDOWN_ACK))
    full.c(SCTP_SERVER_TAG, forge.sctp_chunk(forge.SCTP_SHUTDOWN_COMPLETE))
    established = ForgedSctp(raw, 45602, CLIENT6, PEER6)
    established.setup()
    established.data_both_ways()
    ForgedSctp(raw, 45603, CLIENT6, PEER6).c(0, forge.sctp_init(forge.SCTP_INIT, SCTP_CLIENT_TAG))
    return raw.close


# --- running ---------------------------------------------------------------------------------

def frame_states(frames: list[pcapfile.Frame]) -> list[Optional[str]]:
    """The kernel's verdict per frame, from the DSCP the OUTPUT chain wrote (None: unmarked)."""
    states = []
    for frame in frames:
        tos = frame.tos()
        verdict = ruleset.verdict_from_tos(tos) if tos is not None else None
        states.append(None if verdict is None
                      else verdict[0].upper() + (" reply" if verdict[1] else ""))
    return states


def count_datagrams(frames: list[pcapfile.Frame], states: list[Optional[str]]) -> dict[str, int]:
    """What the nft counters should show: one count per marked datagram (fragments once)."""
    counts = {name: 0 for name in ruleset.COUNTER_NAMES}
    seen_fragmented = set()
    for frame, state in zip(frames, states):
        if state is None:
            continue
        key = frame.fragment_key()
        if key is not None:                                     # MF or an offset: a fragment
            if key in seen_fragmented:
                continue
            seen_fragmented.add(key)
        name, _, reply = state.partition(" ")
        counts[name.lower()] += 1
        counts["reply"] += bool(reply)
    return counts


def checked_capture(pcap: Path, linktype: int, before: float,
                    tcpdump_stats: list[str]) -> list[pcapfile.Frame]:
    """The frames of a finished capture; RuntimeError if any tcpdump lost packets, the link
    type is not `linktype`, a frame came after the snapshot started, or the file is big."""
    for stats in tcpdump_stats:
        if not re.search(r"(^|\s)0 packets dropped by kernel", stats):
            raise RuntimeError(f"tcpdump lost packets: {stats!r}")
    found, frames = pcapfile.read_pcap(str(pcap))
    if found != linktype:
        raise RuntimeError(f"link type {found}, expected {linktype}")
    late = [f.index for f in frames if f.ts > before]
    if late:
        raise RuntimeError(f"frames {late} captured after the snapshot started")
    if pcap.stat().st_size > MAX_CAPTURE_BYTES:
        raise RuntimeError(f"capture is {pcap.stat().st_size} bytes")
    return frames


def run_inside(sc: Scenario, out: Path, global_max: Optional[netns.GlobalConntrackMax]) -> None:
    """Everything that happens inside the scenario's namespace."""
    os.sched_setaffinity(0, {0})
    if sc.lo_mtu:
        netns.run("ip", "link", "set", "lo", "mtu", str(sc.lo_mtu))
    if sc.family == "ip6":
        # The forged IPv6 hosts: all of fd00::/64 is this host, as 127/8 is.
        netns.run("ip", "-6", "route", "add", "local", "fd00::/64", "dev", "lo")
    for knob, value in sc.knobs.items():
        netns.write_knob(knob, value)
    rules = ruleset.build_ruleset(sc.input_rules, sc.helpers, sc.family)
    EXPECT_SNAPSHOTS.clear()
    netns.run("nft", "-f", "-", stdin=rules)
    out.mkdir(parents=True, exist_ok=True)
    pcap = out / "capture.pcap"
    tcpdump = netns.Tcpdump(pcap)
    cleanup: Cleanup = None
    try:
        pause(0.2)
        if global_max and sc.conntrack_max is not None:
            global_max.set(sc.conntrack_max)
            try:
                cleanup = sc.traffic()
            finally:
                global_max.restore()
        else:
            cleanup = sc.traffic()
        time.sleep(sc.wait)
        snap = netns.read_snapshot()
        if sc.helpers:
            take_expect_snapshot("end")
        nft_json = netns.run("nft", "-j", "list", "ruleset")
    finally:
        tcpdump_stats = tcpdump.stop()
        if cleanup:
            cleanup()
    frames = checked_capture(pcap, pcapfile.LINKTYPE_EN10MB, snap["before"], [tcpdump_stats])
    counters = ruleset.counters_from_json(nft_json)
    states = frame_states(frames)
    marked = count_datagrams(frames, states)
    if marked != counters:
        raise RuntimeError(f"DSCP marks {marked} disagree with nft counters {counters}")
    snapshot = {
        "scenario": sc.name,
        "description": sc.description,
        "kernel": netns.kernel_release(),
        "hz": netns.kernel_hz(),
        "profile": "linux",
        "knobs_overrides": dict(sc.knobs),
        "max_entries": sc.conntrack_max,
        "lo_mtu": sc.lo_mtu,
        "wait": sc.wait,
        **snap,
        "counters": counters,
        "frames": len(frames),
        "frame_states": states,
        "ruleset": rules,
        "tcpdump": tcpdump_stats,
    }
    if sc.helpers:
        snapshot["helpers"] = [list(h) for h in sc.helpers]
        snapshot["expect_snapshots"] = list(EXPECT_SNAPSHOTS)
    (out / "snapshot.json").write_text(json.dumps(snapshot, indent=1) + "\n")


def run_scenario(sc: Scenario, out_root: Path, script: Optional[Path] = None) -> str:
    """Create the namespace, run the scenario inside it (`script --inside NAME`: this file
    by default), always delete the namespace."""
    name = netns.NS_PREFIX + sc.name
    global_max = None
    pass_fds: tuple = ()
    extra: list[str] = []
    if sc.conntrack_max is not None:
        others = [ns for ns in netns.namespaces() if not ns.startswith(netns.NS_PREFIX)]
        global_max, reason = netns.GlobalConntrackMax.open_if_idle()
        if global_max is None or others:
            if global_max:
                global_max.close()
            return f"skipped: {reason or 'other namespaces exist: ' + ', '.join(others)}"
        pass_fds = (global_max.fd,)
        extra = ["--max-fd", str(global_max.fd), "--max-original", str(global_max.original)]
    shutil.rmtree(out_root / (".tmp-" + sc.name), ignore_errors=True)
    netns.create_namespace(name)
    try:
        argv = ["ip", "netns", "exec", name, sys.executable, str(script or Path(__file__).resolve()),
                "--inside", sc.name, "--out", str(out_root / (".tmp-" + sc.name)), *extra]
        done = subprocess.run(argv, pass_fds=pass_fds, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(" | ".join(done.stderr.strip().splitlines()[-3:])
                               or f"exit {done.returncode}")
        final = out_root / sc.name
        shutil.rmtree(final, ignore_errors=True)
        (out_root / (".tmp-" + sc.name)).rename(final)
        return "ok"
    finally:
        if global_max:
            global_max.restore()
            global_max.close()
        netns.delete_namespace(name)


def scenario_parser(description: str, out: Path) -> argparse.ArgumentParser:
    """The command line both generators share (scenario names, --out, --list, --retries,
    and the hidden --inside of the run in the namespace)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("names", nargs="*", help="scenarios to run (default: all)")
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--retries", type=int, default=2)
    parser.add_argument("--inside", help=argparse.SUPPRESS)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    parser = scenario_parser(__doc__.split("\n")[0], DATA_DIR)
    parser.add_argument("--max-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--max-original", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.inside:
        global_max = (netns.GlobalConntrackMax(args.max_fd, args.max_original)
                      if args.max_fd is not None else None)
        run_inside(SCENARIOS[args.inside], args.out, global_max)
        return 0
    return run_named(SCENARIOS, run_scenario, args, parser)


def run_named(registry: dict, run: Callable, args: argparse.Namespace,
              parser: argparse.ArgumentParser) -> int:
    """--list, or run(scenario, out) for each named scenario (all by default) with retries,
    printing one result line each; the exit status."""
    if args.list:
        for sc in registry.values():
            print(f"{sc.name}: {sc.description}")
        return 0
    if os.geteuid() != 0:
        print("must run as root (network namespaces)", file=sys.stderr)
        return 2
    # SIGTERM -> SystemExit, so the finally clauses delete the namespaces.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    unknown = [n for n in args.names if n not in registry]
    if unknown:
        parser.error(f"unknown scenarios: {unknown}")
    failures = 0
    for name in args.names or list(registry):
        for _attempt in range(args.retries + 1):
            try:
                result = run(registry[name], args.out)
                break
            except RuntimeError as error:
                result = f"FAILED: {error}"
        failures += result.startswith("FAILED")
        print(f"{name}: {result}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
