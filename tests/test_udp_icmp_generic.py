"""UDP, ICMP and generic tracking, checked against the kernel observations of spec §5 and §10."""
from engine.build import build_udp_datagram
from engine.ctstate import CtState

from enginehelp import T0, icmp, icmp_error_about, lines, make_engine, udp


def test_udp_request_reply_within_two_seconds_stays_unassured_with_30s():
    """spec §10: request + reply -> `udp 17 29 ... (no flags)`."""
    eng = make_engine("linux")
    assert udp(eng, T0, "127.0.0.1", "127.0.0.1", 40003, 7777).state == CtState.NEW
    v = udp(eng, T0 + 0.01, "127.0.0.1", "127.0.0.1", 7777, 40003)
    assert (v.state, v.reply) == (CtState.ESTABLISHED, True)
    assert lines(eng, T0 + 1.0) == [
        "ipv4     2 udp      17 29 src=127.0.0.1 dst=127.0.0.1 sport=40003 dport=7777 "
        "src=127.0.0.1 dst=127.0.0.1 sport=7777 dport=40003 mark=0 zone=0 use=2"]


def test_udp_exchange_after_two_seconds_becomes_assured_stream():
    """spec §10: another exchange 2.5 s later -> `udp 17 119 ... [ASSURED]` (stream 120 s)."""
    eng = make_engine("linux")
    udp(eng, T0, "127.0.0.1", "127.0.0.1", 40003, 7777)
    udp(eng, T0 + 0.01, "127.0.0.1", "127.0.0.1", 7777, 40003)
    assert udp(eng, T0 + 2.5, "127.0.0.1", "127.0.0.1", 40003, 7777).state == CtState.ESTABLISHED
    (line,) = lines(eng, T0 + 2.6)
    assert " 17 119 " in line and line.endswith("[ASSURED] mark=0 zone=0 use=2")


def test_tutorial_udp_is_assured_by_the_first_packet_after_the_reply():
    """ip_conntrack: once replied, every packet gets the 180 s stream timeout and ASSURED."""
    eng = make_engine("tutorial")
    udp(eng, T0, "10.0.0.1", "10.0.0.2", 137, 1025)
    udp(eng, T0 + 0.1, "10.0.0.2", "10.0.0.1", 1025, 137)
    udp(eng, T0 + 0.2, "10.0.0.1", "10.0.0.2", 137, 1025)
    (line,) = lines(eng, T0 + 0.3, "net/ip_conntrack")
    assert line == ("udp      17 179 src=10.0.0.1 dst=10.0.0.2 sport=137 dport=1025 "
                    "src=10.0.0.2 dst=10.0.0.1 sport=1025 dport=137 [ASSURED] use=1")


def test_unanswered_udp_counts_down_and_expires_at_its_timeout():
    """spec §9: one UDP entry sampled each second reads 30, 29, ..., and is gone at 30 s."""
    eng = make_engine("linux")
    udp(eng, T0, "127.0.0.1", "127.0.0.1", 40002, 5353)
    seconds = [int(lines(eng, T0 + dt)[0].split()[4]) for dt in (0.001, 1.001, 3.5)]
    assert seconds == [29, 28, 26]
    eng.advance(T0 + 30.0)
    assert lines(eng, T0 + 30.0) == [] and eng.count == 0


def test_repeated_unanswered_udp_is_new_every_time_and_refreshes():
    eng = make_engine("linux")
    udp(eng, T0, "127.0.0.1", "127.0.0.1", 40002, 5353)
    assert udp(eng, T0 + 20, "127.0.0.1", "127.0.0.1", 40002, 5353).state == CtState.NEW
    assert "[UNREPLIED]" in lines(eng, T0 + 45)[0]


def test_udp_knob_write_applies_to_the_next_packet():
    eng = make_engine("linux")
    assert eng.knobs.write_text("udp_timeout", b"5\n") == 2
    udp(eng, T0, "127.0.0.1", "127.0.0.1", 1, 2)
    assert lines(eng, T0 + 0.5)[0].split()[4] == "4"


def test_icmp_echo_entry_is_kept_until_timeout_in_linux():
    """spec §5.2 (observed): 26 s left 3 s after the reply; reply type 0, same id."""
    eng = make_engine("linux")
    assert icmp(eng, T0, "127.0.0.1", "127.0.0.1", 8, ident=4660, seq=1).state == CtState.NEW
    v = icmp(eng, T0 + 0.001, "127.0.0.1", "127.0.0.1", 0, ident=4660, seq=1)
    assert (v.state, v.reply) == (CtState.ESTABLISHED, True)
    assert lines(eng, T0 + 3.5) == [
        "ipv4     2 icmp     1 26 src=127.0.0.1 dst=127.0.0.1 type=8 code=0 id=4660 "
        "src=127.0.0.1 dst=127.0.0.1 type=0 code=0 id=4660 mark=0 zone=0 use=2"]


def test_icmp_request_types_pair_with_their_replies():
    """Timestamp 13->14, information 15->16, address mask 17->18 (observed for 8, 13, 15, 17)."""
    eng = make_engine("linux")
    for req in (13, 15, 17):
        icmp(eng, T0, "127.0.0.1", "127.0.0.2", req, ident=req)
    text = "\n".join(lines(eng, T0 + 1))
    for req, rep in ((13, 14), (15, 16), (17, 18)):
        assert f"type={req} code=0 id={req} [UNREPLIED] src=127.0.0.2 dst=127.0.0.1 type={rep}" in text


def test_tutorial_answered_ping_disappears_at_once():
    """ip_conntrack counts requests against replies and deletes the entry at zero."""
    eng = make_engine("tutorial")
    icmp(eng, T0, "192.168.1.6", "192.168.1.10", 8, ident=33029)
    assert lines(eng, T0 + 1, "net/ip_conntrack") == [
        "icmp     1 29 src=192.168.1.6 dst=192.168.1.10 type=8 code=0 id=33029 [UNREPLIED] "
        "src=192.168.1.10 dst=192.168.1.6 type=0 code=0 id=33029 use=1"]
    icmp(eng, T0 + 1.1, "192.168.1.10", "192.168.1.6", 0, ident=33029)
    assert eng.count == 0


def test_echo_reply_without_request_is_invalid():
    """spec §10: echo reply without request -> INVALID (invalid+1)."""
    eng = make_engine("linux")
    assert icmp(eng, T0, "127.0.0.1", "127.0.0.1", 0, ident=9).state == CtState.INVALID
    assert eng.tracker.stats["invalid"] == 1 and eng.count == 0


def test_icmp_type_above_18_is_invalid_and_counted_as_icmp_error():
    eng = make_engine("linux")
    for t in (19, 42):
        assert icmp(eng, T0, "127.0.0.1", "127.0.0.1", t).state == CtState.INVALID
    assert eng.tracker.stats["icmp_error"] == 2 and eng.tracker.stats["invalid"] == 0


def test_port_unreachable_quoting_a_udp_flow_is_related_reply_and_changes_nothing():
    """spec §10: ICMP 3/3 from B quoting A's datagram -> RELATED reply; entry stays UNREPLIED."""
    eng = make_engine("linux")
    request = build_udp_datagram("127.0.0.1", "127.0.0.2", 43001, 7000, b"hello")
    eng.feed_datagram(T0, request, 3)
    before = lines(eng, T0 + 1)
    v = icmp_error_about(eng, T0 + 1, "127.0.0.2", "127.0.0.1", request)
    assert (v.state, v.reply) == (CtState.RELATED, True)
    assert lines(eng, T0 + 1) == before and "[UNREPLIED]" in before[0]


def test_time_exceeded_from_a_third_host_is_related():
    eng = make_engine("linux")
    request = build_udp_datagram("127.0.0.1", "127.0.0.2", 43001, 7000, b"hello")
    eng.feed_datagram(T0, request, 3)
    v = icmp_error_about(eng, T0 + 1, "127.0.0.3", "127.0.0.1", request, 11, 0)
    assert (v.state, v.reply) == (CtState.RELATED, True)


def test_icmp_error_about_unknown_flow_or_wrong_outer_destination_is_invalid():
    """spec §10: unknown flow -> INVALID (icmp_error+1); outer daddr != flow dst -> INVALID."""
    eng = make_engine("linux")
    request = build_udp_datagram("127.0.0.1", "127.0.0.2", 43001, 7000, b"hello")
    assert icmp_error_about(eng, T0, "127.0.0.2", "127.0.0.1", request).state == CtState.INVALID
    eng.feed_datagram(T0, request, 3)
    assert icmp_error_about(eng, T0, "127.0.0.2", "127.0.0.9", request).state == CtState.INVALID
    assert eng.tracker.stats["icmp_error"] == 2


def test_tutorial_counts_related_icmp_errors_in_error_and_invalid():
    """spec §2: in 2.6 a matched ICMP error also increments icmp_error and invalid."""
    eng = make_engine("tutorial")
    request = build_udp_datagram("10.0.0.1", "10.0.0.2", 43001, 7000, b"hello")
    eng.feed_datagram(T0, request, 3)
    assert icmp_error_about(eng, T0, "10.0.0.2", "10.0.0.1", request).state == CtState.RELATED
    assert (eng.tracker.stats["icmp_error"], eng.tracker.stats["invalid"]) == (1, 1)


def test_generic_protocol_is_one_entry_per_address_pair_never_assured():
    """spec §5.3 (observed protocol 253): `unknown  253 599 ...`, replies clear UNREPLIED."""
    from engine.build import build_ipv4
    eng = make_engine("linux")
    assert eng.feed_datagram(T0, build_ipv4("127.0.0.1", "127.0.0.1", 253, b"abc"), 3).state == CtState.NEW
    assert lines(eng, T0 + 0.5) == [
        "ipv4     2 unknown  253 599 src=127.0.0.1 dst=127.0.0.1 [UNREPLIED] "
        "src=127.0.0.1 dst=127.0.0.1 mark=0 zone=0 use=2"]
    eng.feed_datagram(T0 + 1, build_ipv4("10.0.0.2", "10.0.0.1", 47, b"gre"), 3)
    v = eng.feed_datagram(T0 + 2, build_ipv4("10.0.0.1", "10.0.0.2", 47, b"gre"), 3)
    assert (v.state, v.reply) == (CtState.ESTABLISHED, True)
    gre = [l for l in lines(eng, T0 + 2.5) if " 47 " in l][0]
    assert "[UNREPLIED]" not in gre and "[ASSURED]" not in gre


def test_truncated_udp_header_is_invalid_and_counted():
    from engine.build import build_ipv4
    eng = make_engine("linux")
    v = eng.feed_datagram(T0, build_ipv4("127.0.0.1", "127.0.0.1", 17, b"\x00\x01\x00"), 3)
    assert v.state == CtState.INVALID and eng.tracker.stats["invalid"] == 1 and eng.count == 0


def test_garbage_datagrams_never_raise_and_are_counted():
    import random
    eng = make_engine("linux")
    rng = random.Random(7)
    for i in range(2000):
        data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 80)))
        if data:
            data = bytes([0x45]) + data[1:]
        eng.feed_datagram(T0 + i * 0.001, data, rng.choice((0, 3)))
    assert eng.malformed + eng.tracker.stats["invalid"] > 0


def test_linux_tracks_gre_with_keys_and_fixed_timeouts():
    """Observed on 6.18 (tests/data/kernel/gre_proto47): plain GRE twice and one back ->
    `gre 47 29 timeout=30, stream_timeout=180 src=... srckey=0x0 dstkey=0x0 ...`, unassured."""
    from engine.build import build_ipv4
    eng = make_engine("linux")
    gre = b"\x00\x00\x08\x00"                     # version 0, carrying IPv4
    eng.feed_datagram(T0, build_ipv4("127.0.0.1", "127.0.0.2", 47, gre), 3)
    eng.feed_datagram(T0 + 0.1, build_ipv4("127.0.0.1", "127.0.0.2", 47, gre), 3)
    v = eng.feed_datagram(T0 + 0.2, build_ipv4("127.0.0.2", "127.0.0.1", 47, gre), 3)
    assert (v.state, v.reply) == (CtState.ESTABLISHED, True)
    assert lines(eng, T0 + 0.5) == [
        "ipv4     2 gre      47 29 timeout=30, stream_timeout=180 src=127.0.0.1 dst=127.0.0.2 "
        "srckey=0x0 dstkey=0x0 src=127.0.0.2 dst=127.0.0.1 srckey=0x0 dstkey=0x0 "
        "mark=0 zone=0 use=2"]
    # After the reply, the stream timeout applies and the entry is assured.
    eng.feed_datagram(T0 + 1, build_ipv4("127.0.0.1", "127.0.0.2", 47, gre), 3)
    assert lines(eng, T0 + 1.5)[0].split()[4] == "179" and "[ASSURED]" in lines(eng, T0 + 1.5)[0]
    # ip_conntrack had no GRE tracker in its core: the tutorial profile lists it as unknown.
    old = make_engine("tutorial")
    old.feed_datagram(T0, build_ipv4("127.0.0.1", "127.0.0.2", 47, gre), 3)
    assert lines(old, T0 + 0.5, "net/ip_conntrack")[0].startswith("unknown  47 599 src=127.0.0.1")
