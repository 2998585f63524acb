"""The fast path's SCTP: a known association's next packet (DATA, SACK, HEARTBEAT, ...).

Sent down the general path an SCTP packet costs four times a fast one (the frame parsed
again into a Packet, the expiry and error checks, the lookup, a PacketResult), for a
tracker whose own work is a few table reads.  known_sctp() takes a packet of an entry in
the table from the values track() has already read: it parses the SCTP header and chunk
list with the general path's own parse_sctp() (no checksum to verify: not PREROUTING),
hands them to SctpTracker.packet() -- the state table of engine/sctp_tables.py, the
verification tag rules -- and settles the outcome as Tracker.process() does
(engine/fastpath_found.py).

It declines, having changed nothing: a header cut before its 12 bytes (parse_sctp()'s
l4_error: INVALID on the general path), no table or no entry of the tuple yet (a new
association's INIT and whatever comes out of the blue: SctpTracker.new()'s checks), an
entry with a helper.
"""
from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Callable, Optional

from .entry import ORIGINAL, REPLY
from .fastpath_found import make_settle
from .hooks import LOCAL_OUT
from .packet import IPPROTO_SCTP, Packet
from .parse_sctp import COMMON_HEADER_LEN, parse_sctp
from .ctstate import Verdict

if TYPE_CHECKING:
    from .tracker import Tracker

KnownSctp = Callable[[float, bytes, bytes, int], Optional[Verdict]]


def make_known_sctp(tracker: "Tracker", l3: ModuleType, ip_at: int,
                    ip_len: int) -> KnownSctp:
    """known_sctp(now, frame, key, tot_len) for this tracker (linux profile), for frames
    whose option-less `l3` header of ip_len bytes starts at ip_at: see the module text."""
    packet = tracker.tracker_of(IPPROTO_SCTP).packet
    tables = tracker.conns.tables()     # its table: made by the first packet (general path)
    table_id = (l3.FAMILY, IPPROTO_SCTP)
    kv = tracker._kv
    settle = make_settle(tracker)
    l4_at = ip_at + ip_len
    shortest = ip_len + COMMON_HEADER_LEN

    def known_sctp(now: float, frame: bytes, key: bytes, tot_len: int) -> Optional[Verdict]:
        if tot_len < shortest:
            return None
        table = tables.get(table_id)
        entry = None if table is None else table.get(key)
        if entry is None or entry.helper is not None:
            return None
        # The Packet parse_ipv4()/parse_ipv6() make, as far as SctpTracker.packet() reads
        # it: the SCTP part (the addresses and the key are the table's business, done).
        pkt = Packet(0, 0, IPPROTO_SCTP, tot_len, LOCAL_OUT, l3=l3)
        parse_sctp(pkt, frame, l4_at, ip_at + tot_len, False)
        d = REPLY if key == entry.reply else ORIGINAL
        status = entry.status           # (the ctinfo is decided from it: settle())
        return settle(now, entry, d, status, packet(entry, pkt, d, now, kv), tot_len)

    return known_sctp
