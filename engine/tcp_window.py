"""TCP window tracking (docs/spec/conntrack.md §4.7): per-direction sequence state and checks I-IV.

Follows Kadlecsik's algorithm as the kernel has it, in two generations:

* `linux_in_window`: modern nf_conntrack (`tcp_in_window` of 6.x): out-of-window data that
  is merely old (II) or an ACK that is merely late (IV) is ignored rather than invalid,
  a sender flagged BE_LIBERAL (picked-up connections) is never refused, SYNs re-initialise
  their side in SYN_SENT/SYN_RECV, unacknowledged data and the highest ACK are tracked.
* `tutorial_in_window`: pom tcp-window-tracking / 2.6 ip_conntrack: every failure is
  INVALID unless `tcp_be_liberal`; after a pickup the checks are skipped while either side's
  `loose` counter is non-zero; a packet without payload is judged on its ACK only.

All sequence arithmetic is modulo 2**32; `before`/`after` are the kernel's helpers. On the
hot path they are written out inline (one comparison each), with the helper's name in a comment.

The per-entry state is packed like the kernel's struct ip_ct_tcp: one array of unsigned
32-bit fields (TcpConn), both directions' struct ip_ct_tcp_state first, then the
connection's own fields.  A table holds 262,144 entries by default and a Python int costs
about 30 bytes, so objects holding ints cost a TCP entry ~670 bytes of state; the array
costs 200.  The checks read a direction's fields into locals with one struct call
(`sender_end`, `receiver_maxwin`, ... as the kernel's `sender->td_end`) and store what they
change; attribute views (`conn.state`, `conn.sides[d].end`) serve the rare paths and tests.
"""
from __future__ import annotations

import struct
from array import array
from typing import Tuple

from .entry import ORIGINAL, REPLY
from .packet import ACK, FIN, RST, SYN, TcpInfo
from .tcp_tables import C_ACK, C_NONE, SYN_RECV, SYN_SENT

M32 = 0xFFFFFFFF
HALF = 0x80000000
MAXACKWINCONST = 66000
MAX_WSCALE = 14

# Per-direction flags (include/uapi/linux/netfilter/nf_conntrack_tcp.h).
WINDOW_SCALE = 0x01
SACK_PERM = 0x02
CLOSE_INIT = 0x04         # this direction sent the first FIN (tutorial: or entered CLOSE)
BE_LIBERAL = 0x08         # never refuse this sender's packets on window grounds
DATA_UNACKNOWLEDGED = 0x10
MAXACK_SET = 0x20
# Bits of the connection's LAST_FLAGS only.
EXP_CHALLENGE_ACK = 0x40  # an ignored SYN hit LAST_ACK: the next reply ACK may be a challenge
SIMULTANEOUS_OPEN = 0x80

# Results of a window check.
W_ACCEPT, W_IGNORE, W_INVALID = 0, 1, 2

# -- the packed state --------------------------------------------------------------------------
# One direction (struct ip_ct_tcp_state), at offset 0 (ORIGINAL) or SIDE (REPLY):
END = 0         # highest seq + len sent
MAXEND = 1      # highest right edge of the window the peer offered
MAXWIN = 2      # largest window seen (0 = this side not initialised, modern)
MAXACK = 3      # highest ACK sent (modern, valid with MAXACK_SET)
SCALE = 4       # window scale shift
FLAGS = 5       # the per-direction flags above
LOOSE = 6       # tutorial: packets left to pass unchecked after a pickup
SIDE = 7
# The connection (struct ip_ct_tcp), after both directions:
STATE = 14        # conntrack state; NONE until the first packet is processed
LAST_INDEX = 15   # packet class of the last packet
LAST_DIR = 16     # and of the last remembered packet: its direction, seq, ack, end, window
LAST_SEQ = 17
LAST_ACK_NO = 18   # (the state LAST_ACK of tcp_tables is another thing)
LAST_END = 19
LAST_WIN = 20
LAST_WSCALE = 21
LAST_FLAGS = 22
RETRANS = 23      # identical ACK-class packets in a row
N_FIELDS = 24

_SIDE_FIELDS = struct.Struct("=6I")     # END .. FLAGS of one direction (native u32 = 'I')
_BOTH_SIDES = struct.Struct("=14I")     # both directions, ORIGINAL then REPLY
_LAST_FIELDS = struct.Struct("=5I")     # LAST_DIR .. LAST_WIN
_LAST4_FIELDS = struct.Struct("=4I")    # LAST_DIR .. LAST_END

_NEW_CONN = array("I", [0] * N_FIELDS)
_NEW_CONN[LAST_INDEX] = C_NONE


def before(a: int, b: int) -> bool:
    """a < b modulo 2**32 (the kernel's before())."""
    return ((a - b) & M32) >= HALF


def after(a: int, b: int) -> bool:
    """a > b modulo 2**32 (the kernel's after())."""
    return ((b - a) & M32) >= HALF


def segment_end(tcp: TcpInfo) -> int:
    """seq + payload + 1 for SYN + 1 for FIN: the sequence number after this segment."""
    flags = tcp.flags
    return (tcp.seq + tcp.payload_len + ((flags & SYN) >> 1) + (flags & FIN)) & M32


def _field(index: int) -> property:
    def get(self) -> int:
        return self._conn[self._base + index]

    def put(self, value: int) -> None:
        self._conn[self._base + index] = value
    return property(get, put)


class TcpSide:
    """A view of one direction's fields in a TcpConn (the kernel's struct ip_ct_tcp_state)."""
    __slots__ = ("_conn", "_base")

    def __init__(self, conn: "TcpConn", direction: int) -> None:
        self._conn = conn
        self._base = direction * SIDE

    end = _field(END)
    maxend = _field(MAXEND)
    maxwin = _field(MAXWIN)
    maxack = _field(MAXACK)
    scale = _field(SCALE)
    flags = _field(FLAGS)
    loose = _field(LOOSE)

    def reset(self) -> None:
        """Forget the window data, keep only the liberal flag (nf_ct_tcp_state_reset)."""
        reset_side(self._conn, self._base)


def _conn_field(index: int) -> property:
    return property(lambda self: self[index], lambda self, value: self.__setitem__(index, value))


class TcpConn(array):
    """Per-entry TCP state: the conntrack state, both directions, and the last packet.

    An array of N_FIELDS unsigned 32-bit fields at the offsets above; the attributes are
    views for code that reads one field now and then.
    """
    __slots__ = ()

    def __new__(cls) -> "TcpConn":
        return array.__new__(cls, "I", _NEW_CONN)

    @property
    def sides(self) -> Tuple[TcpSide, TcpSide]:
        return TcpSide(self, ORIGINAL), TcpSide(self, REPLY)

    state = _conn_field(STATE)
    last_index = _conn_field(LAST_INDEX)
    last_dir = _conn_field(LAST_DIR)
    last_seq = _conn_field(LAST_SEQ)
    last_ack = _conn_field(LAST_ACK_NO)
    last_end = _conn_field(LAST_END)
    last_win = _conn_field(LAST_WIN)
    last_wscale = _conn_field(LAST_WSCALE)
    last_flags = _conn_field(LAST_FLAGS)
    retrans = _conn_field(RETRANS)


def reset_side(conn: TcpConn, s: int) -> None:
    """Forget a direction's window data, keep only the liberal flag (nf_ct_tcp_state_reset)."""
    _SIDE_FIELDS.pack_into(conn, s * 4, 0, 0, 0, 0, 0, conn[s + FLAGS] & BE_LIBERAL)


def read_options(conn: TcpConn, s: int, tcp: TcpInfo, keep: int) -> None:
    """Take window scale and SACK-permitted from a segment's options (tcp_options()).

    The kernel resets the side's scale and flags (except `keep`) whenever the header has
    options at all: a SYN with only an MSS option wipes the window scale an earlier SYN of
    the same side set (scenario tcp_syn_options_reset).  A TcpInfo built by hand may carry
    a window scale or SACK-permitted without its `options` flag; those count as options too.
    """
    wscale = tcp.wscale
    if not tcp.options and wscale is None and not tcp.sack_perm:
        return
    flags = conn[s + FLAGS] & keep
    scale = 0
    if tcp.sack_perm:
        flags |= SACK_PERM
    if wscale is not None:
        scale = MAX_WSCALE if wscale > MAX_WSCALE else wscale
        flags |= WINDOW_SCALE
    conn[s + SCALE] = scale
    conn[s + FLAGS] = flags


def init_from_syn(conn: TcpConn, s: int, tcp: TcpInfo, keep: int) -> None:
    """First SYN of a connection: the original side starts at the SYN (tcp_new())."""
    conn[s + END] = conn[s + MAXEND] = segment_end(tcp)
    conn[s + MAXWIN] = tcp.window or 1
    read_options(conn, s, tcp, keep)


def init_from_pickup(conn: TcpConn, s: int, tcp: TcpInfo) -> None:
    """Mid-stream first packet: guess the original side from it (tcp_new(), loose pickup)."""
    end = segment_end(tcp)
    maxwin = tcp.window or 1
    conn[s + END] = end
    conn[s + MAXWIN] = maxwin
    conn[s + MAXEND] = (end + maxwin) & M32


def _linux_init_sender(conn: TcpConn, s: int, r: int, tcp: TcpInfo, end: int, win: int,
                       direction: int) -> None:
    """SYN/ACK answering a SYN, or a reply SYN in simultaneous open (tcp_init_sender())."""
    conn[s + END] = conn[s + MAXEND] = end
    conn[s + MAXWIN] = win or 1
    read_options(conn, s, tcp, BE_LIBERAL)
    # RFC 1323: window scaling only if both sides offered it.
    if direction == REPLY and not (conn[s + FLAGS] & WINDOW_SCALE
                                   and conn[r + FLAGS] & WINDOW_SCALE):
        conn[s + SCALE] = conn[r + SCALE] = 0


def linux_in_window(conn: TcpConn, direction: int, index: int, tcp: TcpInfo,
                    be_liberal: int) -> int:
    """Modern window check and update; returns W_ACCEPT, W_IGNORE or W_INVALID.

    `conn[STATE]` is still the stored (old) state. A liberal sender (knob or flag) gets
    W_ACCEPT for any failed check, but then nothing is updated, as in the kernel.
    """
    s = direction * SIDE          # the sender's fields start here
    r = SIDE - s                  # the receiver's
    flags = tcp.flags
    seq = tcp.seq
    ack = sack = tcp.ack
    win_raw = win = tcp.window
    end = (seq + tcp.payload_len + ((flags & SYN) >> 1) + (flags & FIN)) & M32

    if conn[r + FLAGS] & SACK_PERM:
        edge = tcp.sack_edge
        if edge is not None and ((sack - edge) & M32) >= HALF:       # after(edge, sack)
            sack = edge

    if conn[s + MAXWIN] == 0:
        if flags & SYN:
            _linux_init_sender(conn, s, r, tcp, end, win, direction)
            if not flags & ACK:
                return W_ACCEPT          # simultaneous open: reply SYN without ACK
        else:
            # This direction was never seen (picked-up connection): start from the packet.
            conn[s + END] = end
            maxwin = ((win << conn[s + SCALE]) & M32) or 1
            conn[s + MAXWIN] = maxwin
            conn[s + MAXEND] = (end + maxwin) & M32
            if conn[r + MAXWIN] == 0:
                # Nothing seen the other way either: make III and IV pass until it is.
                conn[r + END] = conn[r + MAXEND] = sack
            elif sack == ((conn[r + END] + 1) & M32):
                conn[r + END] = sack     # likely the answer to a keepalive
    elif (flags & SYN and ((conn[s + END] - end) & M32) >= HALF      # after(end, sender end)
          and (conn[STATE] == SYN_SENT or conn[STATE] == SYN_RECV)):
        # RFC 793: a reinitialised TCP may reuse the tuple with a higher sequence number.
        _linux_init_sender(conn, s, r, tcp, end, win, direction)
        if direction == REPLY and not flags & ACK:
            return W_ACCEPT

    # Both directions as they stand now, in one struct call.
    if direction == ORIGINAL:
        (sender_end, sender_maxend, sender_maxwin, sender_maxack, sender_scale, sender_flags,
         sender_loose, receiver_end, receiver_maxend, receiver_maxwin, receiver_maxack,
         receiver_scale, receiver_flags, receiver_loose) = _BOTH_SIDES.unpack_from(conn)
    else:
        (receiver_end, receiver_maxend, receiver_maxwin, receiver_maxack, receiver_scale,
         receiver_flags, receiver_loose, sender_end, sender_maxend, sender_maxwin,
         sender_maxack, sender_scale, sender_flags, sender_loose) = _BOTH_SIDES.unpack_from(conn)
    liberal = be_liberal or sender_flags & BE_LIBERAL

    if not flags & ACK:
        ack = sack = receiver_end        # no ACK: pretend it acknowledges everything
    elif flags & RST and ack == 0:
        ack = sack = receiver_end        # broken stacks send RST+ACK with ack 0
    if flags & RST and seq == 0 and conn[STATE] == SYN_SENT:
        seq = end = sender_end           # RST answering a SYN

    maxackwin = sender_maxwin if sender_maxwin > MAXACKWINCONST else MAXACKWINCONST

    # I: seq <= sender maxend
    if ((seq - sender_maxend - 1) & M32) < HALF:
        overshot = (end - sender_maxend + 1) & M32
        ack_ok = ((receiver_end - maxackwin - 1 - sack) & M32) >= HALF
        in_recv_win = receiver_maxwin and (
            ((sender_end - receiver_maxwin - 1 - end) & M32) >= HALF)
        if (in_recv_win and ack_ok and overshot <= receiver_maxwin
                and ((sack - receiver_end - 1) & M32) >= HALF):
            # The sender overran the window a little: keep the data plausible for the
            # ACK that will follow, but do not accept this packet ("N bytes more").
            conn[s + END] = end
            conn[s + FLAGS] = sender_flags | DATA_UNACKNOWLEDGED
            return W_ACCEPT if liberal else W_IGNORE
        return W_ACCEPT if liberal else W_INVALID
    # III: sack <= receiver end ("ACK is over upper bound")
    if ((sack - receiver_end - 1) & M32) < HALF:
        return W_ACCEPT if liberal else W_INVALID
    # II: end >= sender end - receiver maxwin (old data already acknowledged)
    if receiver_maxwin and ((sender_end - receiver_maxwin - 1 - end) & M32) < HALF:
        return W_ACCEPT if liberal else W_IGNORE
    # IV: sack >= receiver end - MAXACKWINDOW (overly delayed ACK)
    if ((receiver_end - maxackwin - 1 - sack) & M32) < HALF:
        return W_ACCEPT if liberal else W_IGNORE

    if not flags & SYN:
        win = win << sender_scale        # windows in SYN segments are never scaled

    # Update the sender.
    swin = (win + sack - ack) & M32
    if sender_maxwin < swin:
        sender_maxwin = swin
    if ((sender_end - end) & M32) >= HALF:                           # after(end, sender end)
        sender_end = end
        sender_flags |= DATA_UNACKNOWLEDGED
    if flags & ACK:
        if not sender_flags & MAXACK_SET:
            sender_maxack = ack
            sender_flags |= MAXACK_SET
        elif ((sender_maxack - ack) & M32) >= HALF:                  # after(ack, maxack)
            sender_maxack = ack

    # Update the receiver.
    if receiver_maxwin != 0 and ((sender_maxend - end) & M32) >= HALF:
        receiver_maxwin = (receiver_maxwin + end - sender_maxend) & M32
    right = (sack + win) & M32
    if ((receiver_maxend - 1 - right) & M32) >= HALF:                # after(right, maxend - 1)
        receiver_maxend = right if win else (right + 1) & M32
    if ack == receiver_end:
        receiver_flags &= ~DATA_UNACKNOWLEDGED
    if direction == ORIGINAL:
        _BOTH_SIDES.pack_into(conn, 0, sender_end, sender_maxend, sender_maxwin, sender_maxack,
                              sender_scale, sender_flags, sender_loose, receiver_end,
                              receiver_maxend, receiver_maxwin, receiver_maxack,
                              receiver_scale, receiver_flags, receiver_loose)
    else:
        _BOTH_SIDES.pack_into(conn, 0, receiver_end, receiver_maxend, receiver_maxwin,
                              receiver_maxack, receiver_scale, receiver_flags, receiver_loose,
                              sender_end, sender_maxend, sender_maxwin, sender_maxack,
                              sender_scale, sender_flags, sender_loose)

    # Count identical ACK-class packets (retransmissions).
    if index == C_ACK:
        if (conn[LAST_ACK_NO] == ack and conn[LAST_SEQ] == seq
                and _LAST_FIELDS.unpack_from(conn, LAST_DIR * 4)
                == (direction, seq, ack, end, win_raw)):
            conn[RETRANS] += 1
        else:
            _LAST_FIELDS.pack_into(conn, LAST_DIR * 4, direction, seq, ack, end, win_raw)
            conn[RETRANS] = 0
    return W_ACCEPT


def tutorial_in_window(conn: TcpConn, direction: int, index: int, tcp: TcpInfo,
                       be_liberal: int) -> bool:
    """pom / 2.6-ipct window check and update; True = accept.

    A failed check is INVALID unless `tcp_be_liberal` is set (then accepted, nothing
    updated). While either side still has `loose` packets left the checks are skipped.
    """
    s = direction * SIDE
    r = SIDE - s
    flags = tcp.flags
    seq = tcp.seq
    ack = sack = tcp.ack
    win = tcp.window
    end = (seq + tcp.payload_len + ((flags & SYN) >> 1) + (flags & FIN)) & M32
    state = conn[STATE]

    if conn[r + FLAGS] & SACK_PERM:
        edge = tcp.sack_edge
        if edge is not None and ((sack - edge) & M32) >= HALF:       # after(edge, sack)
            sack = edge

    if conn[s + END] == 0:
        if flags & SYN and flags & ACK:
            # The SYN/ACK answering the SYN.
            conn[s + END] = conn[s + MAXEND] = end
            conn[s + MAXWIN] = win or 1
            read_options(conn, s, tcp, 0)
            if not (conn[s + FLAGS] & WINDOW_SCALE and conn[r + FLAGS] & WINDOW_SCALE):
                conn[s + SCALE] = conn[r + SCALE] = 0
        else:
            # Picked-up connection: first packet of this direction.
            conn[s + END] = end
            conn[s + MAXWIN] = maxwin = win or 1
            conn[s + MAXEND] = (end + maxwin) & M32
    elif (((state == SYN_SENT and direction == ORIGINAL)
           or (state == SYN_RECV and direction == REPLY))
          and ((conn[s + END] - end) & M32) >= HALF):                # after(end, sender end)
        # RFC 793 reinitialisation; 2.6.18 does this for any packet, not only SYNs.
        conn[s + END] = conn[s + MAXEND] = end
        conn[s + MAXWIN] = win or 1
        read_options(conn, s, tcp, 0)

    (sender_end, sender_maxend, sender_maxwin, sender_maxack, sender_scale,
     sender_flags) = _SIDE_FIELDS.unpack_from(conn, s * 4)
    (receiver_end, receiver_maxend, receiver_maxwin, receiver_maxack, receiver_scale,
     receiver_flags) = _SIDE_FIELDS.unpack_from(conn, r * 4)
    sender_loose = conn[s + LOOSE]

    if not flags & ACK:
        ack = sack = receiver_end
    elif flags & RST and ack == 0:
        ack = sack = receiver_end
    if seq == end and (not flags & RST or (seq == 0 and state == SYN_SENT)):
        # No payload: judged on its ACK only (RSTs keep their seq, except answering a SYN).
        seq = end = sender_end

    maxackwin = sender_maxwin if sender_maxwin > MAXACKWINCONST else MAXACKWINCONST
    # I:   seq <= S.maxend                  II: end >= S.end - R.maxwin
    # III: sack <= R.end                    IV: ack > R.end - MAXACKWINDOW (plain ack, strict)
    if not (sender_loose or conn[r + LOOSE] or (
            ((seq - sender_maxend - 1) & M32) >= HALF
            and ((sender_end - receiver_maxwin - 1 - end) & M32) >= HALF
            and ((sack - receiver_end - 1) & M32) >= HALF
            and ((receiver_end - maxackwin - ack) & M32) >= HALF)):
        return bool(be_liberal)

    if not flags & SYN:
        win = win << sender_scale
    swin = (win + sack - ack) & M32
    if sender_maxwin < swin:
        sender_maxwin = swin
    if ((sender_end - end) & M32) >= HALF:                           # after(end, sender end)
        sender_end = end
    if ((sender_maxend - end) & M32) >= HALF:                        # after(end, sender maxend)
        receiver_maxwin = (receiver_maxwin + end - sender_maxend) & M32
    right = (sack + win) & M32
    if ((receiver_maxend - 1 - right) & M32) >= HALF:
        receiver_maxend = right if win else (right + 1) & M32
    _SIDE_FIELDS.pack_into(conn, s * 4, sender_end, sender_maxend, sender_maxwin,
                           sender_maxack, sender_scale, sender_flags)
    _SIDE_FIELDS.pack_into(conn, r * 4, receiver_end, receiver_maxend, receiver_maxwin,
                           receiver_maxack, receiver_scale, receiver_flags)

    if index == C_ACK:
        if _LAST4_FIELDS.unpack_from(conn, LAST_DIR * 4) == (direction, seq, ack, end):
            conn[RETRANS] += 1
        else:
            _LAST4_FIELDS.pack_into(conn, LAST_DIR * 4, direction, seq, ack, end)
            conn[RETRANS] = 0
    if sender_loose:
        conn[s + LOOSE] = sender_loose - 1
    return True
