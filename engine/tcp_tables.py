"""The TCP conntrack state machine as data: states, packet classes, flag checks, transitions.

Everything here is read row by row against docs/spec/conntrack.md §4.1-4.5 (and the kernel's
`tcp_conntracks[2][6][10]` array). Two profiles:

* ``linux``: modern nf_conntrack (§4.2), column 9 is SYN_SENT2 (simultaneous open);
* ``tutorial``: 2.4 + patch-o-matic tcp-window-tracking / 2.6 ip_conntrack (§4.3), column 9
  is LISTEN and is never entered.

The code in engine/tcp.py only classifies a packet, looks the new state up here and handles
the few cells the spec marks as special (IG, IV, SYN_SENT*).
"""
from __future__ import annotations

from typing import Dict, Tuple

from .packet import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG

# --- states (§4.1: pom / 2.6-ipct and modern share indices 0-8) ----------------------------
NONE, SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE = range(9)
SYN_SENT2 = 9        # modern: simultaneous open
LISTEN = 9           # pom / 2.6-ipct: same slot, never used
N_STATES = 10

# Pseudo results of a table cell (never stored as a state).
IV = 10              # invalid: packet INVALID, entry untouched
IG = 11              # ignore: accepted with the entry's ctinfo, remembered, no state/timer change
SS_REOPEN = 12       # "SYN_SENT*": SYN_SENT after the reopen check of §4.6 step 3

STATE_NAMES: Dict[str, Tuple[str, ...]] = {
    "linux": ("NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT",
              "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2"),
    "tutorial": ("NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT",
                 "LAST_ACK", "TIME_WAIT", "CLOSE", "LISTEN"),
}

# Knob holding each state's timeout (§4.8). SYN_SENT2 has no knob of its own and uses
# syn_sent; NONE and LISTEN are never a packet's new state.
STATE_TIMEOUT_KNOB: Tuple[str, ...] = (
    "tcp_timeout_syn_sent",      # NONE (unused)
    "tcp_timeout_syn_sent",
    "tcp_timeout_syn_recv",
    "tcp_timeout_established",
    "tcp_timeout_fin_wait",
    "tcp_timeout_close_wait",
    "tcp_timeout_last_ack",
    "tcp_timeout_time_wait",
    "tcp_timeout_close",
    "tcp_timeout_syn_sent",      # SYN_SENT2 (linux) / LISTEN (tutorial, unused)
)

# --- packet classes (§4.1; the kernel's enum tcp_bit_set order) -----------------------------
C_SYN, C_SYNACK, C_FIN, C_ACK, C_RST, C_NONE = range(6)
CLASS_NAMES = ("syn", "synack", "fin", "ack", "rst", "none")


def _class_of(flags: int) -> int:
    # First match wins: RST, then SYN (synack if ACK too), FIN, ACK, otherwise none.
    if flags & RST:
        return C_RST
    if flags & SYN:
        return C_SYNACK if flags & ACK else C_SYN
    if flags & FIN:
        return C_FIN
    if flags & ACK:
        return C_ACK
    return C_NONE


# Indexed by the whole flag byte of the TCP header.
CLASS_OF_FLAGS: Tuple[int, ...] = tuple(_class_of(f) for f in range(256))

# --- flag validation (§4.5) ----------------------------------------------------------------
# Allowed combinations after masking; each profile masks different bits.
_LINUX_VALID = {SYN, SYN | URG, SYN | ACK, RST, RST | ACK, FIN | ACK, FIN | ACK | URG,
                ACK, ACK | URG}
_LINUX_MASKED = ECE | CWR | PSH          # PSH is allowed with any of them
_TUTORIAL_VALID = {SYN, SYN | ACK, SYN | PSH, SYN | ACK | PSH,
                   RST, RST | ACK, RST | ACK | PSH,
                   FIN | ACK, FIN | ACK | PSH, FIN | ACK | URG, FIN | ACK | URG | PSH,
                   ACK, ACK | PSH, ACK | URG, ACK | URG | PSH}
_TUTORIAL_MASKED = ECE | CWR

VALID_FLAGS: Dict[str, Tuple[bool, ...]] = {
    "linux": tuple((f & ~_LINUX_MASKED) in _LINUX_VALID for f in range(256)),
    "tutorial": tuple((f & ~_TUTORIAL_MASKED) in _TUTORIAL_VALID for f in range(256)),
}

# --- transition tables ----------------------------------------------------------------------
# Short names so that a row fits on one line and lines up with the spec's columns.
NO, SS, SR, ES, FW, CW, LA, TW, CL, S2, LI = (NONE, SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT,
                                              CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE,
                                              SYN_SENT2, LISTEN)
SS_ = SS_REOPEN      # the spec's "SYN_SENT*"

# Modern (§4.2).
LINUX_ORIGINAL = {
    #          NONE SYN_SENT SYN_RECV ESTAB FIN_WAIT CLOSE_WAIT LAST_ACK TIME_WAIT CLOSE SYN_SENT2
    "syn":    (SS,  SS,      IG,      IG,   IG,      IG,        IG,      SS_,      SS_,  S2),
    "synack": (IV,  IV,      SR,      IV,   IV,      IV,        IV,      IV,       IV,   SR),
    "fin":    (IV,  IV,      FW,      FW,   LA,      LA,        LA,      TW,       CL,   IV),
    "ack":    (ES,  IV,      ES,      ES,   CW,      CW,        TW,      TW,       CL,   IV),
    "rst":    (IV,  CL,      CL,      CL,   CL,      CL,        CL,      CL,       CL,   CL),
    "none":   (IV,  IV,      IV,      IV,   IV,      IV,        IV,      IV,       IV,   IV),
}
LINUX_REPLY = {
    #          NONE SYN_SENT SYN_RECV ESTAB FIN_WAIT CLOSE_WAIT LAST_ACK TIME_WAIT CLOSE SYN_SENT2
    "syn":    (IV,  S2,      IV,      IV,   IV,      IV,        IV,      SS_,      IV,   S2),
    "synack": (IV,  SR,      IG,      IG,   IG,      IG,        IG,      IG,       IG,   SR),
    "fin":    (IV,  IV,      FW,      FW,   LA,      LA,        LA,      TW,       CL,   IV),
    "ack":    (IV,  IG,      SR,      ES,   CW,      CW,        TW,      TW,       CL,   IG),
    "rst":    (IV,  CL,      CL,      CL,   CL,      CL,        CL,      CL,       CL,   CL),
    "none":   (IV,  IV,      IV,      IV,   IV,      IV,        IV,      IV,       IV,   IV),
}

# pom / 2.6-ipct (§4.3): no simultaneous open, no server-side reopen, LISTEN never used.
TUTORIAL_ORIGINAL = {
    #          NONE SYN_SENT SYN_RECV ESTAB FIN_WAIT CLOSE_WAIT LAST_ACK TIME_WAIT CLOSE LISTEN
    "syn":    (SS,  SS,      IG,      IG,   IG,      IG,        IG,      SS_,      SS_,  IV),
    "synack": (IV,  IV,      IV,      IV,   IV,      IV,        IV,      IV,       IV,   IV),
    "fin":    (IV,  IV,      FW,      FW,   LA,      LA,        LA,      TW,       CL,   IV),
    "ack":    (ES,  IV,      ES,      ES,   CW,      CW,        TW,      TW,       CL,   IV),
    "rst":    (IV,  CL,      CL,      CL,   CL,      CL,        CL,      CL,       CL,   IV),
    "none":   (IV,  IV,      IV,      IV,   IV,      IV,        IV,      IV,       IV,   IV),
}
TUTORIAL_REPLY = {
    #          NONE SYN_SENT SYN_RECV ESTAB FIN_WAIT CLOSE_WAIT LAST_ACK TIME_WAIT CLOSE LISTEN
    "syn":    (IV,  IV,      IV,      IV,   IV,      IV,        IV,      IV,       IV,   IV),
    "synack": (IV,  SR,      SR,      IG,   IG,      IG,        IG,      IG,       IG,   IV),
    "fin":    (IV,  IV,      FW,      FW,   LA,      LA,        LA,      TW,       CL,   IV),
    "ack":    (IV,  IG,      SR,      ES,   CW,      CW,        TW,      TW,       CL,   IV),
    "rst":    (IV,  CL,      CL,      CL,   CL,      CL,        CL,      CL,       CL,   IV),
    "none":   (IV,  IV,      IV,      IV,   IV,      IV,        IV,      IV,       IV,   IV),
}


def _compile(original: Dict[str, tuple], reply: Dict[str, tuple]) -> Tuple[tuple, tuple]:
    """[direction][class][state] -> cell, as nested tuples for the per-packet lookup."""
    out = []
    for table in (original, reply):
        assert set(table) == set(CLASS_NAMES)
        assert all(len(row) == N_STATES for row in table.values())
        out.append(tuple(table[name] for name in CLASS_NAMES))
    return tuple(out)


TABLES: Dict[str, Tuple[tuple, tuple]] = {
    "linux": _compile(LINUX_ORIGINAL, LINUX_REPLY),
    "tutorial": _compile(TUTORIAL_ORIGINAL, TUTORIAL_REPLY),
}
