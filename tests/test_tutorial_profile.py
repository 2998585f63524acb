"""The tutorial profile against the iptables tutorial's own statements (shared/seed, chapter 7)."""
from engine.build import build_ipv4, build_tcp_datagram, build_udp, build_udp_datagram
from engine.ctstate import CtState
from engine.hooks import LOCAL_OUT, PRE_ROUTING
from engine.packet import ACK, SYN

from enginehelp import T0, lines, make_engine


def tcp(eng, t, src, dst, sport, dport, flags, seq, ack=0, hook=LOCAL_OUT, payload=b""):
    datagram = build_tcp_datagram(src, dst, sport, dport, flags=flags, seq=seq, ack=ack,
                                  window=5840, payload=payload)
    return eng.feed_datagram(t, datagram, hook)


def handshake(eng, t, client=("192.168.1.5", 1031), server=("192.168.1.35", 23)):
    (c, cp), (s, sp) = client, server
    tcp(eng, t, c, s, cp, sp, SYN, 1000)
    tcp(eng, t + 0.01, s, c, sp, cp, SYN | ACK, 5000, 1001, hook=PRE_ROUTING)
    return tcp(eng, t + 0.02, c, s, cp, sp, ACK, 1001, 5001)


def test_syn_sent_listing_reads_as_the_tutorial_prints_it():
    """Tutorial: `tcp 6 117 SYN_SENT src=... [UNREPLIED] src=... use=1` (117 s of 120 left)."""
    eng = make_engine("tutorial")
    assert tcp(eng, T0, "192.168.1.5", "192.168.1.35", 1031, 23, SYN, 1000).state == CtState.NEW
    assert lines(eng, T0 + 3, "net/ip_conntrack") == [
        "tcp      6 117 SYN_SENT src=192.168.1.5 dst=192.168.1.35 sport=1031 dport=23 "
        "[UNREPLIED] src=192.168.1.35 dst=192.168.1.5 sport=23 dport=1031 use=1"]


def test_established_connection_is_assured_with_five_days_left():
    """Tutorial: `tcp 6 431999 ESTABLISHED ... [ASSURED] use=1`; [UNREPLIED] erased."""
    eng = make_engine("tutorial")
    assert handshake(eng, T0).state == CtState.ESTABLISHED
    assert lines(eng, T0 + 1, "net/ip_conntrack") == [
        "tcp      6 431999 ESTABLISHED src=192.168.1.5 dst=192.168.1.35 sport=1031 dport=23 "
        "src=192.168.1.35 dst=192.168.1.5 sport=23 dport=1031 [ASSURED] use=1"]


def test_udp_listing_counts_down_from_thirty():
    """Tutorial: `udp 17 20 src=192.168.1.2 dst=192.168.1.5 sport=137 dport=1025 [UNREPLIED] ...`."""
    eng = make_engine("tutorial")
    eng.feed_datagram(T0, build_udp_datagram("192.168.1.2", "192.168.1.5", 137, 1025, b"q"),
                      PRE_ROUTING)
    assert lines(eng, T0 + 9.5, "net/ip_conntrack") == [
        "udp      17 20 src=192.168.1.2 dst=192.168.1.5 sport=137 dport=1025 [UNREPLIED] "
        "src=192.168.1.5 dst=192.168.1.2 sport=1025 dport=137 use=1"]


def test_first_packet_is_new_and_the_return_packet_established():
    """Tutorial: NEW set in OUTPUT for our first packet; the return packet is ESTABLISHED."""
    eng = make_engine("tutorial")
    first = tcp(eng, T0, "192.168.1.5", "192.168.1.35", 1031, 23, SYN, 1000)
    back = tcp(eng, T0 + 0.01, "192.168.1.35", "192.168.1.5", 23, 1031, SYN | ACK, 5000, 1001,
               hook=PRE_ROUTING)
    assert (first.state, first.reply) == (CtState.NEW, False)
    assert (back.state, back.reply) == (CtState.ESTABLISHED, True)


# The tutorial's timeout table (spec §4.8 "tutorial table" column), in seconds.
TUTORIAL_TIMEOUTS = {"tcp_timeout_syn_sent": 120, "tcp_timeout_syn_recv": 60,
                     "tcp_timeout_established": 5 * 86400, "tcp_timeout_fin_wait": 120,
                     "tcp_timeout_close_wait": 12 * 3600, "tcp_timeout_last_ack": 30,
                     "tcp_timeout_time_wait": 120, "tcp_timeout_close": 10,
                     "udp_timeout": 30, "icmp_timeout": 30, "generic_timeout": 600}


def test_default_timeouts_are_the_tutorials():
    eng = make_engine("tutorial")
    assert {name: eng.knobs[name] for name in TUTORIAL_TIMEOUTS} == TUTORIAL_TIMEOUTS


def test_close_wait_lasts_the_tutorials_twelve_hours():
    eng = make_engine("tutorial")
    handshake(eng, T0)
    # The server closes first: its FIN moves the entry to FIN_WAIT, the client's ACK to CLOSE_WAIT.
    tcp(eng, T0 + 1, "192.168.1.35", "192.168.1.5", 23, 1031, 0x11, 5001, 1001, hook=PRE_ROUTING)
    tcp(eng, T0 + 1.01, "192.168.1.5", "192.168.1.35", 1031, 23, ACK, 1001, 5002)
    (line,) = lines(eng, T0 + 1.5, "net/ip_conntrack")
    assert line.split()[2:4] == ["43199", "CLOSE_WAIT"]


def test_timeout_knob_written_with_the_tutorials_name_reconfigures_at_once():
    """Tutorial note: the ip_ct_* variables "can be changed on the fly"."""
    eng = make_engine("tutorial")
    from engine.knobs import KNOBS_BY_PATH
    knob = KNOBS_BY_PATH["sys/net/ipv4/netfilter/ip_ct_tcp_timeout_established"]
    eng.knobs.write_text(knob.name, b"300\n")
    handshake(eng, T0)
    assert lines(eng, T0 + 0.5, "net/ip_conntrack")[0].split()[2] == "299"


def test_fragments_are_reassembled_before_tracking():
    """Tutorial: "Defragmentation is always carried out if connection tracking is turned on"."""
    eng = make_engine("tutorial")
    payload = build_udp("10.0.0.1", "10.0.0.2", 5000, 6000, b"A" * 1600)
    first = build_ipv4("10.0.0.1", "10.0.0.2", 17, payload[:1480], ident=7, mf=True)
    second = build_ipv4("10.0.0.1", "10.0.0.2", 17, payload[1480:], ident=7, frag_offset=1480)
    assert eng.feed_datagram(T0, first, PRE_ROUTING) is None
    assert eng.count == 0
    assert eng.feed_datagram(T0 + 0.001, second, PRE_ROUTING).state == CtState.NEW
    (line,) = lines(eng, T0 + 0.5, "net/ip_conntrack")
    assert "sport=5000 dport=6000 [UNREPLIED]" in line


def test_unassured_entries_are_erased_first_when_the_table_is_full():
    """Tutorial: connections marked [ASSURED] will not be erased at the maximum; others are."""
    eng = make_engine("tutorial", buckets=1)
    eng.knobs.set("max", 2)
    handshake(eng, T0)
    tcp(eng, T0 + 1, "192.168.1.5", "192.168.1.99", 2000, 80, SYN, 1)   # unassured
    tcp(eng, T0 + 2, "192.168.1.5", "192.168.1.98", 2001, 80, SYN, 1)   # evicts it
    states = sorted(l.split()[3] for l in lines(eng, T0 + 2, "net/ip_conntrack"))
    assert states == ["ESTABLISHED", "SYN_SENT"]
    assert "dport=80 " in [l for l in lines(eng, T0 + 2, "net/ip_conntrack") if "SYN_SENT" in l][0]
    assert "192.168.1.98" in "".join(lines(eng, T0 + 2, "net/ip_conntrack"))
    assert eng.tracker.stats["early_drop"] == 1
