"""The three table shapes the listing and memory benchmarks build, in the kernel and in ours.

A listing's cost depends on how many distinct addresses it prints, so each figure is taken
on three shapes, every one of them as datagrams that make exactly `entries` entries:

  server   one destination (192.168.1.10:443), a distinct client address per entry
           (10.0.0.1, 10.0.0.2, ...): TCP connections through handshake and data
           (ESTABLISHED, ASSURED);
  gateway  about 4,000 clients (10.1.x.y) x 500 servers (192.168.1-2.x), the protocols and
           states in the proportions a table of the synthetic source holds (measured on
           `procfs_ct.sources.synthetic` at 20,000 packets/s: 38 % TCP, of which two thirds
           SYN_SENT; 55 % UDP, a third of it unreplied; 7 % ICMP echo);
  pair     one address pair, 127.0.0.1 -> 127.0.0.1, unreplied UDP to distinct ports: the
           shape the benchmark used alone before, the best case for any per-pair cache.

The datagrams are sent to the kernel from a raw socket in a namespace (bench/worker.py
task_fill) and replayed into a mount from a capture of the same datagrams
(bench/captures.shape_capture), so both tables hold the same entries.
"""
from __future__ import annotations

from typing import Dict, Iterator, Tuple

from .traffic import conversation

SHAPES = ("server", "gateway", "pair")

# Timeouts long enough that no entry of either table expires while the benchmark reads it
# (knob name -> seconds; the kernel's sysctl is net.netfilter.nf_conntrack_<name>).
LONG_TIMEOUTS: Dict[str, int] = {"udp_timeout": 3600, "udp_timeout_stream": 3600,
                                 "icmp_timeout": 3600, "tcp_timeout_syn_sent": 3600,
                                 "tcp_timeout_unacknowledged": 3600}

SERVER = 0xC0A8010A                 # 192.168.1.10
CLIENTS_BASE = 0x0A000000           # 10.0.0.0: server shape, client n is 10.0.0.0 + 1 + n
GATEWAY_CLIENTS_BASE = 0x0A010000   # 10.1.0.0
GATEWAY_SERVERS_BASE = 0xC0A80100   # 192.168.1.0
GATEWAY_CLIENTS, GATEWAY_SERVERS = 4000, 500
LOOPBACK = 0x7F000001               # 127.0.0.1

# The gateway's kinds per 100 entries (bench/traffic.py conversation kinds), interleaved so
# that every stretch of the table has the mix.
_GATEWAY_SHARES = (("udp", 37), ("udp-unreplied", 17), ("tcp-syn", 26), ("tcp", 13),
                   ("icmp", 7))
GATEWAY_KINDS = tuple(sorted(((n + 0.5) / share, kind) for kind, share in _GATEWAY_SHARES
                             for n in range(share)))
GATEWAY_KINDS = tuple(kind for _, kind in GATEWAY_KINDS)
_SERVER_PORTS = {"udp": 53, "udp-unreplied": 123, "tcp-syn": 443, "tcp": 443, "icmp": 0}

PAIR_SPORTS = range(40000, 40100)   # the pair shape's source ports, one after the other


def pair_ports(entries: int) -> Iterator[Tuple[int, int]]:
    """(sport, dport) of the pair shape: source ports 40000, 40001, ... each to every
    destination port outside the source ports' range (so no datagram is the reply of
    another: 40001 -> 40000 would be tracked as the answer to 40000 -> 40001)."""
    made = 0
    for sport in PAIR_SPORTS:
        for dport in range(1, 65536):
            if dport in PAIR_SPORTS:
                continue
            if made == entries:
                return
            yield sport, dport
            made += 1


def conversations(shape: str, entries: int) -> Iterator[Tuple[str, int, Tuple[int, int, int, int]]]:
    """(kind, n, (client, server, client port, server port)) of each entry of a shape."""
    if shape == "server":
        for n in range(entries):
            yield "tcp", n, (CLIENTS_BASE + 1 + n, SERVER, 32768 + n % 28000, 443)
    elif shape == "gateway":
        for n in range(entries):
            kind = GATEWAY_KINDS[n % len(GATEWAY_KINDS)]
            client = GATEWAY_CLIENTS_BASE + 1 + n % GATEWAY_CLIENTS
            server = GATEWAY_SERVERS_BASE + (n * 7919 + n // GATEWAY_CLIENTS) % GATEWAY_SERVERS
            # (client, client port) is distinct for every n, so every tuple is.
            yield kind, n, (client, server, 1024 + n // GATEWAY_CLIENTS, _SERVER_PORTS[kind])
    elif shape == "pair":
        for n, (sport, dport) in enumerate(pair_ports(entries)):
            yield "udp-unreplied", n, (LOOPBACK, LOOPBACK, sport, dport)
    else:
        raise ValueError(f"unknown table shape {shape!r} (one of {', '.join(SHAPES)})")


def datagrams(shape: str, entries: int) -> Iterator[bytes]:
    """The IPv4 datagrams, in order, that make the shape's `entries` entries."""
    for kind, n, ends in conversations(shape, entries):
        yield from conversation(kind, n, ends)
