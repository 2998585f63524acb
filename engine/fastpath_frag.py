"""The fast path's IPv4 fragments: straight to the defragmenter, the whole datagram on.

A fragment is never tracked itself: the defragmenter holds it until its datagram is
whole (engine/defrag.py), and conntrack sees that datagram.  The general path gets there
through Engine.feed_frame(): extract_ipv4() tried and declining, strip_ip(),
_feed_uncommon(), six knob reads through KnobValues (_sync_defrag_knobs()) -- a third of a
fragment's cost before the defragmenter starts.  fragment() hands the datagram to the same
Defragmenter with the same hook -- to Defragmenter.file(), what feed() calls once its
tests pass: track() has made them (an IPv4 header without options, a fragment, its total
length within the frame) --, its three knobs read from the plain dict the knob
files write into (so a write takes effect at the next fragment, as it does on the general
path), and the reassembled datagram to the fast path again: as an Ethernet frame, whose
default hook is the fragments' own (LOCAL_OUT), or, if the fast path declines it, to
Engine.track_datagram(), where the general path would have taken it.

A fragment held (or dropped) by the defragmenter has no verdict; track() answers HELD for
it -- the frame was taken and nothing more is to be done -- and engine/replay.py records it
as None (NOTSEEN), as the general path's None.  The fragment's own expiry is the
defragmenter's (its queues); the tracker expires entries only when the whole datagram
reaches it, as on the general path.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

from . import ipv4
from .ctstate import CtState, Verdict
from .linklayer import ETH_P_IP, LINKTYPE_ETHERNET

if TYPE_CHECKING:
    from .core import Engine

FastTrack = Callable[[float, int, bytes], Optional[Verdict]]
FragmentTrack = Callable[[float, bytes], Verdict]

# A frame the fast path took that conntrack does not see (a fragment held for
# reassembly).  A Verdict, so that `if fast(...)` and `is not None` count it as taken; told
# apart by identity: no other verdict is this object.
HELD = Verdict(CtState.UNTRACKED, False)
# The reassembled datagram as an untagged Ethernet frame (addresses unread).
ETHERNET_IPV4_HEADER = bytes(12) + ETH_P_IP.to_bytes(2, "big")


def make_fragment(engine: "Engine", hook: int, whole_track: FastTrack) -> FragmentTrack:
    """fragment(now, datagram) for this engine: the verdict of an IPv4 fragment (option-less
    header, total length within the frame) seen at `hook` -- HELD, or the reassembled
    datagram's verdict.  `whole_track` is the Ethernet fast path the whole datagram is
    offered to (see the module text)."""
    defrag = engine.defrag
    file = defrag.file
    kv = engine.tracker._kv
    track_datagram = engine.track_datagram

    def fragment(now: float, datagram: bytes) -> Verdict:
        # Engine._sync_defrag_knobs()'s IPv4 half (the IPv6 one is synced before IPv6 uses
        # it), from the dict: plain reads, not KnobValues' lookups.
        defrag.high_thresh = kv["ipfrag_high_thresh"]
        defrag.low_thresh = kv["ipfrag_low_thresh"]
        defrag.timeout = kv["ipfrag_time"]
        # Defragmenter.feed()'s tests are track()'s: file() takes the fragment on.
        whole = file(datagram, ipv4.HEADER_LEN, now, hook)
        if whole is None:
            return HELD                 # held until complete (or dropped)
        verdict = whole_track(now, LINKTYPE_ETHERNET, ETHERNET_IPV4_HEADER + whole)
        if verdict is None:
            result = track_datagram(now, whole, hook)
            return HELD if result is None else result.verdict
        return verdict

    return fragment
