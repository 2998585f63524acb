"""The chains in front of the state machine (engine/chains.py), on hand-made packets.

Real datagram bytes in cooked (SLL2) frames, as `tcpdump -i any` writes them, go through
Chains.feed_frame: the rules' counters, the per-packet results and the conntrack table
and stat counters say what each hook did.  The kernel comparison is tests/test_chains_kernel.py.
"""
from __future__ import annotations

import struct

from engine.build import (build_icmp, build_ipv4, build_tcp_datagram,
                          build_udp_datagram, ip_to_int)
from engine.chains import LOG_LINES_KEPT, Chains
from engine.ctstate import CtState
from engine.linklayer import LINKTYPE_LINUX_SLL2
from engine.packet import FIN, SYN
from engine.rules import Ruleset
from enginehelp import T0, lines, make_engine

HOST, PEER, OTHER = "10.0.0.1", "10.0.0.2", "10.0.9.9"
PACKET_HOST, PACKET_OUTGOING = 0, 4
ARPHRD_ETHER, ARPHRD_LOOPBACK = 1, 772
ETH0, LO = 2, 1


def cooked(datagram: bytes, ifindex: int = ETH0, outgoing: bool = False,
           loopback: bool = False) -> bytes:
    """An SLL2 frame: protocol, reserved, ifindex, device type, packet type, address."""
    return struct.pack("!HHIHBB8s", 0x0800, 0, ifindex,
                       ARPHRD_LOOPBACK if loopback else ARPHRD_ETHER,
                       PACKET_OUTGOING if outgoing else PACKET_HOST, 6, b"\x02" * 6) + datagram


def chains(rules: str, **engine_kwargs) -> Chains:
    return Chains(make_engine(**engine_kwargs), Ruleset.load_restore(rules), {ETH0: "eth0"})


def feed(ch: Chains, t: float, datagram: bytes, **kw):
    return ch.feed_frame(T0 + t, LINKTYPE_LINUX_SLL2, cooked(datagram, **kw))


def counters(ch: Chains) -> list:
    """[packets, ...] of every rule in save order, and the policies as `CHAIN:packets`."""
    out = []
    for line in ch.ruleset.save(counters=True).splitlines():
        if line.startswith("["):
            out.append(int(line[1:line.index(":")]))
        elif line.startswith(":") and not line.split()[1] == "-":
            out.append(f"{line.split()[0][1:]}:{line.split()[2][1:].split(':')[0]}")
    return out


def syn(src=PEER, dst=HOST, sport=40000, dport=22, flags=SYN):
    return build_tcp_datagram(src, dst, sport, dport, flags=flags, seq=100)


FILTER = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"


def test_new_packet_dropped_in_filter_leaves_no_entry_and_no_insert():
    ch = chains(FILTER + "-A INPUT -p tcp --dport 22 -m state --state NEW -j DROP\nCOMMIT\n")
    result = feed(ch, 0, syn())
    assert result.state == CtState.NEW and result.dropped
    assert lines(ch.engine, T0) == []
    stats = ch.engine.tracker.stats
    assert (stats["new"], stats["insert"], stats["delete"]) == (1, 0, 1)
    # The same packet to another port is accepted and its entry confirmed.
    accepted = feed(ch, 1, syn(dport=80))
    assert not accepted.dropped and stats["insert"] == 1 and len(lines(ch.engine, T0 + 1)) == 1
    assert counters(ch) == ["INPUT:1", "FORWARD:0", "OUTPUT:0", 1]


def test_notrack_in_raw_leaves_the_packet_untracked_without_entry():
    rules = ("*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
             "-A PREROUTING -p udp --dport 53 -j NOTRACK\nCOMMIT\n" + FILTER +
             "-A INPUT -m state --state UNTRACKED\n-A INPUT -m state --state NEW\nCOMMIT\n")
    ch = chains(rules)
    untracked = feed(ch, 0, build_udp_datagram(PEER, HOST, 5000, 53, b"q"))
    tracked = feed(ch, 1, build_udp_datagram(PEER, HOST, 5000, 54, b"q"))
    assert untracked.state == CtState.UNTRACKED and untracked.entry is None
    assert tracked.state == CtState.NEW
    assert ["dport=54" in line for line in lines(ch.engine, T0 + 1)] == [True]
    assert ch.engine.tracker.stats["searched"] + ch.engine.tracker.stats["new"] == 1
    # filter (the newest table saves first): UNTRACKED 1, NEW 1; raw: NOTRACK 1
    assert counters(ch) == ["INPUT:2", "FORWARD:0", "OUTPUT:0", 1, 1,
                            "PREROUTING:2", "OUTPUT:0", 1]


def test_reject_reply_is_related_to_its_cause_and_leaves_no_entry():
    rules = (FILTER + "-A INPUT -p tcp --dport 23 -j REJECT --reject-with tcp-reset\n"
             "-A INPUT -p udp -j REJECT\n"
             "-A OUTPUT -m conntrack --ctstate RELATED --ctdir REPLY --ctproto tcp\n"
             "-A OUTPUT -m conntrack --ctstate RELATED --ctdir REPLY --ctproto udp\n"
             "-A OUTPUT -m state ! --state RELATED\nCOMMIT\n")
    ch = chains(rules)
    cause = feed(ch, 0, syn(dport=23))
    assert cause.state == CtState.NEW and cause.dropped
    udp_cause = feed(ch, 1, build_udp_datagram(PEER, HOST, 5000, 9, b"x"))
    assert udp_cause.dropped
    assert ch.stats.replies_sent == 2
    assert counters(ch)[-3:] == [1, 1, 0]
    assert lines(ch.engine, T0 + 1) == []        # the causes' entries were never confirmed


def test_a_captured_reject_reply_is_the_engines_own():
    ch = chains(FILTER + "-A INPUT -p tcp --dport 23 -j REJECT --reject-with tcp-reset\n"
                "-A OUTPUT -p tcp\nCOMMIT\n")
    feed(ch, 0, syn(dport=23))
    assert ch.stats.replies_sent == 1
    sent = next(iter(ch._replies))
    copy = sent[:4] + b"\x12\x34" + sent[6:10] + b"\0\0" + sent[12:]   # another IP ID
    assert feed(ch, 0.001, copy, outgoing=True) is None
    assert ch.stats.captured_replies_skipped == 1
    assert counters(ch)[-1] == 1               # the OUTPUT rule counted the reply once


def test_invalid_packets_are_matched_by_state_invalid():
    rules = FILTER + "-A INPUT -m state --state INVALID -j DROP\n-A INPUT -m state --state NEW\nCOMMIT\n"
    ch = chains(rules)
    bad = feed(ch, 0, syn(flags=SYN | FIN))     # no TCP state accepts SYN+FIN: INVALID
    good = feed(ch, 1, syn())
    assert bad.state == CtState.INVALID and bad.dropped
    assert good.state == CtState.NEW and not good.dropped
    assert counters(ch)[-2:] == [1, 1]


def test_state_match_sees_the_state_conntrack_gave_and_raw_sees_none():
    rules = ("*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
             "-A PREROUTING -m state --state INVALID\n-A OUTPUT -m state --state INVALID\n"
             "COMMIT\n" + FILTER + "-A INPUT -m state --state ESTABLISHED\n"
             "-A OUTPUT -m conntrack --ctstate ESTABLISHED --ctdir REPLY\nCOMMIT\n")
    ch = chains(rules)
    feed(ch, 0, build_udp_datagram(PEER, HOST, 5000, 7, b"a"))
    feed(ch, 1, build_udp_datagram(HOST, PEER, 7, 5000, b"b"), outgoing=True)
    feed(ch, 2, build_udp_datagram(PEER, HOST, 5000, 7, b"c"))
    # filter sees ESTABLISHED (in and reply out); raw, before conntrack, no entry at all
    assert counters(ch) == ["INPUT:2", "FORWARD:0", "OUTPUT:1", 1, 1,
                            "PREROUTING:2", "OUTPUT:1", 2, 1]


def test_interfaces_name_the_cooked_index():
    rules = FILTER + "-A INPUT -i eth0\n-A INPUT -i lo\n-A OUTPUT -o eth0\n-A OUTPUT -o lo\nCOMMIT\n"
    ch = chains(rules)
    feed(ch, 0, build_udp_datagram(PEER, HOST, 5000, 7, b"a"))
    feed(ch, 1, build_udp_datagram(HOST, PEER, 7, 5000, b"b"), outgoing=True)
    feed(ch, 2, build_udp_datagram(PEER, HOST, 5000, 7, b"c"), ifindex=7)   # unnamed index
    assert counters(ch)[-4:] == [1, 0, 1, 0]


def test_loopback_packet_goes_out_and_back_in_with_its_entry():
    rules = (FILTER + "-A INPUT -i lo -m state --state NEW\n-A INPUT -i lo -m state --state INVALID\n"
             "-A OUTPUT -o lo -m state --state NEW\nCOMMIT\n")
    ch = chains(rules)
    result = feed(ch, 0, build_udp_datagram("127.0.0.1", "127.0.0.1", 5000, 7, b"a"),
                  ifindex=LO, loopback=True)
    assert result.state == CtState.NEW and not result.dropped
    stats = ch.engine.tracker.stats
    assert (stats["new"], stats["insert"]) == (1, 1)       # looked up once, at OUTPUT
    # OUTPUT finds it INVALID: no entry goes with it, PREROUTING looks it up again.
    feed(ch, 1, syn("127.0.0.1", "127.0.0.1", flags=SYN | FIN), ifindex=LO, loopback=True)
    assert stats["invalid"] == 2
    assert counters(ch)[-3:] == [1, 1, 1]


def test_loopback_drop_in_input_keeps_the_entry_output_confirmed():
    ch = chains(FILTER + "-A INPUT -i lo -j DROP\nCOMMIT\n")
    result = feed(ch, 0, build_udp_datagram("127.0.0.1", "127.0.0.1", 5000, 7, b"a"),
                  ifindex=LO, loopback=True)
    assert result.dropped and len(lines(ch.engine, T0)) == 1


def test_drop_in_raw_happens_before_conntrack():
    ch = chains("*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                "-A PREROUTING -p udp -j DROP\nCOMMIT\n")
    result = feed(ch, 0, build_udp_datagram(PEER, HOST, 5000, 7, b"a"))
    assert result.dropped and result.entry is None
    assert ch.engine.tracker.stats["new"] == 0 and lines(ch.engine, T0) == []


def test_marks_travel_between_hooks_and_connmark_stays_with_the_entry():
    rules = ("*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n"
             ":OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
             "-A PREROUTING -p udp --dport 7 -j MARK --set-mark 5\n"
             "-A INPUT -j CONNMARK --save-mark\n"
             "-A OUTPUT -j CONNMARK --restore-mark\nCOMMIT\n" + FILTER +
             "-A INPUT -m mark --mark 5\n-A OUTPUT -m mark --mark 5\n"
             "-A OUTPUT -m connmark --mark 5\nCOMMIT\n")
    ch = chains(rules)
    first = feed(ch, 0, build_udp_datagram(PEER, HOST, 5000, 7, b"a"))
    assert first.entry.mark == 5
    feed(ch, 1, build_udp_datagram(HOST, PEER, 7, 5000, b"b"), outgoing=True)
    assert counters(ch)[-3:] == [1, 1, 1]


def test_forward_for_a_destination_that_is_not_local():
    rules = FILTER + "-A INPUT -j DROP\n-A FORWARD -i eth0 -p udp\nCOMMIT\n"
    ch = chains(rules, local_addresses=[ip_to_int(HOST)])
    result = feed(ch, 0, build_udp_datagram(PEER, OTHER, 5000, 7, b"a"))
    assert not result.dropped and len(lines(ch.engine, T0)) == 1
    # (the FORWARD rule has no target: the packet falls off to the policy, counted there)
    assert counters(ch) == ["INPUT:0", "FORWARD:1", "OUTPUT:0", 0, 1]


def test_icmp_error_about_a_connection_is_related():
    rules = FILTER + "-A INPUT -p icmp -m state --state RELATED\nCOMMIT\n"
    ch = chains(rules)
    sent = build_udp_datagram(HOST, PEER, 5000, 7, b"a")
    feed(ch, 0, sent, outgoing=True)
    error = build_ipv4(PEER, HOST, 1, build_icmp(3, 3, payload=sent[:28]))
    result = feed(ch, 1, error)
    assert result.state == CtState.RELATED and counters(ch)[-1] == 1



def test_log_lines_go_to_the_sink_and_a_bounded_ring():
    seen = []
    ch = Chains(make_engine(), Ruleset.load_restore(
        FILTER + '-A INPUT -p udp -j LOG --log-prefix "in: " --log-level 6\nCOMMIT\n'),
        {ETH0: "eth0"}, log_sink=lambda level, line: seen.append((level, line)))
    for n in range(LOG_LINES_KEPT + 5):
        feed(ch, n * 0.001, build_udp_datagram(PEER, HOST, 5000, 7, b"a"))
    assert len(seen) == ch.stats.log_lines == LOG_LINES_KEPT + 5
    assert len(ch.stats.logs) == LOG_LINES_KEPT and ch.stats.logs[-1] == seen[-1]
    level, line = seen[0]
    assert level == 6 and line.startswith("in: IN=eth0 OUT= MAC=") and " SRC=10.0.0.2 " in line
