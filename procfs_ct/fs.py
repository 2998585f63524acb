"""The FUSE operations: /proc-shaped files over the tree of tree.py.

What each rule is for (docs/spec/fuse.md):
  * every file has st_size 0 and the mount uses direct_io (§3): cat, tail, wc and
    Python read everything, and nothing trusts a stale size;
  * a read at offset 0 (or the first read of a handle) takes the latest rendering, reads
    at other offsets are served from that handle's rendering (§4, the LXCFS rule):
    `while read` loops see whole lines and pollers that lseek(0) see data at most
    SNAPSHOT_TTL old;
  * listings are rendered into a Rendering shared by the readers that open the view
    within SNAPSHOT_TTL seconds (§5) while one of them still reads it: concurrent readers
    share one render, memory stays flat, and a finished reader's rendering is freed; it
    is produced chunk by chunk as reads reach it, so the first bytes come after one
    chunk's work; once a reader reads on past its first read, a background thread renders
    its next READ_AHEAD_READS reads while the kernel hands it the last (ReadAhead), so a
    `cat` waits for the render, not for the render plus every round trip.  A chunk is
    made at most that much earlier than its read would have made it: a listing is the
    same consistent-enough snapshot (each chunk as the table is when it is made);
  * knob reads and writes go to the registry (engine/knobs.py) with the position the
    kernel's file would have, which is not always FUSE's offset: the u8 handler leaves
    the position at 0 after a write, and FUSE hands O_APPEND writes the inode's cached
    size (which our own writes grow for the attribute timeout) where procfs, which
    ignores O_APPEND, uses the file position.  See Handle.  truncate() is a no-op for
    writable knobs (§6);
  * open() refuses write access to read-only files with EACCES, even for root (§7), and
    O_DIRECT with EINVAL, as procfs does (its files cannot do direct I/O);
  * every other change (create, mkdir, unlink, rename, chmod, ...) gets /proc's errno
    (§6 table, re-checked on this machine's /proc: rm is EACCES under sys/, EPERM
    under net/; touch of an existing file succeeds; xattrs are EOPNOTSUPP, getxattr's
    given by the kernel once the daemon said ENOSYS);
  * no exception leaves a callback: each is logged and answered EIO (§2, §11);
  * no attribute of the Operations object is named like an operation (§11).
"""
from __future__ import annotations

import bisect
import collections
import ctypes
import errno
import functools
import itertools
import logging
import os
import stat
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Tuple, Union

from engine.knobs import KnobWriteError
from procfs_ct import forkrender
from procfs_ct.fuse_compat import LIBFUSE_MAJOR, FuseOSError, Operations, keep_thread_state
from procfs_ct.memtrim import DeferredTrim
from procfs_ct.tree import CONTROL, DIR, KNOB, LISTING, Node, Tree

log = logging.getLogger(__name__)

SNAPSHOT_TTL = 0.5      # seconds a rendered listing is shared by readers that open it
# Seconds the kernel may keep a name's lookup and a file's attributes without asking again.
# The tree is fixed for the life of the mount and every file's attributes never change
# (size 0, fixed times), as in /proc, whose dentries and inodes stay valid while the
# sysctl table is registered; contents are never cached (direct_io), so `cat` still reads
# the value of the moment.  libfuse's default of 1 s made every second knob write pay a
# LOOKUP or GETATTR round trip (through the GIL) on top of OPEN and WRITE.  What this
# changes: a stat of a dead daemon's mount (--no-auto-unmount) may still be answered from
# the cache; everything that opens or reads gets ENOTCONN, and the dead-mount checks ask
# with statfs, which always reaches the daemon (daemon.connection_lost, mount.sh).
STATIC_TREE_TIMEOUT = 86400.0
READ_AHEAD_READS = 2    # reads of a sequential reader rendered before it asks (ReadAhead)


def guarded(method: Callable) -> Callable:
    """Answer FuseOSError as raised; log anything else and answer EIO.

    The bindings would turn an ordinary exception into EINVAL ("bad value" to a
    sysctl user) and fusepy mishandles BaseException, so nothing gets past here.
    Each callback also keeps its thread's Python state for the next (keep_thread_state).
    """
    @functools.wraps(method)
    def callback(self: "ProcFs", *args: Any) -> Any:
        keep_thread_state()
        try:
            return method(self, *args)
        except FuseOSError:
            raise
        except BaseException:                       # noqa: B902 - see docstring
            log.exception("FUSE %s%r failed; answering EIO", method.__name__, args[:2])
            raise FuseOSError(errno.EIO)
    return callback


def refuse(err: int) -> FuseOSError:
    return FuseOSError(err)


def _close(source: Optional[Iterator[bytes]]) -> None:
    """Stop a renderer if it can be stopped: a listing's generator lets its table copy go,
    forked children are killed and reaped (a plain iterator has nothing to close)."""
    close = getattr(source, "close", None)
    if close is not None:
        close()


def _free_text(chunks: List[bytes], source: Iterator[bytes],
               on_free: Callable[[], None]) -> None:
    """A rendering is gone: drop its text and stop its renderer, then call on_free."""
    chunks.clear()
    _close(source)
    on_free()


class Rendering:
    """A view's text as its renderer produces it, chunk by chunk, as readers need it.

    A read pulls chunks until it is covered (or the text ends), so `head -1` of a big
    listing waits for one chunk, not for the whole table.  What has been produced never
    changes: every reader of one Rendering sees the same bytes at the same offsets.
    Chunks are kept as they come (no growing buffer to copy); a read slices the one or
    two chunks it spans.  The lock is taken per chunk, not per read, so a reader whose
    bytes exist already never waits behind a chunk being rendered ahead (ReadAhead).
    A renderer that fails fails every later read past what it produced (not a short
    text that looks complete).  hand_over() lets another producer take over the rest
    once (forked children: procfs_ct/forkrender.py).
    """

    def __init__(self, chunks: Iterable[bytes],
                 on_free: Optional[Callable[[], None]] = None) -> None:
        self._source: Optional[Iterator[bytes]] = iter(chunks)
        self._chunks: List[bytes] = []
        self._starts: List[int] = []        # offset of each chunk's first byte
        self._size = 0
        self._failed: Optional[str] = None  # what the renderer raised (no traceback: no cycle)
        self._mu = threading.Lock()
        if on_free is not None:
            # The last reader is gone: free the text, then call on_free (which may hand the
            # pages back to the system).  A finalizer, not __del__: it runs once the weak
            # references are cleared, so SharedSnapshots can never hand a dying rendering to
            # a new reader while on_free lets the GIL go (__del__ runs while they still
            # resolve: that reader got a resurrected rendering without its text, and EIO).
            # It holds the chunk list and the source, not the rendering, to empty them first.
            finalizer = weakref.finalize(self, _free_text, self._chunks, self._source, on_free)
            finalizer.atexit = False
        self._handed_over = False

    def _let_go(self) -> None:
        """Drop the renderer, done or failed, closing it if it can be (forked children are
        killed and reaped; a rendering that dies with children still at work has them
        killed when its source goes: ForkedChunks.__del__)."""
        source, self._source = self._source, None
        _close(source)

    def hand_over(self, take_rest: Callable[[Iterator[bytes]], Optional[Iterator[bytes]]]) -> None:
        """Once: take_rest(the renderer) may return another source of the rest of the
        text, which then replaces it (None: the renderer goes on).  Called with no chunk
        being made, so the new source starts where the renderer stands."""
        with self._mu:
            if self._handed_over or self._source is None:
                return
            self._handed_over = True
            rest = take_rest(self._source)
            if rest is not None:
                self._source = rest

    def _wants(self, end: Optional[int]) -> bool:
        return self._source is not None and (end is None or self._size < end)

    def _produce(self, end: Optional[int]) -> int:
        """Pull chunks until `end` bytes exist (None: all of them); the size produced."""
        while self._wants(end) and self.produce_one(end):
            pass
        if self._failed is not None and (end is None or self._size < end):
            raise RuntimeError(f"the renderer failed earlier: {self._failed}")
        return self._size

    def produce_one(self, end: Optional[int]) -> bool:
        """Pull one chunk if fewer than `end` bytes exist; whether more are still wanted."""
        with self._mu:
            if not self._wants(end):
                return False
            try:
                chunk = next(self._source, None)
            except BaseException as exc:
                self._failed = repr(exc)
                self._let_go()
                raise
            if chunk is None:
                self._let_go()                  # done: let the renderer and its snapshot go
            elif chunk:
                self._chunks.append(chunk)
                self._starts.append(self._size)
                self._size += len(chunk)        # last: a reader that sees the size sees the chunk
            return self._wants(end)

    @property
    def produced(self) -> int:
        return self._size

    def read(self, offset: int, size: int) -> bytes:
        end = offset + size
        produced = self._produce(end)
        chunks, starts = self._chunks, self._starts      # append-only: safe to read now
        if offset >= produced or size <= 0:
            return b""
        first = bisect.bisect_right(starts, offset) - 1
        last = bisect.bisect_left(starts, end) - 1
        if first == last:
            start = starts[first]
            return chunks[first][offset - start:end - start]
        # One copy: memoryviews of the pieces, joined.
        pieces = [memoryview(chunks[first])[offset - starts[first]:]]
        pieces.extend(chunks[first + 1:last])
        pieces.append(memoryview(chunks[last])[:end - starts[last]])
        return b"".join(pieces)

    def whole(self) -> bytes:
        """All of it (rendering the rest)."""
        self._produce(None)
        return b"".join(self._chunks)


class ReadAhead:
    """One thread that renders the next reads of sequential readers while the kernel hands
    them the last one.

    Serving a listing read by read puts the steps in series: the FUSE request, the render
    of its bytes, the reply, the kernel's copy to the reader, the reader's next request.
    A reader that has read on past its first read (ProcFs.read asks only then, so `head -1`
    costs nothing more) gets its next READ_AHEAD_READS reads rendered here, so that with a
    second CPU a `cat` costs about the render alone.  A job holds its Rendering only by a
    weak reference, and only while one chunk is made: a reader that closes frees its text
    as before, and the job stops.  The bound (a few reads past the furthest read) is what
    the reader would have rendered anyway.

    `take_rest` (forkrender.fork_rest in the mount) is offered each rendering read ahead,
    once (Rendering.hand_over), before anything is rendered ahead for it: a big listing's
    rest is then rendered by forked children, and this thread reads their pipes instead.
    It runs here because this thread lives as long as the daemon: a child is killed when
    the thread that forked it ends, and libfuse's threads come and go.
    """

    def __init__(self, take_rest: Optional[Callable[[Iterator[bytes]],
                                                    Optional[Iterator[bytes]]]] = None) -> None:
        self._jobs: Deque[Tuple["weakref.ref[Rendering]", int]] = collections.deque()
        self._wake = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        self._busy = False
        self._take_rest = take_rest

    def request(self, rendering: Rendering, end: int) -> None:
        """Produce `rendering` up to `end` bytes, in the background."""
        with self._wake:
            self._jobs.append((weakref.ref(rendering), end))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="read-ahead",
                                                daemon=True)
                self._thread.start()
            self._wake.notify()

    def idle(self) -> bool:
        """No job waiting or running (tests)."""
        with self._wake:
            return not self._jobs and not self._busy

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._jobs:
                    self._busy = False
                    self._wake.wait()
                ref, end = self._jobs.popleft()
                self._busy = True
            try:
                self._produce(ref, end)
            except Exception:               # the reader meets it again (Rendering._failed)
                log.exception("rendering ahead failed")

    def _produce(self, ref: "weakref.ref[Rendering]", end: int) -> None:
        rendering = ref()
        if rendering is not None and self._take_rest is not None:
            rendering.hand_over(self._take_rest)
        del rendering
        while True:
            rendering = ref()
            if rendering is None:
                return
            more = rendering.produce_one(end)
            del rendering                   # a reader's release frees it, even here
            if not more:
                return


class SharedSnapshots:
    """The latest Rendering of each listing, shared by the readers that open it within
    `ttl` seconds of its first read, for as long as one of them holds it.

    Only a weak reference is kept here: a finished reader's rendering (a 262,144-entry
    listing is 40 MB) is freed when the last handle reading it is released, not kept
    until the next reader comes, and its pages go back to the system (one malloc arena,
    malloc_trim: the daemon's RSS after a listing is what it was before).  `render(node)`
    returns the listing's text as bytes or as an iterable of byte chunks (the mount passes
    the driver's render_chunks of the node's render function).
    """

    def __init__(self, render: Callable[[Node], Union[bytes, Iterable[bytes]]],
                 ttl: float = SNAPSHOT_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self._render = render
        self._ttl = ttl
        self._clock = clock
        self._mu = threading.Lock()
        self._latest: Dict[str, Tuple[float, "weakref.ref[Rendering]"]] = {}
        self._render_mu: Dict[str, threading.Lock] = {}
        self.renders = 0
        _one_malloc_arena()             # before the mount's threads exist (see there)

    def _shared(self, view: str) -> Optional[Rendering]:
        """The view's latest rendering if it is younger than the TTL and still held."""
        latest = self._latest.get(view)
        if latest is None or self._clock() - latest[0] >= self._ttl:
            return None
        return latest[1]()

    def get(self, node: Node) -> Rendering:
        view = node.path
        with self._mu:
            render_mu = self._render_mu.setdefault(view, threading.Lock())
            shared = self._shared(view)
        if shared is not None:
            return shared
        with render_mu:                 # one render at a time per view; others reuse it
            with self._mu:
                shared = self._shared(view)
            if shared is not None:
                return shared
            taken = self._clock()
            data = self._render(node)
            if isinstance(data, bytes):
                data = (data,)
            elif isinstance(data, (str, bytearray, memoryview)):
                raise TypeError(f"render({view!r}) returned {type(data).__name__}, not bytes")
            rendering = Rendering(data, on_free=_give_back_memory)
            with self._mu:
                self._latest[view] = (taken, weakref.ref(rendering))
                self.renders += 1
            return rendering


def _glibc(name: str) -> Optional[Callable[..., int]]:
    """A glibc function, or None where there is none (another libc)."""
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _glibc("malloc_trim")
_MALLOPT = _glibc("mallopt")
M_ARENA_MAX = -8            # mallopt(): how many malloc arenas the process may have


def _one_malloc_arena() -> None:
    """Make every thread started from now on allocate from the main malloc arena.

    A listing's chunks are allocated by the FUSE thread that reads them; in a thread's own
    arena freed memory stays mapped (RSS) even after malloc_trim().  One arena costs
    nothing here: the threads take turns under the GIL anyway."""
    if _MALLOPT is not None:
        _MALLOPT(M_ARENA_MAX, 1)


_TRIMMER = DeferredTrim(lambda: _MALLOC_TRIM(0)) if _MALLOC_TRIM is not None else None


def _give_back_memory() -> None:
    """A rendering's text was freed: hand its pages back to the system (malloc_trim(0)),
    soon, on a thread of its own (procfs_ct/memtrim.py says why)."""
    if _TRIMMER is not None:
        _TRIMMER.request()


@dataclass
class Handle:
    """One open file.  For knobs it follows the file position the kernel would have.

    FUSE tells each read and write its offset: the descriptor's position as the VFS keeps
    it (advanced by what each call returned), an explicit pread/pwrite offset, or, for an
    O_APPEND write, the inode's cached size.  The kernel's procfs position can differ (the
    u8 handler does not advance it), so the handle keeps both: `fuse_next` is the offset
    FUSE sends for the next sequential call, `position` the kernel's position then.  A
    call at `fuse_next` (or any O_APPEND write) is sequential and uses `position`; any
    other offset came from pread/pwrite or lseek and is the kernel's position as well.
    Guessed wrong, because FUSE does not say: a pread/pwrite or lseek to exactly
    `fuse_next` after a u8 write, and a pwrite or lseek on an O_APPEND descriptor.
    """
    node: Node
    append: bool = False
    snapshot: Optional[Rendering] = None
    fuse_next: int = 0
    position: int = 0
    request: bytes = b""            # CONTROL: what was written since the last reply
    reply: bytes = b""              # CONTROL: the answer this handle reads back

    def kernel_position(self, offset: int, appending: bool = False) -> int:
        return self.position if appending or offset == self.fuse_next else offset

    def moved(self, offset: int, returned: int, position: int) -> None:
        """After a call at FUSE `offset` that returned `returned` bytes and left the
        kernel's position at `position`."""
        self.fuse_next = offset + returned
        self.position = position


class ProcFs(Operations):
    """Operations for one mount: `tree` says what exists, `knobs` holds the values,
    `snapshots` renders the listings.  `on_ready` runs once the kernel has mounted us."""

    use_ns = True

    def __init__(self, tree: Tree, knobs: Any, snapshots: SharedSnapshots,
                 on_ready: Optional[Callable[[], None]] = None,
                 control: Optional[Callable[[Node, bytes], bytes]] = None) -> None:
        self._tree = tree
        self._control = control       # applies a CONTROL node's request (under the engine lock)
        self._knobs = knobs
        self._snapshots = snapshots
        self._read_ahead = ReadAhead(take_rest=forkrender.fork_rest)
        self._on_ready = on_ready
        self._handles: Dict[int, Handle] = {}
        self._handles_mu = threading.Lock()
        self._fh_counter = itertools.count(1)
        self._born_ns = time.time_ns()

    # -- helpers (private names: a public name could collide with an operation) ----------
    def _node(self, path: Optional[str]) -> Node:
        node = self._tree.lookup(path)
        if node is None:
            raise refuse(errno.ENOENT)
        return node

    def _handle(self, fh: Any) -> Handle:
        with self._handles_mu:
            handle = self._handles.get(fh)
        if handle is None:
            raise refuse(errno.EBADF)
        return handle

    def _content(self, node: Node) -> Rendering:
        if node.kind == LISTING:
            return self._snapshots.get(node)
        return Rendering((self._knobs.read_text(node.knob).encode("ascii"),))

    # -- lifecycle -----------------------------------------------------------------------
    @guarded
    def init(self, path: str) -> None:
        log.info("mounted: %d files", len(self._tree.files()))
        if self._on_ready is not None:
            self._on_ready()

    @guarded
    def destroy(self, path: str) -> None:
        forkrender.stop_all()               # no reader is left for the render children
        log.info("unmounted")

    # -- metadata ------------------------------------------------------------------------
    @guarded
    def getattr(self, path: str, fh: Any = None) -> Dict[str, int]:
        node = self._node(path)
        if node.kind == DIR:
            subdirs = sum(1 for name in self._tree.children.get(node.path, ())
                          if self._tree.nodes[_join(node.path, name)].kind == DIR)
            mode, nlink = stat.S_IFDIR | node.mode, 2 + subdirs
        else:
            mode, nlink = stat.S_IFREG | node.mode, 1
        born = self._born_ns
        return {"st_mode": mode, "st_nlink": nlink, "st_uid": 0, "st_gid": 0,
                "st_size": 0, "st_blocks": 0, "st_blksize": 1024,
                "st_atime": born, "st_mtime": born, "st_ctime": born}

    @guarded
    def access(self, path: str, amode: int) -> int:
        node = self._node(path)
        if amode & os.W_OK and not node.writable:
            raise refuse(errno.EACCES)
        if amode & os.X_OK and node.kind != DIR:
            raise refuse(errno.EACCES)
        return 0

    @guarded
    def statfs(self, path: str) -> Dict[str, int]:
        # /proc reports a 4 KiB block size, 255-byte names, and zero for every count.
        return {"f_bsize": 4096, "f_frsize": 4096, "f_namemax": 255}

    @guarded
    def readlink(self, path: str) -> str:
        self._node(path)
        raise refuse(errno.EINVAL)          # nothing here is a symlink

    # -- directories ---------------------------------------------------------------------
    @guarded
    def opendir(self, path: str) -> int:
        if self._node(path).kind != DIR:
            raise refuse(errno.ENOTDIR)
        return 0

    @guarded
    def readdir(self, path: str, fh: Any) -> list:
        node = self._node(path)
        if node.kind != DIR:
            raise refuse(errno.ENOTDIR)
        entries: list = [(".", {"st_mode": stat.S_IFDIR | node.mode}, 0),
                         ("..", {"st_mode": stat.S_IFDIR | 0o555}, 0)]
        for name in self._tree.children.get(node.path, ()):
            child = self._tree.nodes[_join(node.path, name)]
            kind = stat.S_IFDIR if child.kind == DIR else stat.S_IFREG
            entries.append((name, {"st_mode": kind | child.mode}, 0))
        return entries

    @guarded
    def releasedir(self, path: str, fh: Any) -> int:
        return 0

    @guarded
    def fsyncdir(self, path: str, datasync: int, fh: Any) -> int:
        raise refuse(errno.EINVAL)          # procfs has no fsync

    # -- files ---------------------------------------------------------------------------
    @guarded
    def open(self, path: str, flags: int) -> int:
        node = self._node(path)
        if node.kind == DIR:
            raise refuse(errno.EISDIR)
        wants_write = (flags & os.O_ACCMODE) != os.O_RDONLY or flags & os.O_TRUNC
        if wants_write and not node.writable:
            # default_permissions lets root through the mode bits; /proc still says no.
            raise refuse(errno.EACCES)
        if flags & os.O_DIRECT:
            raise refuse(errno.EINVAL)      # do_dentry_open: procfs files cannot do O_DIRECT
        fh = next(self._fh_counter)
        with self._handles_mu:
            self._handles[fh] = Handle(node, append=bool(flags & os.O_APPEND))
        return fh

    @guarded
    def read(self, path: str, size: int, offset: int, fh: Any) -> bytes:
        handle = self._handle(fh)
        if handle.node.kind == KNOB:
            position = handle.kernel_position(offset)
            data = self._knobs.read_at(handle.node.knob, size, position)
            handle.moved(offset, len(data), position + len(data))
            return data
        if handle.node.kind == CONTROL:
            if handle.request and self._control is not None:
                handle.reply, handle.request = self._control(handle.node, handle.request), b""
            return handle.reply[offset:offset + size]
        if offset == 0 or handle.snapshot is None:
            handle.snapshot = self._content(handle.node)
        snapshot = handle.snapshot
        data = snapshot.read(offset, size)
        ahead = offset + (1 + READ_AHEAD_READS) * size
        if offset and len(data) == size and snapshot.produced < ahead:
            self._read_ahead.request(snapshot, ahead)   # it reads on: make its next reads now
        return data

    @guarded
    def write(self, path: str, data: bytes, offset: int, fh: Any) -> int:
        handle = self._handle(fh)
        node = handle.node
        if not node.writable:
            raise refuse(errno.EACCES)
        if node.kind == CONTROL:            # one request, possibly in several writes
            handle.request = handle.request[:offset] + data
            return len(data)
        position = handle.kernel_position(offset, appending=handle.append)
        try:
            written = self._knobs.write_at(node.knob, data, position)
        except KnobWriteError as exc:
            log.debug("write %r to %s refused: %s", data[:64], node.path, exc)
            raise refuse(exc.errno)
        handle.moved(offset, written.count, position + written.advance)
        return written.count

    @guarded
    def truncate(self, path: str, length: int, fh: Any = None) -> int:
        # `echo N > knob` truncates before it writes (libfuse2 sends it separately).
        node = self._handle(fh).node if fh else self._node(path)
        if node.kind == DIR:
            raise refuse(errno.EISDIR)
        if not node.writable:
            raise refuse(errno.EACCES)
        return 0

    # No flush: writes are applied by write() (bash flushes twice), and procfs has no
    # flush either.  None (not merely absent: fusepy would register the base class's)
    # leaves libfuse's callback empty, so libfuse answers the kernel's first FLUSH with
    # ENOSYS and the kernel sends no more: close() is not one more round trip through the
    # GIL (OPEN, WRITE, FLUSH were 3 hand-offs, now 2; bench/trace/knobtrace.py).
    flush = None

    @guarded
    def release(self, path: str, fh: Any) -> int:
        with self._handles_mu:
            self._handles.pop(fh, None)
        return 0

    @guarded
    def fsync(self, path: str, datasync: int, fh: Any) -> int:
        raise refuse(errno.EINVAL)          # procfs has no fsync

    @guarded
    def ioctl(self, path: str, cmd: int, arg: Any, fh: Any, flags: int, data: Any) -> int:
        raise refuse(errno.ENOTTY)

    # -- changes to the tree: refused as /proc refuses them ------------------------------
    @guarded
    def create(self, path: str, mode: int, fi: Any = None) -> int:
        raise refuse(errno.EEXIST if self._tree.lookup(path) else errno.ENOENT)

    @guarded
    def mknod(self, path: str, mode: int, dev: int) -> int:
        raise refuse(errno.EEXIST if self._tree.lookup(path) else errno.ENOENT)

    @guarded
    def mkdir(self, path: str, mode: int) -> int:
        raise refuse(errno.EEXIST if self._tree.lookup(path) else errno.ENOENT)

    @guarded
    def symlink(self, target: str, source: str) -> int:
        raise refuse(errno.EEXIST if self._tree.lookup(target) else errno.ENOENT)

    @guarded
    def link(self, target: str, source: str) -> int:
        raise refuse(errno.EEXIST if self._tree.lookup(target) else errno.ENOENT)

    @guarded
    def unlink(self, path: str) -> int:
        node = self._node(path)
        if node.kind == DIR:
            raise refuse(errno.EISDIR)
        raise refuse(node.removal_errno)

    @guarded
    def rmdir(self, path: str) -> int:
        node = self._node(path)
        if node.kind != DIR:
            raise refuse(errno.ENOTDIR)
        raise refuse(node.removal_errno)

    @guarded
    def rename(self, old: str, new: str) -> int:
        self._node(old)
        # Observed: mv onto a new name is ENOENT (the lookup fails); onto an existing
        # file it is the subtree's removal errno.
        target = self._tree.lookup(new)
        raise refuse(errno.ENOENT if target is None else target.removal_errno)

    @guarded
    def chmod(self, path: str, mode: int) -> int:
        self._node(path)
        raise refuse(errno.EPERM)

    @guarded
    def chown(self, path: str, uid: int, gid: int) -> int:
        self._node(path)
        raise refuse(errno.EPERM)

    @guarded
    def utimens(self, path: str, times: Any = None) -> int:
        self._node(path)
        return 0                            # `touch` of an existing /proc file succeeds

    # -- extended attributes: procfs has none ---------------------------------------------
    @guarded
    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        self._node(path)
        # ENOSYS, not EOPNOTSUPP: the kernel then answers every later getxattr itself, with
        # EOPNOTSUPP, so callers see the same; and an O_TRUNC open (`echo N > knob`) no
        # longer costs a round trip for the security.capability check of its truncate.
        raise refuse(errno.ENOSYS)

    @guarded
    def setxattr(self, path: str, name: str, value: bytes, options: int,
                 position: int = 0) -> int:
        self._node(path)
        raise refuse(errno.EOPNOTSUPP)

    @guarded
    def listxattr(self, path: str) -> list:
        self._node(path)
        return []

    @guarded
    def removexattr(self, path: str, name: str) -> int:
        self._node(path)
        raise refuse(errno.EOPNOTSUPP)


def _join(directory: str, name: str) -> str:
    return f"{directory}/{name}" if directory else name


def mount_options(allow_other: bool, auto_unmount: bool = True) -> Dict[str, Any]:
    """Keyword options for FUSE(): the spec's measured set (§1, §3, §7, §9), and the
    kernel caching names and attributes of the tree (STATIC_TREE_TIMEOUT)."""
    options: Dict[str, Any] = {
        "foreground": True,             # daemonising is done by cmd_mount, before threads
        "direct_io": True,              # size-0 files read in full; no stale page cache
        "default_permissions": True,    # the kernel enforces the mode bits
        "fsname": "procfs-ct",
        "subtype": "procfs-ct",         # fstype "fuse.procfs-ct" in /proc/self/mountinfo
        "entry_timeout": STATIC_TREE_TIMEOUT,
        "attr_timeout": STATIC_TREE_TIMEOUT,
    }
    if LIBFUSE_MAJOR == 2:
        # `echo N > knob` opens with O_TRUNC: without this the kernel sends a SETATTR
        # (truncate) before the OPEN, one more round trip; with it open() sees O_TRUNC and
        # refuses a read-only file as before.  libfuse 3 turns it on by itself.
        options["atomic_o_trunc"] = True
    if allow_other:
        options["allow_other"] = True
    if auto_unmount:
        options["auto_unmount"] = True  # a crash leaves no "Transport endpoint" mount
    return options
