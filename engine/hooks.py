"""The netfilter hooks a packet passes, in the kernel's order, and where conntrack acts.

The tutorial: "All connection tracking is handled in the PREROUTING chain, except locally
generated packets which are handled in the OUTPUT chain."  An entry made there is not yet
in the table: it is confirmed (inserted, its timer armed, `insert` counted) when the packet
leaves the last hook of its way -- INPUT for a packet to this host, POSTROUTING for one that
leaves it -- and thrown away if a hook drops the packet before that (nf_conntrack_confirm).
"""
from __future__ import annotations

from enum import IntEnum
from typing import Tuple


class Hook(IntEnum):
    """NF_INET_* numbers."""
    PRE_ROUTING = 0
    LOCAL_IN = 1
    FORWARD = 2
    LOCAL_OUT = 3
    POST_ROUTING = 4


PRE_ROUTING, LOCAL_IN, FORWARD, LOCAL_OUT, POST_ROUTING = tuple(Hook)

# Where nf_conntrack_in runs (a packet is looked up or gets an unconfirmed entry) ...
TRACKING_HOOKS = frozenset((PRE_ROUTING, LOCAL_OUT))
# ... and where nf_conntrack_confirm runs: the last hook of each way through the stack.
CONFIRMING_HOOKS = frozenset((LOCAL_IN, POST_ROUTING))

# The ways through the stack: received for this host, received and forwarded, sent.
TO_THIS_HOST: Tuple[Hook, ...] = (PRE_ROUTING, LOCAL_IN)
FORWARDED: Tuple[Hook, ...] = (PRE_ROUTING, FORWARD, POST_ROUTING)
FROM_THIS_HOST: Tuple[Hook, ...] = (LOCAL_OUT, POST_ROUTING)
# A packet this host sends to itself: out through lo, then received from it.  Conntrack
# tracks it at OUTPUT; at PREROUTING it still carries that entry and is not looked up
# again -- unless OUTPUT found it INVALID (no entry attached), then it is looked up anew.
LOOPED_BACK: Tuple[Hook, ...] = FROM_THIS_HOST + TO_THIS_HOST


def way_through(first: Hook, local_destination: bool = True) -> Tuple[Hook, ...]:
    """The hooks a packet meets from the hook it enters at (PRE_ROUTING or LOCAL_OUT)."""
    if first == LOCAL_OUT:
        return FROM_THIS_HOST
    if first != PRE_ROUTING:
        raise ValueError(f"a packet enters the stack at PRE_ROUTING or LOCAL_OUT, not {first!r}")
    return TO_THIS_HOST if local_destination else FORWARDED
