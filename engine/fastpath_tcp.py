"""The fast path's TCP segments on a known entry beyond the ACK case of engine/fastpath.py.

fastpath.track() answers a known flow's next ACK or PSH|ACK in ESTABLISHED (or the
handshake's last ACK) itself, specialised.  Every other segment of a known entry -- the
SYN/ACK (SYN_SENT -> SYN_RECV), FINs, RSTs, ACKs in the closing states, segments out of
window, with SACK blocks, of a side not seen yet -- is several times rarer but, sent down
the general path, cost three times a fast one: the frame parsed again into a Packet, the
expiry and error checks, the lookup again, a PacketResult.  known_segment() takes them
from the values track() has already read: it builds the segment's TcpInfo as
extract_ipv4() does and hands it to the very code the general path runs,
TcpTracker.linux_segment() (the state table of engine/tcp_tables.py, the special cells,
the RST rules, linux_in_window()), then does what Tracker.process() does with a found
entry's outcome: engine/fastpath_found.py's settle().

It declines, having changed nothing:
* a flags byte TcpTracker.error() refuses (INVALID before any lookup, counted there);
* a segment whose table cell is SYN_SENT* (SS_REOPEN): the general path may remove the
  entry and track the SYN again as a new one.
track() declines entries with a helper before calling it (the helper reads the packet).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

from .ctstate import Verdict
from .entry import ORIGINAL, REPLY, Entry
from .fastpath_found import make_settle
from .packet import IPPROTO_TCP, TcpInfo
from .parse import parse_tcp_options
from .tcp_tables import CLASS_OF_FLAGS, SS_REOPEN, TABLES, VALID_FLAGS
from .tcp_window import STATE

if TYPE_CHECKING:
    from .tracker import Tracker

KnownSegment = Callable[[float, bytes, Entry, bytes, int, int, int, int, int, int, int],
                        Optional[Verdict]]


def make_known_segment(tracker: "Tracker", ip_len: int) -> KnownSegment:
    """known_segment(now, frame, entry, key, tot_len, flags, seq, ack, win, doff,
    options_at) for this tracker (linux profile), for datagrams whose IP header is ip_len
    bytes: see the module text."""
    linux_segment = tracker.tracker_of(IPPROTO_TCP).linux_segment
    table = TABLES["linux"]
    valid_flags = VALID_FLAGS["linux"]
    kv = tracker._kv
    settle = make_settle(tracker)

    def known_segment(now: float, frame: bytes, entry: Entry, key: bytes, tot_len: int,
                      flags: int, seq: int, ack: int, win: int, doff: int,
                      options_at: int) -> Optional[Verdict]:
        if not valid_flags[flags]:
            return None                 # TcpTracker.error(): INVALID before the lookup
        d = REPLY if key == entry.reply else ORIGINAL
        status = entry.status           # (the ctinfo is decided from it: settle())
        if table[d][CLASS_OF_FLAGS[flags]][entry.l4[STATE]] == SS_REOPEN:
            return None                 # may REOPEN: remove, look up again, a new entry
        # The TcpInfo extract_ipv4() makes of the segment (its options read the same way).
        tcp = TcpInfo(flags, seq, ack, win, tot_len - ip_len - doff, None, False, None, True,
                      doff > 20)
        if doff > 20:
            parse_tcp_options(tcp, frame, options_at, options_at + doff - 20)
        outcome = linux_segment(entry, tcp, d, now, kv)
        return settle(now, entry, d, status, outcome, tot_len)

    return known_segment
