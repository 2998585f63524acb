"""The engine thread: the only code that feeds packets to the engine and moves its clock.

A source is an iterator of (ts, linktype, frame) where ts is the wall-clock time the
frame is due (a pcapng capture adds the name of the frame's interface: (ts, linktype,
frame, name), which engine.feed_frame hands to the iptables chains for `-i`/`-o`).
A pump thread pulls frames from it into a bounded FrameQueue (a live tap
may block in next() for minutes; the engine thread must not) -- whole lists of them from
a source that offers batches() (a capture read from a pipe: one per chunk) -- and the
engine thread takes every frame waiting there at once, so neither side pays a lock or a
thread switch per frame, and a frame is never held back by the pump while the source is
inside next() (see tests/test_driver.py).
A pull source (the tap: take_ready() and wait_ready(), PullSource below) has no pump: it
buffers its own frames (the kernel's ring, ~1 s of traffic), so the engine thread reads them
itself when it has fed what it took, and waits in the source's poll() instead of on the
queue.  A pump beside it only moved frames from the ring to the queue, each of them crossing
a deque, and the two threads took turns at one GIL (bench/RESULTS.md, tapinline).  A capture
in a regular file offers one too (`pull_source()`: a reader process cuts its records,
sources/capturereader.py): a pump thread beside the engine thread made two runnable threads
taking turns at the GIL every switch interval, which a FUSE request then waited behind
(bench/RESULTS.md, round 14: the knob write).  A capture read from a pipe may block
between chunks, so it keeps its pump.
The engine thread:

  * waits until each frame is due, in slices of at most WAIT_SLICE seconds, so that
    stop() is prompt and expiry keeps running while the source is silent -- and FEED_LAG
    past it, so that it wakes once for a burst of frames and not once per frame (a
    frame is still fed with its own time, so the lag changes when, never what);
  * feeds the engine with the frame's time on the driver's clock (monotonic, anchored
    to the wall clock at start, so a wall-clock step cannot make time run backwards),
    up to FEED_SLICE due frames, and for about FEED_HOLD seconds, per hold of the engine
    lock, so a reader waiting for the next chunk of a listing waits no longer;
  * calls engine.advance(now) at least every ADVANCE_EVERY seconds, so the seconds-left
    column of the listings counts down and entries expire on time -- but never past the
    time of the next frame not yet fed (the horizon): a frame that is late because the
    machine is loaded is still fed before anything its time would have kept alive
    expires.  For a scheduled source (a capture or the synthetic mix, whose frames are
    all known in advance) the engine's time does not pass the last frame fed while the
    next one is still on its way from the source, so a replay gives the same table
    however slow the machine is; an advance looks at EXPIRE_SLICE timer filings per hold
    of the engine lock (a second's bucket can hold the whole table);
  * hands each frame's result (what engine.feed_frame returned) to every callable in
    `listeners`, under the engine lock, in feeding order;
  * survives any exception raised by one packet: it is logged, counted, and skipped;
  * calls `between_holds` (if given) once per turn of its loop, holding no lock: the
    daemon's collector policy takes its small full collections there (gcpolicy.py).

The engine is not thread-safe.  Feeding, advancing and rendering take `engine_lock`,
each for one call.  Knob writes do not: KnobValues.write_text is a single dict
assignment, which the engine reads on its next packet, so a write never waits behind
a long render.
"""
from __future__ import annotations

import collections
import dataclasses
import inspect
import logging
import threading
import time
from dataclasses import dataclass
from itertools import repeat
from operator import call
from typing import Any, Callable, Iterable, Iterator, List, Optional, Protocol, Sequence, Tuple

from engine.fastpath import FastTrack
from procfs_ct.tree import Render

log = logging.getLogger(__name__)

Frame = Tuple[float, int, bytes]
# A listener gets (the time the frame was fed at, what engine.feed_frame returned).
Listener = Callable[[float, Any], None]

WAIT_SLICE = 0.2            # longest single wait: bounds shutdown latency
ADVANCE_EVERY = 0.5         # engine.advance() period (the brief asks for at least 1/s)
QUEUE_FRAMES = 4096         # frames read ahead of their due time from a frame-by-frame source
# From a source that hands over batches (the tap): a burst beyond what the engine keeps up
# with waits here once the kernel's ring is read (as many as the 64 lists of a ring round
# each held before: ~150 MB of small datagrams at most).  With 131,072 the tap dropped
# 96-131k of a 3 s burst at 150,000 packets/s (load 3-4); with this, none.
QUEUE_FRAMES_LIVE = 1 << 20
TAKE_FRAMES = 4096          # most frames the engine thread takes from the queue at once
FEED_LAG = 0.001            # seconds the engine oversleeps a frame's due time (see above)
FEED_SLICE = 512            # most frames fed per hold of the engine lock
FEED_HOLD = 0.002           # seconds the lock is held for feeding before a reader's turn
EXPIRE_SLICE = 2048         # timer filings looked at per hold of the lock (~1-2 ms)
HOLD_CHECK_EVERY = 32       # frames between two looks at the clock while feeding
LOGGED_ERRORS = 5           # log the first few packet errors in full, then every 1000th

_END = object()             # the pump's "source exhausted" marker


class PullSource(Protocol):
    """A live source that buffers its own frames (the tap: the kernel's ring), read by the
    engine thread itself between two feeds instead of by a pump thread: the two would
    share one GIL, and every frame would cross a queue (bench/RESULTS.md, tapinline)."""

    def take_ready(self) -> Optional[Sequence]:
        """The frames ready now, without waiting (empty if none); None once closed.  A
        list of (ts, linktype, frame), or columns (the tap's Columns) that index as such a
        list and give frames start to end as `window(start, end)`: the fast loop then
        reads them with no tuple per frame made by the source."""

    def wait_ready(self, timeout: float) -> None:
        """Return once frames may be ready, or after `timeout` seconds at most."""


def _is_pull_source(source: object) -> bool:
    return (callable(getattr(source, "take_ready", None))
            and callable(getattr(source, "wait_ready", None)))


def batch_window(batch: list) -> Callable[[int, int], list]:
    """A list's frames start to end, as Columns.window gives a pull source's: a slice
    (islice would walk from 0)."""
    return lambda start, end: batch[start:end]


class FrameQueue:
    """The pump's frames on their way to the engine thread, at most `limit` of them.

    A deque: the pump appends (one frame, or a batch at once), the engine thread pops
    everything there; appends and pops are atomic, so no lock is taken per frame.  Two
    events wake whoever waits: `arrived` the engine on an empty queue, `room` the pump on
    a full one.  Each side clears its event and then looks again before it waits, and the
    other side sets it after it has changed the deque, so no wake-up is lost."""

    def __init__(self, limit: int) -> None:
        self._frames: "collections.deque[Any]" = collections.deque()
        self._limit = limit
        self._arrived = threading.Event()
        self._room = threading.Event()

    def put(self, items: list, stop: threading.Event) -> bool:
        """Append `items` once there is room (the pump); False if stopped first."""
        frames, room = self._frames, self._room
        while len(frames) >= self._limit:
            room.clear()
            if len(frames) < self._limit:
                break
            if stop.is_set():
                return False
            room.wait(WAIT_SLICE)
        frames.extend(items)
        if not self._arrived.is_set():
            self._arrived.set()
        return True

    def take(self, timeout: float) -> list:
        """Up to TAKE_FRAMES items, waiting up to `timeout` for one (the engine thread)."""
        frames = self._frames
        if not frames and timeout > 0:
            self._arrived.clear()
            if not frames:
                self._arrived.wait(timeout)
        # popleft() called from C (map), not once per frame from a comprehension: 315 fewer
        # instructions a frame behind a tap (bench/tapcost.py driver, 14,206 -> 13,891).
        taken = list(map(call, repeat(frames.popleft, min(len(frames), TAKE_FRAMES))))
        if taken and not self._room.is_set():
            self._room.set()
        return taken


class Clock:
    """Wall-clock seconds that never step: time.monotonic() anchored to time.time() once."""

    def __init__(self) -> None:
        self._wall0 = time.time()
        self._mono0 = time.monotonic()

    def now(self) -> float:
        return self._wall0 + (time.monotonic() - self._mono0)


@dataclass
class DriverStats:
    packets: int = 0            # frames handed to the engine
    fast_path: int = 0          # of them, frames the engine's fast path answered
    packet_errors: int = 0      # frames whose processing raised
    source_errors: int = 0      # exceptions raised by the source itself
    listener_errors: int = 0    # exceptions raised by a listener (the frame still counts)
    advances: int = 0
    source_done: bool = False
    # How late the oldest frame that is due but not yet fed is, in ms (0: keeping up): a
    # gauge, not a count.  A rate cannot say whether the engine keeps up with a source
    # whose own rate varies; this can (bench/main.py's knob section samples it).
    lag_ms: int = 0


class EngineDriver:
    """Runs the engine on a source in a background thread; renders views on request."""

    def __init__(self, engine: Any, frames: Iterable[Frame], *,
                 clock: Optional[Clock] = None, advance_every: float = ADVANCE_EVERY,
                 scheduled: bool = False,
                 between_holds: Optional[Callable[[], None]] = None) -> None:
        self.engine = engine
        self._between_holds = between_holds
        self.engine_lock = threading.Lock()
        self.clock = clock or Clock()
        self.stats = DriverStats()
        self.listeners: List[Listener] = []
        # Scheduled: every frame is known in advance (a capture, the synthetic mix), so
        # the engine's time may wait for a frame still in the pipe; live: it may not.
        self._scheduled = scheduled
        self._horizon = float("-inf") if scheduled else float("inf")
        self._frames = iter(frames)
        # A source with batches() (the tap, a capture) hands over a list of frames per
        # read of the kernel or of the file; any other is taken a frame at a time (it may
        # block between frames, so the pump cannot wait to fill a batch: each frame goes
        # on the queue at once).
        # A pull source (the tap) keeps what is not read yet in a buffer of its own (the
        # kernel's ring): the engine thread reads it itself and no pump thread runs.
        self._pull: Optional[PullSource] = (
            self._frames if not scheduled and _is_pull_source(self._frames) else None)
        batches = getattr(self._frames, "batches", None)
        # A capture in a regular file offers a pull source of its own (its reader process),
        # which the engine thread closes when it ends.
        pull_source = getattr(self._frames, "pull_source", None)
        self._owned_pull: Optional[PullSource] = (
            pull_source() if self._pull is None and callable(pull_source) else None)
        if self._owned_pull is not None:
            self._pull = self._owned_pull
        self._batches: Iterator[list] = (iter(()) if self._pull is not None
                                         else batches() if callable(batches)
                                         else ([frame] for frame in self._frames))
        self._advance_every = advance_every
        # Only a live source's burst needs the big queue: a scheduled one (a capture) can
        # wait in the file, and read that far ahead it would hold ~400 MB at speed 0.
        live_batches = callable(batches) and not scheduled
        self._queue = FrameQueue(QUEUE_FRAMES_LIVE if live_batches else QUEUE_FRAMES)
        self._stop = threading.Event()
        # The engine's time never runs backwards: every call gets at least this.  It starts
        # at -inf so that frames already due when the thread starts keep their own times.
        self._last_time = float("-inf")
        self._end_taken = False     # the pump's end marker came with the batch being fed
        self._fast: Optional[FastTrack] = None     # the engine's fast path (_fast_path())
        self._engine_thread = threading.Thread(target=self._run, name="procfs-ct-engine",
                                               daemon=True)
        self._pump_thread = (None if self._pull is not None else
                             threading.Thread(target=self._pump, name="procfs-ct-source",
                                              daemon=True))

    # -- control -------------------------------------------------------------------------
    def start(self) -> None:
        if self._pump_thread is not None:
            self._pump_thread.start()
        self._engine_thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop both threads; a source stuck inside next() is abandoned (daemon thread)."""
        self._stop.set()
        # A live source (tap) blocks in next(); closing it wakes it and logs its totals.
        # A generator cannot be closed from here while the pump is inside it ("generator
        # already executing"): the pump closes it on its way out.
        close = getattr(self._frames, "close", None)
        if callable(close) and not inspect.isgenerator(self._frames):
            try:
                close()
            except Exception:       # a source failing to close must not stop the unmount
                log.exception("closing the traffic source failed")
        pump, engine_thread = self._pump_thread, self._engine_thread
        if engine_thread.is_alive() and engine_thread is not threading.current_thread():
            engine_thread.join(timeout)
        if pump is not None and pump.is_alive():
            pump.join(min(timeout, 2 * WAIT_SLICE))

    @property
    def running(self) -> bool:
        return self._engine_thread.is_alive()

    # -- what readers call ---------------------------------------------------------------
    def now(self) -> float:
        """The engine's time: the clock, held back at the horizon (see the module doc)."""
        now = min(self.clock.now(), self._horizon)
        if now < self._last_time:
            return self._last_time
        return now if now != float("-inf") else self.clock.now()

    def render(self, render: Render) -> bytes:
        """A view's whole text (see render_chunks)."""
        return b"".join(self.render_chunks(render))

    def render_chunks(self, render: Render) -> "LockedChunks":
        """The text `render(self, now)` makes, chunk by chunk, each under the engine lock.

        A listing walks a snapshot taken with the first chunk, at the time of the first
        chunk; between chunks the engine thread goes on, so a big listing never holds
        packets back for long (the kernel's seq_file walk is not atomic either).
        """
        with self.engine_lock:
            chunks = render(self, self.now())
            first = next(chunks, None)
        return LockedChunks(chunks, first, self.engine_lock,
                            lambda packets=self.stats.packets: self.stats.packets != packets)

    def source_stats_text(self) -> str:
        """`name value` lines: the driver's counters, then the source's own (tap drops...)."""
        counters = dict(dataclasses.asdict(self.stats))
        source_stats = getattr(self._frames, "stats", None)
        if dataclasses.is_dataclass(source_stats):
            counters.update({f"source_{k}": v for k, v in dataclasses.asdict(source_stats).items()})
        counters["engine_malformed"] = self.engine.malformed
        counters["engine_not_ipv4"] = self.engine.frames_not_ipv4
        return "".join(f"{name} {int(value)}\n" for name, value in counters.items())

    # -- the source pump -----------------------------------------------------------------
    def _pump(self) -> None:
        put, stop = self._queue.put, self._stop
        try:
            for batch in self._batches:
                if not put(batch, stop):
                    return
        except Exception:            # a broken source ends; the table keeps expiring
            self.stats.source_errors += 1
            log.exception("traffic source failed; no more packets will arrive")
        finally:
            self._close_generator()
        put([_END], stop)

    def _close_generator(self) -> None:
        """Close a generator source, or the generator its batches() gave (a capture's:
        it closes the file), from the pump thread, the only one that runs them."""
        for frames in (self._batches, self._frames):
            if inspect.isgenerator(frames):
                try:
                    frames.close()
                except Exception:
                    log.exception("closing the traffic source failed")

    # -- the engine thread ---------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        except BaseException:       # a bug here would freeze the table silently: say so
            log.critical("engine thread died; the table no longer changes", exc_info=True)
            raise
        finally:
            close = getattr(self._owned_pull, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    log.exception("closing the traffic source failed")

    def _loop(self) -> None:
        next_advance = self.clock.now() + self._advance_every
        batch: Optional[list] = None        # frames taken from the queue, fed up to `fed`
        fed = 0
        between_holds = self._between_holds
        while not self._stop.is_set():
            if between_holds is not None:
                between_holds()
            now = self.clock.now()
            if batch is None and not self.stats.source_done:
                batch, fed = self._next_batch(0.0), 0
            self._horizon = self._next_due(batch, fed)
            if now >= next_advance:
                self._advance(min(now, self._horizon))
                next_advance = now + self._advance_every
            budget = max(0.0, min(WAIT_SLICE, next_advance - now))
            if batch is None:
                self.stats.lag_ms = 0           # nothing waits (the next batch says again)
                if self.stats.source_done:
                    self._stop.wait(budget)
                else:
                    batch, fed = self._next_batch(budget), 0
                continue
            late = now - batch[fed][0]
            self.stats.lag_ms = int(late * 1000) if late > 0 else 0
            fed = self._feed_due(batch, fed, now)
            if fed >= len(batch):
                batch = None
                if self._end_taken:
                    self._source_exhausted()
                continue
            due = batch[fed][0]
            if due > now:
                self._stop.wait(min(budget, due - now + FEED_LAG))

    def _next_batch(self, timeout: float) -> Optional[list]:
        """The frames waiting from the pump or the pull source (waiting up to `timeout`
        for one); None if none."""
        batch = self._queue.take(timeout) if self._pull is None else self._pulled(timeout)
        if batch and batch[-1] is _END:         # the pump's last item
            batch.pop()
            self._end_taken = True
            if not batch:
                self._source_exhausted()
        if not batch:
            return None
        if self.stats.packets + self.stats.packet_errors == 0:
            log.info("first frame due at %.6f", batch[0][0])
        return batch

    def _pulled(self, timeout: float) -> list:
        """What the pull source has ready, waiting in its own poll() up to `timeout` when
        it has nothing; [_END] once it is closed or has failed (as the pump would put)."""
        source = self._pull
        assert source is not None
        try:
            batch = source.take_ready()
            if batch is not None and not batch and timeout > 0:
                source.wait_ready(timeout)
                batch = source.take_ready()
        except Exception:            # a broken source ends; the table keeps expiring
            self.stats.source_errors += 1
            log.exception("traffic source failed; no more packets will arrive")
            batch = None
        return [_END] if batch is None else batch

    def _source_exhausted(self) -> None:
        """The last frame is fed (the log line says so only then: tests and users wait
        for it before they compare the table with a replay)."""
        self.stats.source_done = True
        log.info("traffic source exhausted after %d packets", self.stats.packets)

    def _next_due(self, batch: Optional[list], fed: int) -> float:
        """The horizon: how far the engine's time may go before the next frame is fed."""
        if batch is not None:
            return batch[fed][0]
        if self._scheduled and not self.stats.source_done:
            return self._last_time      # the next frame is on its way: wait for it
        return float("inf")

    def _advance(self, now: float) -> None:
        if now == float("-inf"):
            return                      # a scheduled source has not handed over a frame yet
        now = max(now, self._last_time)
        try:
            while True:                 # in slices: a reader's chunk waits for one at most
                with self.engine_lock:
                    done = self.engine.advance(now, EXPIRE_SLICE)
                if done:
                    break
                time.sleep(0)           # let a reader waiting for the lock take it
            self._last_time = now
            self.stats.advances += 1
        except Exception:
            self.stats.packet_errors += 1
            log.exception("engine.advance(%.6f) failed", now)

    def _feed_due(self, batch: list, start: int, now: float) -> int:
        """Feed the frames of `batch` from `start` on that are due by `now`, at most
        FEED_SLICE of them and for about FEED_HOLD seconds under one hold of the engine
        lock (a reader that needs the next chunk of a listing waits for no more); the
        index of the next.  The engine's fast path (engine/fastpath.py) answers the
        common frames while no listener wants their PacketResult; the others take
        engine.feed_frame."""
        end = min(len(batch), start + FEED_SLICE)
        index = start
        with self.engine_lock:
            fast = self._fast_path(batch[start][1])
            # A tap's frames, (ts, linktype, frame) each, while nobody listens: the tight
            # loop of _feed_fast.  Anything else (a capture's frames name their interface
            # too; a listener wants every result) takes _feed_each.
            quick = fast is not None and len(batch[start]) == 3
            # Columns (a pull source's: the tap's) hand the fast loop their frames zipped.
            window = getattr(batch, "window", None) or batch_window(batch)
            stop_at = time.perf_counter() + FEED_HOLD
            # The clock (and the listeners) looked at every HOLD_CHECK_EVERY frames.
            while index < end:
                chunk = min(end, index + HOLD_CHECK_EVERY)
                if quick and not self.listeners:
                    done = self._feed_fast(fast, window(index, chunk), index, now)
                else:
                    done = self._feed_each(fast, batch, index, chunk, now)
                if done < chunk or time.perf_counter() > stop_at:
                    return done
                index = done
        return index

    def _feed_fast(self, fast: FastTrack, frames: Iterable[Frame], start: int,
                   now: float) -> int:
        """_feed_due's frames from index `start` on, each a (ts, linktype, frame), with no
        listener: the fast path, engine.feed_frame for what it declines; the index of the
        next.  Per frame only what each needs (bench/tapcost.py: pull - feed); the counts
        are added to the stats once."""
        last = self._last_time
        general = errors = 0
        index = start
        for ts, linktype, frame in frames:
            if ts > now:
                break
            index += 1
            when = ts if ts > last else last
            try:
                if fast(when, linktype, frame) is None:
                    self.engine.feed_frame(when, linktype, frame)
                    general += 1
            except Exception:
                self._packet_failed(linktype, frame, index - start - errors - 1)
                errors += 1
                continue
            last = when
        self._last_time = last
        fed = index - start - errors
        self.stats.packets += fed
        self.stats.fast_path += fed - general
        return index

    def _feed_each(self, fast: Optional[FastTrack], batch: list, start: int, end: int,
                   now: float) -> int:
        """_feed_due's frames start to end, any shape, each result told to the listeners:
        the fast path for a frame while there are none; the index of the next."""
        feed = self.engine.feed_frame
        listeners = self.listeners
        last = self._last_time
        index = start
        fed = quick = 0                 # counted here, added to the stats once
        try:
            while index < end:
                item = batch[index]
                ts = item[0]
                if ts > now:
                    break
                index += 1
                when = ts if ts > last else last
                try:
                    # A listener appended meanwhile (another thread) gets PacketResults
                    # from the next frame on.
                    if fast is not None and not listeners:
                        if fast(when, item[1], item[2]) is not None:
                            last = when
                            quick += 1
                            continue
                    result = feed(when, *item[1:])
                except Exception:
                    self._packet_failed(item[1], item[2], fed + quick)
                    continue
                last = when
                fed += 1
                if listeners:
                    self._tell(listeners, when, result)
        finally:
            self.stats.packets += fed + quick
            self.stats.fast_path += quick
            self._last_time = last
        return index

    def _fast_path(self, linktype: int) -> Optional[FastTrack]:
        """The engine's fast path for one hold of the engine lock, or None.  Asked again
        at every hold, as what allows it may change between two: chains and their hook
        listeners come with an iptables-restore at run time (under this lock), a driver
        listener may be registered.  Knob writes change nothing here: the fast path reads
        the knobs on every packet.  Built once, for the link type of the frames at hand,
        and kept while allowed (it holds the engine's tables, which never change)."""
        allowed = getattr(self.engine, "fast_path_allowed", None)
        if self.listeners or allowed is None or not allowed():
            self._fast = None
        elif self._fast is None:
            self._fast = self.engine.fast_path(linktype)
        return self._fast

    def _tell(self, listeners: List[Listener], when: float, result: Any) -> None:
        for listener in listeners:
            try:
                listener(when, result)
            except Exception:
                self.stats.listener_errors += 1
                if self.stats.listener_errors <= LOGGED_ERRORS:
                    log.exception("listener %r failed on a packet; it stays registered",
                                  listener)

    def _packet_failed(self, linktype: int, data: bytes, uncounted: int = 0) -> None:
        """Count and log a frame the engine raised on; `uncounted`: frames fed in this
        hold of the lock, not yet in stats.packets."""
        self.stats.packet_errors += 1
        count = self.stats.packet_errors
        if count <= LOGGED_ERRORS or count % 1000 == 0:
            log.exception("packet %d (linktype %d, %d bytes) failed; skipped (%d so far)",
                          self.stats.packets + uncounted + count, linktype, len(data), count)


class LockedChunks:
    """A renderer's chunks (the first one already made), each next one pulled under the
    engine lock; under_lock() lets the rest be taken over (procfs_ct/forkrender.py)."""

    def __init__(self, chunks: Iterator[bytes], first: Optional[bytes],
                 lock: threading.Lock, engine_busy: Callable[[], bool]) -> None:
        self._chunks = chunks
        self._first = first
        self._lock = lock
        self._engine_busy = engine_busy     # the engine fed packets since the first chunk

    def __iter__(self) -> "LockedChunks":
        return self

    def __next__(self) -> bytes:
        chunk = self._first
        if chunk is not None:
            self._first = None
            return chunk
        with self._lock:
            chunk = next(self._chunks, None)
        if chunk is None:
            self.close()
            raise StopIteration
        return chunk

    def close(self) -> None:
        """Let the renderer go (a listing's table copies and address texts)."""
        self._chunks = iter(())
        self._first = None

    def under_lock(self, action: Callable[[Iterator[bytes], bool], Any]) -> Any:
        """action(the renderer's chunks, whether the engine is feeding packets), under the
        engine lock, once the first chunk has been taken; its result."""
        if self._first is not None:
            return None
        with self._lock:
            return action(self._chunks, self._engine_busy())
