"""IPv6 groundwork without FUSE: engine/ipv6.py (keys, %pI6 text), engine/parse_ipv6.py
(extension headers, checksums), engine/icmpv6.py, and IPv6 entries through Tracker.process
and the nf_conntrack listing.  The listing lines are the kernel's, observed on 6.18 in a
throw-away namespace (UDP and an answered echo request over ::1)."""
from __future__ import annotations

import struct

import pytest

from engine import ipv6
from engine.build import internet_checksum, pseudo_header_sum
from engine.hooks import LOCAL_OUT, PRE_ROUTING
from engine.l3 import l3_of
from engine.parse import ParseError
from engine.parse_ipv6 import parse_ipv6
from engine.render import render_listing
from enginehelp import T0, make_engine

LOOPBACK = 1
KERNEL_UDP = ("ipv6     10 udp      17 29 src=0000:0000:0000:0000:0000:0000:0000:0001 "
              "dst=0000:0000:0000:0000:0000:0000:0000:0001 sport=47001 dport=7001 [UNREPLIED] "
              "src=0000:0000:0000:0000:0000:0000:0000:0001 "
              "dst=0000:0000:0000:0000:0000:0000:0000:0001 sport=7001 dport=47001 "
              "mark=0 zone=0 use=2")
KERNEL_ICMPV6 = ("ipv6     10 icmpv6   58 29 src=0000:0000:0000:0000:0000:0000:0000:0001 "
                 "dst=0000:0000:0000:0000:0000:0000:0000:0001 type=128 code=0 id=119 "
                 "src=0000:0000:0000:0000:0000:0000:0000:0001 "
                 "dst=0000:0000:0000:0000:0000:0000:0000:0001 type=129 code=0 id=119 "
                 "mark=0 zone=0 use=2")


def datagram(next_header: int, l4: bytes, src: int = LOOPBACK, dst: int = LOOPBACK,
             extensions: bytes = b"") -> bytes:
    payload = extensions + l4
    return (struct.pack("!IHBB", 6 << 28, len(payload), next_header, 64)
            + src.to_bytes(16, "big") + dst.to_bytes(16, "big") + payload)


def with_sum(proto: int, l4: bytes, at: int, src: int = LOOPBACK, dst: int = LOOPBACK) -> bytes:
    csum = internet_checksum(l4, pseudo_header_sum(src, dst, proto, len(l4)))
    return l4[:at] + struct.pack("!H", csum) + l4[at + 2:]


def udp(sport: int, dport: int, payload: bytes = b"x") -> bytes:
    return with_sum(17, struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload, 6)


def icmpv6(icmp_type: int, ident: int) -> bytes:
    return with_sum(58, struct.pack("!BBHHH", icmp_type, 0, 0, ident, 1) + b"ping", 2)


def test_key_text_and_registration():
    addr = ipv6.addr_value("fd00::1")
    packed = ipv6.key(addr, LOOPBACK, 1, 2)
    assert len(packed) == 36 and ipv6.unkey(packed) == (addr, LOOPBACK, 1, 2)
    assert ipv6.unkey(ipv6.mirror_key(packed, 2, 1)) == (LOOPBACK, addr, 2, 1)
    assert ipv6.addr_text(addr) == "fd00:0000:0000:0000:0000:0000:0000:0001"
    assert l3_of(10) is ipv6 and ipv6.LISTING_PREFIX == "ipv6     10 "
    with pytest.raises(ValueError):
        ipv6.addr_value("1.2.3.4")


def test_extension_headers_are_skipped():
    # 16 bytes (an unknown option whose data would read as "UDP" if the length were
    # ignored); next: destination options.
    hop_by_hop = bytes([60, 1]) + b"\x1e\x0c" + b"\x11" * 12
    dest_opts = bytes([44, 0]) + b"\x01\x04\0\0\0\0"           # next: fragment
    atomic_fragment = bytes([17, 0, 0, 0]) + b"\0\0\0\1"       # offset 0, no MF: whole
    pkt = parse_ipv6(datagram(0, udp(47001, 7001), extensions=hop_by_hop + dest_opts
                              + atomic_fragment), LOCAL_OUT)
    assert (pkt.proto, pkt.sport, pkt.dport, pkt.l4_error) == (17, 47001, 7001, None)
    assert pkt.ip_len == 40 + 32 + 9


def test_fragments_truncation_and_cut_chains():
    # A fragment reaches the parser only when nf_defrag_ipv6 lets it through as it is:
    # a first fragment is read as its protocol, a later one has no protocol to find.
    first_fragment = bytes([17, 0, 0, 1]) + b"\0\0\0\1"        # MF set
    first = parse_ipv6(datagram(44, udp(1, 2), extensions=first_fragment), LOCAL_OUT)
    assert (first.proto, first.sport, first.l4_error) == (17, 1, None)
    later_fragment = bytes([17, 0, 0, 9]) + b"\0\0\0\1"        # offset 8, MF set
    later = parse_ipv6(datagram(44, udp(1, 2), extensions=later_fragment), LOCAL_OUT)
    assert later.l4_error == "non-first ipv6 fragment"
    assert parse_ipv6(datagram(59, bytes(8)), LOCAL_OUT).l4_error == "no ipv6 upper-layer header"
    assert parse_ipv6(datagram(17, udp(1, 2))[:45], LOCAL_OUT) == ParseError("truncated datagram")
    assert parse_ipv6(b"\x45" + b"\0" * 59, LOCAL_OUT) == ParseError("not ipv6")
    cut = parse_ipv6(datagram(0, b"\x11\x00\x01"), LOCAL_OUT)
    assert cut.l4_error == "no ipv6 upper-layer header"


def test_checksums_verified_at_prerouting_with_the_ipv6_pseudo_header():
    good = datagram(17, udp(47001, 7001))
    assert parse_ipv6(good, PRE_ROUTING).l4_checksum_ok
    bad = good[:-1] + bytes([good[-1] ^ 1])
    assert not parse_ipv6(bad, PRE_ROUTING).l4_checksum_ok
    assert parse_ipv6(bad, LOCAL_OUT).l4_checksum_ok
    assert parse_ipv6(datagram(58, icmpv6(128, 7)), PRE_ROUTING).l4_checksum_ok


def track(eng, t: float, raw: bytes) -> str:
    result = eng.tracker.process(parse_ipv6(raw, LOCAL_OUT), t)
    eng.tracker.confirm(result, t)
    return str(result)


def test_listing_lines_are_the_kernels():
    eng = make_engine()
    assert track(eng, T0, datagram(17, udp(47001, 7001))) == "NEW"
    assert track(eng, T0, datagram(58, icmpv6(128, 119))) == "NEW"
    assert track(eng, T0 + 0.01, datagram(58, icmpv6(129, 119))) == "ESTABLISHED reply"
    listing = render_listing(eng.tracker, T0 + 0.5, True).decode().splitlines()
    assert sorted(listing) == sorted([KERNEL_UDP, KERNEL_ICMPV6])


def test_icmpv6_makes_entries_only_for_requests():
    eng = make_engine()
    assert track(eng, T0, datagram(58, icmpv6(129, 5))) == "INVALID"    # reply, no request
    assert track(eng, T0, datagram(58, icmpv6(1, 0))) == "INVALID"      # error quoting nothing
    assert track(eng, T0, datagram(58, icmpv6(139, 6))) == "NEW"        # node information
    assert len(eng.tracker) == 1
