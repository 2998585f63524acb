"""The fast path's ICMP errors: an error quoting a TCP or UDP datagram, RELATED or INVALID.

An ICMP error (unreachable, quench, redirect, time exceeded, parameter problem) makes no
entry and changes none: Tracker._related() looks up the reply of the tuple it quotes
(icmp.classify_error(): nf_conntrack_icmpv4_error()), and answers RELATED in the
direction of the hit when the outer destination is that direction's destination, else
INVALID counted in `icmp_error`.  The general path gets there through parse_ipv4()
(extract_ipv4() leaves ICMP alone) and _embedded_tuple(); icmp_error() reads the same
bytes from the frame.  It takes a quote whose IP header has no options and is not a
non-first fragment, carrying TCP or UDP with its ports -- the quotes of the benchmark's
mix and of nearly every real error -- and declines anything else, having changed nothing.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Callable, Optional

from . import ipv4
from .ctstate import INVALID as INVALID_VERDICT
from .ctstate import CtState, Verdict
from .fastpath_found import RELATED_ORIGINAL
from .packet import ICMP_ERROR_TYPES, IPPROTO_TCP, IPPROTO_UDP

if TYPE_CHECKING:
    from .tracker import Tracker

IcmpError = Callable[[bytes, int, int], Optional[Verdict]]

RELATED_REPLY = Verdict(CtState.RELATED, True)
ICMP_HEADER = 8
QUOTE_NO_OPTIONS = 5                # the quoted header's IHL in words (its version unread)
QUOTE_WITH_PORTS = ipv4.HEADER_LEN + 4
_QUOTE_FRAGMENT = struct.Struct("!H")   # at the quote's byte 6
# The quote's fields, from its first byte.
Q_FRAG_AT, Q_PROTO_AT, Q_SRC_AT, Q_DST_AT, Q_SPORT_AT, Q_DPORT_AT, Q_END = 6, 9, 12, 16, 20, 22, 24


def make_icmp_error(tracker: "Tracker") -> IcmpError:
    """icmp_error(frame, tot_len, l4_at) for this tracker (linux profile): the verdict of
    an ICMP datagram whose header starts at frame[l4_at] after an option-less IPv4
    header of total length tot_len, or None (see the module text)."""
    conns = tracker.conns
    tables = {proto: conns.table(ipv4.FAMILY, proto) for proto in (IPPROTO_TCP, IPPROTO_UDP)}
    stats = tracker.stats
    unpack_fragment = _QUOTE_FRAGMENT.unpack_from

    def icmp_error(frame: bytes, tot_len: int, l4_at: int) -> Optional[Verdict]:
        if frame[l4_at] not in ICMP_ERROR_TYPES:
            return None                 # a type above the last known one: error() refuses it
        quote = l4_at + ICMP_HEADER
        # The quote's bytes within the datagram (what follows tot_len is link padding).
        if (tot_len - ipv4.HEADER_LEN - ICMP_HEADER < QUOTE_WITH_PORTS
                or frame[quote] & 0x0F != QUOTE_NO_OPTIONS
                or unpack_fragment(frame, quote + Q_FRAG_AT)[0] & ipv4.IP_OFFSET):
            return None
        table = tables.get(frame[quote + Q_PROTO_AT])
        if table is None:
            return None
        # The quoted tuple's reply (lookup_reply_of(): addresses and ports swapped).
        key = (frame[quote + Q_DST_AT:quote + Q_SPORT_AT] + frame[quote + Q_SRC_AT:quote + Q_DST_AT]
               + frame[quote + Q_DPORT_AT:quote + Q_END] + frame[quote + Q_SPORT_AT:quote + Q_DPORT_AT])
        entry = table.get(key)
        # The hit's tuple in its direction is the key itself: its destination, key[4:8],
        # must be the error's destination (the bytes before the ICMP header).
        if entry is None or frame[l4_at - 4:l4_at] != key[4:8]:
            stats["icmp_error"] += 1
            return INVALID_VERDICT
        return RELATED_REPLY if key == entry.reply else RELATED_ORIGINAL

    return icmp_error
