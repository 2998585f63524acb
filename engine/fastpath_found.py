"""The fast path's end for a found entry whose protocol tracker has run: Tracker.process()'s
handling of the outcome, shared by the cases that hand a packet to the general path's own
tracker (engine/fastpath_tcp.py's known TCP segments, engine/fastpath_sctp.py's SCTP).

In the same order on the same fields as Tracker.process(): the `found` stat, the ctinfo
decided from the status before the tracker saw the packet (resolve_normal_ct), INVALID
(its timer re-armed: a refused TCP FIN/RST may have shortened it), SEEN_REPLY from a reply,
the counters, DELETE removing the entry, IGNORE leaving the timer, a timeout re-arming it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from .ctstate import INVALID as INVALID_VERDICT
from .ctstate import CtState, Verdict
from .entry import EXPECTED, SEEN_REPLY, Entry
from .outcome import DELETE, IGNORE, INVALID

if TYPE_CHECKING:
    from .tracker import Tracker

Settle = Callable[[float, Entry, int, int, Any, int], Verdict]

# The verdicts of a found or new entry (engine/fastpath.py answers with them too).
ESTABLISHED_ORIGINAL = Verdict(CtState.ESTABLISHED, False)
ESTABLISHED_REPLY = Verdict(CtState.ESTABLISHED, True)
NEW_ORIGINAL = Verdict(CtState.NEW, False)
RELATED_ORIGINAL = Verdict(CtState.RELATED, False)


def make_settle(tracker: "Tracker") -> Settle:
    """settle(now, entry, direction, status, outcome, tot_len) for this tracker: the verdict
    of a packet of tot_len bytes on a found entry (no helper) whose tracker answered
    `outcome`; `status` is the entry's status before the tracker ran."""
    stats = tracker.stats
    arm = tracker._arm                  # the timer, as Tracker.process() re-arms it
    remove = tracker.remove

    def settle(now: float, entry: Entry, d: int, status: int, outcome: Any,
               tot_len: int) -> Verdict:
        stats["found"] += 1
        if outcome is INVALID:
            arm(entry, entry.expires)
            stats["invalid"] += 1
            return INVALID_VERDICT
        if d:
            verdict = ESTABLISHED_REPLY
            entry.status |= SEEN_REPLY
        elif status & SEEN_REPLY:
            verdict = ESTABLISHED_ORIGINAL
        else:
            verdict = RELATED_ORIGINAL if status & EXPECTED else NEW_ORIGINAL
        counters = entry.counters
        if counters is not None:
            counters[d] += 1
            counters[2 + d] += tot_len
        if outcome is DELETE:
            remove(entry)
        elif outcome is not IGNORE:
            arm(entry, now + outcome)
        return verdict

    return settle
