"""IPv6 end to end without FUSE: every link layer hands IPv6 to the engine, the engine
dispatches on the version nibble, nf_conntrack lists the entries and ip_conntrack does not,
ICMPv6 errors are RELATED to the flow they quote, neighbour discovery and MLD stay
UNTRACKED (nf_conntrack_proto_icmpv6.c: noct_valid_new[]) and count in no stat column."""
from __future__ import annotations

import struct

import pytest

from engine.build import (build_ethernet, build_icmpv6, build_ipv4, build_ipv6, build_tcp,
                          build_udp)
from engine.ctstate import CtState
from engine.hooks import LOCAL_OUT, PRE_ROUTING
from engine.linklayer import (ETH_P_IPV6, LINKTYPE_ETHERNET, LINKTYPE_IPV4, LINKTYPE_IPV6,
                              LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_LOOP,
                              LINKTYPE_NULL, LINKTYPE_RAW, strip_ip, strip_link)
from engine.packet import ACK, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, SYN
from enginehelp import T0, lines, make_engine

A, B = "fd00::1", "fd00::2"
ADDR_A = "fd00:0000:0000:0000:0000:0000:0000:0001"
ADDR_B = "fd00:0000:0000:0000:0000:0000:0000:0002"


def udp6(src: str, dst: str, sport: int, dport: int, payload: bytes = b"q") -> bytes:
    return build_ipv6(src, dst, IPPROTO_UDP, build_udp(src, dst, sport, dport, payload))


def icmp6(src: str, dst: str, icmp_type: int, code: int = 0, ident: int = 0,
          payload: bytes = b"", hop_limit: int = 64) -> bytes:
    return build_ipv6(src, dst, IPPROTO_ICMPV6,
                      build_icmpv6(src, dst, icmp_type, code, ident, 1, payload),
                      hop_limit=hop_limit)


QUERY = udp6(A, B, 40000, 53)

# One IPv6 datagram in each link layer the pcap source reads.
FRAMES = {
    "ethernet": (LINKTYPE_ETHERNET, build_ethernet(QUERY, ethertype=ETH_P_IPV6)),
    "ethernet vlan": (LINKTYPE_ETHERNET, build_ethernet(QUERY, ethertype=ETH_P_IPV6,
                                                        vlans=[(0x8100, 5)])),
    "sll": (LINKTYPE_LINUX_SLL, struct.pack("!HHH8sH", 0, 1, 6, bytes(8), ETH_P_IPV6) + QUERY),
    "sll2": (LINKTYPE_LINUX_SLL2, struct.pack("!HHIHBB8s", ETH_P_IPV6, 0, 2, 1, 0, 6,
                                              bytes(8)) + QUERY),
    "raw": (LINKTYPE_RAW, QUERY),
    "ipv6": (LINKTYPE_IPV6, QUERY),
    "null bsd": (LINKTYPE_NULL, (24).to_bytes(4, "little") + QUERY),
    "null darwin other order": (LINKTYPE_NULL, (30).to_bytes(4, "big") + QUERY),
    "loop": (LINKTYPE_LOOP, (28).to_bytes(4, "big") + QUERY),
}


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_every_link_layer_hands_ipv6_to_the_engine(name):
    linktype, frame = FRAMES[name]
    datagram, _hook = strip_ip(linktype, frame)
    assert datagram == QUERY
    assert strip_link(linktype, frame) == (None, None)      # the IPv4-only view refuses it
    eng = make_engine()
    assert eng.feed_frame(T0, linktype, frame).state == CtState.NEW
    assert len(eng.tracker) == 1 and eng.frames_not_ipv4 == 0


def test_version_nibble_and_link_family_must_agree():
    ipv4 = build_ipv4("10.0.0.1", "10.0.0.2", IPPROTO_UDP, b"\0" * 8)
    assert strip_ip(LINKTYPE_ETHERNET, build_ethernet(ipv4, ethertype=ETH_P_IPV6)) == (None, None)
    assert strip_ip(LINKTYPE_ETHERNET, build_ethernet(QUERY)) == (None, None)  # 0x0800, v6
    assert strip_ip(LINKTYPE_IPV4, QUERY) == (None, None)
    assert strip_ip(LINKTYPE_IPV6, ipv4) == (None, None)
    assert strip_ip(LINKTYPE_NULL, (2).to_bytes(4, "little") + QUERY) == (None, None)


def test_nf_conntrack_lists_ipv6_and_ip_conntrack_does_not():
    eng = make_engine()
    eng.feed_frame(T0, LINKTYPE_ETHERNET, build_ethernet(udp6(A, B, 40000, 53), ethertype=ETH_P_IPV6))
    eng.feed_frame(T0, LINKTYPE_ETHERNET, build_ethernet(
        build_ipv4("10.0.0.1", "10.0.0.2", IPPROTO_UDP,
                   build_udp("10.0.0.1", "10.0.0.2", 40000, 53, b"q"))))
    modern = lines(eng, T0 + 1)
    assert len(modern) == 2
    assert (f"ipv6     10 udp      17 29 src={ADDR_A} dst={ADDR_B} sport=40000 dport=53 "
            f"[UNREPLIED] src={ADDR_B} dst={ADDR_A} sport=53 dport=40000 mark=0 zone=0 use=2"
            in modern)
    legacy = lines(eng, T0 + 1, "net/ip_conntrack")
    assert len(legacy) == 1 and "10.0.0.1" in legacy[0]


def test_the_tutorial_profile_tracks_no_ipv6():
    eng = make_engine("tutorial")
    assert eng.feed_datagram(T0, udp6(A, B, 40000, 53), LOCAL_OUT) is None
    assert len(eng.tracker) == 0 and eng.frames_not_ipv4 == 1


def test_tcp_over_ipv6_goes_through_its_states():
    eng = make_engine()

    def tcp(src, dst, sport, dport, flags, seq, ack=0):
        return eng.feed_datagram(T0, build_ipv6(src, dst, IPPROTO_TCP, build_tcp(
            src, dst, sport, dport, flags=flags, seq=seq, ack=ack)), PRE_ROUTING)
    assert tcp(A, B, 40000, 22, SYN, 100).state == CtState.NEW
    assert tcp(B, A, 22, 40000, SYN | ACK, 500, 101).state == CtState.ESTABLISHED
    assert tcp(A, B, 40000, 22, ACK, 101, 501).state == CtState.ESTABLISHED
    [line] = lines(eng, T0)
    assert line.startswith("ipv6     10 tcp      6 ") and " ESTABLISHED src=" in line
    assert "[ASSURED]" in line


def test_icmpv6_errors_are_related_to_the_flow_they_quote():
    eng = make_engine()
    query = udp6(A, B, 40000, 53)
    assert eng.feed_datagram(T0, query, LOCAL_OUT).state == CtState.NEW
    stats_before = dict(eng.tracker.stats)
    # B answers: port unreachable (1/4), quoting the query.
    result = eng.feed_datagram(T0 + 0.1, icmp6(B, A, 1, 4, payload=query), PRE_ROUTING)
    assert (result.state, result.reply) == (CtState.RELATED, True)
    assert eng.tracker.stats == stats_before            # a match counts nothing
    for icmp_type, code in ((2, 0), (3, 0), (4, 0)):     # too big, time exceeded, param problem
        assert eng.feed_datagram(T0 + 0.2, icmp6(B, A, icmp_type, code, payload=query),
                                 PRE_ROUTING).state == CtState.RELATED
    [line] = lines(eng, T0 + 1)
    assert "[UNREPLIED]" in line                         # an error is no reply


def test_an_icmpv6_error_quoting_no_flow_is_invalid_and_counts_icmp_error():
    eng = make_engine()
    result = eng.feed_datagram(T0, icmp6(B, A, 1, 4, payload=udp6(A, B, 1, 2)), PRE_ROUTING)
    assert result.state == CtState.INVALID
    assert eng.tracker.stats["icmp_error"] == 1 and eng.tracker.stats["invalid"] == 0


def test_icmpv6_echo_is_new_then_established():
    eng = make_engine()
    assert eng.feed_datagram(T0, icmp6(A, B, 128, ident=9), LOCAL_OUT).state == CtState.NEW
    reply = eng.feed_datagram(T0 + 0.01, icmp6(B, A, 129, ident=9), PRE_ROUTING)
    assert (reply.state, reply.reply) == (CtState.ESTABLISHED, True)
    [line] = lines(eng, T0 + 1)
    assert line.startswith("ipv6     10 icmpv6   58 29 ") and "type=128 code=0 id=9" in line


@pytest.mark.parametrize("icmp_type", [130, 131, 132, 133, 134, 135, 136, 143])
def test_neighbour_discovery_and_mld_are_untracked_and_counted_nowhere(icmp_type):
    eng = make_engine()
    stats_before = dict(eng.tracker.stats)
    result = eng.feed_datagram(T0, icmp6("fe80::1", "ff02::1", icmp_type, hop_limit=255),
                               PRE_ROUTING)
    assert result.state == CtState.UNTRACKED and result.entry is None
    assert eng.tracker.stats == stats_before and len(eng.tracker) == 0


def test_an_untracked_message_with_a_bad_checksum_is_invalid():
    # The checksum is checked before the type (nf_conntrack_icmpv6_error()).
    good = icmp6("fe80::1", "ff02::1", 135)
    bad = good[:-1] + bytes([good[-1] ^ 1]) if len(good) > 48 else good[:42] + b"\0\0" + good[44:]
    result = make_engine().feed_datagram(T0, bad, PRE_ROUTING)
    assert result.state == CtState.INVALID


def test_routing_applies_no_ipv4_martian_rule_to_ipv6():
    """`::` is a valid IPv6 source (duplicate address detection) and multicast is
    delivered: such datagrams received from a wire are confirmed, where IPv4's 0.0.0.0/8
    source rule (ip_route_input_slow) would drop them.  A non-forwarding host still drops
    unicast for another address."""
    import ipaddress
    own = int(ipaddress.IPv6Address(B))
    eng = make_engine("linux", local_addresses=[own], forwarding=False)
    for src, dst, sport in (("::", B, 40000), (A, "ff02::fb", 5353)):
        result = eng.feed_datagram(T0, udp6(src, dst, sport, 5353), PRE_ROUTING)
        assert result.state == CtState.NEW and not result.dropped, (src, dst)
    other = eng.feed_datagram(T0, udp6(A, "fd00::99", 40001, 53), PRE_ROUTING)
    assert other.dropped
    assert len(eng.tracker.conns) == 2
