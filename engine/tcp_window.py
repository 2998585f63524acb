"""TCP window tracking (spec/conntrack.md §4.7): per-direction sequence state and checks I-IV.

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
"""
from __future__ import annotations

from .entry import ORIGINAL, REPLY
from .packet import ACK, FIN, RST, SYN, TcpInfo
from .tcp_tables import C_ACK, SYN_RECV, SYN_SENT

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
# Bits of TcpConn.last_flags only.
EXP_CHALLENGE_ACK = 0x40  # an ignored SYN hit LAST_ACK: the next reply ACK may be a challenge
SIMULTANEOUS_OPEN = 0x80

# Results of a window check.
W_ACCEPT, W_IGNORE, W_INVALID = 0, 1, 2


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
    """What one direction has sent (the kernel's struct ip_ct_tcp_state)."""
    __slots__ = ("end", "maxend", "maxwin", "maxack", "scale", "flags", "loose")

    def __init__(self) -> None:
        self.end = 0        # highest seq + len sent
        self.maxend = 0     # highest right edge of the window the peer offered
        self.maxwin = 0     # largest window seen (0 = this side not initialised, modern)
        self.maxack = 0     # highest ACK sent (modern, valid with MAXACK_SET)
        self.scale = 0      # window scale shift
        self.flags = 0
        self.loose = 0      # tutorial: packets left to pass unchecked after a pickup

    def reset(self) -> None:
        """Forget the window data, keep only the liberal flag (nf_ct_tcp_state_reset)."""
        self.end = self.maxend = self.maxwin = self.maxack = self.scale = 0
        self.flags &= BE_LIBERAL


class TcpConn:
    """Per-entry TCP state: the conntrack state, both directions, and the last packet."""
    __slots__ = ("state", "sides", "last_index", "last_dir", "last_seq", "last_ack",
                 "last_end", "last_win", "last_wscale", "last_flags", "retrans")

    def __init__(self) -> None:
        self.state = 0                          # NONE until the first packet is processed
        self.sides = (TcpSide(), TcpSide())     # indexed by direction
        self.last_index = 5                     # packet class of the last packet (C_NONE)
        self.last_dir = 0
        self.last_seq = 0
        self.last_ack = 0
        self.last_end = 0
        self.last_win = 0
        self.last_wscale = 0
        self.last_flags = 0
        self.retrans = 0                        # identical ACK-class packets in a row


def read_options(side: TcpSide, tcp: TcpInfo, keep: int) -> None:
    """Take window scale and SACK-permitted from a segment's options (tcp_options()).

    The kernel resets the side's scale and flags (except `keep`) only when the header has
    options; the parsed packet tells us only about the two options that matter, so a segment
    carrying neither is treated as having no options.
    """
    wscale = tcp.wscale
    if wscale is None and not tcp.sack_perm:
        return
    side.scale = 0
    side.flags &= keep
    if tcp.sack_perm:
        side.flags |= SACK_PERM
    if wscale is not None:
        side.scale = MAX_WSCALE if wscale > MAX_WSCALE else wscale
        side.flags |= WINDOW_SCALE


def init_from_syn(side: TcpSide, tcp: TcpInfo, keep: int) -> None:
    """First SYN of a connection: the original side starts at the SYN (tcp_new())."""
    side.end = side.maxend = segment_end(tcp)
    side.maxwin = tcp.window or 1
    read_options(side, tcp, keep)


def init_from_pickup(side: TcpSide, tcp: TcpInfo) -> None:
    """Mid-stream first packet: guess the original side from it (tcp_new(), loose pickup)."""
    side.end = segment_end(tcp)
    side.maxwin = tcp.window or 1
    side.maxend = (side.end + side.maxwin) & M32


def _linux_init_sender(sender: TcpSide, receiver: TcpSide, tcp: TcpInfo, end: int,
                       win: int, direction: int) -> None:
    """SYN/ACK answering a SYN, or a reply SYN in simultaneous open (tcp_init_sender())."""
    sender.end = sender.maxend = end
    sender.maxwin = win or 1
    read_options(sender, tcp, BE_LIBERAL)
    # RFC 1323: window scaling only if both sides offered it.
    if direction == REPLY and not (sender.flags & WINDOW_SCALE
                                   and receiver.flags & WINDOW_SCALE):
        sender.scale = receiver.scale = 0


def linux_in_window(conn: TcpConn, direction: int, index: int, tcp: TcpInfo,
                    be_liberal: int) -> int:
    """Modern window check and update; returns W_ACCEPT, W_IGNORE or W_INVALID.

    `conn.state` is still the stored (old) state. A liberal sender (knob or flag) gets
    W_ACCEPT for any failed check, but then nothing is updated, as in the kernel.
    """
    sender = conn.sides[direction]
    receiver = conn.sides[1 - direction]
    flags = tcp.flags
    seq = tcp.seq
    ack = sack = tcp.ack
    win_raw = win = tcp.window
    end = (seq + tcp.payload_len + ((flags & SYN) >> 1) + (flags & FIN)) & M32

    if receiver.flags & SACK_PERM:
        edge = tcp.sack_edge
        if edge is not None and ((sack - edge) & M32) >= HALF:       # after(edge, sack)
            sack = edge

    if sender.maxwin == 0:
        if flags & SYN:
            _linux_init_sender(sender, receiver, tcp, end, win, direction)
            if not flags & ACK:
                return W_ACCEPT          # simultaneous open: reply SYN without ACK
        else:
            # This direction was never seen (picked-up connection): start from the packet.
            sender.end = end
            swin = (win << sender.scale) & M32
            sender.maxwin = swin or 1
            sender.maxend = (end + sender.maxwin) & M32
            if receiver.maxwin == 0:
                # Nothing seen the other way either: make III and IV pass until it is.
                receiver.end = receiver.maxend = sack
            elif sack == ((receiver.end + 1) & M32):
                receiver.end = sack      # likely the answer to a keepalive
    elif (flags & SYN and ((sender.end - end) & M32) >= HALF         # after(end, sender.end)
          and (conn.state == SYN_SENT or conn.state == SYN_RECV)):
        # RFC 793: a reinitialised TCP may reuse the tuple with a higher sequence number.
        _linux_init_sender(sender, receiver, tcp, end, win, direction)
        if direction == REPLY and not flags & ACK:
            return W_ACCEPT

    if not flags & ACK:
        ack = sack = receiver.end        # no ACK: pretend it acknowledges everything
    elif flags & RST and ack == 0:
        ack = sack = receiver.end        # broken stacks send RST+ACK with ack 0
    if flags & RST and seq == 0 and conn.state == SYN_SENT:
        seq = end = sender.end           # RST answering a SYN

    maxackwin = sender.maxwin if sender.maxwin > MAXACKWINCONST else MAXACKWINCONST

    # I: seq <= sender.maxend
    if ((seq - sender.maxend - 1) & M32) < HALF:
        overshot = (end - sender.maxend + 1) & M32
        ack_ok = ((receiver.end - maxackwin - 1 - sack) & M32) >= HALF
        in_recv_win = receiver.maxwin and (
            ((sender.end - receiver.maxwin - 1 - end) & M32) >= HALF)
        if (in_recv_win and ack_ok and overshot <= receiver.maxwin
                and ((sack - receiver.end - 1) & M32) >= HALF):
            # The sender overran the window a little: keep the data plausible for the
            # ACK that will follow, but do not accept this packet ("N bytes more").
            sender.end = end
            sender.flags |= DATA_UNACKNOWLEDGED
            return W_ACCEPT if be_liberal or sender.flags & BE_LIBERAL else W_IGNORE
        return W_ACCEPT if be_liberal or sender.flags & BE_LIBERAL else W_INVALID
    # III: sack <= receiver.end ("ACK is over upper bound")
    if ((sack - receiver.end - 1) & M32) < HALF:
        return W_ACCEPT if be_liberal or sender.flags & BE_LIBERAL else W_INVALID
    # II: end >= sender.end - receiver.maxwin (old data already acknowledged)
    if receiver.maxwin and ((sender.end - receiver.maxwin - 1 - end) & M32) < HALF:
        return W_ACCEPT if be_liberal or sender.flags & BE_LIBERAL else W_IGNORE
    # IV: sack >= receiver.end - MAXACKWINDOW (overly delayed ACK)
    if ((receiver.end - maxackwin - 1 - sack) & M32) < HALF:
        return W_ACCEPT if be_liberal or sender.flags & BE_LIBERAL else W_IGNORE

    if not flags & SYN:
        win = win << sender.scale        # windows in SYN segments are never scaled

    # Update the sender.
    swin = (win + sack - ack) & M32
    if sender.maxwin < swin:
        sender.maxwin = swin
    if ((sender.end - end) & M32) >= HALF:                           # after(end, sender.end)
        sender.end = end
        sender.flags |= DATA_UNACKNOWLEDGED
    if flags & ACK:
        if not sender.flags & MAXACK_SET:
            sender.maxack = ack
            sender.flags |= MAXACK_SET
        elif ((sender.maxack - ack) & M32) >= HALF:                  # after(ack, maxack)
            sender.maxack = ack

    # Update the receiver.
    if receiver.maxwin != 0 and ((sender.maxend - end) & M32) >= HALF:
        receiver.maxwin = (receiver.maxwin + end - sender.maxend) & M32
    right = (sack + win) & M32
    if ((receiver.maxend - 1 - right) & M32) >= HALF:                # after(right, maxend - 1)
        receiver.maxend = right if win else (right + 1) & M32
    if ack == receiver.end:
        receiver.flags &= ~DATA_UNACKNOWLEDGED

    # Count identical ACK-class packets (retransmissions).
    if index == C_ACK:
        if (conn.last_dir == direction and conn.last_seq == seq and conn.last_ack == ack
                and conn.last_end == end and conn.last_win == win_raw):
            conn.retrans += 1
        else:
            conn.last_dir = direction
            conn.last_seq = seq
            conn.last_ack = ack
            conn.last_end = end
            conn.last_win = win_raw
            conn.retrans = 0
    return W_ACCEPT


def tutorial_in_window(conn: TcpConn, direction: int, index: int, tcp: TcpInfo,
                       be_liberal: int) -> bool:
    """pom / 2.6-ipct window check and update; True = accept.

    A failed check is INVALID unless `tcp_be_liberal` is set (then accepted, nothing
    updated). While either side still has `loose` packets left the checks are skipped.
    """
    sender = conn.sides[direction]
    receiver = conn.sides[1 - direction]
    flags = tcp.flags
    seq = tcp.seq
    ack = sack = tcp.ack
    win = tcp.window
    end = (seq + tcp.payload_len + ((flags & SYN) >> 1) + (flags & FIN)) & M32

    if receiver.flags & SACK_PERM:
        edge = tcp.sack_edge
        if edge is not None and ((sack - edge) & M32) >= HALF:       # after(edge, sack)
            sack = edge

    if sender.end == 0:
        if flags & SYN and flags & ACK:
            # The SYN/ACK answering the SYN.
            sender.end = sender.maxend = end
            sender.maxwin = win or 1
            read_options(sender, tcp, 0)
            if not (sender.flags & WINDOW_SCALE and receiver.flags & WINDOW_SCALE):
                sender.scale = receiver.scale = 0
        else:
            # Picked-up connection: first packet of this direction.
            sender.end = end
            sender.maxwin = win or 1
            sender.maxend = (end + sender.maxwin) & M32
    elif (((conn.state == SYN_SENT and direction == ORIGINAL)
           or (conn.state == SYN_RECV and direction == REPLY))
          and ((sender.end - end) & M32) >= HALF):                   # after(end, sender.end)
        # RFC 793 reinitialisation; 2.6.18 does this for any packet, not only SYNs.
        sender.end = sender.maxend = end
        sender.maxwin = win or 1
        read_options(sender, tcp, 0)

    if not flags & ACK:
        ack = sack = receiver.end
    elif flags & RST and ack == 0:
        ack = sack = receiver.end
    if seq == end and (not flags & RST or (seq == 0 and conn.state == SYN_SENT)):
        # No payload: judged on its ACK only (RSTs keep their seq, except answering a SYN).
        seq = end = sender.end

    maxackwin = sender.maxwin if sender.maxwin > MAXACKWINCONST else MAXACKWINCONST
    # I:   seq <= S.maxend                  II: end >= S.end - R.maxwin
    # III: sack <= R.end                    IV: ack > R.end - MAXACKWINDOW (plain ack, strict)
    if not (sender.loose or receiver.loose or (
            ((seq - sender.maxend - 1) & M32) >= HALF
            and ((sender.end - receiver.maxwin - 1 - end) & M32) >= HALF
            and ((sack - receiver.end - 1) & M32) >= HALF
            and ((receiver.end - maxackwin - ack) & M32) >= HALF)):
        return bool(be_liberal)

    if not flags & SYN:
        win = win << sender.scale
    swin = (win + sack - ack) & M32
    if sender.maxwin < swin:
        sender.maxwin = swin
    if ((sender.end - end) & M32) >= HALF:                           # after(end, sender.end)
        sender.end = end
    if ((sender.maxend - end) & M32) >= HALF:                        # after(end, sender.maxend)
        receiver.maxwin = (receiver.maxwin + end - sender.maxend) & M32
    right = (sack + win) & M32
    if ((receiver.maxend - 1 - right) & M32) >= HALF:
        receiver.maxend = right if win else (right + 1) & M32

    if index == C_ACK:
        if (conn.last_dir == direction and conn.last_seq == seq and conn.last_ack == ack
                and conn.last_end == end):
            conn.retrans += 1
        else:
            conn.last_dir = direction
            conn.last_seq = seq
            conn.last_ack = ack
            conn.last_end = end
            conn.retrans = 0
    if sender.loose:
        sender.loose -= 1
    return True
