"""The SCTP tracker of nf_conntrack (linux profile; ip_conntrack tracks SCTP as generic).

Per entry (`entry.l4`, a list): the state, the verification tag expected in each direction,
whether each side sent an INIT, the heartbeat flag and the direction of the heartbeat
whose tag failed.  packet() is nf_conntrack_sctp_packet(): the chunk list must pass the
basic checks, a packet without a chunk of its own tag rules must carry the direction's
tag, and then each chunk moves the state through engine/sctp_tables.py, with the special
tag rules of RFC 4960 8.5.1.  As in the kernel, a chunk that is refused leaves the changes
made by the chunks before it.  ASSURED is set on entering ESTABLISHED; the timeout is the
new state's knob.  The tuple has ports, the listing the state name before the tuple.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

from .entry import ASSURED, ORIGINAL, REPLY, Entry
from .hooks import PRE_ROUTING
from .l4 import checked_list, checked_uint, ports_text, swapped
from .outcome import IGNORE, INVALID
from .packet import Packet
from .sctp_tables import (ABORT, CLOSED, COOKIE_ACK, COOKIE_ECHO, DATA, ESTABLISHED, FLAG_T,
                          HEARTBEAT, HEARTBEAT_ACK, INIT, INIT_ACK, IV, NONE, NOT_FIRST,
                          OWN_VTAG_RULES, SHUTDOWN_ACK, SHUTDOWN_COMPLETE, STATE_NAMES,
                          STATE_TIMEOUT_KNOB, TRANSITIONS, next_state)

# entry.l4 fields.
STATE, VTAG, INIT_SEEN, FLAGS, LAST_DIR = 0, 1, 3, 5, 6     # VTAG, INIT_SEEN: + direction
N_FIELDS = 7
HEARTBEAT_VTAG_FAILED = 1       # SCTP_FLAG_HEARTBEAT_VTAG_FAILED
Chunk = Tuple[int, int, Optional[int]]      # type, flags, initiate tag (parse_sctp.py)


# The chunks with rules of their own in chunks_packet() have a row in both directions'
# tables: a chunk without one (DATA, SACK, ...) has nothing to check there and leaves the
# state as it is, so it is passed over first.
_OWN_RULES = (INIT, INIT_ACK, ABORT, SHUTDOWN_COMPLETE, COOKIE_ECHO, COOKIE_ACK, HEARTBEAT,
              HEARTBEAT_ACK)
if not all(chunk_type in row for row in TRANSITIONS for chunk_type in _OWN_RULES):
    raise ImportError("sctp: a chunk with rules of its own has no transition row")


def _types(chunks: Sequence[Chunk]) -> List[int]:
    """The chunk types of a chunk list."""
    return [chunk_type for chunk_type, _, _ in chunks]


def _tag_matches_t_bit(conn: List[int], direction: int, vtag: int, flags: int) -> bool:
    """ABORT and SHUTDOWN COMPLETE (8.5.1 B, C): the direction's own tag, or the peer's
    when the T bit is set."""
    expected = conn[VTAG + (1 - direction if flags & FLAG_T else direction)]
    return vtag == expected


class SctpTracker:
    name = "sctp"
    error_messages = False
    invert = staticmethod(swapped)
    tuple_text = staticmethod(ports_text)

    def __init__(self, profile: str) -> None:
        self.profile = profile

    def error(self, pkt: Packet, knobs) -> Optional[str]:
        if pkt.hook == PRE_ROUTING and knobs["checksum"] and not pkt.sctp.checksum_ok:
            return "bad sctp crc"
        return None

    def quotes_flow(self, pkt: Packet) -> bool:
        return False

    def new(self, entry: Entry, pkt: Packet, knobs) -> bool:
        """sctp_new() and the out-of-the-blue checks before it."""
        sctp = pkt.sctp
        if not sctp.chunks_ok:
            return False
        if any(chunk_type in NOT_FIRST for chunk_type, _, _ in sctp.chunks):
            return False
        conn = [NONE, 0, 0, 0, 0, 0, 0]
        for chunk_type, _flags, tag in sctp.chunks:
            if next_state(ORIGINAL, NONE, chunk_type) in (NONE, IV):
                return False
            if chunk_type == INIT:
                if sctp.vtag or tag is None:          # 8.5.1 (A): an INIT's tag is 0
                    return False
                conn[VTAG + REPLY] = tag
            elif chunk_type == HEARTBEAT:
                conn[VTAG + ORIGINAL] = sctp.vtag     # a secondary path's association
            elif chunk_type == SHUTDOWN_ACK:
                conn[VTAG + REPLY] = sctp.vtag        # 8.4 (5): answered by SHUTDOWN COMPLETE
        entry.l4 = conn
        return True

    def packet(self, entry: Entry, pkt: Packet, direction: int, now: float, knobs):
        sctp = pkt.sctp
        return self.chunks_packet(entry, sctp.vtag, sctp.chunks, sctp.chunks_ok, direction,
                                  knobs)

    @staticmethod
    def chunks_packet(entry: Entry, vtag: int, chunks: Sequence[Chunk], chunks_ok: bool,
                      direction: int, knobs) -> Any:
        """packet()'s work on what it reads of the packet: the common header's tag, the
        chunk list and its basic checks (engine/fastpath_sctp.py reads them from the frame,
        without a Packet)."""
        if not chunks_ok:
            return INVALID
        conn = entry.l4
        if vtag != conn[VTAG + direction] and OWN_VTAG_RULES.isdisjoint(_types(chunks)):
            return INVALID
        other = 1 - direction
        transitions = TRANSITIONS[direction]
        ignore = False
        for chunk_type, flags, tag in chunks:
            row = transitions.get(chunk_type)
            if row is None:
                continue                # DATA, SACK, ...: no rule, the state stays
            if chunk_type == INIT:
                if vtag:
                    return INVALID
            elif chunk_type in (ABORT, SHUTDOWN_COMPLETE):
                if not _tag_matches_t_bit(conn, direction, vtag, flags):
                    return INVALID
            elif chunk_type == COOKIE_ECHO:
                if vtag != conn[VTAG + direction]:
                    return INVALID
            elif chunk_type == COOKIE_ACK:
                conn[INIT_SEEN + direction] = conn[INIT_SEEN + other] = 0
            elif chunk_type in (HEARTBEAT, HEARTBEAT_ACK):
                if conn[VTAG + direction] == 0:
                    conn[VTAG + direction] = vtag
                elif vtag != conn[VTAG + direction]:
                    if DATA in _types(chunks) or ignore:
                        return INVALID
                    if chunk_type == HEARTBEAT:
                        # Maybe a restarted peer: remember, and let the ACK decide.
                        conn[FLAGS] |= HEARTBEAT_VTAG_FAILED
                        conn[LAST_DIR] = direction
                        ignore = True
                        continue
                    if not conn[FLAGS] & HEARTBEAT_VTAG_FAILED or conn[LAST_DIR] == direction:
                        return INVALID
                    conn[FLAGS] &= ~HEARTBEAT_VTAG_FAILED
                    conn[VTAG + direction] = vtag
                    conn[VTAG + other] = 0
                elif conn[FLAGS] & HEARTBEAT_VTAG_FAILED:
                    conn[FLAGS] &= ~HEARTBEAT_VTAG_FAILED
            old_state = conn[STATE]
            new_state = row[old_state]  # sctp_new_state()
            if new_state == IV:
                return INVALID
            if chunk_type == INIT:
                if tag is None:
                    return INVALID
                # A retransmitted or stale INIT (the tag already known) is not a new one.
                if old_state == NONE or conn[VTAG + other] != tag:
                    if conn[INIT_SEEN + direction] and conn[INIT_SEEN + other]:
                        conn[INIT_SEEN + other] = 0
                    conn[INIT_SEEN + direction] = 1
                conn[VTAG + other] = tag
                # An INIT retransmitted into CLOSED does not renew the timer, so a reused
                # client port cannot keep the entry alive.
                if new_state == CLOSED and old_state == CLOSED and entry.confirmed:
                    ignore = True
            elif chunk_type == INIT_ACK:
                if tag is None:
                    return INVALID
                expected = conn[VTAG + other]
                if not conn[INIT_SEEN + other] and expected and expected != tag:
                    return INVALID
                if conn[INIT_SEEN + direction] and conn[INIT_SEEN + other] and expected != tag:
                    return INVALID                    # INIT collision
                conn[VTAG + other] = tag
            conn[STATE] = new_state
            if old_state != new_state and new_state == ESTABLISHED:
                entry.status |= ASSURED
        if ignore:
            return IGNORE
        # The last chunk's new state: a chunk without a row left it as it was.
        return knobs[STATE_TIMEOUT_KNOB[conn[STATE]]]

    def state_name(self, entry: Entry) -> Optional[str]:
        return STATE_NAMES[entry.l4[STATE]]

    def export_l4(self, entry: Entry, now: float) -> List[int]:
        return list(entry.l4)

    def restore_l4(self, value: Any, saved_at: float) -> List[int]:
        fields = [checked_uint(v, 32, "l4") for v in checked_list(value, N_FIELDS, "l4")]
        if fields[STATE] >= len(STATE_NAMES):
            raise ValueError(f"l4: SCTP state {fields[STATE]} does not exist")
        if max(fields[INIT_SEEN:INIT_SEEN + 2] + [fields[LAST_DIR]]) > 1:
            raise ValueError("l4: SCTP INIT flags and last direction are 0 or 1")
        return fields
