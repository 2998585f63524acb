"""Shared by the live tap tests (test_tap.py) and the live mount differential
(test_live_differential.py): the counting namespace, the traffic both make, and how a
listing is compared with the kernel's."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Iterator

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE / "kernel") not in sys.path:
    sys.path.insert(0, str(HERE / "kernel"))

import netns  # noqa: E402  (tests/kernel: namespace plumbing)


# spec §10, namespace 2: one counter per `ct state` in the output hook, everything accepted.
NFT_RULESET = """\
table ip pct {
    chain out {
        type filter hook output priority 0; policy accept;
        ct state new counter comment "new"
        ct state established counter comment "established"
        ct state related counter comment "related"
        ct state invalid counter comment "invalid"
        ct state untracked counter comment "untracked"
        ct direction reply counter comment "reply"
    }
    chain in {
        type filter hook input priority 0; policy accept;
    }
}
"""


# ---------------------------------------------------------------------------------------------
# The pytest side: namespaces and assertions
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def namespace():
    """A fresh namespace with lo up and the counting ruleset; always deleted afterwards."""
    yield from namespace_with(f"pct-tap{os.getpid()}", NFT_RULESET)


def namespace_with(name: str, ruleset: str) -> Iterator[str]:
    """For a fixture: namespace `name` with lo up and an nft ruleset (skips without root);
    deleted when the fixture ends."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, AF_PACKET)")
    try:
        netns.create_namespace(name)
    except (RuntimeError, OSError) as exc:
        netns.delete_namespace(name)
        pytest.skip(f"ip netns add failed: {exc}")
    try:
        netns.run("ip", "netns", "exec", name, "nft", "-f", "-", stdin=ruleset)
        yield name
    finally:
        netns.delete_namespace(name)


# What make_traffic leaves in the kernel's table (the engine must show the same).
TRAFFIC_ENTRIES = {
    ("tcp", 40001, "TIME_WAIT", ("[ASSURED]",)),
    ("tcp", 40011, "ESTABLISHED", ("[ASSURED]",)),
    ("tcp", 40021, "CLOSE_WAIT", ("[ASSURED]",)),
    ("udp", 40041, "-", ()),
    ("udp", 40051, "-", ("[UNREPLIED]",)),
    ("icmp", 4660, "-", ()),
}


def listing_key(line: str) -> str:
    """A listing line without its seconds-left field (the 5th token)."""
    tokens = line.split()
    return " ".join(tokens[:4] + tokens[5:])


def seconds_by_key(lines: list[str]) -> dict[str, int]:
    return {listing_key(line): int(line.split()[4]) for line in lines}


def assert_same_table(engine_lines: list[str], kernel_lines: list[str]) -> None:
    """Same entries, states and flags; seconds left within 1 (spec §9 rounds toward zero)."""
    detail = "\nengine:\n" + "\n".join(engine_lines) + "\nkernel:\n" + "\n".join(kernel_lines)
    assert sorted(map(listing_key, engine_lines)) == sorted(map(listing_key, kernel_lines)), detail
    engine_secs, kernel_secs = seconds_by_key(engine_lines), seconds_by_key(kernel_lines)
    for key, seconds in kernel_secs.items():
        assert abs(engine_secs[key] - seconds) <= 1, f"{key}: engine {engine_secs[key]}, " \
                                                     f"kernel {seconds}{detail}"


def entry_summary(lines: list[str]) -> set[tuple]:
    """(protocol, original sport or icmp id, state or '-', flags) for each listing line."""
    summary = set()
    for line in lines:
        tokens = line.split()
        proto = tokens[2]
        state = tokens[5] if not tokens[5].startswith("src=") else "-"
        first = next(token.split("=", 1)[1] for token in tokens
                     if token.startswith(("sport=", "id=")))   # the original direction's
        flags = tuple(token for token in tokens if token.startswith("["))
        summary.add((proto, int(first), state, flags))
    return summary


def tcp_pair(server: socket.socket, client_port: int) -> tuple[socket.socket, socket.socket]:
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    client.bind(("127.0.0.1", client_port))
    client.connect(("127.0.0.1", 8080))
    accepted, _ = server.accept()
    client.sendall(b"hello")
    assert accepted.recv(100) == b"hello"
    accepted.sendall(b"world")
    assert client.recv(100) == b"world"
    return client, accepted


def icmp_echo(ident: int, dst: str = "127.0.0.1") -> None:
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    raw.settimeout(2)
    header = bytes([8, 0, 0, 0]) + ident.to_bytes(2, "big") + (1).to_bytes(2, "big")
    message = header + b"pct-echo"
    total = sum(int.from_bytes(message[i:i + 2], "big") for i in range(0, len(message), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    message = message[:2] + (~total & 0xFFFF).to_bytes(2, "big") + message[4:]
    raw.sendto(message, (dst, 0))
    while True:                     # the raw socket sees our request too; wait for the reply
        data = raw.recv(200)
        if data[20] == 0 and data[24:26] == ident.to_bytes(2, "big"):
            break
    raw.close()


def udp_to_closed_port(local: str, peer: str, port: int = 40051) -> socket.socket:
    """A datagram from local:port to peer:9, where nothing listens: the ICMP (ICMPv6 for
    IPv6 addresses) port unreachable comes back (RELATED); the socket is returned open."""
    closed = socket.socket(socket.AF_INET6 if ":" in local else socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind((local, port))
    closed.connect((peer, 9))
    closed.send(b"anyone?")
    closed.settimeout(2)
    try:
        closed.recv(100)
    except ConnectionRefusedError:
        pass
    return closed


def make_traffic() -> list[socket.socket]:
    """The scenario's traffic; returns the sockets that must stay open until the snapshot."""
    keep = []
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 8080))
    server.listen(8)
    keep.append(server)
    # 1. a whole lifecycle, client closes first -> TIME_WAIT
    client, accepted = tcp_pair(server, 40001)
    client.close()
    assert accepted.recv(100) == b""
    accepted.close()
    # 2. left open -> ESTABLISHED
    keep += tcp_pair(server, 40011)
    # 3. client half-closes, server stays -> FIN_WAIT, then CLOSE_WAIT once acknowledged
    client, accepted = tcp_pair(server, 40021)
    client.shutdown(socket.SHUT_WR)
    assert accepted.recv(100) == b""
    keep += [client, accepted]
    # 4. refused: SYN answered by RST/ACK -> no entry
    refused = socket.socket()
    refused.bind(("127.0.0.1", 40031))
    assert refused.connect_ex(("127.0.0.1", 8081)) != 0
    refused.close()
    # 5. UDP request and reply
    udp_server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp_server.bind(("127.0.0.1", 7777))
    udp_client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp_client.bind(("127.0.0.1", 40041))
    udp_client.sendto(b"ping", ("127.0.0.1", 7777))
    data, peer = udp_server.recvfrom(100)
    udp_server.sendto(b"pong", peer)
    assert udp_client.recv(100) == b"pong"
    keep += [udp_server, udp_client]
    # 6. UDP to a closed port -> ICMP port unreachable (RELATED), entry stays UNREPLIED
    keep.append(udp_to_closed_port("127.0.0.1", "127.0.0.1"))
    # 7. ICMP echo request and the kernel's reply
    icmp_echo(0x1234)
    return keep
