"""The engine facade: link layer -> defragmentation -> parsing -> tracking -> views.

One Engine is one emulated network namespace.  It is not thread-safe: one driver
feeds it; readers coordinate with that driver.  Time is always an argument.
"""
from __future__ import annotations

from math import isfinite
from typing import Dict, Iterator, Optional

from .ctstate import CtState, Verdict
from .defrag import Defragmenter
from .knobs import KnobValues
from .linklayer import LINKTYPE_ETHERNET, strip_link
from .packet import LOCAL_OUT, PRE_ROUTING
from .parse import ParseError, parse_ipv4
from .render import listing_chunks, render_expect, render_listing, render_stat
from .tracker import Tracker

V_INVALID = Verdict(CtState.INVALID)
ETHERTYPE_IPV4 = b"\x08\x00"

# The table part of a --state-file (the mount command adds the knobs beside it).
STATE_FORMAT = "procfs-ct-state"
STATE_VERSION = 1

VIEWS = ("net/ip_conntrack", "net/ip_conntrack_expect", "net/nf_conntrack",
         "net/nf_conntrack_expect", "net/stat/ip_conntrack", "net/stat/nf_conntrack")


def host_ram_bytes() -> int:
    import psutil                      # the one host fact the defaults need (spec §7.1)
    return int(psutil.virtual_memory().total)


def host_cpu_count() -> int:
    import os
    return os.cpu_count() or 1


class Engine:
    """Frames in, verdicts out; renders the /proc views of its table on demand."""

    def __init__(self, profile: str = "tutorial", ram_bytes: Optional[int] = None,
                 max_entries: Optional[int] = None, buckets: Optional[int] = None,
                 ncpu: Optional[int] = None, knobs_overrides: Optional[Dict[str, int]] = None,
                 default_hook: int = LOCAL_OUT) -> None:
        self.profile = profile
        self.knobs = KnobValues(profile, host_ram_bytes() if ram_bytes is None else ram_bytes,
                                max_entries=max_entries, buckets=buckets,
                                overrides=knobs_overrides)
        self.tracker = Tracker(profile, self.knobs)
        self.defrag = Defragmenter(self.knobs["ipfrag_high_thresh"],
                                   self.knobs["ipfrag_low_thresh"], self.knobs["ipfrag_time"])
        self.ncpu = host_cpu_count() if ncpu is None else ncpu
        # Captures rarely say where a packet met netfilter; loopback and locally made
        # traffic is tracked in OUTPUT, where the kernel checks no checksums.
        self.default_hook = default_hook
        self.frames_not_ipv4 = 0
        self.malformed = 0

    @property
    def count(self) -> int:
        return len(self.tracker)

    def feed_frame(self, ts: float, linktype: int, frame: bytes) -> Optional[Verdict]:
        """Track one captured frame; None if it is not IPv4 or is a fragment held for now."""
        # Untagged Ethernet carrying IPv4, tracked in OUTPUT (no checksums to verify): the
        # tracker's fast path reads the datagram in place; it declines what it cannot do.
        tried = False
        if (linktype == LINKTYPE_ETHERNET and self.default_hook != PRE_ROUTING
                and frame[12:14] == ETHERTYPE_IPV4):
            verdict = self.tracker.track_ipv4(frame, 14, ts)
            if verdict is not None:
                return verdict
            tried = True
        datagram, hook = strip_link(linktype, frame)
        if datagram is None:
            self.frames_not_ipv4 += 1
            return None
        if hook is None:
            hook = self.default_hook
        if tried:
            return self._feed_general(ts, datagram, hook)
        return self.feed_datagram(ts, datagram, hook)

    def feed_datagram(self, ts: float, datagram: bytes, hook: int) -> Optional[Verdict]:
        """Track one IPv4 datagram seen at netfilter hook `hook` at time `ts`."""
        if hook != PRE_ROUTING:
            verdict = self.tracker.track_ipv4(datagram, 0, ts)
            if verdict is not None:
                return verdict
        return self._feed_general(ts, datagram, hook)

    def _feed_general(self, ts: float, datagram: bytes, hook: int) -> Optional[Verdict]:
        """Defragment, parse into a Packet, track: every datagram the fast path declines."""
        if len(datagram) >= 8 and (datagram[6] & 0x3F or datagram[7]):
            self._sync_defrag_knobs()
            datagram = self.defrag.feed(datagram, ts, hook)
            if datagram is None:
                return None            # held until complete: invisible to conntrack
        packet = parse_ipv4(datagram, hook)
        if isinstance(packet, ParseError):
            # The kernel drops a broken IP header before conntrack (ip_rcv), so no
            # stat column counts it; the engine keeps its own count.
            self.malformed += 1
            return V_INVALID
        return self.tracker.process(packet, ts)

    def advance(self, now: float) -> None:
        """Let time pass: expire entries and stale fragment queues."""
        self.tracker.expire(now)
        self._sync_defrag_knobs()
        self.defrag.expire(now)

    def _sync_defrag_knobs(self) -> None:
        self.defrag.high_thresh = self.knobs["ipfrag_high_thresh"]
        self.defrag.low_thresh = self.knobs["ipfrag_low_thresh"]
        self.defrag.timeout = self.knobs["ipfrag_time"]

    # -- saving and restoring the table ---------------------------------------------------
    def export_state(self, now: float) -> dict:
        """The table as a JSON-ready dict: entries with their seconds left as of `now`."""
        return {"format": STATE_FORMAT, "version": STATE_VERSION, "profile": self.profile,
                "saved_at": now, "entries": self.tracker.export_entries(now)}

    def import_state(self, state: dict, now: float) -> int:
        """Put back a table saved by export_state(); returns how many entries were restored.

        Time went on while nobody tracked: each entry keeps the expiry it had (saved_at +
        seconds left), so the downtime counts against it and what ran out is not restored,
        as if the table had stayed up without traffic.  A clock that went back behind the
        save time counts as no downtime.

        Refuses, with a one-line ValueError and before changing anything, a state of
        another format version or profile, or one whose entries do not parse.
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
            raise ValueError("saved_at: not a finite number")
        entries = state.get("entries")
        if not isinstance(entries, list):
            raise ValueError("entries: not a list")
        return self.tracker.import_entries(entries, min(float(saved_at), now), now)

    def render_text(self, view: str, now: float) -> str:
        if view == "net/nf_conntrack" or view == "net/ip_conntrack":
            return self.render(view, now).decode("ascii")
        if view in ("net/stat/nf_conntrack", "net/stat/ip_conntrack"):
            return render_stat(self.tracker, view.endswith("nf_conntrack"), self.ncpu)
        if view in ("net/nf_conntrack_expect", "net/ip_conntrack_expect"):
            return render_expect(self.tracker, view.endswith("nf_conntrack_expect"))
        raise KeyError(view)

    def render(self, view: str, now: float) -> bytes:
        if view == "net/nf_conntrack":
            return render_listing(self.tracker, now, modern=True)
        if view == "net/ip_conntrack":
            return render_listing(self.tracker, now, modern=False)
        return self.render_text(view, now).encode("ascii")

    def render_chunks(self, view: str, now: float) -> Iterator[bytes]:
        """render() in pieces: a listing walks a snapshot of the table one chunk per next(),
        reading the entries as they are then (the caller may let packets in between);
        other views are one piece."""
        if view == "net/nf_conntrack" or view == "net/ip_conntrack":
            return listing_chunks(self.tracker, now, view == "net/nf_conntrack")
        return iter((self.render(view, now),))
