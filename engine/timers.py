"""Entry timers: a wheel of one-second buckets, exact to the float.

Arming costs a list append and an entry costs the wheel one pointer, yet entries come out
in exact time order: the current second's bucket is moved into a small heap when it
begins.  Refreshing an entry's expiry per packet costs nothing here (see TimerWheel).
The wheel knows nothing of tables: it files and hands back objects with a `timer_slot`
and an `expires` (the time the object is due).  Its `next_due` also covers one deadline
held for its owner (hold(): the tracker's expectations), so that a packet asks one
question -- is anything due? -- with one comparison.
"""
from __future__ import annotations

import heapq
import itertools
from typing import Any, Dict, Iterator, List, Optional, Tuple

INFINITY = float("inf")


class TimerWheel:
    """Entries filed by the second their timer falls in; the current second in a heap.

    An entry is filed at its `expires`; `entry.timer_slot` says where: the whole second
    of its bucket (a whole float), or the exact time of a filing in the current second's
    heap.
    Arming a later time does not move it: when its slot comes the entry is looked at,
    and re-filed if its expiry moved on, so refreshing an entry per packet costs nothing
    here.  Arming a time before the slot files it again (the old filing is then stale and
    skipped); an earlier time in the slot's own second needs no new filing.

    Filings more than a second ahead go to a bucket per whole second (a list: one
    pointer per entry).  When a second begins its bucket is moved into a small heap of
    (time, seq, entry) by each entry's `expires` then, which hands out entries exactly in
    time order, so expiry is as exact as with one big heap but the big heap's tuple per
    entry is only paid for the entries of the current second.  Entries whose expiry moved
    past that second are handed back at once for re-filing.

    Memory: the entries of a bucket share its second's one float as their `timer_slot`, and
    a heap filing's slot is the entry's own `expires` object, so a slot costs an entry
    nothing beyond its pointer (a float of its own per entry was 24 bytes).
    """

    def __init__(self) -> None:
        # second -> (that second as the one float object all its entries share, the entries)
        self._buckets: Dict[float, Tuple[float, List[Any]]] = {}
        self._seconds: List[float] = []                 # heap of the buckets' seconds
        self._near: List[Tuple[float, int, Any]] = []  # heap: filings before _near_end
        self._near_end = -INFINITY
        self._seq = itertools.count()
        self._held = INFINITY           # the owner's other deadline (hold())
        # Nothing -- no filing, no held deadline -- can be due before this time.
        self.next_due = INFINITY

    def hold(self, when: float) -> None:
        """Keep next_due at or before `when` too: the earliest deadline of something else
        its owner expires together with the wheel (the tracker's expectations), so that
        the per-packet test `now >= next_due` answers for both.  A later `when` than
        before takes effect at the next due() pass: next_due is a lower bound, and one
        early pass that finds nothing due only makes it exact again."""
        self._held = when
        if when < self.next_due:
            self.next_due = when

    def file(self, entry: Any, when: float) -> None:
        """File an entry at `when`, its `expires` (the object itself: a heap filing keeps
        it as the slot)."""
        if when < self._near_end:
            entry.timer_slot = when
            heapq.heappush(self._near, (when, next(self._seq), entry))
            if when < self.next_due:
                self.next_due = when
            return
        # The second as a float: every packet compares a float time with the slot (and
        # with next_due), and a float against an int of 1.7e9 (two digits of a Python
        # int) goes through _PyLong_Frexp in each comparison.
        second = when // 1.0
        bucket = self._buckets.get(second)
        if bucket is None:
            self._buckets[second] = (second, [entry])
            entry.timer_slot = second
            heapq.heappush(self._seconds, second)
            if second < self.next_due:
                self.next_due = second
        else:
            entry.timer_slot = bucket[0]
            bucket[1].append(entry)

    def due(self, now: float) -> Iterator[Any]:
        """Entries whose filing time is <= now, in time order within the current second.

        The caller checks each one (stale filing, moved expiry) and may file it again.
        """
        while True:
            near = self._near
            if near and near[0][0] <= now:
                when, _, entry = heapq.heappop(near)
                if entry.timer_slot == when:
                    yield entry
                continue
            seconds = self._seconds
            if not seconds or seconds[0] > now:
                break
            second, bucket = self._buckets.pop(heapq.heappop(seconds))
            # Only filings whose slot is the bucket's own float object are live: an entry
            # filed again since (another second's float, a heap filing's float) or removed
            # (None) is stale here.
            if second + 1 <= now:
                # The whole second is over: everything filed in it is due, in any order.
                for entry in bucket:
                    if entry.timer_slot is second:
                        yield entry
                continue
            # `now` is inside this second: from here on it is handed out in time order,
            # each entry at its expiry as it stands now (it may have moved since filing).
            # An entry whose expiry moved past the second is handed out as it is met (not
            # due: the caller files it again), so a caller that stops after some entries
            # (Tracker.expire_some) has not walked the whole bucket first; the others go
            # to the heap once the walk is over (a filing made meanwhile for this second
            # went to a new bucket of it, which the next pass hands out).
            end = second + 1
            seq = self._seq
            near_now = []
            for entry in bucket:
                if entry.timer_slot is second:
                    when = entry.expires
                    if when < end:
                        entry.timer_slot = when
                        near_now.append((when, next(seq), entry))
                    else:
                        yield entry
            near = self._near
            near.extend(near_now)
            heapq.heapify(near)
            self._near_end = end
        self.next_due = min(self._filed_due(), self._held)

    def _filed_due(self) -> float:
        """The earliest filing time (INFINITY: none), stale filings included."""
        return min(self._near[0][0] if self._near else INFINITY,
                   self._seconds[0] if self._seconds else INFINITY)

    def earliest(self) -> Optional[float]:
        """A lower bound of the next filing time (None when nothing is filed); the held
        deadline is not a filing."""
        filed = self._filed_due()
        return None if filed == INFINITY else filed
