"""IPv4/TCP/UDP/ICMP parsing (engine/parse.py) and the checksum helpers it uses.

Spec: conntrack.md 4.5 (TCP error checks), 5.1 (UDP), 5.2 (ICMP), 8 (fragments).
Packets are real bytes from engine/build.py or from tests/data captures.
"""
from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from engine.build import (build_icmp, build_icmp_datagram, build_ipv4, build_tcp,
                          build_tcp_datagram, build_udp, build_udp_datagram, checksum_valid,
                          internet_checksum, ip_to_int, tcp_options)
from engine.capture import datagrams, read_capture
from engine.hooks import LOCAL_OUT, PRE_ROUTING
from engine.packet import ACK, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, PSH, SYN, Packet
from engine.defrag import Defragmenter
from engine.parse import ParseError, parse_ipv4

DATA = Path(__file__).parent / "data"
A, B = "192.0.2.1", "198.51.100.7"
A_INT, B_INT = ip_to_int(A), ip_to_int(B)


def parsed(datagram: bytes, hook: int = PRE_ROUTING) -> Packet:
    result = parse_ipv4(datagram, hook)
    assert isinstance(result, Packet), result
    return result


def error(datagram: bytes, hook: int = PRE_ROUTING) -> str:
    result = parse_ipv4(datagram, hook)
    assert isinstance(result, ParseError), result
    return result.reason


def with_byte(data: bytes, index: int, value: int) -> bytes:
    return data[:index] + bytes([value]) + data[index + 1:]


# -- checksums ---------------------------------------------------------------

def word_sum_checksum(data: bytes) -> int:
    """RFC 1071 reference: add 16-bit words with end-around carry, complement."""
    if len(data) % 2:
        data += b"\x00"
    total = 0
    for (word,) in struct.iter_unpack("!H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def test_internet_checksum_matches_rfc1071_example():
    """RFC 1071 section 3: words 0001 f203 f4f5 f6f7 sum to 0xddf2; checksum 0x220d."""
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D


def test_internet_checksum_equals_word_by_word_sum_on_random_data():
    """The modulo-0xFFFF shortcut must agree with the RFC 1071 word loop, odd lengths too."""
    rng = random.Random(7)
    for length in list(range(0, 40)) + [1499, 1500, 65515]:
        data = bytes(rng.getrandbits(8) for _ in range(length))
        assert internet_checksum(data) == word_sum_checksum(data), length
    assert internet_checksum(b"\xff\xff") == word_sum_checksum(b"\xff\xff") == 0


def test_built_headers_verify():
    datagram = build_udp_datagram(A, B, 1000, 2000, b"odd")
    assert checksum_valid(datagram[:20])
    assert not checksum_valid(with_byte(datagram, 8, 63)[:20])   # ttl changed


# -- IPv4 header ----------------------------------------------------------------

def test_ipv4_header_errors_are_parse_errors():
    """ip_rcv() drops these before any netfilter hook: conntrack never sees them."""
    good = build_udp_datagram(A, B, 1000, 2000, b"payload")
    assert error(b"") == "truncated ip header"
    assert error(good[:19]) == "truncated ip header"
    assert error(with_byte(good, 0, 0x65)) == "not ipv4"
    assert error(with_byte(good, 0, 0x44), LOCAL_OUT) == "bad ihl"
    assert error(build_ipv4(A, B, 17, b"", options=b"\x01" * 8)[:24], LOCAL_OUT) == "truncated ip header"
    assert error(build_udp_datagram(A, B, 1, 2, b"x" * 10, ip_total_length=len(good) + 100)) \
        == "truncated datagram"
    assert error(build_udp_datagram(A, B, 1, 2, b"", ip_total_length=19)) == "bad total length"


def test_bad_ip_header_checksum_is_dropped_only_in_prerouting():
    """The kernel verifies checksums in PREROUTING only; output packets are trusted."""
    datagram = build_udp_datagram(A, B, 1000, 2000, b"x", ip_checksum=0x1234)
    assert error(datagram, PRE_ROUTING) == "bad ip checksum"
    assert parsed(datagram, LOCAL_OUT).sport == 1000


def test_ipv4_options_move_the_l4_header():
    """IHL > 5: the transport header starts after the options."""
    segment = build_tcp(A, B, 4321, 443, seq=99, flags=SYN)
    datagram = build_ipv4(A, B, IPPROTO_TCP, segment, options=b"\x94\x04\x00\x00")  # router alert
    packet = parsed(datagram)
    assert (packet.sport, packet.dport, packet.tcp.seq, packet.ip_len) == (4321, 443, 99, 44)
    assert packet.l4_checksum_ok


def test_link_padding_after_total_length_is_ignored():
    """A 40-byte ACK in a 60-byte Ethernet frame carries 6 padding bytes: not payload."""
    datagram = build_tcp_datagram(A, B, 1, 2, seq=5, ack=6, flags=ACK) + b"\x00" * 6
    packet = parsed(datagram)
    assert packet.ip_len == 40
    assert packet.tcp.payload_len == 0
    assert packet.tcp.checksum_ok


def test_fragments_are_reported_not_parsed():
    """Spec 8: reassembly comes first; the parser refuses a fragment."""
    first = build_ipv4(A, B, IPPROTO_UDP, b"x" * 16, ident=77, mf=True)
    later = build_ipv4(A, B, IPPROTO_UDP, b"y" * 5, ident=77, frag_offset=16)
    whole = build_udp_datagram(A, B, 1, 2, b"z", ip_df=True)
    # Told apart where it is done, by the defragmenter: a fragment is held, then the two
    # (one id, the first at offset 0 with MF, the last at 16) make the whole datagram.
    defrag = Defragmenter()
    assert defrag.feed(first, 0.0) is None
    assert defrag.feed(later, 0.0)[20:] == b"x" * 16 + b"y" * 5
    assert defrag.feed(whole, 0.0) is whole                   # DF alone is no fragment
    assert defrag.feed(first[:19], 0.0) == first[:19]         # header errors are parse_ipv4's
    assert error(first) == "fragment"
    assert error(later) == "fragment"


def test_other_protocols_give_addresses_and_protocol_only():
    """Spec 5.3: the generic tracker needs only addresses and protocol (observed with 253)."""
    packet = parsed(build_ipv4(A, B, 253, b"\x01\x02\x03"))
    assert (packet.src, packet.dst, packet.proto, packet.ip_len) == (A_INT, B_INT, 253, 23)
    assert (packet.sport, packet.dport, packet.tcp, packet.icmp, packet.l4_error) == (0, 0, None, None, None)


# -- TCP --------------------------------------------------------------------------

def test_tcp_syn_fields_and_options():
    """A Linux SYN: MSS, SACK-permitted, timestamps, window scale 7."""
    opts = tcp_options(mss=1460, sack_perm=True, timestamps=(1, 0), wscale=7)
    packet = parsed(build_tcp_datagram(A, B, 40001, 8080, seq=0xFFFFFFF0, flags=SYN,
                                       window=64240, options=opts))
    tcp = packet.tcp
    assert (packet.proto, packet.sport, packet.dport) == (IPPROTO_TCP, 40001, 8080)
    assert (tcp.flags, tcp.seq, tcp.ack, tcp.window, tcp.payload_len) == (SYN, 0xFFFFFFF0, 0, 64240, 0)
    assert (tcp.wscale, tcp.sack_perm, tcp.sack_edge) == (7, True, None)
    assert tcp.checksum_ok and packet.l4_checksum_ok and packet.l4_error is None


def test_tcp_window_scale_above_14_is_clamped():
    """Kernel tcp_options(): td_scale > TCP_MAX_WSCALE (14) becomes 14."""
    packet = parsed(build_tcp_datagram(A, B, 1, 2, flags=SYN, options=tcp_options(wscale=15)))
    assert packet.tcp.wscale == 14


def test_tcp_sack_edge_is_highest_right_edge_after_ack():
    """Kernel tcp_sack(): start at ack, keep right edges after() it (modulo 2**32)."""
    ack = 0xFFFFFF00
    blocks = [(ack + 100, ack + 200), (5, 0x00000010), (ack + 300 & 0xFFFFFFFF, 0x40)]
    packet = parsed(build_tcp_datagram(A, B, 1, 2, ack=ack, flags=ACK,
                                       options=tcp_options(timestamps=(1, 2), sack=blocks)))
    assert packet.tcp.sack_edge == 0x40          # wrapped past 2**32, still the highest
    behind = parsed(build_tcp_datagram(A, B, 1, 2, ack=1000, flags=ACK,
                                       options=tcp_options(sack=[(10, 500)])))
    assert behind.tcp.sack_edge == 1000          # nothing beyond ack: the kernel keeps ack


def test_tcp_only_first_well_formed_sack_option_counts():
    first = b"\x05\x0a" + struct.pack("!II", 100, 200)
    second = b"\x05\x0a" + struct.pack("!II", 100, 900)
    packet = parsed(build_tcp_datagram(A, B, 1, 2, ack=50, flags=ACK,
                                       options=b"\x01\x01" + first + b"\x01\x01" + second))
    assert packet.tcp.sack_edge == 200


def test_malformed_tcp_options_stop_parsing_without_error():
    """Kernel: option length < 2 or past the option space ends the walk; no crash."""
    zero_length = b"\x03\x03\x05" + b"\x04\x00" + b"\x04\x02" + b"\x00"
    packet = parsed(build_tcp_datagram(A, B, 1, 2, flags=SYN, options=zero_length))
    assert (packet.tcp.wscale, packet.tcp.sack_perm) == (5, False)   # stopped at the bad one
    overlong = b"\x01\x01\x04\x02" + b"\x03\x09\x07\x00"
    packet = parsed(build_tcp_datagram(A, B, 1, 2, flags=SYN, options=overlong))
    assert (packet.tcp.wscale, packet.tcp.sack_perm) == (None, True)
    after_eol = b"\x00\x04\x02\x01"
    assert parsed(build_tcp_datagram(A, B, 1, 2, flags=SYN, options=after_eol)).tcp.sack_perm is False
    lone_kind = b"\x01\x01\x01\x03"            # window-scale kind with no room for its length
    assert parsed(build_tcp_datagram(A, B, 1, 2, flags=SYN, options=lone_kind)).tcp.wscale is None


def test_tcp_payload_length_and_flags():
    packet = parsed(build_tcp_datagram(A, B, 1, 2, seq=10, ack=20, flags=PSH | ACK,
                                       payload=b"hello", options=tcp_options(timestamps=(5, 6))))
    assert (packet.tcp.flags, packet.tcp.payload_len, packet.ip_len) == (PSH | ACK, 5, 57)


def test_truncated_tcp_header_is_an_l4_error_not_a_parse_error():
    """Spec 4.5: header shorter than 20 bytes -> the tracker says INVALID (and counts it)."""
    segment = build_tcp(A, B, 1234, 80, flags=SYN)[:12]
    packet = parsed(build_ipv4(A, B, IPPROTO_TCP, segment))
    assert packet.l4_error == "truncated tcp header"
    assert (packet.sport, packet.dport, packet.tcp) == (1234, 80, None)
    packet = parsed(build_ipv4(A, B, IPPROTO_TCP, b"\x04"))
    assert (packet.l4_error, packet.sport) == ("truncated tcp header", 0)


def test_tcp_data_offset_below_5_or_beyond_packet_is_an_l4_error():
    """Spec 4.5: data offset < 5 or beyond the packet -> INVALID."""
    for doff in (4, 6):
        packet = parsed(build_tcp_datagram(A, B, 1, 2, flags=SYN, data_offset=doff))
        assert packet.l4_error == "bad tcp data offset", doff
        assert packet.tcp is None


def test_tcp_checksum_checked_in_prerouting_only():
    """Spec 4.5: checksum verified only for PREROUTING packets; OUTPUT ones are never checked."""
    datagram = build_tcp_datagram(A, B, 1, 2, flags=SYN, checksum=0xBEEF)
    pre = parsed(datagram, PRE_ROUTING)
    assert (pre.tcp.checksum_ok, pre.l4_checksum_ok) == (False, False)
    out = parsed(datagram, LOCAL_OUT)
    assert (out.tcp.checksum_ok, out.l4_checksum_ok) == (True, True)


# -- UDP --------------------------------------------------------------------------

def test_udp_ports_and_length():
    packet = parsed(build_udp_datagram(A, B, 40002, 7777, b"hello"))
    assert (packet.proto, packet.sport, packet.dport, packet.udp_len) == (IPPROTO_UDP, 40002, 7777, 13)
    assert packet.l4_checksum_ok and packet.l4_error is None


def test_udp_length_field_beyond_packet_or_below_8_is_an_l4_error():
    """Spec 5.1: UDP length larger than the packet or < 8 -> INVALID."""
    assert parsed(build_udp_datagram(A, B, 1, 2, b"abc", length=12)).l4_error == "udp length"
    assert parsed(build_udp_datagram(A, B, 1, 2, b"abc", length=7)).l4_error == "udp length"
    assert parsed(build_udp_datagram(A, B, 1, 2, b"abc", length=9)).l4_error is None
    assert parsed(build_ipv4(A, B, IPPROTO_UDP, b"\x00\x01\x00\x02\x00")).l4_error == "truncated udp header"


def test_udp_checksum_zero_means_none_and_bad_one_fails_in_prerouting():
    """Spec 5.1: bad checksum INVALID only in PREROUTING and only if the field is non-zero."""
    assert parsed(build_udp_datagram(A, B, 1, 2, b"abc", checksum=0)).l4_checksum_ok
    bad = build_udp_datagram(A, B, 1, 2, b"abc", checksum=0x1111)
    assert parsed(bad, PRE_ROUTING).l4_checksum_ok is False
    assert parsed(bad, LOCAL_OUT).l4_checksum_ok is True


def test_udp_checksum_computing_to_zero_is_sent_as_ffff_and_verifies():
    """RFC 768: a computed 0 is transmitted as 0xFFFF; the receiver accepts it."""
    # Choose a 2-byte payload that makes the ones'-complement sum 0xFFFF.
    base = build_udp(A, B, 1000, 53, b"\x00\x00")
    partial_sum = ~int.from_bytes(base[6:8], "big") & 0xFFFF
    filler = (0xFFFF - partial_sum).to_bytes(2, "big")
    datagram = build_udp_datagram(A, B, 1000, 53, filler)
    assert datagram[26:28] == b"\xff\xff"
    assert parsed(datagram).l4_checksum_ok


# -- ICMP -------------------------------------------------------------------------

def test_icmp_echo_tuple_convention():
    """Spec 5.2: id is the 16 bits after the checksum; tuple dport = type << 8 | code."""
    packet = parsed(build_icmp_datagram(A, B, 8, 0, ident=0x1234, seq=1, payload=b"abcdefgh"))
    assert (packet.proto, packet.sport, packet.dport) == (IPPROTO_ICMP, 0x1234, 0x0800)
    icmp = packet.icmp
    assert (icmp.type, icmp.code, icmp.ident, icmp.inner, icmp.inner_bad) == (8, 0, 0x1234, None, False)
    assert icmp.checksum_ok


def test_icmp_id_taken_for_every_type():
    packet = parsed(build_icmp_datagram(A, B, 42, 7, ident=0xABCD))
    assert (packet.icmp.type, packet.icmp.ident, packet.dport) == (42, 0xABCD, 42 << 8 | 7)


def test_icmp_error_quotes_udp_tuple():
    """Port unreachable from B about A's UDP datagram: inner tuple as A sent it."""
    offending = build_udp_datagram(A, B, 43001, 7000, b"request data")
    packet = parsed(build_icmp_datagram(B, A, 3, 3, payload=offending[:28]))
    assert packet.icmp.inner == (A_INT, B_INT, IPPROTO_UDP, 43001, 7000)
    assert packet.icmp.inner_bad is False


def test_icmp_error_quotes_tcp_and_icmp_tuples():
    tcp = build_tcp_datagram(A, B, 41001, 6000, flags=SYN)
    assert parsed(build_icmp_datagram(B, A, 11, 0, payload=tcp[:28])).icmp.inner \
        == (A_INT, B_INT, IPPROTO_TCP, 41001, 6000)
    echo = build_icmp_datagram(A, B, 8, 0, ident=0x4321, seq=9)
    assert parsed(build_icmp_datagram(B, A, 3, 1, payload=echo[:28])).icmp.inner \
        == (A_INT, B_INT, IPPROTO_ICMP, 0x4321, 0x0800)
    gre = build_ipv4(A, B, 47, b"\x00" * 8)
    assert parsed(build_icmp_datagram(B, A, 3, 2, payload=gre[:28])).icmp.inner == (A_INT, B_INT, 47, 0, 0)


def test_icmp_error_with_inner_options_uses_inner_ihl():
    inner = build_ipv4(A, B, IPPROTO_UDP, build_udp(A, B, 5, 6, b"x"), options=b"\x01" * 4)
    assert parsed(build_icmp_datagram(B, A, 12, 0, payload=inner[:32])).icmp.inner \
        == (A_INT, B_INT, IPPROTO_UDP, 5, 6)


def test_icmp_error_quoting_non_first_fragment_is_inner_bad():
    """Spec 5.2: embedded non-first fragments -> INVALID."""
    fragment = build_ipv4(A, B, IPPROTO_UDP, b"\x00" * 8, ident=5, frag_offset=1480)
    icmp = parsed(build_icmp_datagram(B, A, 11, 1, payload=fragment)).icmp
    assert (icmp.inner, icmp.inner_bad) == (None, True)
    first = build_ipv4(A, B, IPPROTO_UDP, build_udp(A, B, 7, 8, b"data"), ident=5, mf=True)
    assert parsed(build_icmp_datagram(B, A, 11, 1, payload=first[:28])).icmp.inner \
        == (A_INT, B_INT, IPPROTO_UDP, 7, 8)


def test_icmp_error_with_truncated_quote_is_inner_bad():
    offending = build_udp_datagram(A, B, 1, 2, b"x")
    for cut in (0, 10, 19, 22):
        icmp = parsed(build_icmp_datagram(B, A, 3, 3, payload=offending[:cut])).icmp
        assert (icmp.inner, icmp.inner_bad) == (None, True), cut
    echo = build_icmp_datagram(A, B, 8, 0, ident=1)
    icmp = parsed(build_icmp_datagram(B, A, 3, 3, payload=echo[:26])).icmp
    assert icmp.inner_bad                     # inner ICMP needs its whole 8-byte header


def test_truncated_icmp_header_is_an_l4_error():
    packet = parsed(build_ipv4(A, B, IPPROTO_ICMP, build_icmp(8, 0, 1, 1)[:7]))
    assert packet.l4_error == "truncated icmp header"
    assert packet.icmp is None


def test_icmp_checksum_checked_in_prerouting_only():
    datagram = build_icmp_datagram(A, B, 8, 0, ident=1, checksum=0x0101)
    pre = parsed(datagram, PRE_ROUTING)
    assert (pre.icmp.checksum_ok, pre.l4_checksum_ok) == (False, False)
    assert parsed(datagram, LOCAL_OUT).icmp.checksum_ok


# -- real traffic and fuzzing --------------------------------------------------------

def test_real_syn_from_capture():
    """tcpdump -r veth_any_sll2.pcap: '10.99.0.1.40001 > 10.99.0.2.8080: Flags [S],
    seq 2876463339, win 64240, options [mss 1460,sackOK,TS val 36159569 ecr 0,nop,wscale 10]'."""
    with open(DATA / "veth_any_sll2.pcap", "rb") as f:
        packets = [parse_ipv4(d, hook) for _ts, d, hook in datagrams(read_capture(f), PRE_ROUTING)]
    syn = next(p for p in packets if isinstance(p, Packet) and p.tcp and p.tcp.flags == SYN)
    assert (syn.sport, syn.dport, syn.hook) == (40001, 8080, LOCAL_OUT)
    assert (syn.tcp.seq, syn.tcp.window, syn.tcp.wscale, syn.tcp.sack_perm) == (2876463339, 64240, 10, True)


def test_parser_never_raises_on_random_or_mutated_bytes():
    """Any input gives a Packet or a ParseError, and never through the catch-all."""
    rng = random.Random(20240611)
    seeds = [
        build_tcp_datagram(A, B, 1, 2, flags=SYN, options=tcp_options(mss=1, sack_perm=True, wscale=3)),
        build_tcp_datagram(A, B, 1, 2, flags=ACK, options=tcp_options(sack=[(1, 2), (3, 4)])),
        build_udp_datagram(A, B, 1, 2, b"abc"),
        build_icmp_datagram(B, A, 3, 3, payload=build_udp_datagram(A, B, 1, 2, b"x")[:28]),
        build_ipv4(A, B, 99, b"zz", options=b"\x01" * 4),
    ]
    inputs = [bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 80))) for _ in range(2000)]
    for _ in range(6000):
        data = bytearray(rng.choice(seeds))
        for _flip in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.getrandbits(8)
        if rng.random() < 0.3:
            del data[rng.randrange(len(data)):]
        if data and rng.random() < 0.5:
            data[0] = 0x40 | (data[0] & 0x0F)        # keep it IPv4 so the L4 code is reached
        inputs.append(bytes(data))
    reached_l4 = 0
    for data in inputs:
        for hook in (PRE_ROUTING, LOCAL_OUT):
            result = parse_ipv4(data, hook)
            assert isinstance(result, (Packet, ParseError))
            if isinstance(result, ParseError):
                assert not result.reason.startswith("parser error"), (data.hex(), result)
            elif result.proto in (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP):
                reached_l4 += 1
    assert reached_l4 > 1000
