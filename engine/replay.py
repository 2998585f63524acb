"""Replay a capture through an Engine on the capture's own clock."""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from itertools import chain, compress, repeat, starmap
from typing import (TYPE_CHECKING, BinaryIO, Callable, Collection, Dict, Iterator, List,
                    Optional, Sequence, Tuple, Union)

from .capture import FrameColumns, read_capture_columns
from .core import Engine
from .fastpath import FastTrack
from .fastpath_frag import HELD
from .knobs import KnobWriteError
from .ctstate import Verdict
from .profile import is_modern
from .render import render_listing, render_stat
from .render_expect import render_expect

if TYPE_CHECKING:
    from .chains import Chains
    from .rules import Ruleset

# What `procfs-ct replay --format` prints, by name: each a function of (engine, time).
FORMATS: Dict[str, Callable[[Engine, float], str]] = {
    "nf_conntrack": lambda engine, now: render_listing(engine.tracker, now, True).decode(),
    "ip_conntrack": lambda engine, now: render_listing(engine.tracker, now, False).decode(),
    # The stat file of the profile's own generation.
    "stat": lambda engine, now: render_stat(engine.tracker, is_modern(engine.profile),
                                            engine.ncpu),
    "expect": lambda engine, now: render_expect(engine.tracker, now, is_modern(engine.profile)),
}

# The --ctstate word of a frame conntrack made no verdict for: it never met a conntrack hook
# (not IPv4, an IP header ip_rcv drops) or met none on its own (a fragment held for
# reassembly -- the datagram's verdict is on the frame that completes it -- or the outgoing
# copy of a datagram tracked when it arrived).
NOT_SEEN = "NOTSEEN"


def ctstate_word(verdict: Optional[Verdict]) -> str:
    """A frame's --ctstate word: "NEW", "ESTABLISHED reply", ..., or NOT_SEEN."""
    return NOT_SEEN if verdict is None else str(verdict)


@dataclass
class ReplayResult:
    engine: Engine
    verdicts: List[Optional[Verdict]] = field(default_factory=list)
    at: float = 0.0
    chains: Optional["Chains"] = None       # with rules: the ruleset at the hooks
    dropped: List[bool] = field(default_factory=list)   # per seen frame: a hook dropped it

    def text(self, fmt: str = "nf_conntrack") -> str:
        return FORMATS[fmt](self.engine, self.at)


def replay(capture: Union[str, BinaryIO], profile: str = "linux", at: Optional[float] = None,
           knobs_overrides: Optional[Dict[str, int]] = None,
           max_entries: Optional[int] = None, ram_bytes: Optional[int] = None,
           ncpu: Optional[int] = None, fast_extraction: bool = True,
           rules: Optional["Ruleset"] = None,
           local_addresses: Optional[Collection[int]] = None,
           broadcast_addresses: Collection[int] = (), forwarding: bool = True,
           iface_names: Optional[Dict[int, str]] = None,
           knob_writes: Sequence[Tuple[str, bytes]] = (),
           fast_path: bool = True) -> ReplayResult:
    """Feed every frame of a pcap/pcapng capture; the table is then shown as it stands at
    `at` (default: the last frame's time).  Frames after `at` are not fed.  `verdicts`
    holds each frame's (ctstate, reply), None for a frame conntrack did not see.

    `rules` puts that ruleset in front of the state machine (engine/chains.py; its
    counters count this capture's packets), `local_addresses` the host's own addresses
    (others' traffic is forwarded -- or, with `forwarding` False, dropped after
    PREROUTING; `broadcast_addresses`, its links' broadcasts, are received too),
    `iface_names` names the interface indexes of a cooked capture.  `knob_writes` are (knob name, bytes) written to the knobs before the first
    frame, as writes to their files (KnobWriteError if one is refused).  `fast_path` False
    sends every frame down the general path (tests compare both ways)."""
    engine = Engine(profile, ram_bytes=ram_bytes, max_entries=max_entries, ncpu=ncpu,
                    knobs_overrides=knobs_overrides, fast_extraction=fast_extraction,
                    local_addresses=local_addresses,
                    broadcast_addresses=broadcast_addresses, forwarding=forwarding)
    for name, data in knob_writes:
        try:
            engine.knobs.write_text(name, data)
        except KnobWriteError as exc:
            raise KnobWriteError(exc.errno, f"{name}={data.decode(errors='replace').strip()}: "
                                 f"{exc}") from None
    result = ReplayResult(engine)
    if rules is not None:
        from .chains import Chains
        result.chains = Chains(engine, rules, iface_names)
    if isinstance(capture, str):
        with open(capture, "rb") as fileobj:
            _feed(result, fileobj, at, fast_path)
    else:
        _feed(result, capture, at, fast_path)
    if at is not None:
        result.at = at
    engine.advance(result.at)
    return result


def _never_fast(now: float, linktype: int, frame: bytes) -> None:
    """The fast path's stand-in when it does not apply: every frame takes the general path."""
    return None


def _feed(result: ReplayResult, fileobj: BinaryIO, at: Optional[float],
          fast_path: bool) -> None:
    batches = read_capture_columns(fileobj)
    # The fast path (engine/fastpath.py) takes the common packets -- most of a capture --
    # and answers None for the others, which take the general path.
    fast = result.engine.fast_path() if fast_path else None
    if fast is not None and at is None and result.chains is None:
        _feed_fast(result, batches, fast)
    else:
        _feed_each(result, batches, at, fast or _never_fast)


def _feed_fast(result: ReplayResult, batches: Iterator[FrameColumns],
               fast: FastTrack) -> None:
    """Every frame, a batch at a time: one list comprehension per batch calls the fast
    path, and the general path for a frame it declines (answered None) right then, before
    the next frame's fast() -- the same calls in the same order as _feed_each() makes.  A
    verdict is a non-empty tuple, so `or` tells None from a verdict without a test of its
    own; the held fragments' HELD answers become None afterwards (found by identity, in C:
    a verdict of the general path may equal HELD)."""
    feed = result.engine.feed_frame
    verdicts = result.verdicts
    dropped_at: List[int] = []          # the indexes of the frames a hook dropped
    dropped_now: List[_Dropped] = []    # this batch's

    def general(ts: float, linktype: int, data: bytes) -> Union[Verdict, None, _Dropped]:
        """A frame the fast path declined, down the general path."""
        outcome = feed(ts, linktype, data)
        if outcome is None:
            return None
        if outcome.dropped:
            dropped = _Dropped(outcome.verdict)
            dropped_now.append(dropped)
            return dropped
        return outcome.verdict

    last = result.at
    for times, linktypes, frames, _names in batches:
        got = [fast(ts, linktype, data) or general(ts, linktype, data)
               for ts, linktype, data in zip(times, linktypes, frames)]
        for index in compress(range(len(got)), map(operator.is_, got, repeat(HELD))):
            got[index] = None           # taken, and conntrack sees nothing of it (yet)
        for dropped in dropped_now:     # (rare: a helper refused the packet)
            index = got.index(dropped)  # (a _Dropped equals nothing but itself)
            got[index] = dropped.verdict
            dropped_at.append(len(verdicts) + index)
        dropped_now.clear()
        verdicts += got
        last = times[-1]
    _mark_dropped(result, dropped_at)
    result.at = last


class _Dropped:
    """A general-path verdict whose packet a hook dropped, marked for _feed_fast() to find
    in its batch's verdicts (by identity: it equals nothing else)."""
    __slots__ = ("verdict",)

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict


def _feed_each(result: ReplayResult, batches: Iterator[FrameColumns], at: Optional[float],
               fast: FastTrack) -> None:
    """Frame by frame, up to `at`; through the chains if there are rules."""
    engine = result.engine
    chains = result.chains
    verdicts = result.verdicts
    feed = engine.feed_frame
    add_verdict = verdicts.append
    dropped_at = []                     # the indexes of the frames a hook dropped
    last = result.at
    # Each frame with the interface a pcapng file names for it (the chains' -i/-o): each
    # batch's columns zipped, the batches chained (in C).
    for ts, linktype, data, captured_on in chain.from_iterable(starmap(zip, batches)):
        if at is not None and ts > at:
            break
        verdict = fast(ts, linktype, data)
        if verdict is HELD:
            verdict = None              # taken, and conntrack sees nothing of it (yet)
        elif verdict is None:
            if chains is not None:      # the interface a pcapng file names is -i/-o's
                outcome = chains.feed_frame(ts, linktype, data, captured_on)
            else:
                outcome = feed(ts, linktype, data)
            if outcome is not None:
                verdict = outcome.verdict
                if outcome.dropped:
                    dropped_at.append(len(verdicts))
        add_verdict(verdict)
        last = ts
    _mark_dropped(result, dropped_at)
    result.at = last


def _mark_dropped(result: ReplayResult, dropped_at: List[int]) -> None:
    """result.dropped: a flag per frame fed, True at the indexes a hook dropped."""
    dropped = result.dropped
    dropped.extend([False] * (len(result.verdicts) - len(dropped)))
    for index in dropped_at:
        dropped[index] = True
