"""TCP window tracking: checks I-IV, liberal mode, loose pickup, scaling, SACK (spec §4.7).

The flow below has small, known windows so every bound can be computed by hand:
client SYN seq 1000 win 8000, server SYN/ACK seq 5000 win 4000, client ACK win 8000. Then

    client (original): end 1001, maxend 5001 (=1001 + 4000), maxwin 8000
    server (reply):    end 5001, maxend 13001 (=5001 + 8000), maxwin 4000
"""
from __future__ import annotations

import pytest

from engine.entry import ORIGINAL, REPLY
from engine.outcome import IGNORE, INVALID
from engine.packet import ACK, PSH, RST, SYN
from engine.tcp_window import (BE_LIBERAL, N_FIELDS, SACK_PERM, STATE_FIELD, after, before,
                               export_fields, import_fields, view)

from tcphelp import Flow

C, S = 1000, 5000
BOTH = ["linux", "tutorial"]


def small_window_flow(profile: str = "linux", **knobs) -> Flow:
    f = Flow(profile, **knobs)
    f.send(ORIGINAL, SYN, C, win=8000)
    f.send(REPLY, SYN | ACK, S, C + 1, win=4000)
    f.send(ORIGINAL, ACK, C + 1, S + 1, win=8000)
    assert f.state == "ESTABLISHED"
    return f


def sides(f: Flow):
    o, r = view(f.entry.l4).sides
    return (o.end, o.maxend, o.maxwin), (r.end, r.maxend, r.maxwin)


@pytest.mark.parametrize("profile", BOTH)
def test_window_data_after_handshake(profile):
    """§4.7 "On accept": maxwin from windows, maxend = peer's ack + window, end = seq + len."""
    f = small_window_flow(profile)
    assert sides(f) == ((1001, 5001, 8000), (5001, 13001, 4000))


@pytest.mark.parametrize("profile", BOTH)
def test_how_each_side_starts(profile):
    """A side's first (end, maxend, maxwin): the first SYN's end = seq + 1 twice and its
    window; the SYN/ACK's likewise (tcp_init_sender()); a picked-up segment's end =
    seq + payload, maxend = end + window (tcp_new()).  Checked here right after each, as
    the handshake's later packets move them on."""
    f = Flow(profile)
    f.send(ORIGINAL, SYN, C, win=8000)
    assert sides(f)[0] == (1001, 1001, 8000)
    f.send(REPLY, SYN | ACK, S, C + 1, win=4000)
    assert sides(f) == ((1001, 5001, 8000), (5001, 5001, 4000))
    picked = Flow(profile)
    picked.send(ORIGINAL, ACK, 7000, 9000, win=1000, payload=10)
    assert sides(picked)[0] == (7010, 8010, 1000)
    closed = Flow(profile)                # a window of 0 starts maxwin at 1
    closed.send(ORIGINAL, SYN, C, win=0)
    assert sides(closed)[0] == (1001, 1001, 1)


def test_modular_helpers():
    """All comparisons are modulo 2**32."""
    assert before(0xFFFFFFF0, 0x10) and after(0x10, 0xFFFFFFF0)
    assert not before(5, 5) and not after(5, 5)


# -- I: seq <= sender.maxend -------------------------------------------------------------------
@pytest.mark.parametrize("profile", BOTH)
def test_check_I_data_beyond_receiver_window_is_invalid(profile):
    """§10: "orig data beyond window -> INVALID" (I fails, overshoot too big to tolerate)."""
    f = small_window_flow(profile)
    assert f.send(ORIGINAL, PSH | ACK, C + 100_000, S + 1, payload=10) is INVALID
    assert f.ctstate == "INVALID"
    assert sides(f)[0] == (1001, 5001, 8000)


@pytest.mark.parametrize("profile", BOTH)
def test_check_I_seq_at_maxend_is_accepted(profile):
    """I is "seq <= maxend": a segment starting exactly at the right edge passes."""
    f = small_window_flow(profile)
    assert f.send(ORIGINAL, PSH | ACK, 5001, S + 1, payload=1) == (
        300 if profile == "linux" else 432000)


def test_check_I_small_overshoot_is_ignored_but_advances_end():
    """§4.7 I modern exception: end still in the receiver's window, ACK plausible, overshoot
    <= receiver maxwin -> accepted without state change (IG), sender end advanced."""
    f = small_window_flow("linux")
    assert f.send(ORIGINAL, PSH | ACK, 5002, S + 1, payload=100) is IGNORE
    assert f.ctstate == "ESTABLISHED"
    assert sides(f)[0][0] == 5102
    # The server may now acknowledge that data (III would otherwise refuse its ACK).
    assert f.send(REPLY, ACK, S + 1, 5102) == 432000     # acks the new end: nothing unacked


def test_check_I_small_overshoot_is_invalid_in_tutorial():
    f = small_window_flow("tutorial")
    assert f.send(ORIGINAL, PSH | ACK, 5002, S + 1, payload=100) is INVALID


# -- III: sack <= receiver.end -----------------------------------------------------------------
@pytest.mark.parametrize("profile", BOTH)
def test_check_III_ack_of_unsent_data_is_invalid(profile):
    """§10: "ACK beyond sent data -> INVALID"."""
    f = small_window_flow(profile)
    assert f.send(ORIGINAL, ACK, C + 1, S + 2) is INVALID
    assert f.send(ORIGINAL, ACK, C + 1, S + 1) == 432000


# -- II: end >= sender.end - receiver.maxwin ---------------------------------------------------
def _client_sends_6000_bytes(f: Flow) -> None:
    assert isinstance(f.send(ORIGINAL, PSH | ACK, 1001, S + 1, payload=3000), int)
    assert isinstance(f.send(REPLY, ACK, S + 1, 4001, win=4000), int)
    assert isinstance(f.send(ORIGINAL, PSH | ACK, 4001, S + 1, payload=3000), int)
    # client end 7001, server maxwin 4000: lower bound for a segment's end is 3001.
    assert sides(f)[0][0] == 7001 and sides(f)[1][2] == 4000


def test_check_II_old_data_is_ignored_in_linux():
    """§10: "old data -> ESTABLISHED (ignored)"; §4.7 II modern: IG."""
    f = small_window_flow("linux")
    _client_sends_6000_bytes(f)
    f.now = 7
    assert f.send(ORIGINAL, PSH | ACK, 1001, S + 1, payload=1000) is IGNORE
    assert f.ctstate == "ESTABLISHED"
    assert f.left == 300 - 7                      # timer untouched by the ignored packet
    # end 3001 is exactly on the bound: accepted.
    assert f.send(ORIGINAL, PSH | ACK, 2001, S + 1, payload=1000) == 300


def test_check_II_old_data_is_invalid_in_tutorial():
    """§4.7 II pom / 2.6-ipct: INVALID."""
    f = small_window_flow("tutorial")
    _client_sends_6000_bytes(f)
    assert f.send(ORIGINAL, PSH | ACK, 1001, S + 1, payload=1000) is INVALID
    assert f.send(ORIGINAL, PSH | ACK, 2001, S + 1, payload=1000) == 432000


# -- IV: sack >= receiver.end - MAXACKWINDOW ---------------------------------------------------
def test_check_IV_overly_delayed_ack_is_ignored_in_linux():
    """§4.7 IV modern: IG; MAXACKWINDOW = max(66000, sender maxwin); bound inclusive."""
    f = small_window_flow("linux")
    assert f.send(ORIGINAL, ACK, C + 1, S + 1 - 66001) is IGNORE
    assert f.send(ORIGINAL, ACK, C + 1, S + 1 - 66000) == 432000


def test_check_IV_overly_delayed_ack_is_invalid_in_tutorial():
    """§4.7 IV pom: INVALID; 2.6-ipct compares the plain ack and strictly (ack > end - 66000)."""
    f = small_window_flow("tutorial")
    assert f.send(ORIGINAL, ACK, C + 1, S + 1 - 66001) is INVALID
    assert f.send(ORIGINAL, ACK, C + 1, S + 1 - 66000) is INVALID
    assert f.send(ORIGINAL, ACK, C + 1, S + 1 - 65999) == 432000


# -- packets without payload (pom), RSTs ------------------------------------------------------
def test_tutorial_judges_payloadless_packet_on_its_ack_only():
    """§4.7 pom: a packet without payload (other than a RST) is checked on its ACK only;
    modern checks its seq too."""
    t = small_window_flow("tutorial")
    assert t.send(ORIGINAL, ACK, C + 1_000_000, S + 1) == 432000
    m = small_window_flow("linux")
    assert m.send(ORIGINAL, ACK, C + 1_000_000, S + 1) is INVALID


def test_tutorial_rst_keeps_its_sequence_number():
    """§4.7 pom: RSTs are still checked by their seq."""
    f = small_window_flow("tutorial")
    assert f.send(REPLY, RST | ACK, S + 1_000_000, C + 1) is INVALID
    assert f.send(REPLY, RST | ACK, S + 1, C + 1) == 10


# -- be_liberal --------------------------------------------------------------------------------
@pytest.mark.parametrize("profile", BOTH)
def test_be_liberal_turns_invalid_into_accept_without_updating_window(profile):
    """§4.7: INVALID becomes accept when tcp_be_liberal=1 (observed); nothing is updated."""
    f = small_window_flow(profile, tcp_be_liberal=1)
    assert f.send(ORIGINAL, PSH | ACK, C + 100_000, S + 1, payload=10) == 432000
    assert f.send(ORIGINAL, ACK, C + 1, S + 2) == 432000           # III
    assert sides(f) == ((1001, 5001, 8000), (5001, 13001, 4000))


def test_be_liberal_also_accepts_old_data_in_linux():
    """Modern: a liberal sender gets accept for II/IV failures too (nf_tcp_log_invalid)."""
    f = small_window_flow("linux", tcp_be_liberal=1)
    _client_sends_6000_bytes(f)
    assert f.send(ORIGINAL, PSH | ACK, 1001, S + 1, payload=1000) == 300


def test_be_liberal_does_not_rescue_rst_below_peer_ack():
    """§4.7: the RST checks of §4.6 step 6 are not affected by be_liberal."""
    f = small_window_flow("linux", tcp_be_liberal=1)
    assert f.send(REPLY, RST, S - 1000) is INVALID


# -- loose pickup ------------------------------------------------------------------------------
def test_linux_pickup_marks_both_directions_liberal_for_life():
    """§4.6 step 1: a picked-up connection marks both directions "be liberal" and "SACK
    permitted" for its whole life."""
    f = Flow("linux")
    f.send(ORIGINAL, ACK, 7000, 9000, win=1000)
    o, r = view(f.entry.l4).sides
    assert o.flags & (BE_LIBERAL | SACK_PERM) == r.flags & (BE_LIBERAL | SACK_PERM) \
        == BE_LIBERAL | SACK_PERM
    assert f.send(REPLY, ACK, 9000, 7000, win=1000) == 300
    for _ in range(10):
        assert isinstance(f.send(ORIGINAL, PSH | ACK, 7000 + 50_000_000, 9000, payload=10), int)
        assert isinstance(f.send(REPLY, ACK, 9000 + 70_000_000, 1, win=0), int)


def _tutorial_pickup(loose: int) -> Flow:
    f = Flow("tutorial", tcp_loose=loose)
    assert f.send(ORIGINAL, ACK, 7000, 9000, win=1000) == 432000
    sides = view(f.entry.l4).sides
    assert (sides[0].loose, sides[1].loose) == (loose - 1, loose)
    return f


def test_tutorial_loose_skips_checks_while_a_counter_is_left():
    """§4.7 pom: checks skipped while either direction's loose counter is non-zero."""
    f = _tutorial_pickup(3)
    assert isinstance(f.send(ORIGINAL, PSH | ACK, 7000 + 50_000_000, 9000, payload=10), int)
    assert view(f.entry.l4).sides[0].loose == 1


def test_tutorial_loose_counts_packets_per_direction_then_checks():
    """§3.1 tcp_loose=3: packets per direction without window check after pickup."""
    f = _tutorial_pickup(3)
    for _ in range(2):
        assert isinstance(f.send(ORIGINAL, ACK, 7000, 9000, win=1000), int)
    assert view(f.entry.l4).sides[0].loose == 0
    for _ in range(3):
        assert isinstance(f.send(REPLY, ACK, 9000, 7000, win=1000), int)
    assert view(f.entry.l4).sides[1].loose == 0
    # Both counters spent: the window is checked again.
    assert f.send(ORIGINAL, PSH | ACK, 7000 + 50_000_000, 9000, payload=10) is INVALID
    assert isinstance(f.send(ORIGINAL, PSH | ACK, 7000, 9000, payload=10, win=1000), int)
    assert f.send(REPLY, ACK, 9000, 7000 + 1_000_000) is INVALID


def test_tutorial_loose_one_checks_from_the_second_packet_of_each_side():
    f = _tutorial_pickup(1)
    assert isinstance(f.send(REPLY, ACK, 9000, 7000, win=1000), int)
    assert f.send(ORIGINAL, PSH | ACK, 7000 + 50_000_000, 9000, payload=10) is INVALID


# -- window scaling and SACK -------------------------------------------------------------------
@pytest.mark.parametrize("profile", BOTH)
def test_window_scale_used_only_if_both_sides_offer_it(profile):
    """§4.7: window scale is used only if both SYN and SYN/ACK carry the option; windows in
    SYN segments are never scaled."""
    f = Flow(profile)
    f.send(ORIGINAL, SYN, C, win=1000, wscale=7)
    f.send(REPLY, SYN | ACK, S, C + 1, win=1000, wscale=7)
    f.send(ORIGINAL, ACK, C + 1, S + 1, win=100)                    # 100 << 7 = 12800
    assert view(f.entry.l4).sides[REPLY].maxend == S + 1 + 12800
    assert isinstance(f.send(REPLY, PSH | ACK, 15000, C + 1, payload=100), int)

    g = Flow(profile)
    g.send(ORIGINAL, SYN, C, win=1000, wscale=7)
    g.send(REPLY, SYN | ACK, S, C + 1, win=1000)                    # no option: no scaling
    g.send(ORIGINAL, ACK, C + 1, S + 1, win=100)
    assert view(g.entry.l4).sides[ORIGINAL].scale == 0
    assert view(g.entry.l4).sides[REPLY].maxend == S + 1 + 100
    assert g.send(REPLY, PSH | ACK, 15000, C + 1, payload=100) is INVALID


@pytest.mark.parametrize("profile", BOTH)
def test_later_syn_with_options_but_no_window_scale_resets_the_scale(profile):
    """tcp_options() zeroes the side's scale and flags whenever the header has options: a
    second SYN (later sequence number) with only an MSS option undoes the first SYN's window
    scale, so the SYN/ACK's offer finds no partner and nothing is scaled.  A second SYN
    without any options leaves the scale alone (kernel scenario tcp_syn_options_reset)."""
    for second_has_options, scale in ((True, 0), (False, 7)):
        f = Flow(profile)
        f.send(ORIGINAL, SYN, C, win=100, wscale=7)
        f.send(ORIGINAL, SYN, C + 4000, win=100, options=second_has_options)
        f.send(REPLY, SYN | ACK, S, C + 4001, win=1000, wscale=7)
        f.send(ORIGINAL, ACK, C + 4001, S + 1, win=100)
        assert view(f.entry.l4).sides[ORIGINAL].scale == scale
        assert view(f.entry.l4).sides[REPLY].maxend == S + 1 + (100 << scale)


@pytest.mark.parametrize("profile", BOTH)
def test_sack_edge_counts_only_if_receiver_permitted_sack(profile):
    """§4.7: sack = highest SACK right edge if the receiver allowed SACK, else the ack."""
    f = Flow(profile)
    f.send(ORIGINAL, SYN, C, win=8000, sack_perm=True)
    f.send(REPLY, SYN | ACK, S, C + 1, win=4000, sack_perm=True)
    f.send(ORIGINAL, ACK, C + 1, S + 1, win=8000)
    # A SACK block beyond what the server sent fails III.
    assert f.send(ORIGINAL, ACK, C + 1, S + 1, sack_edge=S + 50) is INVALID

    g = Flow(profile)
    g.send(ORIGINAL, SYN, C, win=8000, sack_perm=True)
    g.send(REPLY, SYN | ACK, S, C + 1, win=4000)                    # server: no SACK
    g.send(ORIGINAL, ACK, C + 1, S + 1, win=8000)
    assert g.send(ORIGINAL, ACK, C + 1, S + 1, sack_edge=S + 50) == 432000


# -- sequence wraparound -----------------------------------------------------------------------
@pytest.mark.parametrize("profile", BOTH)
def test_sequence_numbers_wrap_around(profile):
    """All comparisons are modulo 2**32: data crossing 2**32 is in window."""
    isn = 0xFFFFFF00
    f = Flow(profile)
    f.send(ORIGINAL, SYN, isn, win=8000)
    f.send(REPLY, SYN | ACK, S, isn + 1, win=4000)
    f.send(ORIGINAL, ACK, isn + 1, S + 1, win=8000)
    assert isinstance(f.send(ORIGINAL, PSH | ACK, isn + 1, S + 1, payload=1000), int)
    assert view(f.entry.l4).sides[ORIGINAL].end == (isn + 1001) & 0xFFFFFFFF
    assert f.send(REPLY, ACK, S + 1, (isn + 1001) & 0xFFFFFFFF, win=4000) == 432000
    assert f.send(REPLY, ACK, S + 1, (isn + 1002) & 0xFFFFFFFF, win=4000) is INVALID


# -- retransmissions ---------------------------------------------------------------------------
def test_identical_data_segments_count_as_retransmissions():
    """§4.7: ACK-class packets identical to the previous one (direction, seq, ack, end,
    window) increment the count; the 4th identical one switches to timeout_max_retrans."""
    f = small_window_flow("linux", tcp_timeout_max_retrans=100, tcp_timeout_unacknowledged=250)
    seg = dict(payload=100, win=8000)
    results = [f.send(ORIGINAL, PSH | ACK, C + 1, S + 1, **seg) for _ in range(4)]
    assert results == [250, 250, 250, 100]
    assert view(f.entry.l4).retrans == 3


def test_retransmission_count_wraps_as_the_kernels_u8():
    """struct ip_ct_tcp's retrans is a u8: the 256th identical segment in a row counts 0."""
    f = small_window_flow("linux")
    seg = dict(payload=100, win=8000)
    for _ in range(257):
        f.send(ORIGINAL, PSH | ACK, C + 1, S + 1, **seg)
    assert view(f.entry.l4).retrans == 0


# -- the packed state --------------------------------------------------------------------------
@pytest.mark.parametrize("profile", BOTH)
def test_packed_state_round_trips_every_field(profile):
    """export_fields() lists every field of the bytes in the kernel structs' order;
    import_fields() makes the same bytes again, and each field is where the views read it."""
    f = small_window_flow(profile)
    conn = f.entry.l4
    fields = export_fields(conn)
    assert len(fields) == N_FIELDS and import_fields(fields) == conn
    o, r = view(conn).sides
    # The module docstring's values, at the offsets a state file lists them.
    assert [fields[0], fields[1], fields[2]] == [o.end, o.maxend, o.maxwin] == [1001, 5001, 8000]
    assert [fields[7], fields[8], fields[9]] == [r.end, r.maxend, r.maxwin] == [5001, 13001, 4000]
    assert fields[STATE_FIELD] == view(conn).state
    distinct = list(range(1, N_FIELDS + 1))       # every field a different small value
    again = export_fields(import_fields(distinct))
    assert again == distinct


def test_a_field_too_wide_for_its_bytes_is_refused():
    fields = [0] * N_FIELDS
    fields[STATE_FIELD] = 256                      # a one-byte field
    with pytest.raises(ValueError, match="8 bits"):
        import_fields(fields)
    fields[STATE_FIELD], fields[0] = 0, 1 << 32    # a 32-bit one
    with pytest.raises(ValueError, match="32 bits"):
        import_fields(fields)
