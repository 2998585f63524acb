"""The layer-4 protocol trackers behind one interface, and the set each profile runs.

A tracker owns its protocol's part of an entry (`entry.l4`), its state machine, its
timeouts, the protocol part of the listing line and of the state file.  The table code
calls only what is declared here, for every protocol alike.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Protocol, Tuple

from .entry import Entry
from .outcome import Outcome
from .packet import (IPPROTO_GRE, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP,
                     IPPROTO_UDP, IPPROTO_UDPLITE, Packet)
from .profile import is_modern

Knobs = Mapping[str, int]


class L4Tracker(Protocol):
    name: str                   # the listing's protocol name ("unknown" for generic)
    error_messages: bool        # may quote_flow() say yes (ICMP): else it is not asked

    def error(self, pkt: Packet, knobs: Knobs) -> Optional[str]:
        """Why this packet is INVALID before any lookup (nf_conntrack's l4 error()), or None."""

    def quotes_flow(self, pkt: Packet) -> bool:
        """Is this an error message about another flow (ICMP errors), RELATED to it if found?"""

    def untracked(self, pkt: Packet) -> bool:
        """(Asked only if error_messages.) Does conntrack leave this message without an
        entry, UNTRACKED (ICMPv6 neighbour discovery and MLD)?"""

    def invert(self, a: int, b: int) -> Optional[Tuple[int, int]]:
        """The protocol parts a reply carries; None if the packet has no reply (a lone ICMP
        reply type)."""

    def new(self, entry: Entry, pkt: Packet, knobs: Knobs) -> bool:
        """May this first packet create an entry?  If so, set up `entry.l4`."""

    def packet(self, entry: Entry, pkt: Packet, direction: int, now: float,
               knobs: Knobs) -> Outcome:
        """Judge one packet of the entry: a timeout in seconds or an outcome (engine/outcome.py)."""

    def state_name(self, entry: Entry) -> Optional[str]:
        """The listing's state column (TCP's state, GRE's timeouts), None for none."""

    def tuple_text(self, a: int, b: int) -> str:
        """The listing's protocol part of a tuple, each token followed by a space."""

    def export_l4(self, entry: Entry, now: float) -> Any:
        """`entry.l4` as JSON-ready data, times relative to `now`."""

    def restore_l4(self, value: Any, saved_at: float) -> Any:
        """The `entry.l4` that export_l4() saved at `saved_at`; ValueError if out of domain."""


def profile_trackers(profile: str) -> Tuple[Dict[int, L4Tracker], L4Tracker]:
    """(protocol number -> its tracker, the generic tracker for every other protocol)."""
    from .generic import GenericTracker
    from .gre import GreTracker
    from .icmp import IcmpTracker
    from .icmpv6 import Icmpv6Tracker
    from .sctp import SctpTracker
    from .tcp import TcpTracker
    from .udp import UdpTracker
    from .udplite import UdpliteTracker
    trackers: Dict[int, L4Tracker] = {IPPROTO_TCP: TcpTracker(profile),
                                      IPPROTO_UDP: UdpTracker(profile),
                                      IPPROTO_ICMP: IcmpTracker(profile)}
    if is_modern(profile):
        # ip_conntrack had none of these in core: the tutorial tracks them as generic.
        trackers[IPPROTO_GRE] = GreTracker(profile)
        trackers[IPPROTO_SCTP] = SctpTracker(profile)
        trackers[IPPROTO_UDPLITE] = UdpliteTracker(profile)
        trackers[IPPROTO_ICMPV6] = Icmpv6Tracker(profile)   # refuses 58 inside IPv4
    return trackers, GenericTracker(profile)


# -- helpers the trackers share for the state file ----------------------------------------
def checked_uint(value: Any, bits: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise ValueError(f"{what}: {value!r} is not an unsigned {bits}-bit integer")
    return value


def checked_seconds(value: Any, what: str, low: float, high: float) -> float:
    """A finite number of seconds within [low, high]."""
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not low <= value <= high):
        raise ValueError(f"{what}: {value!r} is not a number of seconds in {low:g}..{high:g}")
    return float(value)


def checked_list(value: Any, length: int, what: str) -> list:
    if not isinstance(value, list) or len(value) != length:
        raise ValueError(f"{what}: not a list of {length}")
    return value


def swapped(a: int, b: int) -> Tuple[int, int]:
    """invert() of protocols whose reply swaps the two parts (ports, keys)."""
    return b, a


def ports_text(a: int, b: int) -> str:
    return f"sport={a} dport={b} "


def icmp_text(a: int, b: int) -> str:
    """tuple_text() of ICMP and ICMPv6: the id in part a, type << 8 | code in part b."""
    return f"type={b >> 8} code={b & 255} id={a} "


def icmp_inverted(inverse: Mapping[int, int], a: int, b: int) -> Optional[Tuple[int, int]]:
    """invert() of ICMP and ICMPv6: the reply type (inverse[type]) with the same code and
    id; None for a type without a reply."""
    reply_type = inverse.get(b >> 8)
    if reply_type is None:
        return None
    return a, (reply_type << 8) | (b & 0xFF)
