"""TCP tracker: transition tables, flag checks, per-packet rules and observed kernel sequences.

Spec: docs/spec/conntrack.md §4 (4.1-4.8), §6, §9, and the "Namespace 2" observations of §10.
Timeouts here are the full values the tracker returns (the kernel listing shows one second
less: `119 SYN_SENT` is a 120 s timer read a moment later).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.entry import ORIGINAL, REPLY
from engine.hooks import LOCAL_OUT, PRE_ROUTING
from engine.outcome import DELETE, IGNORE, INVALID, REOPEN
from engine.packet import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG
from engine.tcp import TcpTracker
from engine.tcp_tables import CLASS_NAMES, STATE_NAMES, TABLES, IG, IV, SS_REOPEN
from engine.tcp_window import view
from tcphelp import (C_ISN, CPORT, KNOBS, LINUX_KNOBS, S_ISN, SPORT, Flow,
                     tcp_packet)


# =============================================================================================
# Tables (§4.2, §4.3): the spec's tables, copied as text, against the module's data.
# =============================================================================================
SPEC_TABLES = {
    ("linux", ORIGINAL): """
| syn | SYN_SENT | SYN_SENT | IG | IG | IG | IG | IG | SYN_SENT* | SYN_SENT* | SYN_SENT2 |
| synack | IV | IV | SYN_RECV | IV | IV | IV | IV | IV | IV | SYN_RECV |
| fin | IV | IV | FIN_WAIT | FIN_WAIT | LAST_ACK | LAST_ACK | LAST_ACK | TIME_WAIT | CLOSE | IV |
| ack | ESTABLISHED | IV | ESTABLISHED | ESTABLISHED | CLOSE_WAIT | CLOSE_WAIT | TIME_WAIT | TIME_WAIT | CLOSE | IV |
| rst | IV | CLOSE | CLOSE | CLOSE | CLOSE | CLOSE | CLOSE | CLOSE | CLOSE | CLOSE |
| none | IV | IV | IV | IV | IV | IV | IV | IV | IV | IV |
""",
    ("linux", REPLY): """
| syn | IV | SYN_SENT2 | IV | IV | IV | IV | IV | SYN_SENT* | IV | SYN_SENT2 |
| synack | IV | SYN_RECV | IG | IG | IG | IG | IG | IG | IG | SYN_RECV |
| fin | IV | IV | FIN_WAIT | FIN_WAIT | LAST_ACK | LAST_ACK | LAST_ACK | TIME_WAIT | CLOSE | IV |
| ack | IV | IG | SYN_RECV | ESTABLISHED | CLOSE_WAIT | CLOSE_WAIT | TIME_WAIT | TIME_WAIT | CLOSE | IG |
| rst | IV | CLOSE | CLOSE | CLOSE | CLOSE | CLOSE | CLOSE | CLOSE | CLOSE | CLOSE |
| none | IV | IV | IV | IV | IV | IV | IV | IV | IV | IV |
""",
    # §4.3 applied to the modern tables: original syn in column 9 -> IV; original synack IV
    # everywhere; rst in column 9 -> IV; reply syn IV everywhere; reply synack in SYN_RECV
    # -> SYN_RECV and in column 9 -> IV; reply ack in column 9 -> IV. Column 9 is LISTEN.
    ("tutorial", ORIGINAL): """
| syn | SYN_SENT | SYN_SENT | IG | IG | IG | IG | IG | SYN_SENT* | SYN_SENT* | IV |
| synack | IV | IV | IV | IV | IV | IV | IV | IV | IV | IV |
| fin | IV | IV | FIN_WAIT | FIN_WAIT | LAST_ACK | LAST_ACK | LAST_ACK | TIME_WAIT | CLOSE | IV |
| ack | ESTABLISHED | IV | ESTABLISHED | ESTABLISHED | CLOSE_WAIT | CLOSE_WAIT | TIME_WAIT | TIME_WAIT | CLOSE | IV |
| rst | IV | CLOSE | CLOSE | CLOSE | CLOSE | CLOSE | CLOSE | CLOSE | CLOSE | IV |
| none | IV | IV | IV | IV | IV | IV | IV | IV | IV | IV |
""",
    ("tutorial", REPLY): """
| syn | IV | IV | IV | IV | IV | IV | IV | IV | IV | IV |
| synack | IV | SYN_RECV | SYN_RECV | IG | IG | IG | IG | IG | IG | IV |
| fin | IV | IV | FIN_WAIT | FIN_WAIT | LAST_ACK | LAST_ACK | LAST_ACK | TIME_WAIT | CLOSE | IV |
| ack | IV | IG | SYN_RECV | ESTABLISHED | CLOSE_WAIT | CLOSE_WAIT | TIME_WAIT | TIME_WAIT | CLOSE | IV |
| rst | IV | CLOSE | CLOSE | CLOSE | CLOSE | CLOSE | CLOSE | CLOSE | CLOSE | IV |
| none | IV | IV | IV | IV | IV | IV | IV | IV | IV | IV |
""",
}
COLUMNS = ("NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT",
           "LAST_ACK", "TIME_WAIT", "CLOSE", "COL9")


def spec_rows():
    for (profile, direction), text in SPEC_TABLES.items():
        for line in text.strip().splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            yield profile, direction, cells[0], cells[1:]


ROWS = list(spec_rows())
ROW_IDS = [f"{p}-{'orig' if d == ORIGINAL else 'reply'}-{c}" for p, d, c, _ in ROWS]


def decode_cell(profile: str, cell: str) -> int:
    if cell == "IV":
        return IV
    if cell == "IG":
        return IG
    if cell == "SYN_SENT*":
        return SS_REOPEN
    return STATE_NAMES[profile].index(cell)


@pytest.mark.parametrize("profile,direction,cls,cells", ROWS, ids=ROW_IDS)
def test_table_row_matches_spec(profile, direction, cls, cells):
    """Every cell of §4.2 / §4.3, read off the spec's table text."""
    assert len(cells) == 10
    row = TABLES[profile][direction][CLASS_NAMES.index(cls)]
    assert row == tuple(decode_cell(profile, c) for c in cells)


FLAGS_OF_CLASS = {"syn": SYN, "synack": SYN | ACK, "fin": FIN | ACK, "ack": ACK,
                  "rst": RST | ACK, "none": 0}
STATE_KNOB = {"SYN_SENT": "tcp_timeout_syn_sent", "SYN_SENT2": "tcp_timeout_syn_sent",
              "SYN_RECV": "tcp_timeout_syn_recv", "ESTABLISHED": "tcp_timeout_established",
              "FIN_WAIT": "tcp_timeout_fin_wait", "CLOSE_WAIT": "tcp_timeout_close_wait",
              "LAST_ACK": "tcp_timeout_last_ack", "TIME_WAIT": "tcp_timeout_time_wait",
              "CLOSE": "tcp_timeout_close"}


def flow_in_state(profile: str, state: str) -> Flow:
    """A handshaken (SEEN_REPLY, ASSURED) flow forced into `state`, judged liberally."""
    flow = Flow(profile, tcp_be_liberal=1)
    flow.handshake()
    view(flow.entry.l4).state = STATE_NAMES[profile].index(state)
    return flow


@pytest.mark.parametrize("profile,direction,cls,cells", ROWS, ids=ROW_IDS)
def test_table_row_drives_packets(profile, direction, cls, cells):
    """Each row of §4.2/§4.3 as behaviour: one packet of the class in every state column.

    IV -> INVALID, IG -> IGNORE (state kept), a state -> accepted with that state's timeout
    (RST: timeout_close, rule (b)); SYN_SENT* without a closed connection behind it is IG in
    linux and INVALID in tutorial (§4.6 step 3 and "2.6-ipct/pom differences").
    """
    names = STATE_NAMES[profile]
    for column, cell in zip(names[1:], cells[1:]):     # NONE: only a first packet (below)
        if profile == "tutorial" and column == "LISTEN":
            continue                                    # never entered
        flow = flow_in_state(profile, column)
        seq, ack = (C_ISN + 1, S_ISN + 1) if direction == ORIGINAL else (S_ISN + 1, C_ISN + 1)
        if cls in ("syn", "synack"):
            seq -= 1
        if cls == "none":
            # No valid flag combination is class "none": error() refuses it first.
            assert flow.tracker.error(tcp_packet(direction, 0, seq, ack), flow.knobs)
            result = flow.judge(tcp_packet(direction, 0, seq, ack), direction)
        else:
            result = flow.send(direction, FLAGS_OF_CLASS[cls], seq, ack)
        where = f"{cls} in {column}"
        if cell == "IV":
            assert result is INVALID, where
            assert flow.state == column, where
        elif cell == "IG" or (cell == "SYN_SENT*" and profile == "linux"):
            assert result is IGNORE, where
            assert flow.state == column, where
        elif cell == "SYN_SENT*":
            assert result is INVALID, where
        else:
            timeout = flow.knobs["tcp_timeout_close" if cls == "rst" else STATE_KNOB[cell]]
            assert result == timeout, where
            assert flow.state == cell, where


@pytest.mark.parametrize("profile", ["linux", "tutorial"])
@pytest.mark.parametrize("cls", CLASS_NAMES)
def test_none_column_decides_whether_first_packet_makes_an_entry(profile, cls):
    """ORIGINAL row at NONE: syn -> SYN_SENT, ack -> ESTABLISHED (pickup), the rest IV.

    Observed (§10): F/FA/SA/R/RA as first packet -> INVALID, no entry.
    """
    flow = Flow(profile)
    result = flow.send(ORIGINAL, FLAGS_OF_CLASS[cls], C_ISN, 0 if cls == "syn" else S_ISN)
    if cls == "syn":
        assert (result, flow.state, flow.ctstate) == (120, "SYN_SENT", "NEW")
    elif cls == "ack":
        assert flow.state == "ESTABLISHED" and flow.ctstate == "NEW"
    else:
        assert result is INVALID and flow.entry is None


def test_state_names_and_indices():
    """§4.1: pom / 2.6-ipct and modern share indices 0-8; 9 is SYN_SENT2 or LISTEN."""
    assert STATE_NAMES["linux"][9] == "SYN_SENT2"
    assert STATE_NAMES["tutorial"][9] == "LISTEN"
    assert STATE_NAMES["linux"][:9] == STATE_NAMES["tutorial"][:9] == (
        "NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK",
        "TIME_WAIT", "CLOSE")


# =============================================================================================
# Error checks before the tables (§4.5)
# =============================================================================================
F, S, R, P, A, U = FIN, SYN, RST, PSH, ACK, URG
LINUX_ALLOWED = [S, S | U, S | A, R, R | A, F | A, F | A | U, A, A | U]
TUTORIAL_ALLOWED = [S, S | A, S | P, S | A | P, R, R | A, R | A | P, F | A, F | A | P,
                    F | A | U, F | A | U | P, A, A | P, A | U, A | U | P]


@pytest.mark.parametrize("profile", ["linux", "tutorial"])
def test_flag_combinations_follow_spec_table(profile):
    """§4.5: the allowed combinations after masking ECE, CWR (and in modern PSH)."""
    tracker = TcpTracker(profile)
    allowed = set(LINUX_ALLOWED) if profile == "linux" else set(TUTORIAL_ALLOWED)
    masked = ECE | CWR | (PSH if profile == "linux" else 0)
    for flags in range(256):
        reason = tracker.error(tcp_packet(ORIGINAL, flags, 1), KNOBS[profile])
        expect_ok = (flags & ~masked) in allowed
        assert (reason is None) == expect_ok, hex(flags)
        if not expect_ok:
            assert reason == "invalid tcp flag combination"


@pytest.mark.parametrize("profile", ["linux", "tutorial"])
@pytest.mark.parametrize("flags", [F, S | F, S | R, R | F, 0], ids=["F", "SF", "SR", "RF", "none"])
def test_always_invalid_flag_combinations(profile, flags):
    """§4.5 (observed): FIN without ACK, SYN+FIN, SYN+RST, RST+FIN and no flags are INVALID."""
    flow = Flow(profile)
    assert flow.send(ORIGINAL, flags, C_ISN) is INVALID
    assert flow.entry is None


def test_syn_urg_is_new_in_linux_but_invalid_in_tutorial():
    """§10: "SU, SP -> NEW SYN_SENT" (modern); pom's list has SYN+PSH but not SYN+URG."""
    for flags in (S | U, S | P):
        flow = Flow("linux")
        assert flow.send(ORIGINAL, flags, C_ISN) == 120 and flow.ctstate == "NEW"
    assert Flow("tutorial").send(ORIGINAL, S | U, C_ISN) is INVALID
    assert Flow("tutorial").send(ORIGINAL, S | P, C_ISN) == 120


def test_bad_checksum_is_invalid_only_in_prerouting_with_knob_on():
    """§4.5: checksums are checked only in PREROUTING and only when `checksum` is 1."""
    tracker = TcpTracker("linux")
    bad_in = tcp_packet(ORIGINAL, SYN, 1, hook=PRE_ROUTING, checksum_ok=False)
    bad_out = tcp_packet(ORIGINAL, SYN, 1, hook=LOCAL_OUT, checksum_ok=False)
    assert tracker.error(bad_in, LINUX_KNOBS) == "bad checksum"
    assert tracker.error(bad_out, LINUX_KNOBS) is None
    assert tracker.error(bad_in, dict(LINUX_KNOBS, checksum=0)) is None


def test_parser_header_error_is_reported_first():
    """§4.5: a truncated header (set by the parser) makes the packet INVALID."""
    pkt = tcp_packet(ORIGINAL, SYN, 1)
    pkt.l4_error = "truncated packet"
    assert TcpTracker("linux").error(pkt, LINUX_KNOBS) == "truncated packet"


# =============================================================================================
# Observed kernel sequences (§10, namespace 2) — linux profile
# =============================================================================================
def test_observed_handshake_data_and_close():
    """§10: S -> NEW 119 SYN_SENT [UNREPLIED]; SA -> reply 59 SYN_RECV; A -> 431999
    ESTABLISHED [ASSURED]; PA(5) -> 299; reply A -> 431999; FA 119 FIN_WAIT; reply A 59
    CLOSE_WAIT; reply FA 29 LAST_ACK; A 119 TIME_WAIT."""
    f = Flow()
    assert f.send(ORIGINAL, SYN, C_ISN) == 120
    assert (f.ctstate, f.state, f.unreplied, f.assured) == ("NEW", "SYN_SENT", True, False)
    assert f.send(REPLY, SYN | ACK, S_ISN, C_ISN + 1) == 60
    assert (f.ctstate, f.state, f.unreplied, f.assured) == (
        "ESTABLISHED reply", "SYN_RECV", False, False)
    assert f.send(ORIGINAL, ACK, C_ISN + 1, S_ISN + 1) == 432000
    assert (f.ctstate, f.state, f.assured) == ("ESTABLISHED", "ESTABLISHED", True)
    # Data not yet acknowledged: rule (c), timeout_unacknowledged.
    assert f.send(ORIGINAL, PSH | ACK, C_ISN + 1, S_ISN + 1, payload=5) == 300
    assert f.send(REPLY, ACK, S_ISN + 1, C_ISN + 6) == 432000
    assert f.send(ORIGINAL, FIN | ACK, C_ISN + 6, S_ISN + 1) == 120
    assert f.state == "FIN_WAIT"
    assert f.send(REPLY, ACK, S_ISN + 1, C_ISN + 7) == 60
    assert f.state == "CLOSE_WAIT"
    assert f.send(REPLY, FIN | ACK, S_ISN + 1, C_ISN + 7) == 30
    assert f.state == "LAST_ACK"
    assert f.send(ORIGINAL, ACK, C_ISN + 7, S_ISN + 2) == 120
    assert (f.state, f.assured) == ("TIME_WAIT", True)


def test_syn_on_time_wait_reopens_as_new_connection():
    """§10: "orig S on TIME_WAIT -> NEW :: 119 SYN_SENT [UNREPLIED] (reopen)"; §4.6 step 3."""
    f = Flow()
    f.handshake()
    f.send(ORIGINAL, FIN | ACK, C_ISN + 1, S_ISN + 1)
    f.send(REPLY, FIN | ACK, S_ISN + 1, C_ISN + 2)
    f.send(ORIGINAL, ACK, C_ISN + 2, S_ISN + 2)
    assert f.state == "TIME_WAIT"
    assert f.send(ORIGINAL, SYN, 90000) == 120
    assert f.reopened == 1
    assert (f.ctstate, f.state, f.unreplied, f.assured) == ("NEW", "SYN_SENT", True, False)


def test_reply_rst_to_syn_deletes_unreplied_entry():
    """§10: "reply RA as first reply -> ESTABLISHED reply :: (no entry)"; §4.6 step 8."""
    f = Flow()
    f.send(ORIGINAL, SYN, C_ISN)
    assert f.send(REPLY, RST | ACK, 0, C_ISN + 1) is DELETE
    assert f.ctstate == "ESTABLISHED reply"
    assert f.entry is None


def test_original_rst_on_unreplied_entry_deletes_it():
    """§4.6 step 8: any accepted RST before the first reply removes the entry."""
    f = Flow()
    f.send(ORIGINAL, SYN, C_ISN)
    assert f.send(ORIGINAL, RST, C_ISN + 1) is DELETE
    assert f.entry is None


def test_reply_rst_in_window_closes_established_entry():
    """§10: "reply RA in window on ESTABLISHED :: 9 CLOSE [ASSURED]"."""
    f = Flow()
    f.handshake()
    assert f.send(REPLY, RST | ACK, S_ISN + 1, C_ISN + 1) == 10
    assert (f.state, f.assured, f.ctstate) == ("CLOSE", True, "ESTABLISHED reply")


def test_rst_far_out_of_window_is_invalid():
    """§4.6 step 6-7: an inexact RST keeps ESTABLISHED, then fails window check I."""
    f = Flow()
    f.handshake()
    assert f.send(REPLY, RST | ACK, S_ISN + 10_000_000, C_ISN + 1) is INVALID
    assert f.state == "ESTABLISHED" and f.left == 432000


def test_inexact_rst_keeps_established_with_close_timeout():
    """§4.6 step 6: seq in window but not the peer's highest ACK -> old state, CLOSE timer."""
    f = Flow()
    f.handshake()
    assert f.send(REPLY, RST | ACK, S_ISN + 100, C_ISN + 1) == 10
    assert f.state == "ESTABLISHED"


def test_rst_right_after_own_data_closes():
    """§4.6 step 6: a RST right after the same side's last segment ("part of a train")."""
    f = Flow()
    f.handshake()
    f.send(REPLY, PSH | ACK, S_ISN + 1, C_ISN + 1, payload=19)
    assert f.send(REPLY, RST | ACK, S_ISN + 20, C_ISN + 1) == 10
    assert f.state == "CLOSE"


def test_reply_rst_below_peer_ack_is_invalid_unless_ignore_invalid_rst():
    """§10: "reply R with seq below peer's ACK -> INVALID; with ignore_invalid_rst=1 -> ::
    9 ESTABLISHED"."""
    f = Flow()
    f.handshake()
    assert f.send(REPLY, RST, S_ISN - 1000) is INVALID
    f.knobs["tcp_ignore_invalid_rst"] = 1
    assert f.send(REPLY, RST, S_ISN - 1000) == 10
    assert f.state == "ESTABLISHED"


def test_rst_in_closing_states_skips_all_checks():
    """§4.6 step 6: in FIN_WAIT..CLOSE a RST is accepted with no sequence or window check."""
    f = Flow()
    f.handshake()
    f.send(ORIGINAL, FIN | ACK, C_ISN + 1, S_ISN + 1)
    assert f.state == "FIN_WAIT"
    assert f.send(REPLY, RST, S_ISN + 2_000_000_000) == 10
    assert f.state == "CLOSE"


def test_loose_pickup_of_lone_ack():
    """§10: "orig A as first packet -> NEW :: 299 ESTABLISHED [UNREPLIED] (loose=1);
    loose=0 -> INVALID, no entry"."""
    f = Flow()
    assert f.send(ORIGINAL, ACK, 7000, 9000) == 300
    assert (f.ctstate, f.state, f.unreplied, f.assured) == ("NEW", "ESTABLISHED", True, False)
    g = Flow(tcp_loose=0)
    assert g.send(ORIGINAL, ACK, 7000, 9000) is INVALID and g.entry is None


def test_picked_up_connection_becomes_assured_after_an_answer():
    """§4.6 step 8: pickup stays at timeout_unacknowledged until a reply; the next packet
    after the reply (old ESTABLISHED -> ESTABLISHED) sets ASSURED."""
    f = Flow()
    f.send(ORIGINAL, ACK, 7000, 9000)
    assert f.send(REPLY, ACK, 9000, 7000) == 300
    assert not f.assured
    assert f.send(ORIGINAL, ACK, 7000, 9000) == 432000
    assert f.assured


def test_syn_on_established_is_ignored_and_reply_syn_invalid():
    """§10: "orig S on ESTABLISHED -> ESTABLISHED (ignored); reply S on ESTABLISHED -> INVALID"."""
    f = Flow()
    f.handshake()
    f.now = 5
    assert f.send(ORIGINAL, SYN, 777777) is IGNORE
    assert (f.ctstate, f.state, f.left) == ("ESTABLISHED", "ESTABLISHED", 432000 - 5)
    assert f.send(REPLY, SYN, 888888) is INVALID


def test_reply_syn_in_syn_sent_is_simultaneous_open():
    """§10: "reply S in SYN_SENT -> ESTABLISHED reply :: 119 SYN_SENT2"; the timer is not
    refreshed (no reply seen yet, SYN in SYN_SENT)."""
    f = Flow()
    f.send(ORIGINAL, SYN, C_ISN)
    f.now = 1
    assert f.send(REPLY, SYN, S_ISN) is IGNORE
    assert (f.ctstate, f.state, f.left) == ("ESTABLISHED reply", "SYN_SENT2", 119)
    assert not f.unreplied


def test_simultaneous_open_reaches_established_and_assured():
    """§4.2 SYN_SENT2 column and the extra rule: in SYN_RECV a reply ACK becomes ESTABLISHED
    when the connection started as a simultaneous open."""
    f = Flow()
    f.send(ORIGINAL, SYN, C_ISN)
    f.send(REPLY, SYN, S_ISN)
    assert f.send(ORIGINAL, SYN | ACK, C_ISN, S_ISN + 1) == 60
    assert f.state == "SYN_RECV"
    assert f.send(REPLY, SYN | ACK, S_ISN, C_ISN + 1) is IGNORE
    assert f.send(REPLY, ACK, S_ISN + 1, C_ISN + 1) == 432000
    assert (f.state, f.assured) == ("ESTABLISHED", True)


def test_reply_ack_in_syn_recv_without_simultaneous_open_stays_syn_recv():
    """§4.2 reply ack in SYN_RECV -> SYN_RECV (a late answer to a resent SYN)."""
    f = Flow()
    f.send(ORIGINAL, SYN, C_ISN)
    f.send(REPLY, SYN | ACK, S_ISN, C_ISN + 1)
    assert f.send(REPLY, ACK, S_ISN + 1, C_ISN + 1) == 60
    assert f.state == "SYN_RECV"


def test_max_retrans_after_fourth_identical_ack():
    """§10: "4th identical pure ACK (timeout_max_retrans=100) :: 99 ESTABLISHED"; rule (a).
    The handshake's ACK is the first of the four."""
    f = Flow(tcp_timeout_max_retrans=100)
    f.handshake()
    results = [f.send(ORIGINAL, ACK, C_ISN + 1, S_ISN + 1) for _ in range(3)]
    assert results == [432000, 432000, 100]
    assert f.state == "ESTABLISHED"
    # Anything different resets the count.
    assert f.send(ORIGINAL, ACK, C_ISN + 1, S_ISN + 1, win=1000) == 432000


def test_zero_window_uses_max_retrans_timeout():
    """§4.6 rule (d): last window 0 and state timeout above timeout_max_retrans.
    §10 "reply ACK with window 0 :: 299 ESTABLISHED" with default knobs (both 300)."""
    f = Flow()
    f.handshake()
    assert f.send(REPLY, ACK, S_ISN + 1, C_ISN + 1, win=0) == 300
    g = Flow(tcp_timeout_max_retrans=100, tcp_timeout_unacknowledged=200)
    g.handshake()
    assert g.send(REPLY, ACK, S_ISN + 1, C_ISN + 1, win=0) == 100
    assert g.send(REPLY, ACK, S_ISN + 1, C_ISN + 1, win=500) == 432000


def test_zero_last_window_applies_before_any_ack_was_counted():
    """Rule (d) reads the last remembered window, which is 0 until the first ACK-class
    packet (the kernel zeroes the entry): a SYN gets timeout_max_retrans if that is shorter
    than timeout_syn_sent; the SYN/ACK is not ACK class either."""
    f = Flow(tcp_timeout_max_retrans=100)
    assert f.send(ORIGINAL, SYN, C_ISN) == 100
    assert f.send(REPLY, SYN | ACK, S_ISN, C_ISN + 1) == 60
    assert f.send(ORIGINAL, ACK, C_ISN + 1, S_ISN + 1) == 432000


def test_unacknowledged_data_caps_timeout_until_acked():
    """§4.6 rule (c) and §4.7: data marks its sender; an ACK equal to its end clears it."""
    f = Flow(tcp_timeout_unacknowledged=250)
    f.handshake()
    assert f.send(ORIGINAL, ACK, C_ISN + 1, S_ISN + 1, payload=100) == 250
    assert f.send(REPLY, ACK, S_ISN + 1, C_ISN + 51) == 250        # half acked
    assert f.send(REPLY, ACK, S_ISN + 1, C_ISN + 101) == 432000


def test_syn_retransmission_does_not_refresh_timer():
    """§4.6 step 8 / §9: a SYN retransmitted in SYN_SENT before any reply keeps the timer."""
    f = Flow()
    f.send(ORIGINAL, SYN, C_ISN)
    f.now = 3
    assert f.send(ORIGINAL, SYN, C_ISN) is IGNORE
    assert (f.ctstate, f.state, f.left) == ("NEW", "SYN_SENT", 117)


def test_resync_when_synack_acknowledges_ignored_syn():
    """§4.6 step 4: a stale ESTABLISHED entry, the client reuses the ports with a new SYN
    (ignored), the server's SYN/ACK acknowledges exactly that SYN -> SYN_RECV, then ACK."""
    f = Flow()
    f.handshake()
    new_isn, srv_isn = 3_000_000, 8_000_000
    assert f.send(ORIGINAL, SYN, new_isn, wscale=7, sack_perm=True) is IGNORE
    assert f.state == "ESTABLISHED"
    assert f.send(REPLY, SYN | ACK, srv_isn, new_isn + 1, wscale=7, sack_perm=True) == 60
    assert f.state == "SYN_RECV"
    orig = view(f.entry.l4).sides[ORIGINAL]
    assert (orig.end, orig.scale) == (new_isn + 1, 7)
    assert f.send(ORIGINAL, ACK, new_isn + 1, srv_isn + 1, win=500) == 432000
    assert f.state == "ESTABLISHED"


def test_synack_not_matching_ignored_syn_is_ignored():
    """§4.6 step 4: only a SYN/ACK acking the remembered SYN resynchronises."""
    f = Flow()
    f.handshake()
    f.send(ORIGINAL, SYN, 3_000_000)
    assert f.send(REPLY, SYN | ACK, 8_000_000, 12345) is IGNORE
    assert f.state == "ESTABLISHED"


def test_syn_after_own_rst_reopens_closed_entry():
    """§4.6 step 3: reopen when the previous accepted packet was a RST in this direction."""
    f = Flow()
    f.handshake()
    f.send(ORIGINAL, RST, C_ISN + 1)
    assert f.state == "CLOSE"
    assert f.send(ORIGINAL, SYN, 50_000) == 120
    assert f.reopened == 1 and f.state == "SYN_SENT"


def test_syn_after_peer_rst_is_ignored_then_resynced():
    """§4.6 steps 3-4: no FIN and the RST came from the other side -> the SYN is IG; the
    server's SYN/ACK to it brings the entry back to SYN_RECV."""
    f = Flow()
    f.handshake()
    f.send(REPLY, RST | ACK, S_ISN + 1, C_ISN + 1)
    assert f.state == "CLOSE"
    assert f.send(ORIGINAL, SYN, 50_000) is IGNORE
    assert f.reopened == 0
    assert f.send(REPLY, SYN | ACK, 60_000, 50_001) == 60
    assert f.state == "SYN_RECV"


def test_reply_syn_on_time_wait_reopens():
    """§4.2: reply syn in TIME_WAIT is SYN_SENT* (server reopens after a proper close)."""
    f = Flow()
    f.handshake()
    f.send(ORIGINAL, FIN | ACK, C_ISN + 1, S_ISN + 1)
    f.send(REPLY, FIN | ACK, S_ISN + 1, C_ISN + 2)
    f.send(ORIGINAL, ACK, C_ISN + 2, S_ISN + 2)
    pkt = tcp_packet(REPLY, SYN, 70_000)
    assert f.tracker.packet(f.entry, pkt, REPLY, 0, f.knobs) is REOPEN


def test_challenge_ack_in_last_ack_does_not_close():
    """§4.6 (kernel RFC 5961 rule): a SYN ignored in LAST_ACK, then the peer's ACK to it is
    not the ACK of the last FIN: state stays LAST_ACK."""
    f = Flow()
    f.handshake()
    f.send(ORIGINAL, FIN | ACK, C_ISN + 1, S_ISN + 1)
    f.send(REPLY, FIN | ACK, S_ISN + 1, C_ISN + 2)
    assert f.state == "LAST_ACK"
    assert f.send(ORIGINAL, SYN, 40_000) is IGNORE
    assert f.send(REPLY, ACK, S_ISN + 2, C_ISN + 2) is IGNORE
    assert f.state == "LAST_ACK"
    assert f.send(ORIGINAL, ACK, C_ISN + 2, S_ISN + 2) == 120
    assert f.state == "TIME_WAIT"


def test_invalid_rst_answering_fin_shortens_assured_timer():
    """§4.6 step 7: invalid FIN/RST on an ASSURED entry answering a FIN/RST from the other
    side lowers a long timeout to timeout_unacknowledged."""
    f = Flow(tcp_timeout_unacknowledged=200)
    f.handshake()
    f.now = 10
    assert f.send(REPLY, FIN | ACK, S_ISN + 10_000_000, C_ISN + 1) is INVALID
    assert f.left == 432000 - 10                           # first one only noted
    assert f.send(ORIGINAL, RST, C_ISN + 10_000_000) is INVALID
    assert f.left == 200
    assert f.state == "ESTABLISHED"


def test_be_liberal_accepts_out_of_window_data():
    """§4.7: INVALID becomes accept when tcp_be_liberal=1 (observed)."""
    f = Flow()
    f.handshake()
    assert f.send(ORIGINAL, ACK, C_ISN + 5_000_000, S_ISN + 1, payload=10) is INVALID
    f.knobs["tcp_be_liberal"] = 1
    assert f.send(ORIGINAL, ACK, C_ISN + 5_000_000, S_ISN + 1, payload=10) == 432000


def test_early_drop_victims_in_eviction_mode():
    """§7.2: GC eviction mode kills unassured entries and assured TCP entries that are
    closing (FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE)."""
    f = Flow()
    f.send(ORIGINAL, SYN, C_ISN)
    assert f.tracker.early_drop_victim_in_eviction_mode(f.entry)
    f.send(REPLY, SYN | ACK, S_ISN, C_ISN + 1)
    f.send(ORIGINAL, ACK, C_ISN + 1, S_ISN + 1)
    assert f.assured
    assert not f.tracker.early_drop_victim_in_eviction_mode(f.entry)
    for state in ("FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE"):
        view(f.entry.l4).state = STATE_NAMES["linux"].index(state)
        assert f.tracker.early_drop_victim_in_eviction_mode(f.entry), state
    view(f.entry.l4).state = STATE_NAMES["linux"].index("SYN_RECV")
    assert not f.tracker.early_drop_victim_in_eviction_mode(f.entry)


# =============================================================================================
# Tutorial profile (pom / 2.6-ipct)
# =============================================================================================
def test_tutorial_handshake_and_close_timeouts():
    """§4.8 tutorial values (CLOSE_WAIT 12 h); ASSURED rule identical; timeout is only
    rule (a) then the state's (no unacknowledged-data rule)."""
    f = Flow("tutorial")
    assert f.send(ORIGINAL, SYN, C_ISN) == 120
    assert f.send(REPLY, SYN | ACK, S_ISN, C_ISN + 1) == 60
    assert f.send(ORIGINAL, ACK, C_ISN + 1, S_ISN + 1) == 432000
    assert f.assured
    assert f.send(ORIGINAL, PSH | ACK, C_ISN + 1, S_ISN + 1, payload=5) == 432000
    assert f.send(REPLY, FIN | ACK, S_ISN + 1, C_ISN + 6) == 120
    assert f.send(ORIGINAL, ACK, C_ISN + 6, S_ISN + 2) == 43200
    assert f.state == "CLOSE_WAIT"
    assert f.send(ORIGINAL, FIN | ACK, C_ISN + 6, S_ISN + 2) == 30
    assert f.send(REPLY, ACK, S_ISN + 2, C_ISN + 7) == 120
    assert f.state == "TIME_WAIT"


def test_tutorial_syn_retransmission_refreshes_timer():
    """2.6-ipct has no "SYN retransmission keeps the timer" rule."""
    f = Flow("tutorial")
    f.send(ORIGINAL, SYN, C_ISN)
    f.now = 3
    assert f.send(ORIGINAL, SYN, C_ISN) == 120


def test_tutorial_reply_rst_to_syn_deletes_entry():
    """2.6-ipct too deletes an entry whose only reply is a RST."""
    f = Flow("tutorial")
    f.send(ORIGINAL, SYN, C_ISN)
    assert f.send(REPLY, RST | ACK, 0, C_ISN + 1) is DELETE


def test_tutorial_reopen_needs_close_init_or_higher_seq():
    """§4.6 "2.6-ipct/pom differences": reopen from TIME_WAIT/CLOSE needs this direction's
    close-init flag (FIN_WAIT or CLOSE entered) or a SYN seq beyond its last end, else INVALID."""
    # The server closed first: the client has no close-init flag.
    f = Flow("tutorial")
    f.handshake()
    f.send(REPLY, FIN | ACK, S_ISN + 1, C_ISN + 1)
    f.send(ORIGINAL, FIN | ACK, C_ISN + 1, S_ISN + 2)
    f.send(REPLY, ACK, S_ISN + 2, C_ISN + 2)
    assert f.state == "TIME_WAIT"
    assert f.send(ORIGINAL, SYN, C_ISN) is INVALID               # old sequence number
    assert f.send(ORIGINAL, SYN, C_ISN + 100_000) == 120         # beyond: reopened
    assert f.reopened == 1 and f.state == "SYN_SENT" and f.unreplied
    # The client closed first: any SYN of its reopens.
    g = Flow("tutorial")
    g.handshake()
    g.send(ORIGINAL, RST, C_ISN + 1)
    assert g.state == "CLOSE"
    assert g.send(ORIGINAL, SYN, C_ISN) == 120 and g.reopened == 1


def test_tutorial_no_simultaneous_open():
    """§4.3: reply syn is IV in every state."""
    f = Flow("tutorial")
    f.send(ORIGINAL, SYN, C_ISN)
    assert f.send(REPLY, SYN, S_ISN) is INVALID
    assert f.state == "SYN_SENT"


def test_tutorial_synack_acking_ignored_syn_kills_entry():
    """§4.6 2.6-ipct: the SYN/ACK acknowledging an ignored SYN kills the entry (the client
    must retransmit its SYN into a clean entry)."""
    f = Flow("tutorial")
    f.handshake()
    assert f.send(ORIGINAL, SYN, 3_000_000) is IGNORE
    assert f.send(REPLY, SYN | ACK, 8_000_000, 3_000_001) is DELETE
    assert f.entry is None
    assert f.send(ORIGINAL, SYN, 3_000_000) == 120 and f.state == "SYN_SENT"


def test_tutorial_max_retrans_after_fourth_identical_ack():
    """§4.7 pom: identical ACKs (dir, seq, ack, end) count; rule (a)."""
    f = Flow("tutorial", tcp_timeout_max_retrans=100)
    f.handshake()
    results = [f.send(ORIGINAL, ACK, C_ISN + 1, S_ISN + 1) for _ in range(3)]
    assert results == [432000, 432000, 100]


def test_tutorial_rst_closes_and_marks_close_init():
    """2.6-ipct sets close-init on entering FIN_WAIT *or CLOSE*."""
    f = Flow("tutorial")
    f.handshake()
    assert f.send(REPLY, RST | ACK, S_ISN + 1, C_ISN + 1) == 10
    assert f.state == "CLOSE"
    assert view(f.entry.l4).sides[REPLY].flags & 0x04


def test_tutorial_loose_zero_disables_pickup():
    """§3.1: ip_conntrack_tcp_loose 0 = no pickup."""
    assert Flow("tutorial", tcp_loose=0).send(ORIGINAL, ACK, 7000, 9000) is INVALID
    f = Flow("tutorial")
    assert f.send(ORIGINAL, ACK, 7000, 9000) == 432000        # no unacknowledged cap
    assert f.state == "ESTABLISHED" and f.unreplied


def test_tutorial_state_name_of_column_nine_is_listen():
    f = Flow("tutorial")
    f.send(ORIGINAL, SYN, C_ISN)
    view(f.entry.l4).state = 9
    assert f.state == "LISTEN"


# =============================================================================================
# Through the whole engine (parser, table, listing): the §10 namespace-2 listing lines
# =============================================================================================
def test_engine_lists_observed_handshake_states():
    """§10: "tcp 6 119 SYN_SENT ... [UNREPLIED]", "59 SYN_RECV", "431999 ESTABLISHED
    [ASSURED]" (the listing is read a moment after each packet)."""
    from engine.build import build_tcp_datagram
    from enginehelp import T0, lines, make_engine

    eng = make_engine("linux")

    def send(t, direction, flags, seq, ack=0):
        addrs = (("127.0.0.1", "127.0.0.2", CPORT, SPORT) if direction == ORIGINAL
                 else ("127.0.0.2", "127.0.0.1", SPORT, CPORT))
        datagram = build_tcp_datagram(*addrs, flags=flags, seq=seq, ack=ack)
        return str(eng.feed_datagram(t, datagram, LOCAL_OUT))

    assert send(T0, ORIGINAL, SYN, C_ISN) == "NEW"
    (line,) = lines(eng, T0 + 0.5)
    assert " 6 119 SYN_SENT " in line and "[UNREPLIED]" in line
    assert send(T0 + 0.01, REPLY, SYN | ACK, S_ISN, C_ISN + 1) == "ESTABLISHED reply"
    (line,) = lines(eng, T0 + 0.5)
    assert " 6 59 SYN_RECV " in line and "[UNREPLIED]" not in line
    assert send(T0 + 0.02, ORIGINAL, ACK, C_ISN + 1, S_ISN + 1) == "ESTABLISHED"
    (line,) = lines(eng, T0 + 0.5)
    assert " 6 431999 ESTABLISHED " in line and "[ASSURED]" in line
    assert send(T0 + 0.03, REPLY, SYN, S_ISN) == "INVALID"
    assert send(T0 + 0.04, REPLY, RST | ACK, S_ISN + 1, C_ISN + 1) == "ESTABLISHED reply"
    (line,) = lines(eng, T0 + 0.5)
    assert " 6 9 CLOSE " in line and "[ASSURED]" in line


# =============================================================================================
# Differential: the kernel's own captures (tests/data/kernel/tcp_*, recorded on 6.18)
# =============================================================================================
KERNEL_DATA = Path(__file__).resolve().parent / "data" / "kernel"
TCP_SCENARIOS = sorted(p.name for p in KERNEL_DATA.glob("tcp_*") if (p / "snapshot.json").exists())


@pytest.mark.parametrize("name", TCP_SCENARIOS)
def test_kernel_tcp_scenario_replays_identically(name):
    """Every frame's ct state and the final listing equal what the real kernel showed."""
    from engine.replay import replay

    snap = json.loads((KERNEL_DATA / name / "snapshot.json").read_text())
    result = replay(str(KERNEL_DATA / name / "capture.pcap"), profile=snap["profile"],
                    at=snap["at"], knobs_overrides=snap["knobs_overrides"] or None,
                    max_entries=snap["max_entries"], ram_bytes=24 << 30, ncpu=2)
    assert [str(v) for v in result.verdicts] == snap["frame_states"]
    assert sorted(result.text().splitlines()) == sorted(snap["listing"])
