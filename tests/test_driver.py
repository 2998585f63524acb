"""The engine thread (procfs_ct/driver.py) on a real engine with a fake clock: what it
hands to listeners, why its time never passes a frame still to be fed, and how it lets
go of a generator source.  No FUSE here."""
from __future__ import annotations

import logging
import threading
import time

import pytest

from conftest import FakeClock, wait_until
from engine.build import build_ethernet, build_udp_datagram
from engine.ctstate import CtState
from engine.linklayer import LINKTYPE_ETHERNET
from enginehelp import T0, make_engine
from procfs_ct.driver import TAKE_FRAMES, EngineDriver, FrameQueue
from procfs_ct.tree import entries

WAIT = 10.0           # seconds a condition may take on a loaded machine before we give up
A, B = "10.0.0.1", "10.0.0.2"


def udp_frame(src: str, dst: str, sport: int, dport: int) -> bytes:
    return build_ethernet(build_udp_datagram(src, dst, sport, dport, b"ping"))


def listing(driver: EngineDriver) -> list:
    return driver.render(entries(modern=True)).decode().splitlines()


def test_listeners_get_every_packets_result_in_order_and_a_failing_one_is_counted():
    """Each fed frame's engine.feed_frame() result goes to every listener, with its time;
    a listener that raises is counted and the others still hear of the packet."""
    clock = FakeClock(T0)
    frames = [(T0, LINKTYPE_ETHERNET, udp_frame(A, B, 5000, 53)),
              (T0 + 0.5, LINKTYPE_ETHERNET, udp_frame(B, A, 53, 5000)),
              (T0 + 0.5, LINKTYPE_ETHERNET, b"\x00" * 20)]           # not IPv4: None
    driver = EngineDriver(make_engine("linux"), frames, clock=clock, scheduled=True)
    heard, failures = [], []

    def broken(when, result):
        failures.append(when)
        raise RuntimeError("a listener with a bug")
    driver.listeners.append(broken)
    driver.listeners.append(lambda when, result: heard.append((when, result)))
    clock.t = T0 + 1
    driver.start()
    try:
        assert wait_until(lambda: driver.stats.packets == 3, WAIT)
    finally:
        driver.stop()
    assert [(when, result and result.state, result and result.reply)
            for when, result in heard] == [(T0, CtState.NEW, False),
                                           (T0 + 0.5, CtState.ESTABLISHED, True),
                                           (T0 + 0.5, None, None)]
    assert failures == [T0, T0 + 0.5, T0 + 0.5]
    assert driver.stats.listener_errors == 3 and driver.stats.packet_errors == 0


def test_a_late_frame_is_fed_before_time_passes_it_so_load_cannot_change_the_table():
    """A capture replayed: a UDP query at T0 (its entry lives 30 s) and the answer at
    T0 + 20.  The source is held back (a loaded machine) while the clock runs on to
    T0 + 45: the engine must not expire the query's entry at T0 + 45 before the answer
    due at T0 + 20 is fed; fed late, the answer still finds it, as it would unloaded."""
    clock = FakeClock(T0)
    release = threading.Event()

    def capture():
        yield (T0, LINKTYPE_ETHERNET, udp_frame(A, B, 5000, 53))
        release.wait(WAIT)            # the pump is slow: the answer is not handed over yet
        yield (T0 + 20, LINKTYPE_ETHERNET, udp_frame(B, A, 53, 5000))

    driver = EngineDriver(make_engine("linux"), capture(), clock=clock, scheduled=True,
                          advance_every=1.0)
    driver.start()
    try:
        assert wait_until(lambda: driver.stats.packets == 1, WAIT)
        advances = driver.stats.advances
        clock.t = T0 + 45
        assert wait_until(lambda: driver.stats.advances > advances, WAIT)
        release.set()
        assert wait_until(lambda: driver.stats.packets == 2, WAIT)
    finally:
        release.set()
        driver.stop()
    lines = listing(driver)
    assert len(lines) == 1, lines
    assert f"src={A} dst={B} sport=5000 dport=53" in lines[0]
    assert "[UNREPLIED]" not in lines[0]


def test_a_live_source_lets_time_run_while_no_frame_is_known():
    """A tap or the sockets source: nothing is known of the next frame, so the engine's
    time follows the clock and an entry expires on time without traffic."""
    clock = FakeClock(T0)
    silent = threading.Event()

    def tap():
        yield (T0, LINKTYPE_ETHERNET, udp_frame(A, B, 5000, 53))
        silent.wait(WAIT)

    driver = EngineDriver(make_engine("linux"), tap(), clock=clock, advance_every=1.0)
    driver.start()
    try:
        assert wait_until(lambda: driver.stats.packets == 1, WAIT)
        assert len(listing(driver)) == 1
        clock.t = T0 + 31
        assert wait_until(lambda: driver.engine.count == 0, WAIT)
    finally:
        silent.set()
        driver.stop()


def test_stopping_closes_a_generator_source_from_the_thread_inside_it(caplog):
    """stop() while the pump is inside the source's next(): closing the generator from
    the stopping thread fails ("generator already executing"); the pump closes it once
    it comes out, and nothing is logged as failed."""
    inside, release, closed = threading.Event(), threading.Event(), threading.Event()

    def source():
        try:
            inside.set()
            release.wait(WAIT)
            yield (time.time(), LINKTYPE_ETHERNET, udp_frame(A, B, 5000, 53))
            yield (time.time(), LINKTYPE_ETHERNET, udp_frame(A, B, 5001, 53))
        finally:
            closed.set()

    driver = EngineDriver(make_engine("linux"), source())
    with caplog.at_level(logging.INFO):
        driver.start()
        assert inside.wait(WAIT)
        driver.stop()
        release.set()
        assert closed.wait(WAIT)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


# -- the hand-over from the pump to the engine thread (FrameQueue) -------------------------------
def test_the_queue_hands_over_everything_waiting_in_one_take_up_to_the_cap_in_order():
    """The engine thread takes all the frames that are there at once (no item per frame),
    at most TAKE_FRAMES of them, in the order they were put."""
    frames = FrameQueue(limit=3 * TAKE_FRAMES)
    stop = threading.Event()
    assert frames.put(list(range(5)), stop) and frames.put([5], stop)
    assert frames.take(0.0) == [0, 1, 2, 3, 4, 5]
    assert frames.take(0.0) == []
    assert frames.put(list(range(TAKE_FRAMES + 7)), stop)
    assert frames.take(0.0) == list(range(TAKE_FRAMES))
    assert frames.take(0.0) == list(range(TAKE_FRAMES, TAKE_FRAMES + 7))


def test_a_full_queue_holds_the_pump_until_the_engine_takes_and_stop_frees_it():
    """At the limit the pump waits (the source is read no further ahead) until the engine
    thread has taken frames; stop() frees a pump waiting on a queue nobody empties."""
    frames = FrameQueue(limit=4)
    stop = threading.Event()
    assert frames.put([1, 2, 3, 4], stop)
    done = []
    pump = threading.Thread(target=lambda: done.append(frames.put([5], stop)))
    pump.start()
    pump.join(0.3)
    assert pump.is_alive() and not done         # full: the fifth frame waits
    assert frames.take(0.0) == [1, 2, 3, 4]
    pump.join(WAIT)
    assert done == [True] and frames.take(0.0) == [5]
    assert frames.put([6, 7, 8, 9], stop)
    stuck = threading.Thread(target=lambda: done.append(frames.put([10], stop)))
    stuck.start()
    stop.set()
    stuck.join(WAIT)
    assert not stuck.is_alive() and done == [True, False]


def test_the_engine_thread_waiting_on_an_empty_queue_wakes_for_a_frame_put_later():
    """take() with a timeout returns as soon as the pump puts a frame: it is not left
    waiting out its timeout (a lost wake-up); with nothing put, it returns empty."""
    frames = FrameQueue(limit=8)
    stop = threading.Event()
    assert frames.take(0.05) == []
    assert frames.put(["first"], stop) and frames.take(0.0) == ["first"]
    got = []
    taker = threading.Thread(target=lambda: got.append(frames.take(3600)), daemon=True)
    taker.start()
    # The taker has begun to wait once it cleared the `arrived` the first put set.
    assert wait_until(lambda: not frames._arrived.is_set(), WAIT)
    assert frames.put(["frame"], stop)
    taker.join(WAIT)
    assert got == [["frame"]]


def test_the_source_is_reported_exhausted_only_once_its_last_frame_is_fed():
    """"traffic source exhausted" is what a user (and tests/test_mount_engine.py) waits for
    before comparing the table with a replay: when it is logged, every frame is in the
    table.  Here the end marker reaches the engine thread with every frame still to feed:
    they are not due yet when it takes them."""
    clock = FakeClock(T0 - 1)
    frames = [(T0, LINKTYPE_ETHERNET, udp_frame(A, B, 1024 + n, 53)) for n in range(1000)]
    driver = EngineDriver(make_engine("linux"), frames, clock=clock, scheduled=True)
    fed_when_logged = []

    class Watch(logging.Handler):
        def emit(self, record):
            if "exhausted" in record.getMessage():
                fed_when_logged.append((driver.stats.packets, driver.engine.count))
    watch = Watch()
    logger = logging.getLogger("procfs_ct.driver")
    logger.addHandler(watch)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    pump = driver._pump_thread
    try:
        driver.start()
        # The pump has put every frame and the end marker; the engine thread took them all.
        assert wait_until(lambda: not pump.is_alive() and not driver._queue._frames, WAIT)
        clock.t = T0 + 1
        assert wait_until(lambda: fed_when_logged, WAIT)
    finally:
        driver.stop()
        logger.removeHandler(watch)
        logger.setLevel(old_level)
    assert fed_when_logged == [(len(frames), len(frames))]


def test_the_engine_thread_expires_a_big_bucket_in_slices_each_under_the_lock(monkeypatch):
    """Time passing over a second that holds many filings is looked at EXPIRE_SLICE
    filings per hold of the engine lock (a reader's chunk waits for one slice, not for the
    whole bucket), until every due entry is gone."""
    import procfs_ct.driver as driver_module
    monkeypatch.setattr(driver_module, "EXPIRE_SLICE", 8)
    clock = FakeClock(T0)
    silent = threading.Event()

    def tap():
        for port in range(50):
            yield (T0, LINKTYPE_ETHERNET, udp_frame(A, B, 5000 + port, 53))
        silent.wait(WAIT)

    engine = make_engine("linux")
    driver = EngineDriver(engine, tap(), clock=clock, advance_every=1.0)
    calls = []
    advance = engine.advance

    def recording(now, budget=None):
        calls.append((budget, driver.engine_lock.locked()))
        return advance(now, budget)
    engine.advance = recording
    driver.start()
    try:
        assert wait_until(lambda: driver.stats.packets == 50, WAIT)
        calls.clear()
        clock.t = T0 + 31                    # all 50 are due (udp_timeout 30)
        assert wait_until(lambda: engine.count == 0, WAIT)
    finally:
        silent.set()
        driver.stop()
    sliced = [call for call in calls if call == (8, True)]
    assert len(sliced) >= 7 and all(call == (8, True) for call in calls)


def test_the_lag_says_how_late_the_oldest_due_frame_is_and_falls_to_0_once_fed():
    """stats.lag_ms: while the engine is busy (its lock held here), frames due 5 s ago wait
    and the gauge says 5000; once they are fed and nothing is due it says 0."""
    clock = FakeClock(T0 + 5)
    frames = [(T0, LINKTYPE_ETHERNET, udp_frame(A, B, 5000, 53)),
              (T0 + 1, LINKTYPE_ETHERNET, udp_frame(B, A, 53, 5000))]
    driver = EngineDriver(make_engine("linux"), frames, clock=clock, scheduled=True)
    try:
        with driver.engine_lock:            # the engine is busy: the due frames wait
            driver.start()
            assert wait_until(lambda: driver.stats.lag_ms == 5000, WAIT), driver.stats
            assert driver.stats.packets == 0
        assert wait_until(lambda: driver.stats.packets == 2, WAIT)
        assert wait_until(lambda: driver.stats.lag_ms == 0, WAIT), driver.stats
        assert "lag_ms 0\n" in driver.source_stats_text()
    finally:
        driver.stop()


# -- a capture file as the source (procfs_ct/sources/pcapfile.py) --------------------------------
def write_udp_capture(path, count: int) -> list:
    from engine.capture import PcapWriter
    frames = [udp_frame(A, B, 1024 + n % 50000, 53) for n in range(count)]
    with open(path, "wb") as fileobj:
        writer = PcapWriter(fileobj, linktype=LINKTYPE_ETHERNET)
        for n, frame in enumerate(frames):
            writer.write(100.0 + n * 0.001, frame)
    return frames


def counted(batches, counts: list):
    """The lists of `batches`, the length of each appended to counts as it is taken."""
    for batch in batches:
        counts.append(len(batch))
        yield batch


def test_a_capture_from_a_pipe_keeps_its_pump_and_is_read_ahead_a_queue_full(tmp_path):
    """A capture read from a pipe may block between chunks (a live tcpdump -w -), so a pump
    thread reads it; being scheduled, it is read ahead at most a queue full (QUEUE_FRAMES,
    over it by a chunk at most) plus the engine thread's take (TAKE_FRAMES) and the chunk
    waiting to be put, while its frames are not due; then every frame is fed."""
    import os
    from procfs_ct.driver import QUEUE_FRAMES
    from procfs_ct.sources.pcapfile import replay_capture
    path, fifo = tmp_path / "udp.pcap", str(tmp_path / "fifo")
    write_udp_capture(path, 20_000)
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: open(fifo, "wb").write(path.read_bytes()))
    writer.start()
    clock = FakeClock(T0)
    source, handed = replay_capture(fifo, speed=1.0, start=T0 + 1000), []
    assert source.pull_source() is None         # (a file's: tests/test_capturereader.py)
    batches = source.batches()
    source.batches = lambda: counted(batches, handed)
    driver = EngineDriver(make_engine("linux"), source, clock=clock, scheduled=True)
    assert driver._pump_thread is not None
    driver.start()
    try:
        assert wait_until(lambda: sum(handed) >= QUEUE_FRAMES, WAIT)
        time.sleep(0.3)                     # what the pump would read on, if it could
        chunk = max(handed)
        assert QUEUE_FRAMES <= sum(handed) <= TAKE_FRAMES + (QUEUE_FRAMES - 1 + chunk) + chunk
        assert sum(handed) < 20_000 and driver.stats.packets == 0
        clock.t = T0 + 1100                 # every frame is due
        assert wait_until(lambda: driver.stats.source_done, WAIT)
    finally:
        driver.stop()
        writer.join(WAIT)
    assert sum(handed) == driver.stats.packets == 20_000
    assert driver.engine.count == 20_000 and driver.stats.packet_errors == 0


def test_stopping_mid_capture_closes_the_file(tmp_path):
    """The engine thread stops the capture's reader process and closes the file."""
    import os
    from procfs_ct.sources.pcapfile import replay_capture
    path = tmp_path / "udp.pcap"
    write_udp_capture(path, 20_000)

    def open_copies() -> int:
        fds = os.listdir("/proc/self/fd")
        return sum(1 for fd in fds if os.path.realpath(f"/proc/self/fd/{fd}") == str(path))

    clock = FakeClock(T0)
    driver = EngineDriver(make_engine("linux"), replay_capture(str(path), start=T0 + 1000),
                          clock=clock, scheduled=True)
    driver.start()
    try:
        assert wait_until(lambda: open_copies() == 1, WAIT)
    finally:
        driver.stop()
    assert wait_until(lambda: open_copies() == 0, WAIT)


# -- a pull source (the tap): the engine thread reads it itself, no pump thread ------------------
class PullFake:
    """A pull source as procfs_ct/sources/tap.py's Tap is one: take_ready() hands over what
    is `ready` (a list of batches) without waiting, wait_ready() sleeps on an event the
    test sets, recording each timeout asked for; close() ends it (None from take_ready).
    With `columns` every batch, the empty one too, is handed over as the tap's Columns."""

    def __init__(self, columns: bool = False) -> None:
        self.columns = columns
        self.ready: list = []
        self.arrived = threading.Event()
        self.waits: list = []
        self.takers: set = set()
        self.closed = False
        self.fail = False

    def add(self, batch: list) -> None:
        self.ready.append(self._shaped(batch))
        self.arrived.set()

    def _shaped(self, batch: list):
        if not self.columns:
            return batch
        from procfs_ct.sources.tap import Columns
        shaped = Columns(batch[0][1] if batch else LINKTYPE_ETHERNET)
        for ts, linktype, frame in batch:
            assert linktype == shaped.linktype      # one link type per Columns
            shaped.times.append(ts)
            shaped.frames.append(frame)
        return shaped

    def take_ready(self):
        self.takers.add(threading.current_thread().name)
        if self.fail:
            raise OSError("the ring went away")
        if self.closed:
            return None
        return self.ready.pop(0) if self.ready else self._shaped([])

    def wait_ready(self, timeout: float) -> None:
        self.waits.append(timeout)
        self.arrived.wait(timeout)
        self.arrived.clear()

    def close(self) -> None:
        self.closed = True
        self.arrived.set()

    def __iter__(self):
        return self

    def __next__(self):
        raise AssertionError("a pull source is never iterated: no pump thread")


# The two shapes a pull source's batches take: lists of tuples, the tap's Columns.
PULL_SHAPES = pytest.mark.parametrize("columns", (False, True), ids=("list", "columns"))


def started_on_one_pulled_frame(columns: bool = False):
    """(fake clock, PullFake, started EngineDriver) once the driver has fed the one UDP
    frame (A -> B, at T0) the source had ready."""
    clock = FakeClock(T0)
    source = PullFake(columns)
    source.add([(T0, LINKTYPE_ETHERNET, udp_frame(A, B, 5000, 53))])
    driver = EngineDriver(make_engine("linux"), source, clock=clock, advance_every=1.0)
    driver.start()
    assert wait_until(lambda: driver.stats.packets == 1, WAIT)
    return clock, source, driver


@PULL_SHAPES
def test_a_pull_source_is_read_by_the_engine_thread_and_time_runs_while_it_is_empty(columns):
    """No pump thread: the engine thread takes the frames itself; while the source has
    nothing (an empty list or empty Columns) it waits in the source's wait_ready() (never
    longer than WAIT_SLICE, so a stop is seen) and still advances the engine's time: an
    entry expires with no traffic."""
    from procfs_ct.driver import WAIT_SLICE
    clock, source, driver = started_on_one_pulled_frame(columns)
    try:
        assert len(listing(driver)) == 1
        advances = driver.stats.advances
        clock.t = T0 + 31                        # udp_timeout 30: due, and the ring empty
        assert wait_until(lambda: driver.engine.count == 0, WAIT)
        assert driver.stats.advances > advances
        assert driver.stats.packets == 1 and not driver.stats.source_done
    finally:
        driver.stop()
    assert driver._pump_thread is None
    assert source.takers == {"procfs-ct-engine"}
    assert source.waits and max(source.waits) <= WAIT_SLICE
    assert not driver.running


def test_stopping_a_driver_on_a_pull_source_closes_it_and_ends_the_engine_thread():
    """stop() closes the source (the tap's close() waits for its poll, no longer than the
    poll interval) and the engine thread, waiting in wait_ready(), ends: `running` is
    False once stop() returns, and the source was not read after it was closed."""
    source = PullFake()
    driver = EngineDriver(make_engine("linux"), source)
    driver.start()
    assert wait_until(lambda: source.waits, WAIT)    # idle: inside wait_ready()
    driver.stop()
    assert source.closed and not driver.running


@PULL_SHAPES
def test_a_pull_burst_is_fed_a_slice_per_hold_and_a_reader_renders_between_two(columns):
    """A burst of 8 x FEED_SLICE frames taken at once from a pull source is fed at most
    FEED_SLICE frames per hold of the engine lock; after the second hold a reader waiting
    for the lock renders the table with some of the burst in it and not all."""
    from procfs_ct.driver import FEED_SLICE
    total = 8 * FEED_SLICE
    source = PullFake(columns)
    driver = EngineDriver(make_engine("linux"), source, clock=FakeClock(T0 + 1))
    lock, holds = driver.engine_lock, []
    reader_done, turn = threading.Event(), threading.Event()
    seen: list = []

    class RecordingLock:
        """The engine lock, recording the packets fed by each hold; at the second
        release in the burst it lets the reader render before the engine goes on."""
        def __enter__(self):
            lock.acquire()
            self.before = driver.stats.packets

        def __exit__(self, *exc):
            fed = driver.stats.packets - self.before
            lock.release()
            if fed and threading.current_thread().name == "procfs-ct-engine":
                holds.append(fed)
                if len(holds) == 2:
                    turn.set()
                    reader_done.wait(WAIT)

        def locked(self):
            return lock.locked()

    def reader():
        turn.wait(WAIT)
        seen.append(len(listing(driver)))
        reader_done.set()

    driver.engine_lock = RecordingLock()
    threading.Thread(target=reader, daemon=True).start()
    source.add([(T0, LINKTYPE_ETHERNET, udp_frame(A, B, 1024 + n, 53)) for n in range(total)])
    driver.start()
    try:
        assert wait_until(lambda: driver.stats.packets == total, WAIT)
    finally:
        driver.stop()
    assert sum(holds) == total and max(holds) <= FEED_SLICE and len(holds) >= 8
    assert seen and 0 < seen[0] < total, seen


def test_a_failing_pull_source_is_counted_and_the_table_keeps_expiring():
    """A source that raises in take_ready() ends (counted in source_errors, logged once);
    the engine thread goes on advancing time, so what was fed still expires."""
    clock, source, driver = started_on_one_pulled_frame()
    try:
        source.fail = True
        assert wait_until(lambda: driver.stats.source_done, WAIT)
        assert driver.stats.source_errors == 1
        clock.t = T0 + 31
        assert wait_until(lambda: driver.engine.count == 0, WAIT)
    finally:
        driver.stop()


@PULL_SHAPES
def test_a_tap_burst_through_the_fast_loop_counts_each_path_and_skips_a_frame_that_raises(
        caplog, columns):
    """A pull burst of (ts, linktype, frame) frames, as a list or as the tap's Columns, fed
    while nobody listens (the driver's tight loop): the frames the fast path answers, those
    it declines (fed by engine.feed_frame) and one that raises (counted, logged, skipped)
    are each counted; every other frame is tracked, with time never running backwards even
    where a frame's own time does (two interfaces' blocks in one batch)."""
    from engine.build import build_icmp_datagram
    clock = FakeClock(T0 + 100)
    source = PullFake(columns)
    engine = make_engine("linux")
    bad = udp_frame(A, B, 6666, 53)
    answered, declined = [], []
    make_fast = engine.fast_path

    def fast_path(linktype):
        fast = make_fast(linktype)

        def track(now, linktype, frame):
            if frame == bad:
                raise ValueError("a frame the engine cannot take")
            verdict = fast(now, linktype, frame)
            (declined if verdict is None else answered).append(now)
            return verdict
        return track
    engine.fast_path = fast_path
    frames = []
    for n in range(300):
        # An ICMP echo reply with no request: the fast path declines it.
        frame = (build_ethernet(build_icmp_datagram(A, B, 0, ident=n)) if n % 50 == 7
                 else bad if n == 123 else udp_frame(A, B, 5000 + n, 53))
        frames.append((T0 + n * 0.01 - (0.5 if n == 200 else 0), LINKTYPE_ETHERNET, frame))
    source.add(frames)
    driver = EngineDriver(engine, source, clock=clock)
    with caplog.at_level(logging.ERROR, logger="procfs_ct.driver"):
        driver.start()
        try:
            assert wait_until(lambda: driver.stats.packets + driver.stats.packet_errors
                              == 300, WAIT)
        finally:
            driver.stop()
    assert driver.stats.packet_errors == 1 and "failed; skipped" in caplog.text
    assert len(declined) == 6 and len(answered) == 293
    assert driver.stats.packets == 299 and driver.stats.fast_path == 293
    assert engine.count == 299 - 6                  # every UDP flow but the bad one
    times = answered + declined
    assert sorted(answered) == answered and min(times) == T0
    assert times.count(T0 + 199 * 0.01) == 2        # frame 200 fed at frame 199's time
