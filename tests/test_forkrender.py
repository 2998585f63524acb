"""The rest of a listing rendered by forked children (procfs_ct/forkrender.py), in process:
the children's text against the in-process rendering of the same table, a child that
fails or is killed, closing, and when it forks at all."""
from __future__ import annotations

import os
import signal

import pytest

from engine.build import build_ipv6, build_udp
from engine.packet import LOCAL_OUT
from engine.render import listing_chunks, render_listing
from procfs_ct import forkrender
from procfs_ct.forkrender import ForkedChunks, children_wanted
from tests.enginehelp import make_engine
from tests.test_listing import _gateway_table

IPPROTO_UDP = 17


def mixed_table():
    """A gateway's mix with every kind of line: TCP/UDP/ICMP on the fast formats, GRE and
    a protocol without a tracker, accounting and timestamps on half-way (listing_line()),
    and IPv6 entries (nf_conntrack only)."""
    eng = make_engine()
    last = _gateway_table(eng, 12000, {5000: {"acct": 1, "timestamp": 1},
                                      8000: {"acct": 0, "timestamp": 0}})
    for n in range(300):
        src, dst = f"fd00::1:{n + 1:x}", "fd00::53"
        eng.feed_datagram(last, build_ipv6(src, dst, IPPROTO_UDP,
                                           build_udp(src, dst, 2000 + n, 53, b"q")), LOCAL_OUT)
    return eng.tracker, last + 1.5


@pytest.fixture(scope="module")
def table():
    return mixed_table()


def living(pid: int) -> bool:
    """`pid` is a process (a zombie counts: it is not reaped)."""
    return os.path.exists(f"/proc/{pid}")


@pytest.mark.parametrize("children", [1, 2, 3])
@pytest.mark.parametrize("modern", [True, False], ids=["nf_conntrack", "ip_conntrack"])
def test_the_children_render_the_rest_byte_for_byte_as_in_process(table, children, modern):
    tracker, now = table
    whole = render_listing(tracker, now, modern)
    assert len(whole) > 1 << 20 and (b"ipv6" in whole) == modern
    assert b"packets=" in whole or not modern
    listing = listing_chunks(tracker, now, modern)
    first = [next(listing), next(listing)]          # the reader's first read, in process
    forked = ForkedChunks(listing, children)
    assert len(forked.pids) == children
    assert b"".join(first) + b"".join(forked) == whole
    assert not any(living(pid) for pid in forked.pids)      # reaped at the end


class FailingRenderer:
    """Renders as `renderer` does, and fails (raises, or blocks until killed) at chunk
    number `at` of the rest."""

    def __init__(self, renderer, at: int, how: str) -> None:
        self.renderer, self.at, self.how, self.made = renderer, at, how, 0

    def render(self, job) -> bytes:
        if self.made == self.at:
            if self.how == "raise":
                raise ValueError("renderer bug")
            signal.pause()                      # until killed
        self.made += 1
        return self.renderer.render(job)


def failing_listing(table, at: int, how: str):
    tracker, now = table
    listing = listing_chunks(tracker, now, True)
    first = next(listing)
    failing = FailingRenderer(listing.renderer, at, how)
    listing.renderer = failing
    return listing, first


def read_until_failure(forked, first: bytes, whole: bytes) -> bytes:
    text = first
    with pytest.raises(RuntimeError) as caught:
        for chunk in forked:
            text += chunk
    assert whole.startswith(text) and len(text) < len(whole)
    return caught.value


def test_a_child_that_fails_fails_the_listing_after_the_text_before_it(table):
    tracker, now = table
    whole = render_listing(tracker, now, True)
    listing, first = failing_listing(table, 3, "raise")
    forked = ForkedChunks(listing, 2)
    error = read_until_failure(forked, first, whole)
    assert "renderer bug" in str(error)
    assert not any(living(pid) for pid in forked.pids)


def test_a_child_killed_mid_listing_fails_the_listing_not_shortens_it(table):
    tracker, now = table
    whole = render_listing(tracker, now, True)
    listing, first = failing_listing(table, 3, "block")     # each child stops at its 4th
    forked = ForkedChunks(listing, 2)
    pids = forked.pids
    os.kill(pids[0], signal.SIGKILL)                        # the one of chunk 6
    error = read_until_failure(forked, first, whole)
    assert "short" in str(error)
    assert not any(living(pid) for pid in pids)


def test_close_kills_and_reaps_the_children_at_once(table):
    tracker, now = table
    listing = listing_chunks(tracker, now, True)
    next(listing)
    forked = ForkedChunks(listing, 2)
    next(forked)
    pids = forked.pids
    assert all(living(pid) for pid in pids)         # blocked on their pipes, or zombies
    forked.close()
    assert not any(living(pid) for pid in pids)
    with pytest.raises(StopIteration):
        next(forked)


def test_stop_all_stops_every_listing_being_rendered(table):
    tracker, now = table
    forks = []
    for modern in (True, False):
        listing = listing_chunks(tracker, now, modern)
        next(listing)
        forks.append(ForkedChunks(listing, 2))
    pids = [pid for forked in forks for pid in forked.pids]
    forkrender.stop_all()
    assert not any(living(pid) for pid in pids)


def test_a_failed_fork_leaves_the_listing_to_render_in_process(table, monkeypatch):
    tracker, now = table
    whole = render_listing(tracker, now, True)
    listing = listing_chunks(tracker, now, True)
    first = next(listing)
    forks = []

    def fork_once() -> int:
        if forks:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        forks.append(real_fork())
        return forks[-1]
    real_fork = os.fork
    monkeypatch.setenv(forkrender.ENV_CHILDREN, "2")
    monkeypatch.setenv(forkrender.ENV_MIN_ENTRIES, "0")
    monkeypatch.setattr(os, "fork", fork_once)
    assert forkrender._fork_listing(listing, False, None) is None       # no exception
    monkeypatch.setattr(os, "fork", real_fork)
    assert forks and forks[0] > 0 and not living(forks[0])   # the first child was reaped
    assert first + b"".join(listing) == whole


def test_when_to_fork(monkeypatch):
    monkeypatch.setattr(forkrender, "usable_cpus", lambda: 2)
    monkeypatch.setattr(forkrender, "others_running", lambda: 0)
    monkeypatch.setattr(forkrender, "_memory_free", lambda: 1 << 40)
    big = forkrender.FORK_MIN_ENTRIES
    assert children_wanted(big, False, {}) == 2
    assert children_wanted(big - 1, False, {}) == 0                   # small: in process
    assert children_wanted(big, False, {forkrender.ENV_CHILDREN: "0"}) == 0
    assert children_wanted(big, True, {forkrender.ENV_CHILDREN: "3"}) == 3
    assert children_wanted(100, False, {forkrender.ENV_MIN_ENTRIES: "100"}) == 2
    assert children_wanted(big, True, {}) == 0          # the engine takes one of the two CPUs
    monkeypatch.setattr(forkrender, "usable_cpus", lambda: 8)
    assert children_wanted(big, True, {}) == forkrender.MAX_CHILDREN
    monkeypatch.setattr(forkrender, "others_running", lambda: 5)
    assert children_wanted(big, False, {}) == 3                       # three CPUs idle
    monkeypatch.setattr(forkrender, "others_running", lambda: 7)
    assert children_wanted(big, False, {}) == 0                       # one: not worth it
    monkeypatch.setattr(forkrender, "others_running", lambda: 0)
    monkeypatch.setattr(forkrender, "usable_cpus", lambda: 1)
    assert children_wanted(big, False, {}) == 0
    monkeypatch.setattr(forkrender, "usable_cpus", lambda: 2)
    monkeypatch.setattr(forkrender, "_memory_free", lambda: forkrender._rss())
    assert children_wanted(big, False, {}) == 0                       # copies could not fit
    monkeypatch.delattr(os, "fork")
    assert children_wanted(big, False, {}) == 0


def test_others_running_reads_the_machine():
    assert 0 <= forkrender.others_running() < 100000
    assert 0 <= forkrender.runnable_now() < 100000


def _samples(*counts: int):
    """A runnable_now() that says `counts` one after the other, and the samples taken."""
    taken = []

    def sample() -> int:
        taken.append(counts[len(taken)])
        return taken[-1]
    return sample, taken


@pytest.mark.parametrize("counts, others, taken", [
    ((1, 0, 1), 0, 2),      # the reader or a FUSE thread, runnable for an instant: not counted
    ((1, 1, 1), 1, 3),      # a busy loop is runnable in every sample
    ((3, 1, 2), 1, 3),
    ((0, 4, 4), 0, 1),      # nothing else runs: decided at once, no wait
], ids=["transient", "busy", "fewest", "idle"])
def test_only_a_task_runnable_in_every_sample_counts_as_busy(counts, others, taken):
    sample, seen = _samples(*counts)
    gaps = []
    assert forkrender.others_running(sample, gaps.append) == others
    assert len(seen) == taken
    assert gaps == [forkrender.RUNNABLE_GAP] * (taken - 1)


def test_a_reader_runnable_at_the_first_sample_does_not_stop_the_fork(monkeypatch):
    """On 2 CPUs, one task runnable at the instant of the decision (the reader that woke
    the read-ahead thread) used to mean rendering in process."""
    monkeypatch.setattr(forkrender, "usable_cpus", lambda: 2)
    monkeypatch.setattr(forkrender, "_memory_free", lambda: 1 << 40)
    monkeypatch.setattr(forkrender, "RUNNABLE_GAP", 0.0)
    big = forkrender.FORK_MIN_ENTRIES
    monkeypatch.setattr(forkrender, "runnable_now", _samples(1, 0, 0)[0])
    assert children_wanted(big, False, {}) == 2
    monkeypatch.setattr(forkrender, "runnable_now", _samples(1, 1, 1)[0])
    assert children_wanted(big, False, {}) == 0


def test_a_listing_left_half_walked_is_freed_at_once_not_at_a_full_collection(table):
    """A forked listing's own walk is never finished in the daemon: it must hold no
    reference cycle, or its copies of the tables stay until a full collection (measured:
    1 MB more RSS per listing of 65,536 entries)."""
    import gc
    import weakref
    tracker, now = table
    listing = listing_chunks(tracker, now, True)
    next(listing), next(listing), next(listing)       # the first table's copy is taken
    walks = [weakref.ref(listing.walk), weakref.ref(listing.walk._walk)]
    gc.disable()
    try:
        del listing
        assert [ref() for ref in walks] == [None, None]
    finally:
        gc.enable()
