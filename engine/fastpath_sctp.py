"""The fast path's SCTP: a known association's next packet (DATA, SACK, HEARTBEAT, ...).

Sent down the general path an SCTP packet costs four times a fast one (the frame parsed
again into a Packet, the expiry and error checks, the lookup, a PacketResult), for a
tracker whose own work is a few table reads.  known_sctp() takes a packet of an entry in
the table from the values track() has already read: it reads the verification tag and
the chunk list with the general path's own chunk_list() (no checksum to verify: not
PREROUTING; the ports are the key's, read already), hands them to
SctpTracker.chunks_packet() -- what SctpTracker.packet() runs on a Packet's SctpInfo:
the state table of engine/sctp_tables.py, the verification tag rules -- and settles the
outcome as Tracker.process() does (engine/fastpath_found.py).  No Packet, no SctpInfo is
made: they were a third of its cost.

It declines, having changed nothing: a header cut before its 12 bytes (parse_sctp()'s
l4_error: INVALID on the general path), no table or no entry of the tuple yet (a new
association's INIT and whatever comes out of the blue: SctpTracker.new()'s checks), an
entry with a helper.
"""
from __future__ import annotations

import struct
from types import ModuleType
from typing import TYPE_CHECKING, Callable, Optional

from .entry import ORIGINAL, REPLY
from .fastpath_found import make_settle
from .packet import IPPROTO_SCTP
from .parse_sctp import COMMON_HEADER_LEN, chunk_list
from .ctstate import Verdict

if TYPE_CHECKING:
    from .tracker import Tracker

KnownSctp = Callable[[float, bytes, bytes, int], Optional[Verdict]]

_VTAG = struct.Struct("!I")             # the common header's verification tag, at its byte 4


def make_known_sctp(tracker: "Tracker", l3: ModuleType, ip_at: int,
                    ip_len: int) -> KnownSctp:
    """known_sctp(now, frame, key, tot_len) for this tracker (linux profile), for frames
    whose option-less `l3` header of ip_len bytes starts at ip_at: see the module text."""
    chunks_packet = tracker.tracker_of(IPPROTO_SCTP).chunks_packet
    tables = tracker.conns.tables()     # its table: made by the first packet (general path)
    table_id = (l3.FAMILY, IPPROTO_SCTP)
    kv = tracker._kv
    settle = make_settle(tracker)
    l4_at = ip_at + ip_len
    vtag_at = l4_at + 4
    chunks_at = l4_at + COMMON_HEADER_LEN
    shortest = ip_len + COMMON_HEADER_LEN
    unpack_vtag = _VTAG.unpack_from

    def known_sctp(now: float, frame: bytes, key: bytes, tot_len: int) -> Optional[Verdict]:
        if tot_len < shortest:
            return None
        table = tables.get(table_id)
        entry = None if table is None else table.get(key)
        if entry is None or entry.helper is not None:
            return None
        # What parse_sctp() puts in a Packet's SctpInfo for SctpTracker.packet(): the tag
        # and the chunk list, within the datagram (what follows tot_len is link padding).
        chunks, chunks_ok = chunk_list(frame, chunks_at, ip_at + tot_len)
        d = REPLY if key == entry.reply else ORIGINAL
        status = entry.status           # (the ctinfo is decided from it: settle())
        outcome = chunks_packet(entry, unpack_vtag(frame, vtag_at)[0], chunks, chunks_ok, d, kv)
        return settle(now, entry, d, status, outcome, tot_len)

    return known_sctp
