"""The timer wheel (engine/timers.py): exact expiry order, stale filings, cost of a pass."""
from __future__ import annotations

import random

from engine.timers import TimerWheel


class Item:
    """Anything the wheel files: it only needs a timer_slot attribute."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.timer_slot = None


def drain(wheel: TimerWheel, now: float) -> list:
    return [item.name for item in wheel.due(now)]


def test_items_come_out_in_exact_time_order_within_and_across_seconds():
    wheel = TimerWheel()
    times = {"a": 10.9, "b": 10.1, "c": 12.5, "d": 10.5, "e": 11.0}
    for name, when in times.items():
        wheel.file(Item(name), when)
    assert drain(wheel, 10.0) == []
    assert drain(wheel, 10.6) == ["b", "d"]          # inside second 10: time order
    assert drain(wheel, 11.5) == ["a", "e"]
    assert drain(wheel, 100) == ["c"]
    assert wheel.earliest() is None


def test_a_whole_past_second_is_handed_out_at_once():
    wheel = TimerWheel()
    for i in range(5):
        wheel.file(Item(f"x{i}"), 20 + i / 10)
    assert sorted(drain(wheel, 25)) == [f"x{i}" for i in range(5)]


def test_a_refiled_item_comes_out_once_at_its_new_earlier_time():
    wheel = TimerWheel()
    item = Item("x")
    wheel.file(item, 50.0)
    wheel.file(item, 30.0)                            # earlier: the 50 s filing goes stale
    assert drain(wheel, 30.0) == ["x"]
    item.timer_slot = None                            # the caller removed it
    assert drain(wheel, 60.0) == []


def test_a_cleared_slot_is_skipped_when_its_second_comes():
    wheel = TimerWheel()
    item = Item("gone")
    wheel.file(item, 5.5)
    item.timer_slot = None
    assert drain(wheel, 10) == []


def test_earliest_is_a_lower_bound_of_the_next_filing():
    wheel = TimerWheel()
    assert wheel.earliest() is None
    wheel.file(Item("a"), 7.25)
    assert wheel.earliest() <= 7.25
    wheel.file(Item("b"), 3.5)
    assert wheel.earliest() <= 3.5
    assert drain(wheel, 3.6) == ["b"]
    assert 3.6 <= wheel.earliest() <= 7.25


def test_random_filings_come_out_sorted_and_complete():
    rng = random.Random(7)
    wheel = TimerWheel()
    times = {f"i{n}": rng.uniform(0, 30) for n in range(2000)}
    for name, when in times.items():
        wheel.file(Item(name), when)
    out = []
    now = 0.0
    while now < 31:
        now += rng.uniform(0.01, 0.7)
        batch = drain(wheel, now)
        assert all(times[name] <= now for name in batch)
        out.extend(batch)
    assert sorted(out) == sorted(times)
    # Within each drain of the current second the order is by time; overall every item
    # came out no later than the first drain at or after its time.
    assert len(out) == len(set(out))


def test_a_pass_with_nothing_due_looks_at_no_item():
    """The cost of due() when nothing is due does not grow with what is filed."""
    class Watched(Item):
        looked = 0

        @property
        def timer_slot(self):
            Watched.looked += 1
            return self._slot

        @timer_slot.setter
        def timer_slot(self, value):
            self._slot = value
    wheel = TimerWheel()
    for n in range(3000):
        wheel.file(Watched(str(n)), 100 + n / 100)
    Watched.looked = 0
    assert drain(wheel, 99.9) == []
    assert Watched.looked == 0
