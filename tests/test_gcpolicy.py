"""The daemon's collector policy (procfs_ct/gcpolicy.py) on a real engine, without FUSE:
a full collection freezes the table, the frozen entries are still freed when they expire
(nothing leaks into the permanent generation), garbage cycles are still collected, and
the engine thread takes the policy's small full collections between its holds."""
from __future__ import annotations

import gc
import itertools
import threading
import weakref

import pytest

from conftest import FakeClock, wait_until
from engine.entry import Entry
from enginehelp import T0, make_engine
from procfs_ct.driver import EngineDriver
from procfs_ct.gcpolicy import FreezeAfterFullCollection
from procfs_ct.sources import open_source

FLOWS = 3000                # frames of the synthetic mix fed: TCP, UDP, ICMP, helpers


@pytest.fixture
def policy():
    gc.collect()
    installed = FreezeAfterFullCollection()
    installed.install()
    yield installed
    installed.uninstall()
    gc.collect()


class Cycle:
    """An object in a reference cycle with itself, observable through a weak reference."""

    def __init__(self) -> None:
        self.me = self


def entries_alive() -> int:
    return sum(1 for obj in gc.get_objects() if isinstance(obj, Entry))


def fed_engine():
    engine = make_engine()
    frames = open_source("synthetic:5000", seed=3, start=T0)
    for ts, linktype, frame in itertools.islice(frames, FLOWS):
        engine.feed_frame(ts, linktype, frame)
    return engine


def test_a_full_collection_freezes_the_table_and_expiry_still_frees_it(policy):
    bystander = fed_engine()                # as other tests' engines may still be held
    gc.collect()                            # frozen with the rest
    gc.unfreeze()                           # frozen objects are not in gc.get_objects()
    other_entries = entries_alive()
    assert other_entries >= bystander.count > 0
    gc.collect()                            # and frozen again
    before = gc.get_freeze_count()
    engine = fed_engine()
    entries = engine.count
    assert entries > 100
    gc.collect()                            # a full collection: its survivors are frozen
    assert policy.freezes >= 2              # install's, then this one
    assert gc.get_freeze_count() - before >= entries
    engine.advance(T0 + 10 * 86400)         # every entry expires (5 days is the longest)
    assert engine.count == 0
    # The entries left the permanent generation when their reference counts fell to zero:
    # none of them waits there for a collection that never scans it.
    gc.unfreeze()
    assert entries_alive() == other_entries and bystander.count > 0


def test_a_cycle_that_is_garbage_when_the_policy_starts_is_collected_not_frozen():
    garbage = Cycle()
    gone = weakref.ref(garbage)
    del garbage
    installed = FreezeAfterFullCollection()
    installed.install()
    try:
        assert gone() is None
    finally:
        installed.uninstall()


def test_a_cycle_made_after_a_freeze_is_still_collected(policy):
    garbage = Cycle()
    gone = weakref.ref(garbage)
    del garbage
    gc.collect()
    assert gone() is None


def test_a_step_collects_fully_only_after_a_young_collection_promoted_objects(policy):
    """step() walks the older generations (and freezes what survives) only when a
    generation-0 collection has promoted objects since the last full one: no
    generation-1 collection of ten such sets is left to come."""
    gc.collect()
    freezes = policy.freezes
    policy.step()                           # nothing promoted since: no collection
    assert policy.freezes == freezes
    kept = [Cycle() for _ in range(50)]     # young objects that survive
    gc.collect(0)                           # a generation-0 collection: promotes them
    assert gc.get_count()[1] == 1
    frozen = gc.get_freeze_count()
    policy.step()
    assert policy.freezes == freezes + 1 and gc.get_count()[1:] == (0, 0)
    assert gc.get_freeze_count() >= frozen + len(kept)


def test_the_engine_thread_takes_the_policys_steps_between_its_holds():
    """The daemon's engine thread calls between_holds in its loop, holding no lock."""
    seen = []
    driver = EngineDriver(make_engine(), iter(()), clock=FakeClock(T0),
                          between_holds=lambda: seen.append(
                              (threading.current_thread().name, driver.engine_lock.locked())))
    driver.start()
    try:
        assert wait_until(lambda: len(seen) >= 2, 10.0)
    finally:
        driver.stop()
    assert set(seen) == {("procfs-ct-engine", False)}
