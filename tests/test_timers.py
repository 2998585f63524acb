"""The timer wheel (engine/timers.py): exact expiry order, stale filings, cost of a pass."""
from __future__ import annotations

import random

from engine.timers import INFINITY, TimerWheel


class Item:
    """Anything the wheel files: it only needs a timer_slot and an expires attribute."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.timer_slot = None
        self.expires = None


def counting(attribute: str) -> type:
    """An Item class that counts the reads of one attribute (in its class's `reads`)."""
    private = "_" + attribute

    class Counted(Item):
        reads = 0

    def read(self):
        Counted.reads += 1
        return getattr(self, private)

    def write(self, value):
        setattr(self, private, value)
    setattr(Counted, attribute, property(read, write))
    return Counted


def arm(wheel: TimerWheel, item: Item, when: float) -> Item:
    """Set an item's expiry and file it there, as the tracker does."""
    item.expires = when
    wheel.file(item, when)
    return item


def drain(wheel: TimerWheel, now: float) -> list:
    return [item.name for item in wheel.due(now)]


def test_items_come_out_in_exact_time_order_within_and_across_seconds():
    wheel = TimerWheel()
    times = {"a": 10.9, "b": 10.1, "c": 12.5, "d": 10.5, "e": 11.0}
    for name, when in times.items():
        arm(wheel, Item(name), when)
    assert drain(wheel, 10.0) == []
    assert drain(wheel, 10.6) == ["b", "d"]          # inside second 10: time order
    assert drain(wheel, 11.5) == ["a", "e"]
    assert drain(wheel, 100) == ["c"]
    assert wheel.earliest() is None


def test_a_whole_past_second_is_handed_out_at_once():
    wheel = TimerWheel()
    for i in range(5):
        arm(wheel, Item(f"x{i}"), 20 + i / 10)
    assert sorted(drain(wheel, 25)) == [f"x{i}" for i in range(5)]


def test_a_refiled_item_comes_out_once_at_its_new_earlier_time():
    wheel = TimerWheel()
    item = Item("x")
    arm(wheel, item, 50.0)
    arm(wheel, item, 30.0)                            # earlier: the 50 s filing goes stale
    assert drain(wheel, 30.0) == ["x"]
    item.timer_slot = None                            # the caller removed it
    assert drain(wheel, 60.0) == []


def test_a_cleared_slot_is_skipped_when_its_second_comes():
    wheel = TimerWheel()
    item = Item("gone")
    arm(wheel, item, 5.5)
    item.timer_slot = None
    assert drain(wheel, 10) == []


def test_earliest_is_a_lower_bound_of_the_next_filing():
    wheel = TimerWheel()
    assert wheel.earliest() is None
    arm(wheel, Item("a"), 7.25)
    assert wheel.earliest() <= 7.25
    arm(wheel, Item("b"), 3.5)
    assert wheel.earliest() <= 3.5
    assert drain(wheel, 3.6) == ["b"]
    assert 3.6 <= wheel.earliest() <= 7.25


def test_random_filings_come_out_sorted_and_complete():
    rng = random.Random(7)
    wheel = TimerWheel()
    times = {f"i{n}": rng.uniform(0, 30) for n in range(2000)}
    for name, when in times.items():
        arm(wheel, Item(name), when)
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
    Watched = counting("timer_slot")
    wheel = TimerWheel()
    for n in range(3000):
        arm(wheel, Watched(str(n)), 100 + n / 100)
    Watched.reads = 0
    assert drain(wheel, 99.9) == []
    assert Watched.reads == 0


def test_the_entries_of_one_second_share_one_slot_object():
    """A bucket filing costs an entry no object of its own: its slot is the bucket's int."""
    wheel = TimerWheel()
    a, b = arm(wheel, Item("a"), 1_700_000_040.25), arm(wheel, Item("b"), 1_700_000_040.75)
    c = arm(wheel, Item("c"), 1_700_000_041.5)
    assert a.timer_slot is b.timer_slot
    assert a.timer_slot == 1_700_000_040 and c.timer_slot == 1_700_000_041


def test_a_bucket_slot_is_a_float():
    """Every packet compares its (float) expiry with its entry's slot: a slot that is an
    int of 1.7e9 costs each comparison a conversion (_PyLong_Frexp); and the wheel's
    next_due, which every packet compares its time with, is such a slot."""
    wheel = TimerWheel()
    item = arm(wheel, Item("a"), 1_700_000_040.25)
    assert type(item.timer_slot) is float and type(wheel.next_due) is float
    assert item.timer_slot == 1_700_000_040.0


def test_an_expiry_moved_within_its_second_comes_out_at_the_new_time_unfiled():
    """The tracker files again only for a time before the slot; a later time, or an
    earlier one inside the slot's second, is taken from `expires` when the second begins."""
    wheel = TimerWheel()
    later, sooner, other = Item("later"), Item("sooner"), Item("other")
    arm(wheel, later, 10.2)
    arm(wheel, sooner, 10.9)
    arm(wheel, other, 10.5)
    later.expires = 10.7                  # refreshed: not filed again
    sooner.expires = 10.1                 # earlier, but not before its slot (second 10)
    assert sooner.expires >= sooner.timer_slot
    assert drain(wheel, 10.6) == ["sooner", "other"]
    assert drain(wheel, 10.8) == ["later"]


def test_an_expiry_moved_past_its_second_is_handed_back_when_the_second_begins():
    wheel = TimerWheel()
    item = arm(wheel, Item("x"), 10.2)
    item.expires = 12.5                   # refreshed: not filed again
    assert drain(wheel, 10.1) == ["x"]    # for the caller to file again
    arm(wheel, item, item.expires)
    assert drain(wheel, 12.4) == []
    assert drain(wheel, 12.5) == ["x"]


def test_inside_a_second_a_moved_entry_comes_out_before_the_bucket_is_walked():
    """A caller that stops after a few entries (Tracker.expire_some) pays for those: an
    entry whose expiry moved past the current second is handed out as the walk meets it,
    not after a walk of the whole bucket; the ones due this second still come out in
    time order."""
    Counted = counting("expires")
    wheel = TimerWheel()
    items = [arm(wheel, Counted(f"m{n}"), 10.2) for n in range(1000)]
    for item in items:
        item.expires = 20.5                  # refreshed: moved on, not filed again
    late, early = arm(wheel, Counted("late"), 10.4), arm(wheel, Counted("early"), 10.3)
    Counted.reads = 0
    due = wheel.due(10.5)
    assert next(due).name == "m0" and Counted.reads <= 2
    rest = [item.name for item in due]
    assert rest[:999] == [f"m{n}" for n in range(1, 1000)] and rest[999:] == ["early", "late"]
    assert (late.timer_slot, early.timer_slot) == (10.4, 10.3)


def test_a_held_deadline_is_covered_by_next_due_but_is_no_filing():
    """hold(): the owner's other deadline (the tracker's expectations) lowers next_due at
    once, so that one test per packet answers for both; a later one takes effect at the
    next pass; earliest() still tells the filings alone."""
    wheel = TimerWheel()
    arm(wheel, Item("a"), 20.5)
    assert wheel.next_due == 20.0 and wheel.earliest() == 20.0
    wheel.hold(12.25)
    assert wheel.next_due == 12.25 and wheel.earliest() == 20.0
    wheel.hold(30.0)                                 # raised: still the lower bound...
    assert wheel.next_due == 12.25
    assert drain(wheel, 12.5) == []                  # ...until a pass finds nothing due
    assert wheel.next_due == 20.0
    wheel.hold(15.0)
    assert drain(wheel, 14.0) == [] and wheel.next_due == 15.0
    wheel.hold(INFINITY)
    assert drain(wheel, 21.0) == ["a"]
    assert wheel.next_due == INFINITY and wheel.earliest() is None
