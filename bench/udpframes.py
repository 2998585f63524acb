"""The datagrams bench/blast.py sends, as bytes: what its packet sender puts on lo.

Flow f of a round (SOURCES x lcm(PORTS, ADDRESSES) of them, in the socket sender's order:
every pass over the destinations from one source port, then the next source port) goes
from 127.0.0.1:(40000 + f // lcm) to 127.0.0.1 + (f % lcm) % ADDRESSES, port
9000 + (f % lcm) % PORTS, carrying PAYLOAD.  Each is the IPv4 datagram Linux makes of a
32-byte write to an unconnected UDP socket on lo (tests/test_bench_blast.py captures both
and compares): a 20-byte header, TOS 0, DF (the socket's default IP_PMTUDISC_WANT on a
route whose MTU is not locked), TTL 64, protocol 17, and a complete header checksum; the
UDP header with a complete checksum.  The one field that differs is the IP id: the kernel
draws it per datagram from __ip_select_ident's per-destination counters; a prebuilt frame
is sent unchanged round after round, so it carries f % 65536, its flow's number (nothing on
the tap's or the engine's path reads the id of an unfragmented datagram).

LINK_HEADER is what an AF_PACKET SOCK_RAW socket on lo writes before each datagram: lo's
link header is an Ethernet one, type IPv4.  Its source address is lo's, zero, as on the
socket sender's frames (the tap's SOCK_DGRAM socket strips the header but reports that
address in the SLL2 header it makes: the same there too).  Its destination is not lo's
(02:00:00:00:00:01, a locally administered unicast address): lo hands every frame it sends
back to the stack, eth_type_trans() marks this copy PACKET_OTHERHOST, and ip_rcv() drops it
at once -- no early demux, no route lookup, no nft input hook, ~0.3 us of kernel CPU a
datagram less (bench/RESULTS.md, pktsend) -- where the socket sender's copies go on to the
nft drop at input.  Neither copy is seen by the tap (outgoing only), nor tracked.
"""
from __future__ import annotations

import ipaddress
import math

from engine.build import build_udp_datagram

FIRST_PORT = 9000                  # destination ports 9000 and up
FIRST_SOURCE_PORT = 40000          # source ports 40000 and up
FIRST_ADDRESS = ipaddress.IPv4Address("127.0.0.1")   # destinations 127.0.0.1 and up
PAYLOAD = b"x" * 32
TTL = 64                           # net.ipv4.ip_default_ttl's default
LINK_HEADER = bytes((2, 0, 0, 0, 0, 1)) + bytes(6) + b"\x08\x00"   # destination, source, type


def destination(n: int, ports: int, addresses: int) -> tuple[ipaddress.IPv4Address, int]:
    """Destination `n` of a pass, (address, port): both senders' (blast.py's socket sender
    addresses its messages with it, the frames here carry it)."""
    return FIRST_ADDRESS + n % addresses, FIRST_PORT + n % ports


def flow_datagram(flow: int, ports: int, addresses: int) -> bytes:
    """Flow `flow`'s datagram (numbered as in the module text)."""
    source, n = divmod(flow, math.lcm(ports, addresses))
    address, port = destination(n, ports, addresses)
    return build_udp_datagram(str(FIRST_ADDRESS), str(address), FIRST_SOURCE_PORT + source,
                              port, PAYLOAD, ip_df=True, ip_ttl=TTL, ip_ident=flow & 0xFFFF)


def one_round(ports: int, addresses: int, sources: int) -> list[bytes]:
    """Every flow's datagram once, in the order the socket sender sends them."""
    return [flow_datagram(flow, ports, addresses)
            for flow in range(sources * math.lcm(ports, addresses))]
