"""The live tap over IPv6, against the kernel, in a throw-away network namespace (pct6-...).

The helper (this file, as a script, run by `ip netns exec`) taps lo, feeds an Engine
(profile linux) from the tap, makes IPv6 traffic on ::1 (a TCP lifecycle, a connection left
open, a refused connect, UDP with a reply and to a closed port, whose ICMPv6 error is
RELATED, an echo request), then prints the kernel's /proc/net/nf_conntrack and the engine's
listing at the same instant.  The namespace's nftables table is `inet`, so the kernel's
conntrack tracks IPv6 (an `ip` table would register the IPv4 hooks only).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (str(ROOT), str(HERE), str(HERE / "kernel")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import netns  # noqa: E402  (tests/kernel: namespace plumbing)
from enginehelp import view_text  # noqa: E402
from taphelp import (assert_same_table, entry_summary, namespace_with,  # noqa: E402
                     udp_to_closed_port)

LOCAL6 = "::1"
NFT_INET = """\
table inet pct {
    chain out {
        type filter hook output priority 0; policy accept;
        ct state new,established,related,invalid,untracked counter comment "tracked"
    }
}
"""
EXPECTED = {
    ("tcp", 40601, "TIME_WAIT", ("[ASSURED]",)),
    ("tcp", 40611, "ESTABLISHED", ("[ASSURED]",)),
    ("udp", 40641, "-", ()),
    ("udp", 40651, "-", ("[UNREPLIED]",)),
    ("icmpv6", 0x6262, "-", ()),
}


@pytest.fixture
def namespace6():
    yield from namespace_with(f"pct6-tap{os.getpid()}", NFT_INET)


@pytest.mark.kernel
def test_tap_on_lo_builds_the_kernels_ipv6_table(namespace6):
    done = subprocess.run(["ip", "netns", "exec", namespace6, sys.executable, str(Path(__file__))],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"helper failed:\n{done.stdout}\n{done.stderr}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(line.startswith("ipv6     10 ") for line in result["kernel"])
    assert entry_summary(result["kernel"]) == EXPECTED
    assert_same_table(result["engine"], result["kernel"])


def test_the_tap_completes_an_unfinished_ipv6_checksum():
    """A received packet the kernel marks CHECKSUM_PARTIAL carries only the pseudo-header
    sum; the tap fills in what the NIC would have (TCP, UDP, ICMPv6 over IPv6)."""
    from engine.build import build_icmpv6, build_ipv6, build_tcp, build_udp
    from engine.hooks import PRE_ROUTING
    from engine.parse_ipv6 import parse_ipv6
    from procfs_ct.sources.tap import complete_l4_checksum
    a, b = "fd00::1", "fd00::2"
    for proto, l4, at in ((6, build_tcp(a, b, 1, 2, payload=b"x"), 16),
                          (17, build_udp(a, b, 1, 2, b"x"), 6),
                          (58, build_icmpv6(a, b, 128, 0, 1, 1, b"x"), 2)):
        good = build_ipv6(a, b, proto, l4)
        partial = good[:40 + at] + b"\x12\x34" + good[40 + at + 2:]
        assert not parse_ipv6(partial, PRE_ROUTING).l4_checksum_ok
        assert complete_l4_checksum(partial) == good
        assert complete_l4_checksum(good) is good


# -- the helper, inside the namespace --------------------------------------------------------

def tracked_packets() -> int:
    out = json.loads(netns.run("nft", "-j", "list", "ruleset"))["nftables"]
    return sum(expr["counter"]["packets"] for item in out if "rule" in item
               for expr in item["rule"]["expr"] if "counter" in expr)


def make_traffic() -> list[socket.socket]:
    keep = []
    server = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((LOCAL6, 8080))
    server.listen(8)
    keep.append(server)
    for port, close in ((40601, True), (40611, False)):
        client = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        client.bind((LOCAL6, port))
        client.connect((LOCAL6, 8080))
        accepted, _ = server.accept()
        client.sendall(b"hello")
        assert accepted.recv(100) == b"hello"
        accepted.sendall(b"world")
        assert client.recv(100) == b"world"
        if close:
            client.close()
            assert accepted.recv(100) == b""
            accepted.close()
        else:
            keep += [client, accepted]
    refused = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    refused.bind((LOCAL6, 40631))
    assert refused.connect_ex((LOCAL6, 8081)) != 0
    refused.close()
    udp_server = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp_server.bind((LOCAL6, 7777))
    udp_client = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp_client.bind((LOCAL6, 40641))
    udp_client.sendto(b"ping", (LOCAL6, 7777))
    data, peer = udp_server.recvfrom(100)
    udp_server.sendto(b"pong", peer)
    assert udp_client.recv(100) == b"pong"
    keep += [udp_server, udp_client]
    keep.append(udp_to_closed_port(LOCAL6, LOCAL6, 40651))
    icmp = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    icmp.settimeout(2)
    icmp.sendto(bytes([128, 0, 0, 0]) + (0x6262).to_bytes(2, "big") + b"\0\1pct6", (LOCAL6, 0))
    while icmp.recv(200)[0] != 129:        # the kernel fills in the checksum; wait for the reply
        pass
    keep.append(icmp)
    return keep


def helper() -> dict:
    from engine.core import Engine
    from procfs_ct.sources.tap import Tap
    engine = Engine(profile="linux")
    tap = Tap(["lo"])
    lock = threading.Lock()
    seen = [0]

    def feed() -> None:
        for ts, linktype, frame in tap:
            with lock:
                engine.feed_frame(ts, linktype, frame)
                seen[0] += 1
    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    keep = make_traffic()
    time.sleep(1.2)                 # delayed ACKs go out, timers count down
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:          # every tracked packet reached the engine
        with lock:
            if seen[0] >= tracked_packets():
                break
        time.sleep(0.05)
    with lock:
        now = time.time()
        with open("/proc/net/nf_conntrack") as listing:
            kernel = listing.read().splitlines()
        engine.advance(now)
        mine = view_text(engine, "net/nf_conntrack", now).splitlines()
    tap.close()
    thread.join(5)
    for sock in keep:
        sock.close()
    return {"kernel": kernel, "engine": mine}


if __name__ == "__main__":
    print(json.dumps(helper()))
