"""The TCP connection tracker: pre-table checks, entry creation and the per-packet algorithm.

Spec: docs/spec/conntrack.md §4.5 (error checks), §4.6 (per-packet algorithm, modern, and the
"2.6-ipct/pom differences"), §4.7 (window tracking, engine/tcp_window.py) and §4.8 (timeouts).
The transitions themselves are data in engine/tcp_tables.py; this module looks the new state
up and handles the few cells and situations the kernel treats specially.

Profiles: "linux" is modern nf_conntrack; "tutorial" is 2.4 + tcp-window-tracking / 2.6
ip_conntrack. `TcpTracker.packet` answers with a timeout in seconds (accept, refresh the timer)
or one of the outcomes of engine.entry (IGNORE, INVALID, DELETE, REOPEN).
"""
from __future__ import annotations

from typing import Any, List, Mapping, Optional, Tuple

from .entry import ASSURED, ORIGINAL, REPLY, SEEN_REPLY, Entry
from .hooks import PRE_ROUTING
from .l4 import checked_list, checked_uint, ports_text, swapped
from .outcome import DELETE, IGNORE, INVALID, REOPEN, Outcome
from .packet import RST, Packet, TcpInfo
from .profile import LINUX, check_profile
from .tcp_tables import (C_ACK, C_FIN, C_RST, C_SYN, C_SYNACK, CLASS_OF_FLAGS, CLOSE,
                         CLOSE_WAIT, ESTABLISHED, FIN_WAIT, IG, IV, LAST_ACK, NONE,
                         STATE_NAMES, STATE_TIMEOUT_KNOB, SYN_RECV, SYN_SENT, SYN_SENT2,
                         SS_REOPEN, TABLES, TIME_WAIT, VALID_FLAGS)
from .tcp_window import (BE_LIBERAL, CLOSE_INIT, DATA_UNACKNOWLEDGED, END_AT,
                         EXP_CHALLENGE_ACK, FIELD_LAYOUT, FLAGS, HALF, LAST_ACK_AT, LAST_DIR,
                         LAST_END_AT, LAST_FLAGS, LAST_INDEX, LAST_SEQ_AT, LAST_WIN_AT,
                         LAST_WSCALE, LOOSE, M32, MAX_WSCALE, MAXACK_AT, MAXACK_SET,
                         MAXEND_AT, MAXWIN_AT, RETRANS, N_FIELDS, SACK_PERM, SCALE, SIDE,
                         SIMULTANEOUS_OPEN, STATE, STATE_FIELD, W_ACCEPT, W_IGNORE,
                         WINDOW_SCALE, TcpConn, export_fields, get32, import_fields,
                         init_from_pickup, init_from_syn, linux_in_window, new_conn, put32,
                         read_u32, reset_side, segment_end, tutorial_in_window)

Knobs = Mapping[str, int]

# States in which an ASSURED entry may go in the modern GC's eviction mode, and in which a
# modern RST is accepted without any sequence check (tcp_can_early_drop()).
CLOSING_STATES = frozenset((FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE))

# 2.6-ipct kills the entry when a SYN/ACK acknowledges a SYN it had ignored, and drops that
# SYN/ACK so the client retransmits its SYN into a clean entry. The outcomes offer no
# "drop the packet and delete the entry"; DELETE (accept, then delete) keeps the entry's
# life right, at the price of this one packet being classified instead of dropped.
OUT_OF_SYNC_SYNACK = DELETE

# Modern: an invalid FIN/RST answering a FIN/RST on an ASSURED entry shortens the timer only
# if at least this much is left (nf_tcp_handle_invalid()).
_SHORTEN_ONLY_ABOVE = 120


class TcpTracker:
    """TCP state machine of one profile; per-entry state lives in `entry.l4` (a TcpConn)."""

    name = "tcp"
    error_messages = False
    invert = staticmethod(swapped)
    tuple_text = staticmethod(ports_text)

    def __init__(self, profile: str) -> None:
        self.profile = check_profile(profile)
        self.linux = profile == LINUX
        self._table = TABLES[profile]
        self.valid_flags = VALID_FLAGS[profile]     # by flags byte: passes error()
        self._names = STATE_NAMES[profile]
        # packet(entry, pkt, direction, now, knobs): the profile's state machine, bound once
        # (it runs for every TCP segment: no dispatch call in between).
        self.packet = self._linux_packet if self.linux else self._tutorial_packet

    # -- before the tables (§4.5) ------------------------------------------------------------
    def error(self, pkt: Packet, knobs: Knobs) -> Optional[str]:
        """Why this packet is INVALID before any lookup, or None if it may go on."""
        if pkt.l4_error is not None:
            return pkt.l4_error
        tcp = pkt.tcp
        if tcp is None:
            return "truncated packet"
        # Locally generated packets are never checked (their checksum may be left to the NIC).
        if (pkt.hook == PRE_ROUTING and knobs["checksum"]
                and not (tcp.checksum_ok and pkt.l4_checksum_ok)):
            return "bad checksum"
        if not self.valid_flags[tcp.flags & 0xFF]:
            return "invalid tcp flag combination"
        return None

    def quotes_flow(self, pkt: Packet) -> bool:
        return False

    # -- the first packet --------------------------------------------------------------------
    def new(self, entry: Entry, pkt: Packet, knobs: Knobs) -> bool:
        """May this first packet create an entry? If so, set up `entry.l4`.

        The ORIGINAL row at NONE decides: a SYN opens a connection; an ACK picks one up
        under way if `tcp_loose` is non-zero; anything else makes no entry.
        """
        tcp = pkt.tcp
        cell = self._table[ORIGINAL][CLASS_OF_FLAGS[tcp.flags & 0xFF]][NONE]
        conn = new_conn()
        if cell == SYN_SENT:
            init_from_syn(conn, 0, tcp, BE_LIBERAL if self.linux else 0)
        elif cell == ESTABLISHED:
            loose = knobs["tcp_loose"]
            if not loose:
                return False
            init_from_pickup(conn, 0, tcp)
            if self.linux:
                # Window scaling of a picked-up connection is unknown: both directions are
                # judged liberally, and SACK is assumed, for the connection's whole life.
                conn[FLAGS] = conn[SIDE + FLAGS] = SACK_PERM | BE_LIBERAL
            else:
                conn[FLAGS] = conn[SIDE + FLAGS] = SACK_PERM
                conn[LOOSE] = conn[SIDE + LOOSE] = loose & 0xFF    # a u8 in 2.6 too
        else:
            return False
        if not self.linux:
            put32(conn, SIDE + MAXWIN_AT, 1)  # 2.6-ipct starts the unseen side with a window of 1
        entry.l4 = conn
        return True

    def state_names(self) -> Tuple[str, ...]:
        """Listing names by state number."""
        return self._names

    def state_name(self, entry: Entry) -> str:
        return self._names[entry.l4[STATE]]

    def export_l4(self, entry: Entry, now: float) -> List[int]:
        """The packed fields of engine/tcp_window.py's TcpConn, as a list (FIELD_LAYOUT)."""
        return export_fields(entry.l4)

    def restore_l4(self, value: Any, saved_at: float) -> TcpConn:
        fields = [checked_uint(v, 8 * width, "l4")
                  for v, (_, width) in zip(checked_list(value, N_FIELDS, "l4"), FIELD_LAYOUT)]
        if fields[STATE_FIELD] >= len(self._names):
            raise ValueError(f"l4: TCP state {fields[STATE_FIELD]} does not exist")
        conn = import_fields(fields)
        for side in (0, SIDE):
            if conn[side + SCALE] > MAX_WSCALE:
                raise ValueError(f"l4: window scale {conn[side + SCALE]} above {MAX_WSCALE}")
        return conn

    def early_drop_victim_in_eviction_mode(self, entry: Entry) -> bool:
        """May the modern GC kill this entry while the table is nearly full (§7.2)?

        Unassured entries always; assured ones only once they are closing.
        """
        if not entry.status & ASSURED:
            return True
        return entry.l4[STATE] in CLOSING_STATES

    # -- modern (§4.6) -----------------------------------------------------------------------
    def _linux_packet(self, entry: Entry, pkt: Packet, d: int, now: float,
                      knobs: Knobs) -> Outcome:
        """packet() of the linux profile: a timeout (seconds) or an outcome."""
        return self.linux_segment(entry, pkt.tcp, d, now, knobs)

    def linux_segment(self, entry: Entry, tcp: TcpInfo, d: int, now: float,
                      knobs: Knobs) -> Outcome:
        """_linux_packet() for the segment's TcpInfo (engine/fastpath_tcp.py calls it
        from frame bytes, without a Packet)."""
        conn: TcpConn = entry.l4
        flags = tcp.flags
        index = CLASS_OF_FLAGS[flags & 0xFF]
        old = conn[STATE]
        new = self._table[d][index][old]
        skip_window = False

        if new == ESTABLISHED:
            pass        # most segments: no special cell below (tested first to skip them)
        elif new >= IV:
            if new == IV:
                return INVALID
            if new == SS_REOPEN:
                # SYN on a closed/aborted connection: start afresh if the old one really
                # closed (a FIN was seen) or this side reset it; otherwise treat as IG.
                if ((conn[FLAGS] | conn[SIDE + FLAGS]) & CLOSE_INIT
                        or (conn[LAST_DIR] == d and conn[LAST_INDEX] == C_RST)):
                    return REOPEN
            # IG (or a SYN_SENT* that did not reopen).
            if (index == C_SYNACK and conn[LAST_INDEX] == C_SYN and conn[LAST_DIR] != d
                    and tcp.ack == get32(conn, LAST_END_AT)):
                # The SYN/ACK answers a SYN we ignored: client and server are in sync and
                # we are not. Take the remembered SYN as the original side and go on as
                # if the entry were in SYN_SENT.
                _resync_from_ignored_syn(conn, d)
                old, new = SYN_SENT, SYN_RECV
            else:
                _remember_ignored(conn, d, index, tcp, old)
                return IGNORE
        elif new == TIME_WAIT:
            if (old == LAST_ACK and index == C_ACK and conn[LAST_DIR] != d
                    and conn[LAST_INDEX] == C_SYN and conn[LAST_FLAGS] & EXP_CHALLENGE_ACK):
                # An RFC 5961 challenge ACK to a SYN, not the ACK of the last FIN.
                conn[LAST_FLAGS] &= ~EXP_CHALLENGE_ACK
                return IGNORE
        elif new == SYN_SENT2:
            conn[LAST_FLAGS] |= SIMULTANEOUS_OPEN
        elif new == SYN_RECV:
            if d == REPLY and index == C_ACK and conn[LAST_FLAGS] & SIMULTANEOUS_OPEN:
                new = ESTABLISHED
        elif new == CLOSE and index == C_RST:
            rst = _linux_rst(conn, entry, tcp, d, old, knobs)
            if rst is None:
                return INVALID
            new, skip_window = rst

        if not skip_window:
            res = linux_in_window(conn, d, index, tcp, knobs["tcp_be_liberal"])
            if res != W_ACCEPT:
                if res == W_IGNORE:
                    return IGNORE
                _shorten_after_invalid(conn, entry, d, index, now, knobs)
                return INVALID

        # Accepted (in window).
        conn[LAST_INDEX] = index
        conn[LAST_DIR] = d
        conn[STATE] = new
        if old != new and new == FIN_WAIT:
            conn[d * SIDE + FLAGS] |= CLOSE_INIT

        # First rule that applies (§4.6 step 8); knobs are read only when a rule needs them.
        state_timeout = knobs[STATE_TIMEOUT_KNOB[new]]
        if (conn[RETRANS] >= knobs["tcp_max_retrans"]
                and state_timeout > knobs["tcp_timeout_max_retrans"]):
            timeout = knobs["tcp_timeout_max_retrans"]                       # (a)
        elif index == C_RST:
            timeout = knobs["tcp_timeout_close"]                             # (b)
        elif ((conn[FLAGS] | conn[SIDE + FLAGS]) & DATA_UNACKNOWLEDGED
              and state_timeout > knobs["tcp_timeout_unacknowledged"]):
            timeout = knobs["tcp_timeout_unacknowledged"]                    # (c)
        elif read_u32(conn, LAST_WIN_AT)[0] == 0 and state_timeout > knobs["tcp_timeout_max_retrans"]:
            timeout = knobs["tcp_timeout_max_retrans"]                       # (d)
        else:
            timeout = state_timeout                                          # (e)

        status = entry.status
        if not status & SEEN_REPLY:
            if flags & RST:
                return DELETE       # the only answer was a RST: no connection to keep
            if index == C_SYN and old == SYN_SENT:
                return IGNORE       # SYN retransmissions must not keep the entry alive
            if new == ESTABLISHED:
                # Picked up without a reply yet: not worth five days.
                unack = knobs["tcp_timeout_unacknowledged"]
                if timeout > unack:
                    timeout = unack
        elif (not status & ASSURED and (old == SYN_RECV or old == ESTABLISHED)
              and new == ESTABLISHED):
            entry.status = status | ASSURED
        return timeout

    # -- pom / 2.6-ipct ----------------------------------------------------------------------
    def _tutorial_packet(self, entry: Entry, pkt: Packet, d: int, now: float,
                         knobs: Knobs) -> Outcome:
        """packet() of the tutorial profile: a timeout (seconds) or an outcome."""
        tcp: TcpInfo = pkt.tcp
        conn: TcpConn = entry.l4
        flags = tcp.flags
        index = CLASS_OF_FLAGS[flags & 0xFF]
        old = conn[STATE]
        new = self._table[d][index][old]
        status = entry.status

        if new >= IV:
            if new == IV:
                return INVALID
            if new == IG:
                if (index == C_SYNACK and conn[LAST_INDEX] == C_SYN and conn[LAST_DIR] != d
                        and tcp.ack == get32(conn, LAST_END_AT)):
                    return OUT_OF_SYNC_SYNACK
                conn[LAST_INDEX] = index
                conn[LAST_DIR] = d
                put32(conn, LAST_SEQ_AT, tcp.seq)
                put32(conn, LAST_END_AT, segment_end(tcp))
                return IGNORE
            # SS_REOPEN: only if this side closed, or the SYN is beyond what it sent.
            s = d * SIDE
            if (conn[s + FLAGS] & CLOSE_INIT
                    or ((get32(conn, s + END_AT) - tcp.seq) & M32) >= HALF):
                return REOPEN
            return INVALID

        if (new == CLOSE and index == C_RST
                and ((status & SEEN_REPLY and conn[LAST_INDEX] == C_SYN)
                     or (not status & ASSURED and conn[LAST_INDEX] == C_ACK))
                and tcp.ack == get32(conn, LAST_END_AT)):
            pass  # RST answering a SYN/ACK we let through: no window check
        elif not tutorial_in_window(conn, d, index, tcp, knobs["tcp_be_liberal"]):
            return INVALID

        conn[LAST_INDEX] = index
        conn[STATE] = new
        if old != new and (new == FIN_WAIT or new == CLOSE):
            conn[d * SIDE + FLAGS] |= CLOSE_INIT

        # Only rule (a), then the state's timeout.
        timeout = knobs[STATE_TIMEOUT_KNOB[new]]
        if (conn[RETRANS] >= knobs["tcp_max_retrans"]
                and timeout > knobs["tcp_timeout_max_retrans"]):
            timeout = knobs["tcp_timeout_max_retrans"]

        if not status & SEEN_REPLY:
            if flags & RST:
                return DELETE
        elif (not status & ASSURED and (old == SYN_RECV or old == ESTABLISHED)
              and new == ESTABLISHED):
            entry.status = status | ASSURED
        return timeout


def _remember_ignored(conn: TcpConn, d: int, index: int, tcp: Any, old: int) -> None:
    """Note an ignored packet, so that the answer to it can put us back in sync (§4.6 4)."""
    conn[LAST_INDEX] = index
    conn[LAST_DIR] = d
    put32(conn, LAST_SEQ_AT, tcp.seq)
    put32(conn, LAST_END_AT, segment_end(tcp))
    put32(conn, LAST_WIN_AT, tcp.window)
    if index == C_SYN and d == ORIGINAL:
        # A new SYN on an old entry: keep its options for the resync.
        last_flags = 0
        wscale = tcp.wscale
        conn[LAST_WSCALE] = 0
        if wscale is not None:
            last_flags |= WINDOW_SCALE
            conn[LAST_WSCALE] = MAX_WSCALE if wscale > MAX_WSCALE else wscale
        if tcp.sack_perm:
            last_flags |= SACK_PERM
        if old == LAST_ACK:
            # The peer may answer with a challenge ACK that must not close LAST_ACK.
            last_flags |= EXP_CHALLENGE_ACK
        conn[LAST_FLAGS] = last_flags
    if old == SYN_SENT and index == C_ACK and d == REPLY:
        put32(conn, LAST_ACK_AT, tcp.ack)     # possible challenge ACK to our SYN


def _resync_from_ignored_syn(conn: TcpConn, d: int) -> None:
    """The remembered SYN becomes the original side; the SYN/ACK's side starts afresh."""
    syn = conn[LAST_DIR] * SIDE
    last_end = get32(conn, LAST_END_AT)
    put32(conn, syn + END_AT, last_end)
    put32(conn, syn + MAXEND_AT, last_end)
    put32(conn, syn + MAXWIN_AT, get32(conn, LAST_WIN_AT) or 1)
    conn[syn + SCALE] = conn[LAST_WSCALE]
    conn[LAST_FLAGS] &= ~EXP_CHALLENGE_ACK
    conn[syn + FLAGS] = conn[LAST_FLAGS]
    reset_side(conn, d * SIDE)


def _linux_rst(conn: TcpConn, entry: Entry, tcp: Any, d: int, old: int,
               knobs: Knobs) -> Optional[tuple]:
    """Modern RST rules (§4.6 step 6): None = INVALID, else (new state, skip window check)."""
    if old in CLOSING_STATES:
        # The tuple may already be reused; the window data is stale. Accept as it is.
        return CLOSE, True
    new = CLOSE
    peer = (1 - d) * SIDE
    # The peer's highest ACK is only trustworthy if we did not just let a SYN through.
    if conn[peer + FLAGS] & MAXACK_SET and conn[LAST_INDEX] != C_SYN:
        seq = tcp.seq
        peer_maxack = get32(conn, peer + MAXACK_AT)
        established = old == ESTABLISHED and entry.status & ASSURED
        if seq == 0 and not established:
            return CLOSE, False          # most likely the answer to a SYN we let through
        if ((seq - peer_maxack) & M32) >= HALF and not knobs["tcp_ignore_invalid_rst"]:
            return None                  # before(seq, maxack): below what the peer acked
        if not established or seq == peer_maxack:
            return CLOSE, False
        if conn[LAST_INDEX] == C_ACK and conn[LAST_DIR] == d and seq == get32(conn, LAST_END_AT):
            return CLOSE, False          # RST right after this side's own last segment
        # Sequence number not exact: keep the state to allow for a challenge ACK.
        new = old
    status = entry.status
    if (((status & SEEN_REPLY and conn[LAST_INDEX] == C_SYN)
         or (not status & ASSURED and conn[LAST_INDEX] == C_ACK))
            and tcp.ack == get32(conn, LAST_END_AT)):
        # RST answering an ignored SYN, or a lone ACK of a half-open entry: it may ACK
        # segments we never tracked, so skip the window check.
        return new, True
    if (old == SYN_SENT and conn[LAST_INDEX] == C_ACK and conn[LAST_DIR] == REPLY
            and tcp.seq == get32(conn, LAST_ACK_AT)):
        return new, True                 # reset answering a challenge ACK to our SYN
    return new, False


def _shorten_after_invalid(conn: TcpConn, entry: Entry, d: int, index: int, now: float,
                           knobs: Knobs) -> None:
    """nf_tcp_handle_invalid(): out-of-window FIN/RST exchange on an assured entry.

    Both ends are closing while we disagree on sequence numbers: do not keep the entry for
    days. This lowers `entry.expires` directly although the packet itself is INVALID.
    """
    if not entry.status & ASSURED or (index != C_RST and index != C_FIN):
        return
    if conn[LAST_DIR] != d and (conn[LAST_INDEX] == C_FIN or conn[LAST_INDEX] == C_RST):
        left = entry.expires - now
        if left < _SHORTEN_ONLY_ABOVE:
            return
        unack = knobs["tcp_timeout_unacknowledged"]
        if left > unack:
            entry.expires = now + unack
    else:
        conn[LAST_INDEX] = index
        conn[LAST_DIR] = d
