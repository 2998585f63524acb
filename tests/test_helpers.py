"""Conntrack helpers and expectations, engine only (no FUSE): FTP, TFTP and IRC DCC
conversations as real datagrams through the engine on a fake clock, and the FTP
command parser on its own.  Kernel facts (checked in a namespace of the 6.18 kernel):
the first line of each direction is never read; `PORT 127,0,0,1,300,10` expects port
11274 (u16 arithmetic); a command that starts but does not parse drops its segment."""
from __future__ import annotations

import ipaddress

import pytest

from engine.ctstate import CtState
from engine.entry import ORIGINAL, REPLY
from engine.chains import Chains
from engine.helpers import ftp, irc
from engine.linklayer import LINKTYPE_RAW
from engine.rules import Ruleset, apply_command
from engine.rules.errors import RulesError
from enginehelp import T0, lines, make_engine
from sessionhelp import CLIENT, SERVER, TcpSession, ftp_login, udp

C, S = "10.0.0.1", "192.168.1.1"


def ip(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def expect_lines(eng, now, modern=False):
    return lines(eng, now, "net/nf_conntrack_expect" if modern else "net/ip_conntrack_expect")


CT_FTP = "*raw\n-A OUTPUT -p tcp -m tcp --dport 21 -j CT --helper ftp\nCOMMIT\n"


def ftp_control(eng, t=T0, cport=40000, feed=None):
    session = TcpSession(eng, C, cport, S, 21, feed=feed)
    ftp_login(session, t)
    return session


# -- the FTP parser ----------------------------------------------------------------------------

@pytest.mark.parametrize("data, direction, command", [
    (b"PORT 10,0,0,1,200,10\r\n", ORIGINAL, (ip("10.0.0.1"), 200 * 256 + 10)),
    (b"port 10,0,0,1,200,12\r\n", ORIGINAL, (ip("10.0.0.1"), 200 * 256 + 12)),
    (b"PORT 10,0,0,1,300,10\r\n", ORIGINAL, (ip("10.0.0.1"), 11274)),      # u16, as the kernel
    (b"EPRT |1|10.0.0.1|51210|\r\n", ORIGINAL, (ip("10.0.0.1"), 51210)),
    (b"EPRT !1!10.0.0.1!51210!\r\n", ORIGINAL, (ip("10.0.0.1"), 51210)),
    (b"227 Entering Passive Mode (192,168,1,1,200,11).\r\n", REPLY, (ip(S), 51211)),
    (b"227 Entering Passive Mode 192,168,1,1,200,11\r\n", REPLY, (ip(S), 51211)),   # RFC 1123
    (b"229 Entering Extended Passive Mode (|||51211|)\r\n", REPLY, (None, 51211)),
])
def test_ftp_parser_reads_every_command_form(data, direction, command):
    assert ftp.parse(data, direction) == (1, command)


@pytest.mark.parametrize("data, direction", [
    (b"PORT 10,0,0,1,200\r\n", ORIGINAL),             # five numbers
    (b"PORT 10,0,0,1,1,2,3\r\n", ORIGINAL),           # seven
    (b"PORT 10,0,0,1,200,14", ORIGINAL),              # no terminator in the segment
    (b"PORT 10,0,0,x,200,14\r\n", ORIGINAL),          # not a number
    (b"EPRT |1|10.0.0.1|0|\r\n", ORIGINAL),           # port 0
    (b"EPRT |2|10.0.0.1|51210|\r\n", ORIGINAL),       # IPv6 on an IPv4 connection
    (b"EPRT 1|1|10.0.0.1|51210|\r\n", ORIGINAL),      # a digit as delimiter
    (b"227 no numbers at all\r\n", REPLY),
    (b"229 Extended Passive Mode (||51211|)\r\n", REPLY),
    (b"PO", ORIGINAL),                                # a command's start, cut short
])
def test_ftp_parser_malformed_numbers_are_partial(data, direction):
    assert ftp.parse(data, direction) == (ftp.PARTIAL, None)


@pytest.mark.parametrize("data, direction", [
    (b"USER anonymous\r\n", ORIGINAL), (b"RETR file\r\n", ORIGINAL),
    (b"200 PORT command successful\r\n", REPLY),
    (b"PORT 10,0,0,1,200,10\r\n", REPLY),            # a client's command from the server
    (b"227 (192,168,1,1,200,11)\r\n", ORIGINAL),
])
def test_ftp_parser_ignores_other_lines(data, direction):
    assert ftp.parse(data, direction) == (0, None)


def test_the_2_6_parser_reads_a_227_reply_only_in_parentheses():
    with_parens = b"227 Entering Passive Mode (192,168,1,1,200,11).\r\n"
    bare = b"227 Entering Passive Mode 192,168,1,1,200,11\r\n"
    assert ftp.parse(with_parens, REPLY, modern=False) == (1, (ip(S), 51211))
    assert ftp.parse(bare, REPLY, modern=False) == (ftp.PARTIAL, None)
    assert ftp.parse(bare, REPLY) == (1, (ip(S), 51211))


# -- FTP through the engine ------------------------------------------------------------------------

def test_pasv_expects_the_data_connection_which_is_related():
    eng = make_engine("tutorial")
    control = ftp_control(eng)
    control.send(CLIENT, T0 + 1, b"PASV\r\n")
    control.send(SERVER, T0 + 1, b"227 Entering Passive Mode (192,168,1,1,200,11).\r\n")
    assert expect_lines(eng, T0 + 2) == [
        f"299 proto=6 src={C} dst={S} sport=0 dport=51211 "]
    assert expect_lines(eng, T0 + 2, modern=True) == [
        f"299 l3proto = 2 proto=6 src={C} dst={S} sport=0 dport=51211 ftp"]
    data = TcpSession(eng, C, 40001, S, 51211)
    data.handshake(T0 + 3)
    assert [r.state for r in data.results] == [CtState.RELATED, CtState.ESTABLISHED,
                                                CtState.ESTABLISHED]
    assert expect_lines(eng, T0 + 3) == []
    listing = lines(eng, T0 + 3, "net/ip_conntrack")
    master = next(line for line in listing if "dport=21 " in line)
    assert master.endswith("use=2")                      # the data connection holds it
    stats = eng.tracker.stats
    assert (stats["expect_create"], stats["expect_new"], stats["expect_delete"]) == (1, 1, 1)
    data.close(T0 + 4)
    eng.advance(T0 + 200)
    master = next(line for line in lines(eng, T0 + 200, "net/ip_conntrack") if "dport=21 " in line)
    assert master.endswith("use=1")


def test_port_eprt_and_epsv_file_the_kernels_tuple():
    eng = make_engine("tutorial")
    control = ftp_control(eng)
    control.send(CLIENT, T0 + 1, b"PORT 10,0,0,1,200,10\r\n")
    # The server connects back: from the server (any port) to the client's port.
    assert expect_lines(eng, T0 + 1) == [f"300 proto=6 src={S} dst={C} sport=0 dport=51210 "]
    control.send(SERVER, T0 + 1, b"200 PORT command successful\r\n")
    control.send(CLIENT, T0 + 2, b"EPRT |1|10.0.0.1|51220|\r\n")
    # ftp allows one expectation per master: the newer pushes the older out.
    assert expect_lines(eng, T0 + 2) == [f"300 proto=6 src={S} dst={C} sport=0 dport=51220 "]
    control.send(SERVER, T0 + 2, b"200 EPRT command successful\r\n")
    control.send(CLIENT, T0 + 3, b"EPSV\r\n")
    control.send(SERVER, T0 + 3, b"229 Entering Extended Passive Mode (|||51230|)\r\n")
    assert expect_lines(eng, T0 + 3) == [f"300 proto=6 src={C} dst={S} sport=0 dport=51230 "]
    assert eng.tracker.stats["expect_create"] == 3 and eng.tracker.stats["expect_delete"] == 2


def test_first_line_and_split_commands_are_not_read():
    eng = make_engine("tutorial")
    control = TcpSession(eng, C, 40000, S, 21)
    control.handshake(T0)
    control.send(CLIENT, T0, b"PORT 10,0,0,1,200,10\r\n")      # the client's first line
    assert expect_lines(eng, T0) == []
    control.send(SERVER, T0, b"200 ok\r\n")
    # A command split across segments: its first part does not parse (dropped), the rest
    # does not start after a newline the helper saw (not read).
    assert control.send(CLIENT, T0, b"PORT 10,0,0,1,").dropped
    assert not control.send(CLIENT, T0, b"200,11\r\n").dropped
    assert expect_lines(eng, T0) == []
    # A line of another command split in two: the segment after it is read again.
    control.send(CLIENT, T0, b"NOOP")
    control.send(CLIENT, T0, b"\r\n")
    control.send(CLIENT, T0, b"PORT 10,0,0,1,200,12\r\n")
    assert [line.split()[-1] for line in expect_lines(eng, T0)] == ["dport=51212"]


def test_malformed_command_drops_its_segment_and_expects_nothing():
    eng = make_engine("tutorial")
    control = ftp_control(eng)
    result = control.segment(CLIENT, T0 + 1, 0x18, b"PORT 10,0,0,1,200\r\n")
    assert result.dropped
    assert expect_lines(eng, T0 + 1) == []


def test_port_naming_another_host_expects_nothing():
    eng = make_engine("tutorial")
    control = ftp_control(eng)
    result = control.send(CLIENT, T0 + 1, b"PORT 10,0,0,9,200,10\r\n")
    assert not result.dropped and expect_lines(eng, T0 + 1) == []


def test_linux_profile_attaches_no_helper_by_port():
    eng = make_engine("linux")
    control = ftp_control(eng)
    control.send(CLIENT, T0 + 1, b"PORT 10,0,0,1,200,10\r\n")
    assert expect_lines(eng, T0 + 1, modern=True) == []


# -- the expectation table -------------------------------------------------------------------------

def test_expectation_times_out_on_the_clock():
    eng = make_engine("tutorial")
    control = ftp_control(eng)
    control.send(CLIENT, T0, b"PORT 10,0,0,1,200,10\r\n")
    assert expect_lines(eng, T0 + 299.5) == [f"0 proto=6 src={S} dst={C} sport=0 dport=51210 "]
    eng.advance(T0 + 300)
    assert expect_lines(eng, T0 + 300) == [] and len(eng.tracker.expects) == 0
    late = TcpSession(eng, S, 20, C, 51210)
    late.handshake(T0 + 301)
    assert late.results[0].state == CtState.NEW
    assert eng.tracker.stats["expect_delete"] == 1 and eng.tracker.stats["expect_new"] == 0


def test_expectations_die_with_their_master():
    eng = make_engine("tutorial")
    control = ftp_control(eng)
    control.send(CLIENT, T0, b"PORT 10,0,0,1,200,10\r\n")
    assert len(eng.tracker.expects) == 1
    control.segment(CLIENT, T0 + 1, 0x04)                  # RST: CLOSE, 10 s to live
    assert len(eng.tracker.expects) == 1
    eng.advance(T0 + 12)                                   # the master is gone
    assert lines(eng, T0 + 12, "net/ip_conntrack") == []
    assert expect_lines(eng, T0 + 12) == [] and len(eng.tracker.expects) == 0


def test_a_connection_not_matching_is_new():
    eng = make_engine("tutorial")
    control = ftp_control(eng)
    control.send(CLIENT, T0, b"PORT 10,0,0,1,200,10\r\n")
    wrong = TcpSession(eng, S, 20, C, 51211)               # the wrong port
    wrong.handshake(T0 + 1)
    assert wrong.results[0].state == CtState.NEW
    assert len(eng.tracker.expects) == 1


def test_expect_max_refuses_and_drops():
    ch = Chains(make_engine("linux"), Ruleset.load_restore(CT_FTP))
    feed = lambda t, datagram: ch.feed_frame(t, LINKTYPE_RAW, datagram)   # noqa: E731
    ch.engine.knobs.write_text("expect_max", b"1\n")
    first = ftp_control(ch.engine, cport=40000, feed=feed)
    first.send(CLIENT, T0, b"PORT 10,0,0,1,200,10\r\n")
    second = ftp_control(ch.engine, cport=40002, feed=feed)
    result = second.segment(CLIENT, T0, 0x18, b"PORT 10,0,0,1,200,20\r\n")
    assert result.dropped                                  # "cannot add expectation"
    assert [line.split()[-2] for line in expect_lines(ch.engine, T0, True)] == ["dport=51210"]


def test_tutorial_profile_has_no_table_wide_limit():
    eng = make_engine("tutorial")
    eng.knobs.set("expect_max", 1)
    for cport in (40000, 40002):
        ftp_control(eng, cport=cport).send(CLIENT, T0, f"PORT 10,0,0,1,200,{cport % 100}\r\n".encode())
    assert len(expect_lines(eng, T0)) == 2


# -- TFTP and IRC -----------------------------------------------------------------------------------

def test_tftp_read_request_expects_the_reply_from_any_port():
    eng = make_engine("tutorial")
    udp(eng, T0, C, S, 40000, 69, b"\x00\x01file.bin\x00octet\x00")
    assert expect_lines(eng, T0, modern=True) == [
        f"300 l3proto = 2 proto=17 src={S} dst={C} sport=0 dport=40000 tftp"]
    reply = udp(eng, T0 + 1, S, C, 51000, 40000, b"\x00\x03\x00\x01data")
    assert reply.state == CtState.RELATED
    assert expect_lines(eng, T0 + 1) == []


def test_tftp_other_opcodes_expect_nothing():
    eng = make_engine("tutorial")
    udp(eng, T0, C, S, 40000, 69, b"\x00\x05\x00\x01error\x00")
    assert expect_lines(eng, T0) == []


def test_irc_dcc_send_expects_from_anywhere():
    eng = make_engine("tutorial")
    session = TcpSession(eng, C, 40000, S, 6667)
    session.handshake(T0)
    offer = f"PRIVMSG bob :\x01DCC SEND file.txt {ip(C)} 5000 1024\x01\r\n".encode()
    session.send(CLIENT, T0, offer)
    assert expect_lines(eng, T0, modern=True) == [
        f"300 l3proto = 2 proto=6 src=0.0.0.0 dst={C} sport=0 dport=5000 irc"]
    peer = TcpSession(eng, "172.16.0.9", 33000, C, 5000)
    peer.handshake(T0 + 1)
    assert peer.results[0].state == CtState.RELATED


@pytest.mark.parametrize("payload, filed", [
    (b"PRIVMSG bob :\x01DCC SEND file.txt 167772161 5000 1024\x01\r\n", 1),   # the control
    (b"PRIVMSG bob :\x01DCC SEND file.txt 167772169 5000 1024\x01\r\n", 0),   # another address
    (b"PRIVMSG bob :\x01DCC SEND file.txt 167772161 0 1024\x01\r\n", 0),      # port 0
    (b"NOTICE bob :\x01DCC SEND file.txt 167772161 5000 1024\x01\r\n", 0),    # not a PRIVMSG
    (b"PRIVMSG bob :hello \x01DCC SEND file.txt 167772161 5000 1024\x01\r\n", 0),  # not first
])
def test_irc_offers_the_kernel_refuses(payload, filed):
    ch = Chains(make_engine("linux"), Ruleset.load_restore(
        "*raw\n-A OUTPUT -p tcp -m tcp --dport 6667 -j CT --helper irc\nCOMMIT\n"))
    feed = lambda t, datagram: ch.feed_frame(t, LINKTYPE_RAW, datagram)   # noqa: E731
    session = TcpSession(ch.engine, C, 40000, S, 6667, feed=feed)
    session.handshake(T0)
    session.send(CLIENT, T0, payload)
    assert len(expect_lines(ch.engine, T0, modern=True)) == filed


def test_irc_offer_parser():
    offer = b"PRIVMSG bob :\x01DCC CHAT chat 167772161 5001\x01\r\n"
    assert list(irc.offers(offer)) == [(ip("10.0.0.1"), 5001)]
    # 2.6 took a DCC anywhere; the 2022 fix wants it at the start of a PRIVMSG text.
    anywhere = b"NOTICE bob :hi \x01DCC SEND f 167772161 5001 3\x01\r\n"
    assert list(irc.offers(anywhere)) == []
    assert list(irc.offers(anywhere, modern=False)) == [(ip("10.0.0.1"), 5001)]


# -- the linux profile: CT --helper in the raw table ----------------------------------------------

def test_ct_helper_rule_attaches_the_helper_in_the_linux_profile():
    ch = Chains(make_engine("linux"), Ruleset.load_restore(CT_FTP))
    feed = lambda t, datagram: ch.feed_frame(t, LINKTYPE_RAW, datagram)   # noqa: E731
    control = ftp_control(ch.engine, feed=feed)
    control.send(CLIENT, T0 + 1, b"PORT 10,0,0,1,200,10\r\n")
    assert expect_lines(ch.engine, T0 + 1, modern=True) == [
        f"300 l3proto = 2 proto=6 src={S} dst={C} sport=0 dport=51210 ftp"]
    other = TcpSession(ch.engine, C, 40001, S, 2121, feed=feed)       # no rule: no helper
    ftp_login(other, T0 + 2)
    other.send(CLIENT, T0 + 2, b"PORT 10,0,0,1,200,11\r\n")
    assert len(expect_lines(ch.engine, T0 + 2, modern=True)) == 1


def test_ct_helper_rule_saves_and_lists_as_iptables_does():
    """As iptables-legacy 1.8.9 printed them in a namespace of the 6.18 kernel."""
    rules = Ruleset.load_restore(CT_FTP)
    assert "-A OUTPUT -p tcp -m tcp --dport 21 -j CT --helper ftp\n" in rules.save()
    assert apply_command(rules, ["-t", "raw", "-L", "OUTPUT", "-n"]).splitlines()[2] == (
        "CT         6    --  0.0.0.0/0            0.0.0.0/0            tcp dpt:21 CT helper ftp")


@pytest.mark.parametrize("rule", [
    "-A OUTPUT -p tcp -j CT --helper nosuch",
    "-A OUTPUT -j CT --helper ftp",                    # no protocol
    "-A OUTPUT -p udp -j CT --helper ftp",             # ftp is TCP
])
def test_ct_helper_rule_refused_as_the_kernel_does(rule):
    with pytest.raises(RulesError) as refused:
        Ruleset.load_restore(f"*raw\n{rule}\nCOMMIT\n")
    assert refused.value.message == "No chain/target/match by that name."


# -- the payload helpers read -----------------------------------------------------------------------

@pytest.mark.parametrize("build, payload", [
    ("tcp", b"PORT 10,0,0,1,200,10\r\n"), ("udp", b"\x00\x01f\x00octet\x00"), ("tcp", b""),
])
def test_both_parse_paths_give_the_payload_without_link_padding(build, payload):
    from engine.build import build_ethernet, build_tcp_datagram, build_udp_datagram
    from engine.hooks import LOCAL_OUT, PRE_ROUTING
    from engine.parse import extract_ipv4, parse_ipv4
    datagram = (build_tcp_datagram(C, S, 40000, 21, payload=payload) if build == "tcp"
                else build_udp_datagram(C, S, 40000, 69, payload))
    frame = build_ethernet(datagram, pad=True) + b"\xde\xad\xbe\xef"      # padding, FCS
    assert extract_ipv4(frame, 14, LOCAL_OUT).payload == payload
    assert parse_ipv4(frame[14:], PRE_ROUTING).payload == payload


def test_tutorial_irc_takes_a_dcc_anywhere_as_2_6_did():
    eng = make_engine("tutorial")
    session = TcpSession(eng, C, 40000, S, 6667)
    session.handshake(T0)
    session.send(CLIENT, T0, f"NOTICE bob :hi \x01DCC SEND f {ip(C)} 5001 3\x01\r\n".encode())
    assert expect_lines(eng, T0) == [f"300 proto=6 src=0.0.0.0 dst={C} sport=0 dport=5001 "]
