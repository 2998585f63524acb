"""The rules engine on hand-made packets: chain traversal (the seed text of the iptables
tutorial, chapter 6), counters, every match and target, the token bucket on a fake clock,
load errors with line numbers and atomic loads. No FUSE, no kernel, no sleeping."""
from __future__ import annotations

import struct

import pytest

from engine.rules import CONNTRACK_PRIORITY, RulePacket, Ruleset, RulesError, apply_command
from engine.rules.limit import CREDITS_PER_JIFFY, user2credits
from engine.rules.packet import ACK, RST, SYN
from ruleshelp import ip, ipv4_header, packet_from_datagram, tcp_bytes

A, B = "10.99.0.1", "10.99.0.2"


def tcp(flags=SYN, sport=40000, dport=22, payload=b"", options=b"", **fields) -> RulePacket:
    datagram = ipv4_header(B, A, 6, tcp_bytes(B, A, sport, dport, flags, payload=payload,
                                              options=options))
    fields.setdefault("ctstate", "NEW")
    return packet_from_datagram(datagram, in_iface=fields.pop("in_iface", "va"), **fields)


def udp(sport=40000, dport=53, payload=b"abc", **fields) -> RulePacket:
    body = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    fields.setdefault("ctstate", "NEW")
    fields.setdefault("in_iface", "va")
    return packet_from_datagram(ipv4_header(B, A, 17, body), **fields)


def icmp(icmp_type=8, code=0, **fields) -> RulePacket:
    body = struct.pack("!BBHHH", icmp_type, code, 0, 7, 1) + b"ping"
    fields.setdefault("ctstate", "NEW")
    fields.setdefault("in_iface", "va")
    return packet_from_datagram(ipv4_header(B, A, 1, body), **fields)


def load(filter_body: str, policy: str = "ACCEPT", chains: str = "") -> Ruleset:
    head = f"*filter\n:INPUT {policy} [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
    head += "".join(f":{c} - [0:0]\n" for c in chains.split())
    return Ruleset.load_restore(head + filter_body.strip() + "\nCOMMIT\n")


def counters(rs: Ruleset, table: str = "filter") -> list[str]:
    """'[p:b] -A ...' and ':CHAIN POLICY [p:b]' lines of one table."""
    return [l for l in rs.save(table=table).splitlines() if l[:1] in "[:"]


def verdict(rs: Ruleset, pkt: RulePacket, hook: str = "INPUT", now: float = 0.0) -> str:
    return rs.run_hook(hook, pkt, now).verdict


# -- traversal: the seed text -------------------------------------------------------------
def test_end_of_user_chain_returns_to_the_invoking_chain():
    rs = load("-A INPUT -j user\n-A INPUT -p tcp -j ACCEPT\n-A user -p udp -j DROP",
              policy="DROP", chains="user")
    pkt = tcp()
    assert verdict(rs, pkt) == "ACCEPT"
    assert counters(rs) == [":INPUT DROP [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
                            ":user - [0:0]", f"[1:{pkt.length}] -A INPUT -j user",
                            f"[1:{pkt.length}] -A INPUT -p tcp -j ACCEPT",
                            "[0:0] -A user -p udp -j DROP"]


def test_end_of_builtin_chain_applies_its_policy_and_counts_it():
    rs = load("-A INPUT -j user\n-A user -p udp -j ACCEPT", policy="DROP", chains="user")
    pkt = icmp()
    assert verdict(rs, pkt) == "DROP"
    assert counters(rs)[0] == f":INPUT DROP [1:{pkt.length}]"
    assert verdict(rs, udp()) == "ACCEPT"
    assert counters(rs)[0] == f":INPUT DROP [1:{pkt.length}]"       # not counted again


def test_return_in_a_user_chain_skips_its_rest():
    rs = load("-A INPUT -j user\n-A INPUT -j ACCEPT\n-A user -p tcp -j RETURN\n-A user -j DROP",
              policy="DROP", chains="user")
    assert verdict(rs, tcp()) == "ACCEPT"
    assert verdict(rs, udp()) == "DROP"
    assert counters(rs)[-2:] == [f"[1:{tcp().length}] -A user -p tcp -j RETURN",
                                 f"[1:{udp().length}] -A user -j DROP"]


def test_return_in_a_builtin_chain_applies_the_policy():
    rs = load("-A INPUT -p tcp -j RETURN\n-A INPUT -j ACCEPT", policy="DROP")
    assert verdict(rs, tcp()) == "DROP"
    assert verdict(rs, udp()) == "ACCEPT"
    assert counters(rs)[0] == f":INPUT DROP [1:{tcp().length}]"


def test_goto_returns_to_the_chain_that_called_the_chain_that_did_the_goto():
    rs = load("-A INPUT -j first\n-A INPUT -p tcp -j DROP\n-A INPUT -j ACCEPT\n"
              "-A first -g second\n-A first -j ACCEPT\n-A second -p udp -j RETURN",
              chains="first second")
    # tcp: INPUT -> first -> goto second -> end: back in INPUT after `-j first`, not in first
    assert verdict(rs, tcp()) == "DROP"
    # udp: a RETURN in second goes back to the same place; INPUT then accepts it
    assert verdict(rs, udp()) == "ACCEPT"
    lines = counters(rs)
    assert "[0:0] -A first -j ACCEPT" in lines
    assert f"[1:{tcp().length}] -A INPUT -p tcp -j DROP" in lines


def test_goto_from_a_builtin_chain_ends_in_its_policy():
    rs = load("-A INPUT -g g\n-A INPUT -j ACCEPT\n-A g -p udp -j ACCEPT", policy="DROP",
              chains="g")
    assert verdict(rs, tcp()) == "DROP"
    assert verdict(rs, udp()) == "ACCEPT"
    assert counters(rs)[0] == f":INPUT DROP [1:{tcp().length}]"
    assert "[0:0] -A INPUT -j ACCEPT" in counters(rs)


def test_three_deep_nesting_with_return():
    rs = load("-A INPUT -j one\n-A INPUT -j DROP\n"
              "-A one -j two\n-A one -p udp -j ACCEPT\n"
              "-A two -j three\n-A two -p tcp -j ACCEPT\n"
              "-A three -p tcp -j RETURN\n-A three -p udp -j RETURN\n-A three -j ACCEPT",
              chains="one two three")
    assert verdict(rs, tcp()) == "ACCEPT"          # three RETURNs to two, which accepts
    assert verdict(rs, udp()) == "ACCEPT"          # three -> two (no) -> one accepts udp
    assert verdict(rs, icmp()) == "ACCEPT"         # accepted in three
    lines = counters(rs)
    assert f"[3:{tcp().length + udp().length + icmp().length}] -A INPUT -j one" in lines
    assert f"[1:{tcp().length}] -A two -p tcp -j ACCEPT" in lines
    assert "[0:0] -A INPUT -j DROP" in lines


def test_rules_without_target_count_and_continue():
    rs = load("-A INPUT -p tcp\n-A INPUT -p tcp\n-A INPUT -p udp")
    pkt = tcp(payload=b"x" * 100)
    assert verdict(rs, pkt) == "ACCEPT"
    assert counters(rs)[3:] == [f"[1:{pkt.length}] -A INPUT -p tcp"] * 2 + ["[0:0] -A INPUT -p udp"]
    assert pkt.length == 140                                 # IP total length


def test_tables_run_in_priority_order_and_a_drop_stops_the_hook():
    rs = Ruleset.load_restore(
        "*mangle\n-A INPUT -p tcp -j MARK --set-mark 0x5\n-A INPUT -p udp -j DROP\nCOMMIT\n"
        "*filter\n-A INPUT -m mark --mark 0x5 -j DROP\n-A INPUT -p udp\nCOMMIT\n")
    v = rs.run_hook("INPUT", tcp(), 0)
    assert (v.verdict, v.mark) == ("DROP", 5)
    assert rs.run_hook("INPUT", udp(), 0).verdict == "DROP"
    assert "[0:0] -A INPUT -p udp" in counters(rs)        # filter never saw the udp packet


def test_forward_sees_both_interfaces_and_its_own_policy():
    rs = load("-A FORWARD -i va -o vb -p tcp -j ACCEPT\n-A FORWARD -o vb -j DROP")
    apply_command(rs, ["-P", "FORWARD", "DROP"])
    assert verdict(rs, tcp(out_iface="vb"), hook="FORWARD") == "ACCEPT"
    assert verdict(rs, udp(out_iface="vb"), hook="FORWARD") == "DROP"
    assert verdict(rs, udp(out_iface="vc"), hook="FORWARD") == "DROP"
    assert counters(rs)[1] == f":FORWARD DROP [1:{udp().length}]"
    assert verdict(rs, udp(out_iface="vc")) == "ACCEPT"        # INPUT is another chain


def test_run_hook_priority_window_splits_raw_from_the_rest():
    rs = Ruleset.load_restore("*raw\n-A PREROUTING -p udp -j NOTRACK\nCOMMIT\n"
                              "*mangle\n-A PREROUTING -p udp -j MARK --set-mark 1\nCOMMIT\n")
    before = rs.run_hook("PREROUTING", udp(ctstate="INVALID"), 0, before=CONNTRACK_PRIORITY)
    assert before.notrack and before.mark == 0
    after = rs.run_hook("PREROUTING", udp(ctstate="UNTRACKED"), 0, after=CONNTRACK_PRIORITY)
    assert not after.notrack and after.mark == 1


# -- matches --------------------------------------------------------------------------------
MATCH_CASES = [
    ("-p tcp", tcp(), True), ("-p 6", tcp(), True), ("-p udp", tcp(), False),
    ("! -p tcp", udp(), True), ("-p all", icmp(), True), ("-p icmp", icmp(), True),
    ("-s 10.99.0.0/24", tcp(), True), ("-s 10.99.0.1", tcp(), False),
    ("! -s 10.98.0.0/16", tcp(), True), ("-d 10.0.0.1/255.0.0.255", tcp(), True),
    ("-i va", tcp(), True), ("-i v+", tcp(), True), ("-i vb", tcp(), False), ("! -i lo", tcp(), True),
    ("-f", tcp(), False), ("! -f", tcp(), True), ("-f", tcp(fragment=True), True),
    ("-p tcp --dport 22", tcp(), True), ("-p tcp --dport 20:21", tcp(), False),
    ("-p tcp ! --dport 20:21", tcp(), True), ("-p tcp --sport 40000:", tcp(), True),
    ("-p tcp --dport 22", tcp(fragment=True), False),
    ("-p tcp --syn", tcp(SYN), True), ("-p tcp --syn", tcp(SYN | ACK), False),
    ("-p tcp ! --syn", tcp(ACK), True), ("-p tcp --tcp-flags SYN,ACK SYN,ACK", tcp(SYN | ACK), True),
    ("-p tcp --tcp-flags ALL NONE", tcp(0), True), ("-p tcp --tcp-flags RST RST", tcp(RST | ACK), True),
    ("-p tcp --tcp-option 2", tcp(options=b"\x02\x04\x05\xb4"), True),
    ("-p tcp --tcp-option 3", tcp(options=b"\x02\x04\x05\xb4"), False),
    ("-p udp --dport 53", udp(), True), ("-p udp --sport 53", udp(), False),
    ("-p icmp --icmp-type echo-request", icmp(8), True), ("-p icmp --icmp-type 8", icmp(0), False),
    ("-p icmp --icmp-type any", icmp(13), True), ("-p icmp --icmp-type port-unreachable", icmp(3, 3), True),
    ("-p icmp --icmp-type 3/1", icmp(3, 3), False), ("-p icmp --icmp-type destination-unreachable", icmp(3, 9), True),
    ("-p icmp ! --icmp-type 8", icmp(0), True),
    ("-m state --state NEW", tcp(), True), ("-m state --state ESTABLISHED,RELATED", tcp(), False),
    ("-m state --state RELATED", tcp(ctstate="RELATED"), True), ("-m state ! --state INVALID", tcp(), True),
    ("-m state --state UNTRACKED", tcp(ctstate="UNTRACKED"), True),
    ("-m state --state INVALID", tcp(ctstate="INVALID"), True),
    ("-m state --state NEW", tcp(ctstate=8 | 2), True),          # a bitmask passes through
    ("-m conntrack --ctstate NEW --ctproto tcp", tcp(ctproto=6, ct_orig=(0, 0, 0, 0)), True),
    ("-m conntrack --ctproto udp", tcp(ctproto=6, ct_orig=(0, 0, 0, 0)), False),
    ("-m conntrack --ctproto tcp", tcp(ctstate="INVALID"), False),   # no entry: only --ctstate
    ("-m conntrack --ctstate INVALID", tcp(ctstate="INVALID"), True),
    ("-m conntrack --ctorigsrc 10.99.0.2 --ctorigdstport 22",
     tcp(ct_orig=(ip(B), ip(A), 40000, 22), ct_reply=(ip(A), ip(B), 22, 40000)), True),
    ("-m conntrack --ctreplsrc 10.99.0.0/24 ! --ctrepldst 10.99.0.2",
     tcp(ct_orig=(ip(B), ip(A), 40000, 22), ct_reply=(ip(A), ip(B), 22, 40000)), False),
    ("-m conntrack --ctorigsrcport 40000:40010 --ctrepldstport 40000",
     tcp(ct_orig=(ip(B), ip(A), 40000, 22), ct_reply=(ip(A), ip(B), 22, 40000)), True),
    ("-m conntrack --ctstatus ASSURED", tcp(ctstatus=2 | 4, ct_orig=(0, 0, 0, 0)), True),
    ("-m conntrack ! --ctstatus SEEN_REPLY", tcp(ctstatus=8, ct_orig=(0, 0, 0, 0)), True),
    ("-m conntrack --ctdir REPLY", tcp(ctstate="ESTABLISHED", ctdir="reply", ct_orig=(0, 0, 0, 0)), True),
    ("-m conntrack --ctdir ORIGINAL", tcp(ctstate="ESTABLISHED", ctdir="reply", ct_orig=(0, 0, 0, 0)), False),
    ("-p tcp -m multiport --dports 1,20:30", tcp(), True), ("-p tcp -m multiport --sports 1,20:30", tcp(), False),
    ("-p tcp -m multiport --ports 40000", tcp(), True), ("-p tcp -m multiport ! --ports 22", tcp(), False),
    ("-m comment --comment \"anything\"", tcp(), True),
    ("-m mark --mark 0x4/0x4", tcp(mark=0x6), True), ("-m mark --mark 0x4", tcp(mark=0x6), False),
    ("-m mark ! --mark 0x0", tcp(mark=1), True),
    ("-m connmark --mark 0x7", tcp(ctmark=7, ct_orig=(0, 0, 0, 0)), True),
    ("-m connmark ! --mark 0x7", tcp(ctstate="INVALID", ctmark=0), False),  # no entry: never
]


@pytest.mark.parametrize("spec,pkt,hit", MATCH_CASES, ids=[c[0] for c in MATCH_CASES])
def test_match(spec, pkt, hit):
    rs = load(f"-A INPUT {spec} -j DROP")
    assert verdict(rs, pkt) == ("DROP" if hit else "ACCEPT")


def test_multiple_addresses_expand_into_one_rule_each():
    rs = load("-A INPUT -s 10.99.0.2,10.98.0.0/16 -d 10.99.0.1,10.99.0.3 -j DROP")
    assert [l.split("] ", 1)[1] for l in counters(rs)[3:]] == [
        "-A INPUT -s 10.99.0.2/32 -d 10.99.0.1/32 -j DROP",
        "-A INPUT -s 10.99.0.2/32 -d 10.99.0.3/32 -j DROP",
        "-A INPUT -s 10.98.0.0/16 -d 10.99.0.1/32 -j DROP",
        "-A INPUT -s 10.98.0.0/16 -d 10.99.0.3/32 -j DROP"]
    assert verdict(rs, tcp()) == "DROP"


def test_limit_is_xt_limits_token_bucket_in_jiffies():
    rs = load("-A INPUT -m limit --limit 3/min --limit-burst 3 -j DROP")
    cost = user2credits(10000 * 60 // 3)
    assert cost == 20 * 250 * CREDITS_PER_JIFFY          # one packet per 20 s of jiffies
    seen = [verdict(rs, icmp(), now=t) for t in (100.0, 100.0, 100.0, 100.0)]
    assert seen == ["DROP", "DROP", "DROP", "ACCEPT"]    # the burst, then empty
    assert verdict(rs, icmp(), now=119.996) == "ACCEPT"  # 4999 jiffies: one credit short
    assert verdict(rs, icmp(), now=120.0) == "DROP"      # 5000 jiffies since the last refill
    assert verdict(rs, icmp(), now=120.0) == "ACCEPT"
    # an hour idle refills the bucket only to its cap: the burst again, no more
    assert [verdict(rs, icmp(), now=3720.0) for _ in range(4)] == ["DROP"] * 3 + ["ACCEPT"]


def test_each_load_gets_fresh_buckets():
    text = "*filter\n-A INPUT -m limit --limit 1/hour --limit-burst 1 -j DROP\nCOMMIT\n"
    rs = Ruleset.load_restore(text)
    assert [verdict(rs, icmp()), verdict(rs, icmp())] == ["DROP", "ACCEPT"]
    assert verdict(rs.restore(text), icmp()) == "DROP"


# -- targets ----------------------------------------------------------------------------
def test_mark_target_forms():
    rs = Ruleset.load_restore(
        "*mangle\n-A PREROUTING -j MARK --set-mark 0xf0\n-A PREROUTING -j MARK --and-mark 0x30\n"
        "-A PREROUTING -j MARK --or-mark 0x1\n-A PREROUTING -j MARK --xor-mark 0x3\n"
        "-A PREROUTING -j MARK --set-xmark 0x100/0x100\nCOMMIT\n")
    assert rs.run_hook("PREROUTING", tcp(mark=0xffff), 0).mark == ((0x30 | 1) ^ 3) | 0x100


def test_connmark_save_restore_and_set():
    rs = Ruleset.load_restore(
        "*mangle\n-A PREROUTING -j CONNMARK --restore-mark\n"
        "-A PREROUTING -m mark --mark 0 -j MARK --set-mark 0x7\n"
        "-A PREROUTING -j CONNMARK --save-mark --mask 0xff\n"
        "-A INPUT -j CONNMARK --set-mark 0x100/0x100\nCOMMIT\n")
    entry = dict(ct_orig=(0, 0, 0, 0))
    first = rs.run_hook("PREROUTING", tcp(**entry), 0)
    assert (first.mark, first.ctmark) == (7, 7)
    later = rs.run_hook("PREROUTING", tcp(ctstate="ESTABLISHED", ctmark=0x207, **entry), 0)
    assert (later.mark, later.ctmark) == (0x207, 0x207)
    assert rs.run_hook("INPUT", tcp(ctmark=1, **entry), 0).ctmark == 0x101
    untracked = rs.run_hook("PREROUTING", tcp(ctstate="UNTRACKED", ctmark=0), 0)
    assert (untracked.mark, untracked.ctmark) == (7, 0)          # no entry: CONNMARK does nothing


def test_notrack_marks_the_packet_untracked_for_the_rest_of_raw():
    rs = Ruleset.load_restore("*raw\n-A PREROUTING -p udp -j CT --notrack\n"
                              "-A PREROUTING -m state --state UNTRACKED -j MARK --set-mark 9\n"
                              "-A OUTPUT -j NOTRACK\nCOMMIT\n")
    v = rs.run_hook("PREROUTING", udp(ctstate="INVALID"), 0)
    assert (v.verdict, v.notrack, v.mark) == ("ACCEPT", True, 9)
    assert not rs.run_hook("PREROUTING", tcp(ctstate="INVALID"), 0).notrack
    assert rs.run_hook("OUTPUT", tcp(ctstate="INVALID"), 0).notrack


def test_reject_tcp_reset_reply_bytes():
    rs = load("-A INPUT -p tcp -j REJECT --reject-with tcp-reset")
    v = rs.run_hook("INPUT", tcp(SYN, payload=b"abc"), 0)
    assert v.verdict == "DROP" and len(v.rejects) == 1
    reply = v.rejects[0]
    assert reply[:20] == ipv4_header(A, B, 6, b"\0" * 20, ident=0)[:10] + reply[10:12] + \
        bytes(map(int, A.split("."))) + bytes(map(int, B.split(".")))
    sport, dport, seq, ack, off, flags, window = struct.unpack_from("!HHIIBBH", reply, 20)
    assert (sport, dport, seq, ack, off >> 4, flags, window) == (22, 40000, 0, 1000 + 1 + 3, 5, RST | ACK, 0)
    acked = load("-A INPUT -p tcp -j REJECT --reject-with tcp-reset").run_hook(
        "INPUT", packet_from_datagram(ipv4_header(B, A, 6, tcp_bytes(B, A, 40000, 22, ACK, 5, 777))), 0)
    assert struct.unpack_from("!IIBB", acked.rejects[0], 24) == (777, 0, 5 << 4, RST)
    rst = rs.run_hook("INPUT", tcp(RST), 0)
    assert rst.verdict == "DROP" and rst.rejects == []            # no reset for a reset


@pytest.mark.parametrize("kind,code", [("icmp-port-unreachable", 3), ("icmp-net-unreachable", 0),
                                       ("icmp-host-unreachable", 1), ("icmp-proto-unreachable", 2),
                                       ("icmp-net-prohibited", 9), ("icmp-host-prohibited", 10),
                                       ("icmp-admin-prohibited", 13)])
def test_reject_icmp_reply_bytes(kind, code):
    rs = load(f"-A INPUT -j REJECT --reject-with {kind}")
    pkt = udp(payload=b"q" * 1000)
    pkt.raw = pkt.raw[:1] + b"\x3d" + pkt.raw[2:]     # only TOS bits 0x1E survive, under 0xC0
    reply = rs.run_hook("INPUT", pkt, 0).rejects[0]
    assert len(reply) == 576                                  # cut to the RFC 1812 size
    assert reply[1] == 0xDC and reply[6:8] == b"\0\0" and reply[8] == 64
    assert reply[20:22] == bytes([3, code]) and reply[28:] == pkt.raw[:548]


def test_no_icmp_error_about_an_icmp_error():
    rs = load("-A INPUT -j REJECT")
    assert rs.run_hook("INPUT", icmp(3, 3), 0).rejects == []
    assert len(rs.run_hook("INPUT", icmp(8), 0).rejects) == 1


def test_log_line_format():
    rs = load('-A INPUT -p tcp -j LOG --log-prefix "in: " --log-level 7 --log-tcp-sequence '
              '--log-tcp-options\n-A INPUT -p udp -j LOG\n-A INPUT -p icmp -j LOG --log-uid')
    mac = bytes.fromhex("aabbccddeeff112233445566" "0800")
    v = rs.run_hook("INPUT", tcp(SYN, options=b"\x02\x04\x05\xb4", link_header=mac, mark=5), 0)
    assert v.logs == [(7, "in: IN=va OUT= MAC=aa:bb:cc:dd:ee:ff:11:22:33:44:55:66:08:00 "
                          "SRC=10.99.0.2 DST=10.99.0.1 LEN=44 TOS=0x00 PREC=0x00 TTL=64 ID=1 DF "
                          "PROTO=TCP SPT=40000 DPT=22 SEQ=1000 ACK=0 WINDOW=512 RES=0x00 SYN "
                          "URGP=0 OPT (020405B4) MARK=0x5 ")]
    v = rs.run_hook("INPUT", udp(in_iface=""), 0)
    assert v.logs == [(4, "IN= OUT= SRC=10.99.0.2 DST=10.99.0.1 LEN=31 TOS=0x00 PREC=0x00 "
                          "TTL=64 ID=1 DF PROTO=UDP SPT=40000 DPT=53 LEN=11 ")]
    v = rs.run_hook("INPUT", icmp(uid=1000, gid=100, in_iface=""), 0)
    assert v.logs == [(4, "IN= OUT= SRC=10.99.0.2 DST=10.99.0.1 LEN=32 TOS=0x00 PREC=0x00 "
                          "TTL=64 ID=1 DF PROTO=ICMP TYPE=8 CODE=0 ID=7 SEQ=1 UID=1000 GID=100 ")]


def test_log_of_a_truncated_header_says_incomplete():
    pkt = tcp(in_iface="")
    pkt.raw = pkt.raw[:30]
    line = load("-A INPUT -j LOG").run_hook("INPUT", pkt, 0).logs[0][1]
    assert line.endswith("DF PROTO=TCP INCOMPLETE [10 bytes] ")


def test_log_of_an_icmp_error_quotes_the_inner_datagram():
    inner = ipv4_header(A, B, 17, struct.pack("!HHHH", 5555, 6666, 10, 0) + b"zz")
    body = struct.pack("!BBHI", 3, 3, 0, 0) + inner
    pkt = packet_from_datagram(ipv4_header(B, A, 1, body, tos=0xC0), ctstate="RELATED")
    line = load("-A INPUT -j LOG").run_hook("INPUT", pkt, 0).logs[0][1]
    assert line.endswith("PROTO=ICMP TYPE=3 CODE=3 [SRC=10.99.0.1 DST=10.99.0.2 LEN=30 TOS=0x00 "
                         "PREC=0x00 TTL=64 ID=1 DF PROTO=UDP SPT=5555 DPT=6666 LEN=10 ] ")
    assert "TOS=0x00 PREC=0xC0" in line


# -- loading ---------------------------------------------------------------------------
@pytest.mark.parametrize("text,line,message", [
    ("*filter\n-A INPUT -m foo -j ACCEPT\nCOMMIT\n", 2, "Couldn't load match `foo'"),
    ("*filter\n\n# comment\n-A INPUT -j FOO\nCOMMIT\n", 4, "Couldn't load target `FOO'"),
    ("*filter\n-A INPUT -p tcp --bogus 1\nCOMMIT\n", 2, 'unknown option "--bogus"'),
    ("*nat\n-A PREROUTING -j ACCEPT\nCOMMIT\n", 1, "nat is not emulated"),
    ("*bogus\nCOMMIT\n", 1, "unable to initialize table 'bogus'"),
    ("*filter\n:INPUT BLAH [0:0]\nCOMMIT\n", 2, "Bad policy name"),
    ("*filter\n-A INPUT -j ACCEPT\n", 3, "COMMIT expected"),
    # a loop is found when the table is committed, as iptables-restore finds it
    ("*filter\n:a - [0:0]\n-A INPUT -j a\n-A a -j a\nCOMMIT\n", 5, "INPUT -> a -> a"),
    # what the kernel refuses is found at COMMIT (iptables-restore: "line 3 failed"); the
    # detail names the rule's line
    ("*filter\n-A INPUT -j REJECT --reject-with tcp-reset\nCOMMIT\n", 3, "line 2: REJECT --reject-with tcp-reset needs -p tcp"),
    ("*mangle\n-A INPUT -j REJECT\nCOMMIT\n", 3, "line 2: REJECT is only valid in the filter table"),
    ("*filter\n-A OUTPUT -i lo\nCOMMIT\n", 2, "Can't use -i with OUTPUT"),
    ("-A INPUT -j ACCEPT\n", 1, "no table"),
])
def test_load_errors_name_the_line(text, line, message):
    with pytest.raises(RulesError) as caught:
        Ruleset.load_restore(text)
    assert caught.value.line == line and message in caught.value.message + caught.value.detail
    assert f"line {line}:" in str(caught.value)


def test_a_failed_restore_leaves_the_old_ruleset_whole():
    rs = Ruleset.load_restore("*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp -j ACCEPT\nCOMMIT\n")
    rs.run_hook("INPUT", tcp(), 0)
    before = rs.save()
    with pytest.raises(RulesError):
        rs.restore("*filter\n-A INPUT -p udp -j ACCEPT\n-A INPUT -m nope\nCOMMIT\n")
    with pytest.raises(RulesError):
        rs.restore("*raw\n-A PREROUTING -j NOTRACK\nCOMMIT\n*nat\nCOMMIT\n")
    assert rs.save() == before and "raw" not in rs.tables


def test_restore_flushes_named_tables_keeps_policies_and_honours_noflush():
    rs = Ruleset.load_restore("*filter\n:INPUT DROP [0:0]\n:u - [0:0]\n-A INPUT -j u\nCOMMIT\n")
    flushed = rs.restore("*filter\n-A INPUT -p udp\nCOMMIT\n")
    assert flushed.save(counters=False) == ("*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n"
                                            ":OUTPUT ACCEPT [0:0]\n-A INPUT -p udp\nCOMMIT\n")
    kept = rs.restore("*filter\n-A INPUT -p udp\nCOMMIT\n", noflush=True)
    assert "-A INPUT -j u\n-A INPUT -p udp\n" in kept.save(counters=False)


def test_counters_are_restored_only_when_asked():
    text = "*filter\n:INPUT ACCEPT [5:500]\n[3:300] -A INPUT -j ACCEPT\n-A INPUT -c 7 70 -j DROP\nCOMMIT\n"
    without = Ruleset.load_restore(text).save()
    assert "[0:0] -A INPUT -j ACCEPT" in without and ":INPUT ACCEPT [0:0]" in without
    assert "[7:70] -A INPUT -j DROP" in without                 # -c is always honoured
    with_counters = Ruleset.load_restore(text, counters=True).save()
    assert ":INPUT ACCEPT [5:500]" in with_counters and "[7:70] -A INPUT -j DROP" in with_counters


def test_zero_and_commands_change_counters_and_rules():
    rs = load("-A INPUT -p tcp -j ACCEPT")
    rs.run_hook("INPUT", tcp(), 0)
    apply_command(rs, ["-Z"])
    assert counters(rs)[3] == "[0:0] -A INPUT -p tcp -j ACCEPT"
    apply_command(rs, ["-I", "INPUT", "-p", "udp", "-j", "DROP"])
    assert verdict(rs, udp()) == "DROP"
    apply_command(rs, ["-D", "INPUT", "-p", "udp", "-j", "DROP"])
    assert verdict(rs, udp()) == "ACCEPT"
