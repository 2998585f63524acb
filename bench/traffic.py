"""Datagrams for in-process benchmarks: a realistic mix of conversations, built from templates.

Each conversation gets its own tuple (client 10.a.b.c:port -> server 192.168.1.x).  The mix
is what a busy host's table holds: half UDP (a third of it never answered), a third TCP that
went through the handshake and carried data both ways (ESTABLISHED, ASSURED, with full
window state), a sixth ICMP echo request/reply.
"""
from __future__ import annotations

from typing import Iterator, Optional, Tuple

from engine.build import (build_icmp_datagram, build_tcp_datagram, build_udp_datagram,
                          tcp_options)
from engine.packet import ACK, PSH, SYN

SERVER_BASE = 0xC0A80100          # 192.168.1.0
CLIENT_BASE = 0x0A000000          # 10.0.0.0

# Conversation kinds by index modulo 6: the mix described above.
MIX = ("udp-unreplied", "udp", "udp", "tcp", "tcp", "icmp")
KINDS = {"mix": MIX, "udp": ("udp",), "udp-unreplied": ("udp-unreplied",), "tcp": ("tcp",),
         "icmp": ("icmp",)}

_SYN_OPTIONS = tcp_options(mss=1460, sack_perm=True, timestamps=(1, 0), wscale=7)
_TS_OPTIONS = tcp_options(timestamps=(2, 1))


def endpoints(n: int) -> Tuple[int, int, int, int]:
    """Distinct (client, server, client port, server port) for conversation n."""
    client = CLIENT_BASE + 1 + (n >> 14)
    sport = 1024 + (n & 0x3FFF)
    server = SERVER_BASE + 10 + n % 100
    return client, server, sport, (53, 443, 22, 8080)[n % 4]


def conversation(kind: str, n: int,
                 ends: Optional[Tuple[int, int, int, int]] = None) -> Iterator[bytes]:
    """The datagrams of conversation n of the given kind, in order, between `ends`
    (client, server, client port, server port; endpoints(n) by default)."""
    c, s, cp, sp = endpoints(n) if ends is None else ends
    if kind == "udp-unreplied":
        yield build_udp_datagram(c, s, cp, sp, b"q" * 32)
    elif kind == "udp":
        yield build_udp_datagram(c, s, cp, sp, b"q" * 32)
        yield build_udp_datagram(s, c, sp, cp, b"a" * 96)
    elif kind == "icmp":
        yield build_icmp_datagram(c, s, 8, ident=n & 0xFFFF, seq=1, payload=b"p" * 56)
        yield build_icmp_datagram(s, c, 0, ident=n & 0xFFFF, seq=1, payload=b"p" * 56)
    elif kind == "tcp-syn":                          # a SYN never answered: SYN_SENT
        yield build_tcp_datagram(c, s, cp, sp, seq=(n * 2654435761) & 0xFFFFFFFF, flags=SYN,
                                 window=64240, options=_SYN_OPTIONS)
    elif kind == "tcp":
        ci = (n * 2654435761) & 0xFFFFFFFF          # initial sequence numbers
        si = (n * 40503 + 12345) & 0xFFFFFFFF
        yield build_tcp_datagram(c, s, cp, sp, seq=ci, flags=SYN, window=64240,
                                 options=_SYN_OPTIONS)
        yield build_tcp_datagram(s, c, sp, cp, seq=si, ack=ci + 1, flags=SYN | ACK,
                                 window=65160, options=_SYN_OPTIONS)
        yield build_tcp_datagram(c, s, cp, sp, seq=ci + 1, ack=si + 1, flags=ACK, window=502,
                                 options=_TS_OPTIONS)
        yield build_tcp_datagram(c, s, cp, sp, seq=ci + 1, ack=si + 1, flags=PSH | ACK,
                                 window=502, options=_TS_OPTIONS, payload=b"G" * 100)
        yield build_tcp_datagram(s, c, sp, cp, seq=si + 1, ack=ci + 101, flags=PSH | ACK,
                                 window=509, options=_TS_OPTIONS, payload=b"H" * 500)
        yield build_tcp_datagram(c, s, cp, sp, seq=ci + 101, ack=si + 501, flags=ACK,
                                 window=501, options=_TS_OPTIONS)
    else:
        raise ValueError(kind)


def mixed_datagrams(entries: int, mix: str = "mix") -> Iterator[bytes]:
    """Datagrams making `entries` entries of the named mix (see KINDS)."""
    kinds = KINDS[mix]
    for n in range(entries):
        yield from conversation(kinds[n % len(kinds)], n)
