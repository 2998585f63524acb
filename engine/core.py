"""The engine facade: one emulated network namespace, frames in, per-packet results out.

A frame goes: link layer -> IPv4 or IPv6 (by the version nibble) header checks and
defragmentation (as ip_rcv/ipv6_rcv and nf_defrag_ipv4/nf_defrag_ipv6 do before any
conntrack hook; IPv6 only in the linux profile: ip_conntrack knew IPv4 alone) -> the hooks of its way through the stack
(engine/hooks.py): conntrack classifies it where it enters (PREROUTING or OUTPUT), every
listener registered at a hook sees it there and may drop it, and its new entry is
confirmed when it leaves the last hook.  One Engine is not thread-safe: one driver feeds
it; readers coordinate with that driver.  Time is always an argument.  The engine knows
nothing of /proc paths: procfs_ct/tree.py binds files to engine/render.py.
"""
from __future__ import annotations

from math import isfinite
from typing import TYPE_CHECKING, Callable, Collection, Dict, List, Optional

from . import ipv4
from .build import checksum_valid
from .ctstate import CtState, PacketResult
from .defrag import Defragmenter
from .defrag6 import Defragmenter6
from .fastpath import FastTrack, make_fast_path
from .forwarding import ForwardedCopies
from .hooks import (CONFIRMING_HOOKS, LOCAL_OUT, LOOPED_BACK, PRE_ROUTING, TRACKING_HOOKS, Hook,
                    way_through)
from .knobs import KnobValues
from .linklayer import ETH_P_IP, LINKTYPE_ETHERNET, ip_version, strip_ip
from .packet import Packet
from .parse import ParseError, extract_ipv4, parse_ipv4
from .parse_ipv6 import parse_ipv6
from .profile import check_profile, is_modern
from .routing import Host, routing_drops
from .tracker import Tracker, knob_dict

if TYPE_CHECKING:
    from .chains import Chains

ETHERTYPE_IPV4 = ETH_P_IP.to_bytes(2, "big")
ETHERNET_HEADER_LEN = 14            # an untagged Ethernet frame's IP header starts here

# The table part of a --state-file (the mount command adds the knobs beside it).
STATE_FORMAT = "procfs-ct-state"
STATE_VERSION = 1

# What a hook listener answers: the packet goes on, or is dropped here (NF_DROP/NF_ACCEPT).
NF_DROP, NF_ACCEPT = 0, 1
# The engine's own third answer, for listeners that run before conntrack (the raw table):
# make no entry for this packet (NOTRACK / CT --notrack); it goes on UNTRACKED.
NF_NOTRACK = -1
HookListener = Callable[[Hook, Packet, PacketResult, float], int]
# Listeners before conntrack get the result the packet already carries (a loopback packet's
# from OUTPUT, a REJECT reply's attached entry), or None: it has not been classified yet.
EarlyListener = Callable[[Hook, Packet, Optional[PacketResult], float], int]


def _header_checksum_ok(datagram: bytes) -> bool:
    """ip_rcv's header checksum check (a received datagram; a header too broken to sum is
    left to parse_ipv4 to name)."""
    ihl = (datagram[0] & 0x0F) * 4
    return ihl < 20 or len(datagram) < ihl or checksum_valid(datagram[:ihl])


def host_ram_bytes() -> int:
    import psutil                      # the one host fact the defaults need (spec §7.1)
    return int(psutil.virtual_memory().total)


def host_cpu_count() -> int:
    import os
    return os.cpu_count() or 1


class Engine:
    """Frames in, PacketResults out; its tracker's table is what the views render."""

    def __init__(self, profile: str = "tutorial", ram_bytes: Optional[int] = None,
                 max_entries: Optional[int] = None, buckets: Optional[int] = None,
                 ncpu: Optional[int] = None, knobs_overrides: Optional[Dict[str, int]] = None,
                 default_hook: int = LOCAL_OUT,
                 local_addresses: Optional[Collection[int]] = None,
                 fast_extraction: bool = True,
                 broadcast_addresses: Collection[int] = (), forwarding: bool = True) -> None:
        self.profile = check_profile(profile)
        self.knobs = KnobValues(profile, host_ram_bytes() if ram_bytes is None else ram_bytes,
                                max_entries=max_entries, buckets=buckets,
                                overrides=knobs_overrides)
        self.tracker = Tracker(profile, self.knobs)
        self._knob_values = knob_dict(self.knobs)     # (none of the defrag knobs is live)
        self.defrag = Defragmenter(self.knobs["ipfrag_high_thresh"],
                                   self.knobs["ipfrag_low_thresh"], self.knobs["ipfrag_time"])
        self.defrag6 = Defragmenter6(self.knobs["frag6_high_thresh"],
                                     self.knobs["frag6_low_thresh"], self.knobs["frag6_timeout"])
        # nf_conntrack tracks IPv6 too; the 2.4/2.6 ip_conntrack of the tutorial did not.
        self.tracks_ipv6 = is_modern(self.profile)
        self.ncpu = host_cpu_count() if ncpu is None else ncpu
        # Captures rarely say where a packet met netfilter; loopback and locally made
        # traffic is tracked in OUTPUT, where the kernel checks no checksums.
        self.default_hook = default_hook
        # Destinations that are this host (INPUT); None: every received packet is for it.
        self.local_addresses = None if local_addresses is None else frozenset(local_addresses)
        # What routing after PREROUTING knows of this host (engine/routing.py): its links'
        # broadcast addresses (received for it too) and whether it forwards (ip_forward).
        self.host = Host(self.local_addresses, frozenset(broadcast_addresses), forwarding)
        # False: every datagram takes parse_ipv4() (tests compare both ways in).
        self.fast_extraction = fast_extraction
        self.listeners: Dict[Hook, List[HookListener]] = {}
        # The iptables chains in front of conntrack (engine/chains.py), once attached:
        # frames then go through them, as they read the capture's interfaces.
        self.chains: Optional["Chains"] = None
        # What names the interface indexes of cooked frames on a live mount ({index: name}
        # of the tap's network namespace, read again by the chains for an index it lacks).
        self.interface_lookup: Optional[Callable[[], Dict[int, str]]] = None
        self.early_listeners: Dict[Hook, List[EarlyListener]] = {}
        self.forwarded = ForwardedCopies()      # arrivals, to spot their forwarded copies
        self.frames_not_ipv4 = 0
        self.malformed = 0

    @property
    def count(self) -> int:
        return len(self.tracker)

    def listen(self, hook: Hook, listener: HookListener) -> None:
        """Call listener(hook, packet, result, now) for every packet at `hook`, in order of
        registration; NF_DROP drops the packet there (its new entry is never confirmed)."""
        self.listeners.setdefault(Hook(hook), []).append(listener)

    def listen_before_conntrack(self, hook: Hook, listener: EarlyListener) -> None:
        """Call listener(hook, packet, result, now) at PRE_ROUTING or LOCAL_OUT *before*
        conntrack classifies the packet there (the raw table's place, priority -300);
        NF_DROP drops it unclassified, NF_NOTRACK leaves it without an entry (UNTRACKED)."""
        if hook not in TRACKING_HOOKS:
            raise ValueError(f"conntrack does not run at {Hook(hook)!r}")
        self.early_listeners.setdefault(Hook(hook), []).append(listener)
        self.listeners.setdefault(Hook(hook), [])     # the walk below is now needed

    def fast_path_allowed(self) -> bool:
        """Whether the fast path (engine/fastpath.py) answers as this engine would: the
        linux profile, no chains or hook listeners, the fast extraction on, locally sent
        traffic (not PREROUTING) by default.  Chains and listeners may come at run time
        (an iptables-restore): a long-lived holder of the fast path asks again."""
        return not (not is_modern(self.profile) or self.chains is not None or self.listeners
                    or not self.fast_extraction or self.default_hook == PRE_ROUTING)

    def fast_path(self, first: int = LINKTYPE_ETHERNET) -> Optional[FastTrack]:
        """The fast path's track(now, linktype, frame) if fast_path_allowed(), else None;
        `first`: the link type most frames will have (it is tried first).  The caller
        must not use it once fast_path_allowed() would say no."""
        if not self.fast_path_allowed():
            return None
        return make_fast_path(self, first)

    # -- packets in ------------------------------------------------------------------------
    def feed_frame(self, ts: float, linktype: int, frame: bytes,
                   captured_on: Optional[str] = None) -> Optional[PacketResult]:
        """Track one captured frame; None if conntrack does not see it: not IPv4, a header
        ip_rcv drops, a fragment held for now.  `captured_on`: the interface a capture
        file names for it (for the chains' -i/-o; see Chains.feed_frame)."""
        if self.chains is not None:
            return self.chains.feed_frame(ts, linktype, frame, captured_on)
        if (linktype == LINKTYPE_ETHERNET and frame[12:14] == ETHERTYPE_IPV4
                and self.fast_extraction and not self.forwarded.arrivals):
            # Untagged Ethernet: the common datagram is read in place, without a copy.
            pkt = extract_ipv4(frame, ETHERNET_HEADER_LEN, self.default_hook)
            if pkt is not None:
                # (extract_ipv4 declines PRE_ROUTING: no routing check is due here.)
                if self.listeners:
                    return self.feed_packet(pkt, ts)
                # feed_packet() without listeners, inlined: most packets of a replay.
                result = self.tracker.process(pkt, ts)
                if result.pending:
                    self.tracker.confirm(result, ts)
                return result
            # Extraction declined it (a fragment, a protocol it leaves to the parser, a
            # header it refuses): strip_ip()'s answer for this frame, without its lookups
            # -- the datagram after the link header if the version nibble agrees, at the
            # default hook.
            if len(frame) > ETHERNET_HEADER_LEN and frame[ETHERNET_HEADER_LEN] >> 4 == 4:
                return self._feed_uncommon(ts, frame[ETHERNET_HEADER_LEN:], self.default_hook)
            self.frames_not_ipv4 += 1
            return None
        datagram, hook = strip_ip(linktype, frame)
        if datagram is None:
            self.frames_not_ipv4 += 1
            return None
        return self.feed_datagram(ts, datagram, self.default_hook if hook is None else hook)

    def feed_datagram(self, ts: float, datagram: bytes, hook: int,
                      looped_back: bool = False) -> Optional[PacketResult]:
        """Track one IPv4 or IPv6 datagram entering the stack at `hook` (PRE_ROUTING or
        LOCAL_OUT); None if conntrack does not see it (see feed_frame, and
        engine/forwarding.py).  `looped_back`: see feed_packet."""
        if hook == PRE_ROUTING:
            self.forwarded.arrived(datagram)
        elif self.forwarded.arrivals and self.forwarded.is_copy(datagram):
            return None                    # a forwarded datagram leaving: already tracked
        if ip_version(datagram) == 6:
            return self._feed_ipv6(ts, datagram, hook, looped_back)
        if self.fast_extraction:
            pkt = extract_ipv4(datagram, 0, hook)
            if pkt is not None:
                return self.feed_packet(pkt, ts, looped_back=looped_back)
        return self._feed_uncommon(ts, datagram, hook, looped_back)

    def _feed_uncommon(self, ts: float, datagram: bytes, hook: int,
                       looped_back: bool = False) -> Optional[PacketResult]:
        """feed_datagram() for what the fast extraction declines: defragment, parse."""
        if len(datagram) >= 8 and (datagram[6] & 0x3F or datagram[7]):
            if hook == PRE_ROUTING and not _header_checksum_ok(datagram):
                self.malformed += 1        # ip_rcv drops it before defrag ever holds it
                return None
            self._sync_defrag_knobs()
            datagram = self.defrag.feed(datagram, ts, hook)
            if datagram is None:
                return None                # held until complete: invisible to conntrack
        return self.track_datagram(ts, datagram, hook, looped_back)

    def track_datagram(self, ts: float, datagram: bytes, hook: int,
                       looped_back: bool = False) -> Optional[PacketResult]:
        """Parse and track one whole (not a fragment, or reassembled) IPv4 datagram: what
        follows defragmentation (the fast path's reassembled datagrams come here too when
        it declines them)."""
        pkt = parse_ipv4(datagram, hook)
        if isinstance(pkt, ParseError):
            # The kernel drops a broken IP header before any hook (ip_rcv): conntrack
            # never sees it, no stat column counts it; the engine keeps its own count.
            self.malformed += 1
            return None
        return self.feed_packet(pkt, ts, looped_back=looped_back, datagram=datagram)

    def _feed_ipv6(self, ts: float, datagram: bytes, hook: int,
                   looped_back: bool) -> Optional[PacketResult]:
        """feed_datagram() for IPv6: nf_defrag_ipv6, then parse and track."""
        if not self.tracks_ipv6:
            self.frames_not_ipv4 += 1      # no IPv6 conntrack in this profile
            return None
        self._sync_defrag6_knobs()
        datagram = self.defrag6.feed(datagram, ts, hook)
        if datagram is None:
            return None                    # held until complete, or dropped
        pkt = parse_ipv6(datagram, hook)
        if isinstance(pkt, ParseError):
            self.malformed += 1            # ipv6_rcv drops it before any hook
            return None
        return self.feed_packet(pkt, ts, looped_back=looped_back)

    def feed_packet(self, pkt: Packet, now: float, attached: Optional[PacketResult] = None,
                    looped_back: bool = False, datagram: Optional[bytes] = None) -> PacketResult:
        """Walk a parsed packet through the hooks of its way: tracked where it enters,
        shown to each hook's listeners, confirmed where it leaves.

        With listeners only (without them nothing but conntrack looks, and a loopback
        capture's packet is tracked once, as sent):
        * `attached`: the packet already carries this classification, and conntrack lets
          it be (nf_conntrack_in ignores a packet with an entry): a REJECT reply, which
          the kernel attaches to its cause's entry (RELATED);
        * `looped_back`: a packet this host sends itself (lo) walks OUTPUT, POSTROUTING,
          then PREROUTING, INPUT, carrying the entry OUTPUT gave it; one that OUTPUT found
          INVALID has no entry attached and is looked up again at PREROUTING.

        A packet received from a wire that routing refuses (engine/routing.py: martian
        addresses, bad IP options -- `datagram` holds the header when it has options) is
        dropped after PREROUTING: its entry is never confirmed.
        """
        tracker = self.tracker
        refused = (pkt.hook == PRE_ROUTING and not looped_back
                   and routing_drops(pkt.src, pkt.dst, datagram, self.host,
                                     pkt.l3 is not ipv4))
        if not self.listeners:
            # Nothing at the hooks but conntrack: track, then confirm at the last hook.
            result = tracker.process(pkt, now)
            if refused:
                tracker.discard(result)
                result.dropped = True
            elif result.pending:
                tracker.confirm(result, now)
            return result
        if looped_back and pkt.hook == LOCAL_OUT:
            way = LOOPED_BACK
        else:
            local = (self.local_addresses is None or pkt.dst in self.local_addresses
                     or pkt.dst in self.host.broadcasts)
            way = way_through(Hook(pkt.hook), local)
        result = attached
        for hook in way:
            if hook in TRACKING_HOOKS:
                answer = NF_ACCEPT
                for early in self.early_listeners.get(hook, ()):
                    answer = early(hook, pkt, result, now)
                    if answer != NF_ACCEPT:
                        break
                if answer == NF_DROP:
                    if result is None:          # dropped before conntrack ever saw it
                        result = PacketResult(CtState.INVALID, False, hook)
                    tracker.discard(result)
                    result.dropped = True
                    return result
                if result is None or result.state == CtState.INVALID:
                    # Nothing attached: conntrack classifies it here (or NOTRACK says no).
                    if answer == NF_NOTRACK:
                        result = PacketResult(CtState.UNTRACKED, False, hook)
                    else:
                        result = tracker.process(pkt, now)
            for listener in self.listeners.get(hook, ()):
                if listener(hook, pkt, result, now) == NF_DROP:
                    tracker.discard(result)
                    result.dropped = True
                    return result
            if hook == PRE_ROUTING and refused:        # routing finds no way on
                tracker.discard(result)
                result.dropped = True
                return result
            if hook in CONFIRMING_HOOKS and result.pending:
                tracker.confirm(result, now)
        return result

    def advance(self, now: float, budget: Optional[int] = None) -> bool:
        """Let time pass: expire entries and stale fragment queues.  With a budget, at most
        that many timer filings are looked at (Tracker.expire_some): False means call again
        (the daemon lets readers take the engine lock in between)."""
        if budget is None:
            self.tracker.expire(now)
        elif not self.tracker.expire_some(now, budget):
            return False
        self._sync_defrag_knobs()
        self._sync_defrag6_knobs()
        self.defrag.expire(now)
        self.defrag6.expire(now)
        return True

    def _sync_defrag_knobs(self) -> None:
        """The IPv4 defragmenter's knobs, as written now: synced before it is used (from
        the plain dict behind the knobs: KnobValues' lookups cost more than the rest)."""
        kv = self._knob_values
        defrag = self.defrag
        defrag.high_thresh = kv["ipfrag_high_thresh"]
        defrag.low_thresh = kv["ipfrag_low_thresh"]
        defrag.timeout = kv["ipfrag_time"]

    def _sync_defrag6_knobs(self) -> None:
        """_sync_defrag_knobs() for IPv6's, synced before IPv6 uses it (every IPv6
        datagram: the general path's ICMPv6, its extension headers)."""
        kv = self._knob_values
        defrag6 = self.defrag6
        defrag6.high_thresh = kv["frag6_high_thresh"]
        defrag6.low_thresh = kv["frag6_low_thresh"]
        defrag6.timeout = kv["frag6_timeout"]

    # -- saving and restoring the table ---------------------------------------------------
    def export_state(self, now: float) -> dict:
        """The table as a JSON-ready dict: entries with their seconds left as of `now`."""
        return dict(self.state_header(now), entries=self.tracker.export_entries(now))

    def state_header(self, now: float) -> dict:
        """export_state() without its entries: format, version, profile, saved_at."""
        return {"format": STATE_FORMAT, "version": STATE_VERSION, "profile": self.profile,
                "saved_at": now}

    def import_state(self, state: dict, now: float) -> int:
        """Put back a table saved by export_state(); returns how many entries were restored.

        Time went on while nobody tracked: each entry keeps the expiry it had (saved_at +
        seconds left), so the downtime counts against it and what ran out is not restored,
        as if the table had stayed up without traffic.  A clock that went back behind the
        save time counts as no downtime.

        Refuses, with a one-line ValueError naming the field and before changing anything,
        a state of another format version or profile, or one whose entries do not parse.
        """
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError("not a procfs-ct state file")
        version = state.get("version")
        if version != STATE_VERSION:
            raise ValueError(f"state format version {version!r} is not supported "
                             f"(this procfs-ct reads version {STATE_VERSION})")
        if state.get("profile") != self.profile:
            raise ValueError(f"the state was saved by a {state.get('profile')!r} profile "
                             f"engine; this one is {self.profile!r}")
        saved_at = state.get("saved_at")
        if (isinstance(saved_at, bool) or not isinstance(saved_at, (int, float))
                or not isfinite(saved_at)):
            raise ValueError(f"saved_at: {saved_at!r} is not a finite number")
        return self.tracker.import_entries(state.get("entries"), min(float(saved_at), now), now)
