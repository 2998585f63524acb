"""Entry timers: a wheel of one-second buckets, exact to the float.

Arming costs a list append and an entry costs the wheel one pointer, yet entries come out
in exact time order: the current second's bucket is moved into a small heap when it
begins.  Refreshing an entry's expiry per packet costs nothing here (see TimerWheel).
The wheel knows nothing of tables: it files and hands back objects with a `timer_slot`.
"""
from __future__ import annotations

import heapq
import itertools
from typing import Any, Dict, Iterator, List, Optional, Tuple

INFINITY = float("inf")


class TimerWheel:
    """Entries filed by the second their timer falls in; the current second in a heap.

    An entry is filed under `entry.timer_slot` (a time).  Arming a later time does not
    move it: when its slot comes the entry is looked at, and re-filed if its expiry
    moved on, so refreshing an entry per packet costs nothing here.  Arming an earlier
    time files it again (the old filing is then stale and skipped).

    Filings more than a second ahead go to a bucket per whole second (a list: one
    pointer per entry).  When a second begins its bucket is moved into a small heap of
    (time, seq, entry), which hands out entries exactly in time order, so expiry is as
    exact as with one big heap but the big heap's tuple per entry is only paid for the
    entries of the current second.
    """

    def __init__(self) -> None:
        self._buckets: Dict[int, List[Any]] = {}
        self._seconds: List[int] = []                   # heap of the buckets' seconds
        self._near: List[Tuple[float, int, Any]] = []  # heap: filings before _near_end
        self._near_end = -INFINITY
        self._seq = itertools.count()
        self.next_due = INFINITY        # nothing can be due before this time

    def file(self, entry: Any, when: float) -> None:
        entry.timer_slot = when
        if when < self._near_end:
            heapq.heappush(self._near, (when, next(self._seq), entry))
            if when < self.next_due:
                self.next_due = when
            return
        second = int(when)
        bucket = self._buckets.get(second)
        if bucket is None:
            self._buckets[second] = [entry]
            heapq.heappush(self._seconds, second)
            if second < self.next_due:
                self.next_due = second
        else:
            bucket.append(entry)

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
            second = heapq.heappop(seconds)
            bucket = self._buckets.pop(second)
            if second + 1 <= now:
                # The whole second is over: everything filed in it is due, in any order.
                for entry in bucket:
                    if entry.timer_slot is not None and int(entry.timer_slot) == second:
                        yield entry
                continue
            # `now` is inside this second: from here on it is handed out in time order.
            self._near_end = second + 1
            seq = self._seq
            near.extend((entry.timer_slot, next(seq), entry) for entry in bucket
                        if entry.timer_slot is not None and int(entry.timer_slot) == second)
            heapq.heapify(near)
        self.next_due = min(self._near[0][0] if self._near else INFINITY,
                            self._seconds[0] if self._seconds else INFINITY)

    def earliest(self) -> Optional[float]:
        """A lower bound of the next filing time (None when nothing is filed)."""
        return None if self.next_due == INFINITY else self.next_due
