"""The rest of a big listing rendered by forked children, in parallel.

One Python thread renders ~1.3 us of CPU a line, and the GIL keeps the daemon's other
threads (FUSE, the engine) waiting while it does; the kernel's own `cat` of its table costs
1.2-2.0 us a line (bench/RESULTS.md, round 6).  A fork() is a copy-on-write snapshot of the
whole table taken in a few milliseconds (as Redis does for BGSAVE), and each child has its
own interpreter and GIL.  So once a reader of a big listing reads on past its first read
(fs.ReadAhead asks, on its own thread), the rest of the listing can be handed to N children:

  * under the engine lock (the driver's LockedChunks.under_lock) the chunks still to come
    are listed (engine/render.py ListingWalk.rest: index ranges over copies of the tables,
    taken then) and the children forked, so every child sees the table the parent saw;
  * child i renders chunks i, i+N, i+2N... with its copy of the parent's ChunkRenderer,
    each into its pipe as one frame; the parent reads chunk k from pipe k mod N, so the
    text is the in-process text, byte for byte, in the same order, and every child starts
    at once;
  * the pipes are the backpressure (PIPE_BYTES each): a child blocks when the reader is
    slow, and the parent holds no more than a reader's next reads (fs.ReadAhead);
  * a child does nothing but that: collector off (gc.disable: a collection would touch, and
    so copy, every object), every descriptor but its pipe closed (the FUSE device, other
    listings' pipes, the death watcher's pipe), killed if the thread that forked it dies
    (PR_SET_PDEATHSIG), and it leaves with os._exit whatever happens, never returning into
    the frames of the daemon thread it was forked from;
  * a child that fails says why in an error frame; one that dies leaves its pipe short:
    either way the reader gets EIO on its later reads (fs.Rendering), never a short text
    that looks complete;
  * close() kills and reaps the children at once (a reader that closes early, the last
    chunk read, a failure, the unmount: stop_all()).

It pays only with CPUs to spare: a child's chunks cost ~25-35 % more CPU than in process
(every page of entries it reads is copied on its first reference-count write), so the rest
is rendered in process as before (fork_rest() returns None) unless at least MIN_CHILDREN
CPUs are idle at that moment (/proc/loadavg's runnable tasks, the fewest of a few samples
0.25 ms apart, the engine thread counted if it is feeding packets); nor when the listing
is smaller than FORK_MIN_ENTRIES, an entry is listed under one key (a flow to itself:
de-duplicated in process), os.fork is missing, or the copies the children could cause (the
daemon's RSS, once per child, at worst) do not fit in the memory available (MemAvailable,
and the cgroup's memory.max - memory.current).
PROCFS_CT_FORK_RENDER=0 never forks, =N always forks N children for a big listing.
"""
from __future__ import annotations

import ctypes
import fcntl
import gc
import logging
import os
import resource
import signal
import struct
import threading
import time
import weakref
from typing import Any, Callable, List, Optional, Sequence

from engine.render import rest_entries

log = logging.getLogger(__name__)

# A listing this big (or bigger) may be forked.  At 16,384 entries a listing is ~3 MB and
# takes ~20 ms of CPU to render in process; below that the engine lock held to list the
# chunks and fork (23-61 ms at 262,144 entries, a few ms here) and the children's
# copy-on-write faults are a sizeable share of a cat, and a small table's cat is already
# near or below the kernel's (bench/RESULTS.md: 65,536 entries 0.3-1.4x).
FORK_MIN_ENTRIES = 16384
MAX_CHILDREN = 4            # more children than this gain nothing on a 2-4 CPU machine
# Fewer children than this lose: a child costs ~25-35 % more CPU than the same chunks in
# process (copy-on-write faults of every page it reads, ~16,500 per child at 262,144
# entries; the fork; the pipe), and the daemon's GIL freed for FUSE saves ~10 % (round 6),
# so only two or more CPUs working at once pay for it (bench/RESULTS.md, round 7).
MIN_CHILDREN = 2
PIPE_BYTES = 1 << 20        # each child's pipe: about five 1024-line chunks of nf_conntrack
ENV_CHILDREN = "PROCFS_CT_FORK_RENDER"          # "0": never fork; N: N children; unset: auto
ENV_MIN_ENTRIES = "PROCFS_CT_FORK_MIN_ENTRIES"  # another threshold (tests)

F_SETPIPE_SZ = 1031
PR_SET_PDEATHSIG = 1
_FRAME = struct.Struct("=iQ")       # kind, length of what follows
CHUNK, END, ERROR = 0, 1, 2


def _libc_function(name: str) -> Optional[Callable[..., int]]:
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None


_PRCTL = _libc_function("prctl")     # looked up here: a child must not load anything


# -- whether to fork, and how many ---------------------------------------------------------------
def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def children_wanted(entries: int, engine_busy: bool,
                    environ: Optional[dict] = None) -> int:
    """How many children should render a listing of `entries` entries (0: in process).

    PROCFS_CT_FORK_RENDER=N asks for N children (0: none) whatever the machine; unset, as
    many as there are CPUs idle now, if that is at least MIN_CHILDREN (see there), and if
    the copies they could cause fit in memory."""
    environ = os.environ if environ is None else environ
    asked = environ.get(ENV_CHILDREN, "").strip().lower()
    if asked in ("0", "off", "no") or not hasattr(os, "fork"):
        return 0
    try:
        least = int(environ.get(ENV_MIN_ENTRIES, FORK_MIN_ENTRIES))
    except ValueError:
        least = FORK_MIN_ENTRIES
    if entries < least:
        return 0
    if asked.isdigit():
        return min(int(asked), MAX_CHILDREN)
    # The engine thread feeding packets takes a CPU of its own (and its writes to the
    # shared pages are copied): count it as busy.
    idle = usable_cpus() - others_running() - (1 if engine_busy else 0)
    children = min(idle, MAX_CHILDREN)
    if children < MIN_CHILDREN:
        return 0
    return children if children * _rss() <= _memory_free() else 0


# /proc/loadavg's runnable count is one instant, and the decision is taken at a busy one:
# the read-ahead thread is woken by a reader's read, so the daemon's FUSE thread sending
# that reply and the reader itself (cat writing out what it got, asking for more) are
# often runnable for those microseconds.  On 2 CPUs one of them was enough to render in
# process: the full quiet run of 17:18 (round 9) had 172 ms (forked) and 283 ms (in
# process) cats of one table in one figure.  A task that competes for a CPU is runnable
# in every sample, a transient one is not: the fewest of RUNNABLE_SAMPLES samples
# RUNNABLE_GAP seconds apart is taken (at most ~0.5 ms, only for a listing big enough to
# fork, and none more once a sample says nothing else runs).
RUNNABLE_SAMPLES = 3
RUNNABLE_GAP = 0.00025


def runnable_now() -> int:
    """Tasks of the whole machine runnable at this instant (/proc/loadavg), the caller's
    thread aside."""
    try:
        with open("/proc/loadavg") as f:
            return max(int(f.read().split()[3].split("/")[0]) - 1, 0)
    except (OSError, ValueError, IndexError):
        return 0


def others_running(sample: Optional[Callable[[], int]] = None,
                   sleep: Callable[[float], None] = time.sleep) -> int:
    """Tasks that keep a CPU busy besides the caller: the fewest runnable_now() (or
    `sample`) of RUNNABLE_SAMPLES samples RUNNABLE_GAP seconds apart (see above)."""
    sample = runnable_now if sample is None else sample
    fewest = sample()
    for _ in range(RUNNABLE_SAMPLES - 1):
        if fewest == 0:
            break
        sleep(RUNNABLE_GAP)
        fewest = min(fewest, sample())
    return fewest


def _rss() -> int:
    """This process's resident bytes."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _memory_free() -> float:
    """Bytes that may still be used: MemAvailable, and the cgroup's headroom if it has a
    limit (cgroup v2)."""
    free = float("inf")
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        with open("/proc/self/cgroup") as f:
            group = next((line.split(":", 2)[2].strip() for line in f
                          if line.startswith("0::")), None)
        if group is not None:
            base = "/sys/fs/cgroup" + group.rstrip("/")
            with open(base + "/memory.max") as f:
                limit = f.read().strip()
            if limit != "max":
                with open(base + "/memory.current") as f:
                    free = min(free, int(limit) - int(f.read()))
    except (OSError, ValueError, StopIteration):
        pass
    return free


# -- the parent's side ---------------------------------------------------------------------------
_LIVE: "weakref.WeakSet[ForkedChunks]" = weakref.WeakSet()
_LIVE_MU = threading.Lock()


def fork_rest(source: Any) -> Optional["ForkedChunks"]:
    """The rest of `source` (the driver's LockedChunks of a listing) rendered by forked
    children, or None where it is to be rendered in process as before (see the module
    doc).  Call it on a thread that lives as long as the daemon (fs.ReadAhead's): a child
    is killed when the thread that forked it ends (PR_SET_PDEATHSIG)."""
    under_lock = getattr(source, "under_lock", None)
    if under_lock is None:
        return None
    return under_lock(lambda listing, busy: _fork_listing(listing, busy, source))


def _fork_listing(listing: Any, engine_busy: bool, keep: Any) -> Optional["ForkedChunks"]:
    """Under the engine lock: fork the children of `listing` (an engine.render
    ListingChunks), or None."""
    walk = getattr(listing, "walk", None)
    if walk is None or not hasattr(listing, "renderer"):
        return None
    locked = time.perf_counter()
    count = children_wanted(getattr(listing, "entries", 0), engine_busy)
    if count == 0:
        return None
    try:
        forked = ForkedChunks(listing, count, keep)
        log.debug("engine lock held %.1f ms to fork", (time.perf_counter() - locked) * 1000)
        return forked
    except OSError as exc:          # no fork (EAGAIN, ENOMEM), no pipe: render in process
        log.warning("cannot fork to render a listing (%s): rendering it in process", exc)
        return None
    except ValueError:              # an entry with one key: de-duplicated in process
        return None


class ForkedChunks:
    """The chunks `count` children render of what is left of `listing` (ListingChunks,
    whose walk is not moved here: a failed fork leaves it as it was), read in order; an
    iterator.  OSError if a pipe or a child cannot be made; ValueError if the listing
    cannot be rendered elsewhere (an entry with one key).

    Made under the engine lock: the chunks left are listed (and the tables not started
    copied) then.  They and `keep` (the listing's source) are held until the children are
    gone: dropping them would write to every entry's reference count, and so copy the
    pages the children share with this process."""

    def __init__(self, listing: Any, count: int, keep: Any = None) -> None:
        started = time.perf_counter()
        jobs = listing.walk.rest()
        if jobs is None:
            raise ValueError("the listing has an entry under one key: not forked")
        self._keep = (keep, jobs)
        listed = time.perf_counter()
        self._pids: List[int] = []
        self._pipes: List[int] = []
        self._next = 0                  # the chunk to read next: it is in pipe _next % count
        self._done = False
        self.list_seconds = self.fork_seconds = 0.0
        self.children_usage: List[str] = []     # what each child's END frame says it used
        pipes = []
        try:
            for _ in range(count):
                pipes.append(os.pipe())
            for read_end, write_end in pipes:
                try:
                    fcntl.fcntl(write_end, F_SETPIPE_SZ, PIPE_BYTES)
                except OSError:         # over /proc/sys/fs/pipe-max-size: the default
                    pass
            parent = os.getpid()
            for index in range(count):
                pid = os.fork()
                if pid == 0:
                    _child(listing.renderer, jobs, index, count, pipes[index][1],
                           parent)                                  # never returns
                self._pids.append(pid)
        except BaseException:
            for read_end, write_end in pipes:
                os.close(read_end)
                os.close(write_end)
            self._kill()
            raise
        for read_end, write_end in pipes:
            os.close(write_end)         # the child's now: its death is EOF here
            self._pipes.append(read_end)
        self.list_seconds = listed - started
        self.fork_seconds = time.perf_counter() - listed
        with _LIVE_MU:
            _LIVE.add(self)
        log.debug("rendering %d chunks of a listing of %d entries in %d children %s "
                  "(listed in %.1f ms, forked in %.1f ms)", len(jobs),
                  getattr(listing, "entries", 0), count, self._pids,
                  self.list_seconds * 1000, self.fork_seconds * 1000)

    @property
    def pids(self) -> Sequence[int]:
        return tuple(self._pids)

    def __iter__(self) -> "ForkedChunks":
        return self

    def __next__(self) -> bytes:
        while not self._done:
            if not self._pipes:
                raise RuntimeError("the render children were stopped")
            index = self._next % len(self._pipes)
            self._next += 1
            kind, length = _FRAME.unpack(self._read(index, _FRAME.size))
            body = self._read(index, length) if length else b""
            if kind == CHUNK:
                if body:
                    return body
                continue                # every entry of that chunk expired: no text
            if kind == END:
                self.children_usage.append(body.decode("ascii", "replace"))
                if len(self.children_usage) < len(self._pipes):
                    continue            # the others' END frames follow in turn
                log.debug("render children done: %s (user s, system s, page faults each)",
                          "; ".join(self.children_usage))
                self.close()
                break
            self.close()
            raise RuntimeError(f"render child {index} failed: "
                               f"{body.decode('utf-8', 'replace') if kind == ERROR else kind}")
        raise StopIteration

    def _read(self, index: int, length: int) -> bytes:
        """Exactly `length` bytes of child `index`'s pipe; a child that died short of them
        fails the listing."""
        fd = self._pipes[index]
        data = os.read(fd, length)
        if len(data) == length:
            return data
        parts = [data]
        got = len(data)
        while got < length:
            more = os.read(fd, length - got)
            if not more:
                self.close()
                raise RuntimeError(f"render child {index} ended {length - got} bytes short "
                                   "of its next frame (killed?)")
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def close(self) -> None:
        """Kill and reap the children, close the pipes, let go of the listing."""
        self._done = True
        self._kill()
        pipes, self._pipes = self._pipes, []
        for fd in pipes:
            os.close(fd)
        self._keep = None
        with _LIVE_MU:
            _LIVE.discard(self)

    def _kill(self) -> None:
        pids, self._pids = self._pids, []
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in pids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass

    def __del__(self) -> None:
        if self._pids or self._pipes:
            self.close()


def stop_all() -> None:
    """Kill and reap every render child of this process (the unmount)."""
    with _LIVE_MU:
        live = list(_LIVE)
    for forked in live:
        forked.close()


# -- the child's side ----------------------------------------------------------------------------
def _child(renderer: Any, jobs: list, index: int, count: int, fd: int, parent: int) -> None:
    """Render jobs index, index+count, ... (engine.render RestJob) with `renderer` (a
    ChunkRenderer) into `fd`, framed; never returns."""
    status = 1
    try:
        gc.disable()                    # a collection would touch, and copy, every object
        gc.freeze()
        if _PRCTL is not None:
            _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:      # the daemon died before the line above
            return
        os.closerange(3, fd)
        os.closerange(fd + 1, os.sysconf("SC_OPEN_MAX"))
        try:
            render = renderer.render
            for formats, values, start, stop in jobs[index::count]:
                _write(fd, CHUNK, render((formats, rest_entries(values, start, stop))))
            usage = resource.getrusage(resource.RUSAGE_SELF)
            _write(fd, END, b"%.3f %.3f %d" % (usage.ru_utime, usage.ru_stime, usage.ru_minflt))
            status = 0
        except BaseException as exc:    # noqa: B902 - whatever it is, the reader must know
            _write(fd, ERROR, repr(exc).encode("utf-8", "replace"))
    except BaseException:               # noqa: B902 - never back into the daemon's frames
        pass
    finally:
        os._exit(status)


def _write(fd: int, kind: int, body: bytes) -> None:
    pieces = [memoryview(_FRAME.pack(kind, len(body))), memoryview(body)]
    while pieces:
        written = os.writev(fd, pieces)
        while pieces and written >= len(pieces[0]):
            written -= len(pieces[0])
            pieces.pop(0)
        if pieces and written:
            pieces[0] = pieces[0][written:]
        if pieces and not pieces[0]:
            pieces.pop(0)
