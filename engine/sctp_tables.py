"""The SCTP state machine of nf_conntrack_proto_sctp.c as data (kernel 6.x, checked on 6.18).

States, the chunk types that move them, and the transition table per direction.  This
kernel has no HEARTBEAT_ACKED: since 6.2 a HEARTBEAT ACK answering a HEARTBEAT_SENT entry
makes it ESTABLISHED (secondary paths are plain associations), and an INIT in the original
direction during a shutdown closes the entry (scenario sctp_checks, port 45111).
"""
from __future__ import annotations

from typing import Dict, Tuple

# enum sctp_conntrack; IV is SCTP_CONNTRACK_MAX, "this chunk is not allowed here".
NONE, CLOSED, COOKIE_WAIT, COOKIE_ECHOED, ESTABLISHED = 0, 1, 2, 3, 4
SHUTDOWN_SENT, SHUTDOWN_RECD, SHUTDOWN_ACK_SENT, HEARTBEAT_SENT = 5, 6, 7, 8
IV = 9

STATE_NAMES = ("NONE", "CLOSED", "COOKIE_WAIT", "COOKIE_ECHOED", "ESTABLISHED",
               "SHUTDOWN_SENT", "SHUTDOWN_RECD", "SHUTDOWN_ACK_SENT", "HEARTBEAT_SENT")

# The knob giving each state's timeout; NONE uses CLOSED's (nf_conntrack_sctp_init_net).
STATE_TIMEOUT_KNOB = ("sctp_timeout_closed",) + tuple(
    f"sctp_timeout_{name.lower()}" for name in STATE_NAMES[1:])

# Chunk types (RFC 4960 3.2) and the T bit of ABORT and SHUTDOWN COMPLETE.
DATA, INIT, INIT_ACK, SACK, HEARTBEAT, HEARTBEAT_ACK, ABORT = 0, 1, 2, 3, 4, 5, 6
SHUTDOWN, SHUTDOWN_ACK, ERROR, COOKIE_ECHO, COOKIE_ACK = 7, 8, 9, 10, 11
SHUTDOWN_COMPLETE = 14
FLAG_T = 0x01

# Chunks a packet may carry only as its first (COOKIE ECHO/ACK) or only (INIT, INIT ACK,
# SHUTDOWN COMPLETE) chunk (do_basic_checks()).
FIRST_ONLY = frozenset((COOKIE_ECHO, COOKIE_ACK))
ALONE_ONLY = frozenset((INIT, INIT_ACK, SHUTDOWN_COMPLETE))
# Chunks that may not open an entry (RFC 4960 8.4: out-of-the-blue packets).
NOT_FIRST = frozenset((ABORT, SHUTDOWN_COMPLETE, COOKIE_ACK))
# Chunks with their own verification-tag rules; without any, the tag must be the
# direction's (RFC 4960 8.5).
OWN_VTAG_RULES = frozenset((INIT, SHUTDOWN_COMPLETE, COOKIE_ECHO, ABORT, SHUTDOWN_ACK,
                            HEARTBEAT, HEARTBEAT_ACK))

sNO, sCL, sCW, sCE, sES, sSS, sSR, sSA, sHS = range(9)
sIV = IV

#                       sNO  sCL  sCW  sCE  sES  sSS  sSR  sSA  sHS
_ORIGINAL: Dict[int, Tuple[int, ...]] = {
    INIT:              (sCL, sCL, sCW, sCE, sES, sCL, sCL, sSA, sCW),
    INIT_ACK:          (sCL, sCL, sCW, sCE, sES, sSS, sSR, sSA, sCL),
    ABORT:             (sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL),
    SHUTDOWN:          (sCL, sCL, sCW, sCE, sSS, sSS, sSR, sSA, sCL),
    SHUTDOWN_ACK:      (sSA, sCL, sCW, sCE, sES, sSA, sSA, sSA, sSA),
    ERROR:             (sCL, sCL, sCW, sCE, sES, sSS, sSR, sSA, sCL),
    COOKIE_ECHO:       (sCL, sCL, sCE, sCE, sES, sSS, sSR, sSA, sCL),
    COOKIE_ACK:        (sCL, sCL, sCW, sES, sES, sSS, sSR, sSA, sCL),
    SHUTDOWN_COMPLETE: (sCL, sCL, sCW, sCE, sES, sSS, sSR, sCL, sCL),
    HEARTBEAT:         (sHS, sCL, sCW, sCE, sES, sSS, sSR, sSA, sHS),
    HEARTBEAT_ACK:     (sCL, sCL, sCW, sCE, sES, sSS, sSR, sSA, sHS),
}
_REPLY: Dict[int, Tuple[int, ...]] = {
    INIT:              (sIV, sCL, sCW, sCE, sES, sSS, sSR, sSA, sIV),
    INIT_ACK:          (sIV, sCW, sCW, sCE, sES, sSS, sSR, sSA, sIV),
    ABORT:             (sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sIV),
    SHUTDOWN:          (sIV, sCL, sCW, sCE, sSR, sSS, sSR, sSA, sIV),
    SHUTDOWN_ACK:      (sIV, sCL, sCW, sCE, sES, sSA, sSA, sSA, sIV),
    ERROR:             (sIV, sCL, sCW, sCL, sES, sSS, sSR, sSA, sIV),
    COOKIE_ECHO:       (sIV, sCL, sCE, sCE, sES, sSS, sSR, sSA, sIV),
    COOKIE_ACK:        (sIV, sCL, sCW, sES, sES, sSS, sSR, sSA, sIV),
    SHUTDOWN_COMPLETE: (sIV, sCL, sCW, sCE, sES, sSS, sSR, sCL, sIV),
    HEARTBEAT:         (sIV, sCL, sCW, sCE, sES, sSS, sSR, sSA, sHS),
    HEARTBEAT_ACK:     (sIV, sCL, sCW, sCE, sES, sSS, sSR, sSA, sES),
}
TRANSITIONS = (_ORIGINAL, _REPLY)       # indexed by direction, then chunk type


def next_state(direction: int, state: int, chunk_type: int) -> int:
    """sctp_new_state(): chunks without a row (DATA, SACK, ...) leave the state as it is."""
    row = TRANSITIONS[direction].get(chunk_type)
    return state if row is None else row[state]
