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

The per-entry state is packed like the kernel's struct ip_ct_tcp, in one plain bytearray
of 60 bytes (a TcpConn): a Python int costs about 30 bytes, so objects holding ints cost
a TCP entry ~670 bytes of state; the bytearray costs 128 (its object and its buffer, and
no garbage-collector header: a plain bytearray holds no references), with 262,144
entries in a table by default.  The one-byte fields (scale, flags, states, ...) sit at
fixed indices, read and written as `conn[s + FLAGS]`; the 32-bit ones (sequence numbers,
windows) at the byte offsets `*_AT`, read with get32()/put32() or, on the hot path, both
directions at once with one struct call (`sender_end`, `receiver_maxwin`, ... as the
kernel's `sender->td_end`).  view() gives attribute access for the rare paths and tests.
"""
from __future__ import annotations

import struct
from typing import List, Optional, Tuple

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
# One direction (struct ip_ct_tcp_state) at s = direction * SIDE: four 32-bit fields at
# the byte offsets s + *_AT, then three one-byte fields at s + FIELD.
END_AT = 0        # highest seq + len sent
MAXEND_AT = 4     # highest right edge of the window the peer offered
MAXWIN_AT = 8     # largest window seen (0 = side not initialised, modern)
MAXACK_AT = 12    # highest ACK sent (modern, valid with MAXACK_SET)
SCALE = 16      # window scale shift
FLAGS = 17      # the per-direction flags above
LOOSE = 18      # tutorial: packets left to pass unchecked after a pickup (u8, as in 2.6)
SIDE = 19
# The connection (struct ip_ct_tcp), after both directions:
STATE = 38        # conntrack state; NONE until the first packet is processed
LAST_INDEX = 39   # packet class of the last packet
LAST_DIR = 40     # and of the last remembered packet: its direction, seq, ack, end, window
LAST_SEQ_AT = 41
LAST_ACK_AT = 45   # (the state LAST_ACK of tcp_tables is another thing)
LAST_END_AT = 49
LAST_WIN_AT = 53
LAST_WSCALE = 57
LAST_FLAGS = 58
RETRANS = 59      # identical ACK-class packets in a row (u8, wrapping as the kernel's)
CONN_BYTES = 60

TcpConn = bytearray

_U32 = struct.Struct("=I")
# read_u32(conn, at)[0]: get32() without a Python call, for lines run on every packet.
read_u32 = _U32.unpack_from
BOTH_SIDES = struct.Struct("=4I3B4I3B")    # both directions, ORIGINAL then REPLY
LAST_FIELDS = struct.Struct("=B4I")        # LAST_DIR, seq, ack, end, window
# Both sides, STATE, LAST_INDEX and LAST_FIELDS: every field an ESTABLISHED ACK reads or
# writes but RETRANS, from offset 0 (the fast path reads them in one call, writes in one).
THROUGH_LAST = struct.Struct("=4I3B4I3BBBB4I")
assert THROUGH_LAST.size == LAST_WSCALE and BOTH_SIDES.size == STATE
assert (LAST_INDEX, LAST_DIR) == (STATE + 1, STATE + 2)
_LAST4_FIELDS = struct.Struct("=B3I")       # LAST_DIR, seq, ack, end
# A side's first three fields (END_AT, MAXEND_AT, MAXWIN_AT are consecutive): what a side
# starts with, written in one call (a connection's first SYN, its answer, a pickup).
_SIDE_START = struct.Struct("=3I")
start_side = _SIDE_START.pack_into   # start_side(conn, s + END_AT, end, maxend, maxwin)
assert (END_AT, MAXEND_AT, MAXWIN_AT) == (0, 4, 8)

# The fields in the order a state file lists them (the order of the kernel's structs):
# (byte offset, width in bytes).
FIELD_LAYOUT = tuple(
    [(at, width) for s in (0, SIDE) for at, width in (
        (s + END_AT, 4), (s + MAXEND_AT, 4), (s + MAXWIN_AT, 4), (s + MAXACK_AT, 4),
        (s + SCALE, 1), (s + FLAGS, 1), (s + LOOSE, 1))]
    + [(STATE, 1), (LAST_INDEX, 1), (LAST_DIR, 1), (LAST_SEQ_AT, 4), (LAST_ACK_AT, 4),
       (LAST_END_AT, 4), (LAST_WIN_AT, 4), (LAST_WSCALE, 1), (LAST_FLAGS, 1), (RETRANS, 1)])
N_FIELDS = len(FIELD_LAYOUT)
STATE_FIELD = FIELD_LAYOUT.index((STATE, 1))    # STATE's place in that list

_NEW_CONN = bytearray(CONN_BYTES)
_NEW_CONN[LAST_INDEX] = C_NONE


def new_conn() -> TcpConn:
    """A connection's state before its first packet: all zero, last packet class NONE."""
    return bytearray(_NEW_CONN)


def get32(conn: TcpConn, at: int) -> int:
    """The 32-bit field at byte offset `at`."""
    return _U32.unpack_from(conn, at)[0]


def put32(conn: TcpConn, at: int, value: int) -> None:
    """Store a 32-bit field at byte offset `at`."""
    _U32.pack_into(conn, at, value)


def export_fields(conn: TcpConn) -> List[int]:
    """Every field, in FIELD_LAYOUT's order."""
    return [get32(conn, at) if width == 4 else conn[at] for at, width in FIELD_LAYOUT]


def import_fields(fields: List[int]) -> TcpConn:
    """A TcpConn from export_fields()' list; ValueError if a value does not fit its field."""
    conn = new_conn()
    for n, ((at, width), value) in enumerate(zip(FIELD_LAYOUT, fields)):
        if not 0 <= value < 1 << (8 * width):
            raise ValueError(f"field {n}: {value} does not fit in {8 * width} bits")
        if width == 4:
            put32(conn, at, value)
        else:
            conn[at] = value
    return conn


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


class TcpSide:
    """A view of one direction's fields in a TcpConn (the kernel's struct ip_ct_tcp_state)."""
    __slots__ = ("_conn", "_s")

    def __init__(self, conn: TcpConn, direction: int) -> None:
        self._conn = conn
        self._s = direction * SIDE

    end = property(lambda self: get32(self._conn, self._s + END_AT))
    maxend = property(lambda self: get32(self._conn, self._s + MAXEND_AT))
    maxwin = property(lambda self: get32(self._conn, self._s + MAXWIN_AT))
    maxack = property(lambda self: get32(self._conn, self._s + MAXACK_AT))
    scale = property(lambda self: self._conn[self._s + SCALE])
    flags = property(lambda self: self._conn[self._s + FLAGS])
    loose = property(lambda self: self._conn[self._s + LOOSE])

    def reset(self) -> None:
        """Forget the window data, keep only the liberal flag (nf_ct_tcp_state_reset)."""
        reset_side(self._conn, self._s)


def _byte_field(index: int) -> property:
    def get(self) -> int:
        return self._conn[index]

    def put(self, value: int) -> None:
        self._conn[index] = value
    return property(get, put)


class TcpView:
    """Attribute access to a TcpConn, for code that reads one field now and then (tests)."""
    __slots__ = ("_conn",)

    def __init__(self, conn: TcpConn) -> None:
        self._conn = conn

    @property
    def sides(self) -> Tuple[TcpSide, TcpSide]:
        return TcpSide(self._conn, ORIGINAL), TcpSide(self._conn, REPLY)

    state = _byte_field(STATE)
    last_index = _byte_field(LAST_INDEX)
    last_dir = _byte_field(LAST_DIR)
    last_wscale = _byte_field(LAST_WSCALE)
    last_flags = _byte_field(LAST_FLAGS)
    retrans = _byte_field(RETRANS)
    last_seq = property(lambda self: get32(self._conn, LAST_SEQ_AT))
    last_ack = property(lambda self: get32(self._conn, LAST_ACK_AT))
    last_end = property(lambda self: get32(self._conn, LAST_END_AT))
    last_win = property(lambda self: get32(self._conn, LAST_WIN_AT))


def view(conn: TcpConn) -> TcpView:
    """Attribute access to a TcpConn (view(entry.l4).state, .sides[d].end, ...)."""
    return TcpView(conn)


def reset_side(conn: TcpConn, s: int) -> None:
    """Forget a direction's window data, keep only the liberal flag (nf_ct_tcp_state_reset)."""
    for at in (s + END_AT, s + MAXEND_AT, s + MAXWIN_AT, s + MAXACK_AT):
        put32(conn, at, 0)
    conn[s + SCALE] = 0
    conn[s + FLAGS] &= BE_LIBERAL


def options_of(options: bool, wscale: Optional[int], sack_perm: bool, flags: int,
               keep: int) -> Optional[Tuple[int, int]]:
    """The window scale and flags a side of `flags` takes from a segment's options
    (tcp_options(): whether the header has any, its window scale or None, whether it
    permits SACK), or None when it has none (the side keeps its own).

    The kernel resets the side's scale and flags (except `keep`) whenever the header has
    options at all: a SYN with only an MSS option wipes the window scale an earlier SYN of
    the same side set (scenario tcp_syn_options_reset).  A TcpInfo built by hand may carry
    a window scale or SACK-permitted without its `options` flag; those count as options too.
    """
    if not options and wscale is None and not sack_perm:
        return None
    flags &= keep
    scale = 0
    if sack_perm:
        flags |= SACK_PERM
    if wscale is not None:
        scale = MAX_WSCALE if wscale > MAX_WSCALE else wscale
        flags |= WINDOW_SCALE
    return scale, flags


def read_options(conn: TcpConn, s: int, tcp: TcpInfo, keep: int) -> None:
    """Take window scale and SACK-permitted from a segment's options: options_of()."""
    taken = options_of(tcp.options, tcp.wscale, tcp.sack_perm, conn[s + FLAGS], keep)
    if taken is not None:
        conn[s + SCALE], conn[s + FLAGS] = taken


def init_from_syn(conn: TcpConn, s: int, tcp: TcpInfo, keep: int) -> None:
    """First SYN of a connection: the original side starts at the SYN (tcp_new())."""
    end = segment_end(tcp)
    start_side(conn, s + END_AT, end, end, tcp.window or 1)
    read_options(conn, s, tcp, keep)


def init_from_pickup(conn: TcpConn, s: int, tcp: TcpInfo) -> None:
    """Mid-stream first packet: guess the original side from it (tcp_new(), loose pickup)."""
    end = segment_end(tcp)
    maxwin = tcp.window or 1
    start_side(conn, s + END_AT, end, (end + maxwin) & M32, maxwin)


def _linux_init_sender(conn: TcpConn, s: int, r: int, tcp: TcpInfo, end: int, win: int,
                       direction: int) -> None:
    """SYN/ACK answering a SYN, or a reply SYN in simultaneous open (tcp_init_sender())."""
    start_side(conn, s + END_AT, end, end, win or 1)
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

    if read_u32(conn, s + MAXWIN_AT)[0] == 0:
        if flags & SYN:
            _linux_init_sender(conn, s, r, tcp, end, win, direction)
            if not flags & ACK:
                return W_ACCEPT          # simultaneous open: reply SYN without ACK
        else:
            # This direction was never seen (picked-up connection): start from the packet.
            put32(conn, s + END_AT, end)
            maxwin = ((win << conn[s + SCALE]) & M32) or 1
            put32(conn, s + MAXWIN_AT, maxwin)
            put32(conn, s + MAXEND_AT, (end + maxwin) & M32)
            if get32(conn, r + MAXWIN_AT) == 0:
                # Nothing seen the other way either: make III and IV pass until it is.
                put32(conn, r + END_AT, sack)
                put32(conn, r + MAXEND_AT, sack)
            elif sack == ((get32(conn, r + END_AT) + 1) & M32):
                put32(conn, r + END_AT, sack)     # likely the answer to a keepalive
    elif (flags & SYN and ((get32(conn, s + END_AT) - end) & M32) >= HALF  # after(end, s end)
          and (conn[STATE] == SYN_SENT or conn[STATE] == SYN_RECV)):
        # RFC 793: a reinitialised TCP may reuse the tuple with a higher sequence number.
        _linux_init_sender(conn, s, r, tcp, end, win, direction)
        if direction == REPLY and not flags & ACK:
            return W_ACCEPT

    # Both directions as they stand now, in one struct call.
    if direction == ORIGINAL:
        (sender_end, sender_maxend, sender_maxwin, sender_maxack, sender_scale, sender_flags,
         sender_loose, receiver_end, receiver_maxend, receiver_maxwin, receiver_maxack,
         receiver_scale, receiver_flags, receiver_loose) = BOTH_SIDES.unpack_from(conn)
    else:
        (receiver_end, receiver_maxend, receiver_maxwin, receiver_maxack, receiver_scale,
         receiver_flags, receiver_loose, sender_end, sender_maxend, sender_maxwin,
         sender_maxack, sender_scale, sender_flags, sender_loose) = BOTH_SIDES.unpack_from(conn)
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
            put32(conn, s + END_AT, end)
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

    (sender_end, sender_maxwin, sender_maxack, sender_flags, receiver_maxend, receiver_maxwin,
     receiver_flags) = advance(end, ack, sack, win, flags & ACK, sender_end, sender_maxend,
                               sender_maxwin, sender_maxack, sender_flags, receiver_end,
                               receiver_maxend, receiver_maxwin, receiver_flags)
    if direction == ORIGINAL:
        BOTH_SIDES.pack_into(conn, 0, sender_end, sender_maxend, sender_maxwin, sender_maxack,
                              sender_scale, sender_flags, sender_loose, receiver_end,
                              receiver_maxend, receiver_maxwin, receiver_maxack,
                              receiver_scale, receiver_flags, receiver_loose)
    else:
        BOTH_SIDES.pack_into(conn, 0, receiver_end, receiver_maxend, receiver_maxwin,
                              receiver_maxack, receiver_scale, receiver_flags, receiver_loose,
                              sender_end, sender_maxend, sender_maxwin, sender_maxack,
                              sender_scale, sender_flags, sender_loose)

    # Count identical ACK-class packets (retransmissions).
    if index == C_ACK:
        if LAST_FIELDS.unpack_from(conn, LAST_DIR) == (direction, seq, ack, end, win_raw):
            conn[RETRANS] = (conn[RETRANS] + 1) & 0xFF
        else:
            LAST_FIELDS.pack_into(conn, LAST_DIR, direction, seq, ack, end, win_raw)
            conn[RETRANS] = 0
    return W_ACCEPT


def in_window(seq: int, end: int, sack: int, sender_end: int, sender_maxend: int,
              sender_maxwin: int, receiver_end: int, receiver_maxwin: int) -> bool:
    """Do checks I-IV of linux_in_window() all pass?  (For a case that takes only segments
    in window and leaves the rest, whichever check fails, to linux_in_window().)"""
    maxackwin = sender_maxwin if sender_maxwin > MAXACKWINCONST else MAXACKWINCONST
    return (((seq - sender_maxend - 1) & M32) >= HALF                               # I
            and ((sack - receiver_end - 1) & M32) >= HALF                           # III
            and (not receiver_maxwin
                 or ((sender_end - receiver_maxwin - 1 - end) & M32) >= HALF)       # II
            and ((receiver_end - maxackwin - 1 - sack) & M32) >= HALF)              # IV


def advance(end: int, ack: int, sack: int, win: int, acks: int, sender_end: int,
            sender_maxend: int, sender_maxwin: int, sender_maxack: int, sender_flags: int,
            receiver_end: int, receiver_maxend: int, receiver_maxwin: int,
            receiver_flags: int) -> Tuple[int, int, int, int, int, int, int]:
    """linux_in_window()'s updates of both sides for a segment in window that ends at `end`,
    acks `ack` (`acks`: it has the ACK flag), `sack` with its SACK edge, and offers `win`
    (scaled unless a SYN's): the sender's end, maxwin, maxack and flags, the receiver's
    maxend, maxwin and flags, as they are after it."""
    # The sender.
    swin = (win + sack - ack) & M32
    if sender_maxwin < swin:
        sender_maxwin = swin
    if ((sender_end - end) & M32) >= HALF:                           # after(end, sender end)
        sender_end = end
        sender_flags |= DATA_UNACKNOWLEDGED
    if acks:
        if not sender_flags & MAXACK_SET:
            sender_maxack = ack
            sender_flags |= MAXACK_SET
        elif ((sender_maxack - ack) & M32) >= HALF:                  # after(ack, maxack)
            sender_maxack = ack
    # The receiver.
    if receiver_maxwin != 0 and ((sender_maxend - end) & M32) >= HALF:
        receiver_maxwin = (receiver_maxwin + end - sender_maxend) & M32
    right = (sack + win) & M32
    if ((receiver_maxend - 1 - right) & M32) >= HALF:                # after(right, maxend - 1)
        receiver_maxend = right if win else (right + 1) & M32
    if ack == receiver_end:
        receiver_flags &= ~DATA_UNACKNOWLEDGED
    return (sender_end, sender_maxwin, sender_maxack, sender_flags, receiver_maxend,
            receiver_maxwin, receiver_flags)


Side = Tuple[int, int, int, int, int, int, int]


def _sides(conn: TcpConn, direction: int) -> Tuple[Side, Side]:
    """Sender's and receiver's (end, maxend, maxwin, maxack, scale, flags, loose)."""
    fields = BOTH_SIDES.unpack_from(conn)
    original, reply = fields[:7], fields[7:]
    return (reply, original) if direction else (original, reply)


def _store_sides(conn: TcpConn, direction: int, sender: Side, receiver: Side) -> None:
    """Store what _sides() read, changed."""
    original, reply = (receiver, sender) if direction else (sender, receiver)
    BOTH_SIDES.pack_into(conn, 0, *original, *reply)


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

    if get32(conn, s + END_AT) == 0:
        if flags & SYN and flags & ACK:
            # The SYN/ACK answering the SYN.
            put32(conn, s + END_AT, end)
            put32(conn, s + MAXEND_AT, end)
            put32(conn, s + MAXWIN_AT, win or 1)
            read_options(conn, s, tcp, 0)
            if not (conn[s + FLAGS] & WINDOW_SCALE and conn[r + FLAGS] & WINDOW_SCALE):
                conn[s + SCALE] = conn[r + SCALE] = 0
        else:
            # Picked-up connection: first packet of this direction.
            init_from_pickup(conn, s, tcp)
    elif (((state == SYN_SENT and direction == ORIGINAL)
           or (state == SYN_RECV and direction == REPLY))
          and ((get32(conn, s + END_AT) - end) & M32) >= HALF):       # after(end, sender end)
        # RFC 793 reinitialisation; 2.6.18 does this for any packet, not only SYNs.
        init_from_syn(conn, s, tcp, 0)

    ((sender_end, sender_maxend, sender_maxwin, sender_maxack, sender_scale, sender_flags,
      sender_loose),
     (receiver_end, receiver_maxend, receiver_maxwin, receiver_maxack, receiver_scale,
      receiver_flags, receiver_loose)) = _sides(conn, direction)

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
    if not (sender_loose or receiver_loose or (
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
    if sender_loose:
        sender_loose -= 1
    _store_sides(conn, direction,
                 (sender_end, sender_maxend, sender_maxwin, sender_maxack, sender_scale,
                  sender_flags, sender_loose),
                 (receiver_end, receiver_maxend, receiver_maxwin, receiver_maxack,
                  receiver_scale, receiver_flags, receiver_loose))

    if index == C_ACK:
        if _LAST4_FIELDS.unpack_from(conn, LAST_DIR) == (direction, seq, ack, end):
            conn[RETRANS] = (conn[RETRANS] + 1) & 0xFF
        else:
            _LAST4_FIELDS.pack_into(conn, LAST_DIR, direction, seq, ack, end)
            conn[RETRANS] = 0
    return True
