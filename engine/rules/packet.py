"""The packet as the rules engine sees it: a view of its own, filled in by the packet path.

Addresses are ints in host byte order. `ctstate` is the conntrack classification the
caller's tracker gave the packet (a name or a state-match bitmask), `ctdir` its direction;
`ctstatus` the entry's status bits. A packet without an entry (INVALID, or the raw table,
which runs before conntrack) has `ctproto` None and no tuples.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

FAMILY_IPV4 = 4

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17

# TCP flag bits as they sit in byte 13 of the header.
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80

# State-match bits (<linux/netfilter/xt_conntrack.h>): XT_CONNTRACK_STATE_BIT(ctinfo) is
# 1 << (ctinfo % IP_CT_IS_REPLY + 1); INVALID (no entry) is 1, UNTRACKED 1 << 6.
INVALID = "INVALID"
ESTABLISHED = "ESTABLISHED"
RELATED = "RELATED"
NEW = "NEW"
UNTRACKED = "UNTRACKED"
STATE_BITS = {INVALID: 1, ESTABLISHED: 2, RELATED: 4, NEW: 8, UNTRACKED: 64}
# The order iptables prints a state list in (libxt_conntrack's state_print_state).
STATE_PRINT_ORDER = (INVALID, NEW, RELATED, ESTABLISHED, UNTRACKED)

# Conntrack status bits (<linux/netfilter/nf_conntrack_common.h>), in --ctstatus print order.
IPS_EXPECTED, IPS_SEEN_REPLY, IPS_ASSURED, IPS_CONFIRMED = 1, 2, 4, 8
STATUS_BITS = {"EXPECTED": IPS_EXPECTED, "SEEN_REPLY": IPS_SEEN_REPLY,
               "ASSURED": IPS_ASSURED, "CONFIRMED": IPS_CONFIRMED}

ORIGINAL = "original"
REPLY = "reply"

# (src, dst, sport, dport) of one direction of a conntrack entry; ports are 0 without ports.
CtTuple = tuple[int, int, int, int]


@dataclass
class RulePacket:
    src: int
    dst: int
    proto: int
    length: int                       # IP total length: what the byte counters add
    sport: int = 0
    dport: int = 0
    tcp_flags: int = 0
    icmp_type: int = 0
    icmp_code: int = 0
    fragment: bool = False            # a non-first fragment: no transport header to match
    in_iface: str = ""
    out_iface: str = ""
    ctstate: Union[str, int] = INVALID  # a state name, or a bitmask of STATE_BITS
    ctdir: str = ORIGINAL
    ctstatus: int = 0
    ctproto: Optional[int] = None     # the entry's protocol; None without an entry
    ct_orig: Optional[CtTuple] = None
    ct_reply: Optional[CtTuple] = None
    mark: int = 0
    ctmark: int = 0
    raw: bytes = b""                  # the IP datagram: REJECT replies and LOG lines read it
    link_header: bytes = b""          # the frame's link-layer header, for LOG's MAC=
    uid: Optional[int] = None         # the sending socket's owner (locally generated), LOG --log-uid
    gid: Optional[int] = None
    family: int = FAMILY_IPV4

    def state_bit(self) -> int:
        """The state-match bit of this packet (one bit; a bitmask is passed through)."""
        if isinstance(self.ctstate, int):
            return self.ctstate
        return STATE_BITS[self.ctstate]

    def has_entry(self) -> bool:
        """True when a conntrack entry is attached (not INVALID, not UNTRACKED)."""
        return not self.state_bit() & (STATE_BITS[INVALID] | STATE_BITS[UNTRACKED])
