"""UDP-Lite, enhanced GRE and protocol 58 over IPv4, without FUSE (engine/udplite.py,
engine/parse.py's GRE keys, engine/icmpv6.py refusing IPv4).

The kernel comparisons are the stored scenarios udplite_coverage, gre_enhanced,
foreign_protocols (loopback) and wire_sctp_udplite_checksums (PREROUTING).
"""
from __future__ import annotations

import struct

import pytest

from engine.build import (build_icmp, build_ipv4, internet_checksum, ip_to_int,
                          pseudo_header_sum)
from engine.hooks import LOCAL_OUT, PRE_ROUTING
from engine.parse import parse_ipv4
from enginehelp import T0, icmp_error_about, lines, make_engine

A, B = "127.0.0.1", "127.0.0.2"


def udplite(src: str, dst: str, sport: int, dport: int, payload: bytes = b"lite payload",
            coverage: int = 0, pseudo_proto: int = 17) -> bytes:
    """A UDP-Lite datagram whose sum is made the way the kernel checks it (protocol 17 in
    the pseudo header) unless pseudo_proto says otherwise; a coverage below 8 sums 8."""
    body = struct.pack("!HHHH", sport, dport, coverage, 0) + payload
    initial = pseudo_header_sum(ip_to_int(src), ip_to_int(dst), pseudo_proto, len(body))
    csum = internet_checksum(body[:max(coverage, 8) if coverage else len(body)], initial)
    return build_ipv4(src, dst, 136, body[:6] + struct.pack("!H", csum or 0xFFFF) + body[8:])


def feed(eng, t: float, datagram: bytes, hook: int = LOCAL_OUT) -> str:
    return str(eng.feed_datagram(t, datagram, hook))


# -- UDP-Lite -------------------------------------------------------------------------------
@pytest.mark.parametrize("coverage, ok", [(0, True), (8, True), (20, True), (1, False),
                                          (7, False), (21, False)])
def test_udplite_checksum_coverage(coverage, ok):
    """Coverage 0 (all) or 8 .. the datagram's 20 bytes; 1..7 and beyond: INVALID."""
    pkt = parse_ipv4(udplite(A, B, 46000, 7000, b"x" * 12, coverage), LOCAL_OUT)
    assert (pkt.l4_error is None) == ok


def test_udplite_without_checksum_is_invalid():
    datagram = bytearray(udplite(A, B, 46000, 7000))
    datagram[26:28] = b"\0\0"
    assert parse_ipv4(bytes(datagram), LOCAL_OUT).l4_error == "udplite checksum missing"


def test_udplite_sum_is_checked_with_udps_protocol_number_at_prerouting():
    eng = make_engine()
    assert feed(eng, T0, udplite(A, B, 46001, 7001, pseudo_proto=136), PRE_ROUTING) == "INVALID"
    assert feed(eng, T0, udplite(A, B, 46002, 7002), PRE_ROUTING) == "NEW"
    assert feed(eng, T0, udplite(A, B, 46003, 7003, pseudo_proto=136), LOCAL_OUT) == "NEW"


def test_udplite_is_assured_by_the_first_packet_after_a_reply():
    """No 2-second rule (nf_conntrack_udplite_packet)."""
    eng = make_engine()
    feed(eng, T0, udplite(A, B, 46001, 7001))
    feed(eng, T0 + 0.1, udplite(B, A, 7001, 46001))
    (line,) = lines(eng, T0 + 0.1)
    assert line.startswith("ipv4     2 udplite  136 30 ") and "[ASSURED]" not in line
    feed(eng, T0 + 0.2, udplite(A, B, 46001, 7001))
    (line,) = lines(eng, T0 + 0.2)
    assert " 136 120 " in line and line.endswith("[ASSURED] mark=0 zone=0 use=2")


# -- GRE ------------------------------------------------------------------------------------
def gre_v1(call_id: int, protocol: int = 0x880B) -> bytes:
    return struct.pack("!HHHH", 0x2001, protocol, 4, call_id) + b"\xff\x03\x00\x21"


def test_gre_v1_keys_by_call_id_and_refuses_other_payloads():
    eng = make_engine()
    assert feed(eng, T0, build_ipv4(A, B, 47, gre_v1(0x1234))) == "NEW"
    (line,) = lines(eng, T0)
    assert "srckey=0x0 dstkey=0x1234 [UNREPLIED]" in line and "srckey=0x1234 dstkey=0x0" in line
    assert feed(eng, T0, build_ipv4(A, B, 47, gre_v1(0x1111, protocol=0x0800))) == "INVALID"
    assert len(lines(eng, T0)) == 1


def test_icmp_error_about_gre_is_found_through_its_keys():
    eng = make_engine()
    sent = build_ipv4(A, B, 47, gre_v1(0x1234))
    feed(eng, T0, sent)
    assert str(icmp_error_about(eng, T0 + 0.1, B, A, sent)) == "RELATED reply"
    other = build_ipv4(A, B, 47, gre_v1(0x4321))
    assert str(icmp_error_about(eng, T0 + 0.2, B, A, other)) == "INVALID"


# -- protocol 58 over IPv4 --------------------------------------------------------------------
def test_icmpv6_over_ipv4_is_invalid_and_makes_no_entry():
    eng = make_engine()
    echo = build_icmp(128, 0, ident=0x77, payload=b"v6 over v4")
    assert feed(eng, T0, build_ipv4(A, B, 58, echo)) == "INVALID"
    assert lines(eng, T0) == []
    tutorial = make_engine("tutorial")
    assert feed(tutorial, T0, build_ipv4(A, B, 58, echo)) == "NEW"      # generic in ip_conntrack
