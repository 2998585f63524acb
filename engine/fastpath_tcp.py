"""The fast path's TCP segments on a known entry beyond the ACK case of engine/fastpath.py.

fastpath.track() answers a known flow's next ACK or PSH|ACK in ESTABLISHED (or the
handshake's last ACK) itself, specialised.  Every other segment of a known entry -- the
SYN/ACK (SYN_SENT -> SYN_RECV), FINs, RSTs, ACKs in the closing states, segments out of
window, with SACK blocks, of a side not seen yet -- is several times rarer but, sent down
the general path, cost three times a fast one: the frame parsed again into a Packet, the
expiry and error checks, the lookup again, a PacketResult.  known_segment() takes them
from the values track() has already read.

The common ones are cases of their own, written out as the ACK case is -- one unpack of
tcp_window.THROUGH_LAST, the checks of that case only, one pack; the window checks I-IV
and the sides' updates are tcp_window's in_window() and advance(), the very updates
linux_in_window() makes -- chosen by the entry's table cell (direction, flags class,
state: case_table(), made from engine/tcp_tables.py when known_segment() is made, which
checks the facts each case relies on):

* sequenced(): a FIN (FIN|ACK) or an ACK whose cell is a closing state (ESTABLISHED ->
  FIN_WAIT, FIN_WAIT -> CLOSE_WAIT or LAST_ACK, ... TIME_WAIT, CLOSE), both sides seen,
  no option but NOP NOP TIMESTAMP: linux_segment() has no special cell for these (the one
  of LAST_ACK -> TIME_WAIT, a challenge ACK, is declined on its flag), linux_in_window()
  sets no side up and has no SACK edge to read, and _linux_packet()'s status rules change
  nothing (no RST, no SYN, not ESTABLISHED);
* syn_ack(): the SYN/ACK of the reply in SYN_SENT (-> SYN_RECV) whose side is not set up
  yet: linux_in_window() starts that side from it (tcp_init_sender()), with its options,
  then checks and updates as for any segment; no status rule applies;
* refused(): a RST of the reply in SYN_SENT, no reply seen yet, the last packet the SYN,
  no options: _linux_rst() asks for the window check, and an accepted RST on an entry
  without a reply is DELETE -- the entry goes, so of linux_in_window()'s work only its
  answer matters (the TCP state of a removed entry is read by no one: no helper, no
  listener on the fast path).

Each case checks first and writes last: when a check fails (out of window, options to
read, a side to set up, a flag a special cell looks at) it returns None having changed
nothing, and the segment goes the general way below.

The general way builds the segment's TcpInfo as extract_ipv4() does and hands it to the
very code the general path runs, TcpTracker.linux_segment() (the state table of
engine/tcp_tables.py, the special cells, the RST rules, linux_in_window()); then, for
every case, settle() (engine/fastpath_found.py) does what Tracker.process() does with a
found entry's outcome.

A flags byte TcpTracker.error() refuses is INVALID before any lookup, the entry untouched:
known_segment() answers it through the `invalid` it is given (engine/fastpath.py's: the
`invalid` stat counted, or None for IPv6, whose general path answers).

It declines, having changed nothing:
* a segment whose table cell is SYN_SENT* (SS_REOPEN): the general path may remove the
  entry and track the SYN again as a new one.
track() declines entries with a helper before calling it (the helper reads the packet).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, List, Optional

from .ctstate import Verdict
from .entry import ORIGINAL, REPLY, SEEN_REPLY, Entry
from .fastpath_found import Settle, make_settle
from .outcome import DELETE
from .packet import ACK, FIN, IPPROTO_TCP, SYN, TcpInfo
from .parse import TIMESTAMP_ONLY, linux_syn_options, tcp_info_with_options
from .tcp import CLOSING_STATES
from .tcp_tables import (C_ACK, C_FIN, C_RST, C_SYN, C_SYNACK, CLASS_NAMES, CLASS_OF_FLAGS,
                         CLOSE, FIN_WAIT, N_STATES, SS_REOPEN, STATE_TIMEOUT_KNOB, SYN_RECV,
                         SYN_SENT, TABLES, VALID_FLAGS)
from .tcp_window import (BE_LIBERAL, CLOSE_INIT, DATA_UNACKNOWLEDGED, EXP_CHALLENGE_ACK,
                         LAST_FLAGS, LAST_INDEX, M32, RETRANS, STATE, THROUGH_LAST,
                         WINDOW_SCALE, advance, in_window, options_of)

if TYPE_CHECKING:
    from .tracker import Tracker

KnownSegment = Callable[[float, bytes, Entry, bytes, int, int, int, int, int, int, int],
                        Optional[Verdict]]
# A case: (now, frame, entry, d, tot_len, flags, seq, ack, win, doff, options_at) ->
# the verdict, or None having changed nothing.
Case = Callable[[float, bytes, Entry, int, int, int, int, int, int, int, int],
                Optional[Verdict]]

TIMESTAMPS_DOFF = 20 + len(TIMESTAMP_ONLY) + 8      # NOP NOP TIMESTAMP(10) alone
TWO32 = M32 + 1


def _timeout(kv, new: int, retrans: int, flags: int, last_win: int) -> int:
    """TcpTracker.linux_segment()'s timeout rules (a), (c), (d), (e) for an accepted
    segment that is not a RST, entering state `new`: `flags` both sides' flags, `last_win`
    the last ACK-class packet's window, as stored after the segment."""
    timeout = kv[STATE_TIMEOUT_KNOB[new]]
    if retrans >= kv["tcp_max_retrans"] and timeout > kv["tcp_timeout_max_retrans"]:
        return kv["tcp_timeout_max_retrans"]                                 # (a)
    if flags & DATA_UNACKNOWLEDGED and timeout > kv["tcp_timeout_unacknowledged"]:
        return kv["tcp_timeout_unacknowledged"]                              # (c)
    if last_win == 0 and timeout > kv["tcp_timeout_max_retrans"]:
        return kv["tcp_timeout_max_retrans"]                                 # (d)
    return timeout                                                           # (e)


def make_sequenced(tracker: "Tracker", settle: Settle, ip_len: int) -> Case:
    """The case of a FIN or an ACK whose cell is a closing state: see the module text."""
    kv = tracker._kv
    table = TABLES["linux"]
    unpack_fields = THROUGH_LAST.unpack_from
    pack_fields = THROUGH_LAST.pack_into

    def sequenced(now: float, frame: bytes, entry: Entry, d: int, tot_len: int, flags: int,
                  seq: int, ack: int, win: int, doff: int,
                  options_at: int) -> Optional[Verdict]:
        # Options other than the timestamp alone may hold a SACK block (its edge is
        # read); a challenge ACK's flag is read by LAST_ACK -> TIME_WAIT's special cell.
        if doff != 20 and (doff != TIMESTAMPS_DOFF or frame[
                options_at:options_at + len(TIMESTAMP_ONLY)] != TIMESTAMP_ONLY):
            return None
        conn = entry.l4
        if conn[LAST_FLAGS] & EXP_CHALLENGE_ACK:
            return None
        # THROUGH_LAST holds ORIGINAL then REPLY: the reply's side first for a reply.
        if d:
            (receiver_end, receiver_maxend, receiver_maxwin, receiver_maxack, receiver_scale,
             receiver_flags, receiver_loose, sender_end, sender_maxend, sender_maxwin,
             sender_maxack, sender_scale, sender_flags, sender_loose, old, _, last_dir,
             last_seq, last_ack, last_end, last_win) = unpack_fields(conn)
        else:
            (sender_end, sender_maxend, sender_maxwin, sender_maxack, sender_scale,
             sender_flags, sender_loose, receiver_end, receiver_maxend, receiver_maxwin,
             receiver_maxack, receiver_scale, receiver_flags, receiver_loose, old, _,
             last_dir, last_seq, last_ack, last_end, last_win) = unpack_fields(conn)
        if sender_maxwin == 0:
            return None                 # linux_in_window() sets its side up from this one
        fin = flags & FIN               # (the class: FIN, or ACK without it)
        end = (seq + tot_len - ip_len - doff + fin) & M32      # segment_end()
        # linux_in_window()'s checks (sack == ack: no SACK edge); a failure is the general
        # way's (IGNORE, INVALID, or a liberal accept without updates).
        if not in_window(seq, end, ack, sender_end, sender_maxend, sender_maxwin,
                         receiver_end, receiver_maxwin):
            return None
        # Its updates, for a segment with ACK and without SYN (the window scaled).
        (sender_end, sender_maxwin, sender_maxack, sender_flags, receiver_maxend,
         receiver_maxwin, receiver_flags) = advance(
            end, ack, ack, win << sender_scale, ACK, sender_end, sender_maxend, sender_maxwin,
            sender_maxack, sender_flags, receiver_end, receiver_maxend, receiver_maxwin,
            receiver_flags)
        # An ACK-class segment is remembered, counted if it repeats the last one; a FIN
        # only gives the last direction (linux_segment()).
        retrans = conn[RETRANS]
        if fin:
            index = C_FIN
        else:
            index = C_ACK
            if (last_dir, last_seq, last_ack, last_end, last_win) == (d, seq, ack, end, win):
                retrans = conn[RETRANS] = (retrans + 1) & 0xFF
            else:
                last_seq, last_ack, last_end, last_win = seq, ack, end, win
                retrans = conn[RETRANS] = 0
        new = table[d][index][old]
        if old != new and new == FIN_WAIT:
            sender_flags |= CLOSE_INIT
        if d:
            pack_fields(conn, 0, receiver_end, receiver_maxend, receiver_maxwin,
                        receiver_maxack, receiver_scale, receiver_flags, receiver_loose,
                        sender_end, sender_maxend, sender_maxwin, sender_maxack, sender_scale,
                        sender_flags, sender_loose, new, index, d, last_seq, last_ack,
                        last_end, last_win)
        else:
            pack_fields(conn, 0, sender_end, sender_maxend, sender_maxwin, sender_maxack,
                        sender_scale, sender_flags, sender_loose, receiver_end,
                        receiver_maxend, receiver_maxwin, receiver_maxack, receiver_scale,
                        receiver_flags, receiver_loose, new, index, d, last_seq, last_ack,
                        last_end, last_win)
        timeout = _timeout(kv, new, retrans, sender_flags | receiver_flags, last_win)
        return settle(now, entry, d, entry.status, timeout, tot_len)

    return sequenced


def make_syn_ack(tracker: "Tracker", settle: Settle, ip_len: int) -> Case:
    """The case of the reply's SYN/ACK in SYN_SENT: see the module text."""
    kv = tracker._kv
    unpack_fields = THROUGH_LAST.unpack_from
    pack_fields = THROUGH_LAST.pack_into

    def syn_ack(now: float, frame: bytes, entry: Entry, d: int, tot_len: int, flags: int,
                seq: int, ack: int, win: int, doff: int,
                options_at: int) -> Optional[Verdict]:
        conn = entry.l4
        (receiver_end, receiver_maxend, receiver_maxwin, receiver_maxack, receiver_scale,
         receiver_flags, receiver_loose, _, _, sender_maxwin, sender_maxack, sender_scale,
         sender_flags, sender_loose, _, _, _, last_seq, last_ack, last_end,
         last_win) = unpack_fields(conn)
        if sender_maxwin != 0:
            return None                 # its side was set up already (a reinitialisation)
        if doff > 20:
            # Linux's own layouts read in place (what parse_tcp_options() reads of them),
            # any other by it.
            layout = linux_syn_options(frame, options_at, doff - 20)
            if layout is not None:
                wscale, sack_perm = layout
            else:
                tcp = tcp_info_with_options(frame, flags, seq, ack, win,
                                            tot_len - ip_len - doff, options_at,
                                            options_at + doff - 20)
                if tcp.sack_edge is not None:
                    return None         # a SACK block's edge to read
                wscale, sack_perm = tcp.wscale, tcp.sack_perm
            sender_scale, sender_flags = options_of(True, wscale, sack_perm, sender_flags,
                                                    BE_LIBERAL)
        # tcp_init_sender(): the side starts at the segment's end (seq + payload + SYN).
        end = (seq + tot_len - ip_len - doff + 1) & M32
        sender_end = sender_maxend = end
        sender_maxwin = win or 1
        if not in_window(seq, end, ack, sender_end, sender_maxend, sender_maxwin,
                         receiver_end, receiver_maxwin):
            return None
        # RFC 1323: window scaling only if both sides offered it.
        if not (sender_flags & WINDOW_SCALE and receiver_flags & WINDOW_SCALE):
            sender_scale = receiver_scale = 0
        # The updates of a SYN with ACK: its window unscaled.
        (sender_end, sender_maxwin, sender_maxack, sender_flags, receiver_maxend,
         receiver_maxwin, receiver_flags) = advance(
            end, ack, ack, win, ACK, sender_end, sender_maxend, sender_maxwin, sender_maxack,
            sender_flags, receiver_end, receiver_maxend, receiver_maxwin, receiver_flags)
        pack_fields(conn, 0, receiver_end, receiver_maxend, receiver_maxwin, receiver_maxack,
                    receiver_scale, receiver_flags, receiver_loose, sender_end, sender_maxend,
                    sender_maxwin, sender_maxack, sender_scale, sender_flags, sender_loose,
                    SYN_RECV, C_SYNACK, REPLY, last_seq, last_ack, last_end, last_win)
        timeout = _timeout(kv, SYN_RECV, conn[RETRANS], sender_flags | receiver_flags,
                           last_win)
        return settle(now, entry, REPLY, entry.status, timeout, tot_len)

    return syn_ack


def make_refused(tracker: "Tracker", settle: Settle, ip_len: int) -> Case:
    """The case of the reply's RST in SYN_SENT before any reply: see the module text."""
    kv = tracker._kv
    unpack_fields = THROUGH_LAST.unpack_from

    def refused(now: float, frame: bytes, entry: Entry, d: int, tot_len: int, flags: int,
                seq: int, ack: int, win: int, doff: int,
                options_at: int) -> Optional[Verdict]:
        status = entry.status
        conn = entry.l4
        if doff != 20 or status & SEEN_REPLY or conn[LAST_INDEX] != C_SYN:
            return None                 # a SACK edge; _linux_rst()'s other rules
        (receiver_end, _, receiver_maxwin, _, _, _, _, _, _, sender_maxwin, _, sender_scale,
         sender_flags, _, _, _, _, _, _, _, _) = unpack_fields(conn)
        if sender_maxwin != 0:
            return None
        # linux_in_window() sets the side up from the segment (no SYN: not from its
        # options), the receiver's end moved up by one when it acks exactly one more
        # (a keepalive's answer); or both at ack when the receiver was never seen.
        end = (seq + tot_len - ip_len - doff) & M32
        sender_maxwin = ((win << sender_scale) & M32) or 1
        sender_end = end
        sender_maxend = (end + sender_maxwin) & M32
        if receiver_maxwin == 0:
            receiver_end = ack
        elif ack == (receiver_end + 1) & M32:
            receiver_end = ack
        if not flags & ACK or ack == 0:
            ack = receiver_end          # acknowledges everything (no ACK, or a broken 0)
        if seq == 0:
            seq = end = sender_end      # the RST answering a SYN (state SYN_SENT)
        # Checks I-IV: any failure is IGNORE or INVALID unless liberal.
        if (not in_window(seq, end, ack, sender_end, sender_maxend, sender_maxwin,
                          receiver_end, receiver_maxwin)
                and not (kv["tcp_be_liberal"] or sender_flags & BE_LIBERAL)):
            return None
        # Accepted: with no reply seen, the only answer was a RST: no connection to keep.
        return settle(now, entry, REPLY, status, DELETE, tot_len)

    return refused


def case_table(sequenced: Case, syn_ack: Case, refused: Case) -> List[List[List[Optional[Case]]]]:
    """[direction][class][state] -> the case written out for that cell of the linux table,
    None where known_segment() takes the general way; built from the table's cells, so
    each case gets only the transitions it was written for."""
    table = TABLES["linux"]
    cases: List[List[List[Optional[Case]]]] = [
        [[None] * N_STATES for _ in CLASS_NAMES] for _ in (ORIGINAL, REPLY)]
    for d in (ORIGINAL, REPLY):
        for index in (C_FIN, C_ACK):
            for old, new in enumerate(table[d][index]):
                if new in CLOSING_STATES:
                    cases[d][index][old] = sequenced
    if table[REPLY][C_SYNACK][SYN_SENT] == SYN_RECV:
        cases[REPLY][C_SYNACK][SYN_SENT] = syn_ack
    if table[REPLY][C_RST][SYN_SENT] == CLOSE:
        cases[REPLY][C_RST][SYN_SENT] = refused
    # The flags bytes error() lets through as each case reads them: of classes FIN and
    # ACK, FIN (the class FIN) with ACK or ACK alone, for sequenced(); of class RST,
    # neither SYN nor FIN (an end without them), for refused().
    valid = [flags for flags in range(256) if VALID_FLAGS["linux"][flags]]
    assert all(CLASS_OF_FLAGS[flags] == (C_FIN if flags & FIN else C_ACK) and flags & ACK
               for flags in valid if CLASS_OF_FLAGS[flags] in (C_FIN, C_ACK))
    assert all(not flags & (SYN | FIN) for flags in valid if CLASS_OF_FLAGS[flags] == C_RST)
    return cases


def make_known_segment(tracker: "Tracker", ip_len: int,
                       invalid: Callable[[], Optional[Verdict]]) -> KnownSegment:
    """known_segment(now, frame, entry, key, tot_len, flags, seq, ack, win, doff,
    options_at) for this tracker (linux profile), for datagrams whose IP header is ip_len
    bytes: see the module text.  `invalid()` answers a flags byte error() refuses (the
    INVALID verdict, counted; or None: the general path's)."""
    linux_segment = tracker.tracker_of(IPPROTO_TCP).linux_segment
    table = TABLES["linux"]
    valid_flags = VALID_FLAGS["linux"]
    kv = tracker._kv
    settle = make_settle(tracker)
    cases = case_table(make_sequenced(tracker, settle, ip_len),
                       make_syn_ack(tracker, settle, ip_len),
                       make_refused(tracker, settle, ip_len))

    def known_segment(now: float, frame: bytes, entry: Entry, key: bytes, tot_len: int,
                      flags: int, seq: int, ack: int, win: int, doff: int,
                      options_at: int) -> Optional[Verdict]:
        if not valid_flags[flags]:
            return invalid()            # TcpTracker.error(): INVALID before the lookup
        d = REPLY if key == entry.reply else ORIGINAL
        index = CLASS_OF_FLAGS[flags]
        old = entry.l4[STATE]
        case = cases[d][index][old]
        if case is not None:
            verdict = case(now, frame, entry, d, tot_len, flags, seq, ack, win, doff,
                           options_at)
            if verdict is not None:
                return verdict
        status = entry.status           # (the ctinfo is decided from it: settle())
        if table[d][index][old] == SS_REOPEN:
            return None                 # may REOPEN: remove, look up again, a new entry
        # The TcpInfo extract_ipv4() makes of the segment (its options read the same way).
        if doff > 20:
            tcp = tcp_info_with_options(frame, flags, seq, ack, win, tot_len - ip_len - doff,
                                        options_at, options_at + doff - 20)
        else:
            tcp = TcpInfo(flags, seq, ack, win, tot_len - ip_len - doff, None, False, None,
                          True, False)
        outcome = linux_segment(entry, tcp, d, now, kv)
        return settle(now, entry, d, status, outcome, tot_len)

    return known_segment
