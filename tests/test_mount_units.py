"""The FUSE layer's parts without a mount: the tree table, the shared snapshots, the
Operations object called directly, and the engine thread on a fake engine."""
from __future__ import annotations

import errno
import gc
import itertools
import os
import sys
import threading
import time
import weakref

import pytest

from engine.knobs import KNOBS, KnobValues
from conftest import FakeClock, wait_until
from enginehelp import T0
import procfs_ct.fs
from procfs_ct.driver import EngineDriver
from procfs_ct.fs import ProcFs, Rendering, SharedSnapshots
from procfs_ct.fuse_compat import FuseOSError
from procfs_ct.tree import DIR, KNOB, LISTING, PROC_VIEWS, Node, Tree, build_tree, describe

GiB = 1 << 30
TREE = build_tree(PROC_VIEWS, KNOBS)
VIEW_PATHS = [view.path for view in PROC_VIEWS]

# Every callback name either binding registers when an attribute carries it (spec/fuse.md §11).
OPERATION_NAMES = {
    "access", "bmap", "chmod", "chown", "create", "destroy", "flush", "fsync", "fsyncdir",
    "getattr", "getxattr", "init", "ioctl", "link", "listxattr", "lock", "mkdir", "mknod",
    "open", "opendir", "read", "readdir", "readlink", "release", "releasedir", "removexattr",
    "rename", "rmdir", "setxattr", "statfs", "symlink", "truncate", "unlink", "utimens",
    "write", "poll", "flock", "fallocate", "read_buf", "write_buf"}


def errno_of(call, *args) -> int:
    with pytest.raises(FuseOSError) as caught:
        call(*args)
    return caught.value.errno


# -- the tree ---------------------------------------------------------------------------------
def test_every_alias_of_every_knob_is_a_file_with_the_kernel_mode():
    """DESIGN: writable knobs 0644, read-only ones (count, buckets) 0444, every alias present."""
    for knob in KNOBS:
        for path in knob.paths:
            node = TREE.nodes[path]
            assert (node.kind, node.knob) == (KNOB, knob.name)
            assert node.mode == (0o444 if knob.readonly else 0o644), path


def test_listings_are_0440_and_statistics_0444_as_in_proc():
    """spec/conntrack.md §1.3: ip_conntrack, nf_conntrack and the expect files are 0440
    root:root; /proc/net/stat/* is 0444 (observed: -r--r----- on /proc/net/nf_conntrack)."""
    modes = {view: TREE.nodes[view].mode for view in VIEW_PATHS}
    assert modes == {"net/ip_conntrack": 0o440, "net/ip_conntrack_expect": 0o440,
                     "net/nf_conntrack": 0o440, "net/nf_conntrack_expect": 0o440,
                     "net/stat/ip_conntrack": 0o444, "net/stat/nf_conntrack": 0o444}
    assert all(TREE.nodes[v].kind == LISTING for v in VIEW_PATHS)


def test_directories_are_implied_by_paths_and_are_0555():
    dirs = sorted(p for p, n in TREE.nodes.items() if n.kind == DIR)
    assert dirs == ["", "net", "net/stat", "sys", "sys/net", "sys/net/ipv4",
                    "sys/net/ipv4/netfilter", "sys/net/netfilter"]
    assert all(TREE.nodes[d].mode == 0o555 for d in dirs)
    assert TREE.children[""] == ("net", "sys")
    assert TREE.children["sys/net"] == ("ipv4", "netfilter", "nf_conntrack_max")
    assert "ip_ct_tcp_timeout_established" in TREE.children["sys/net/ipv4/netfilter"]


def test_two_nodes_on_one_path_are_refused():
    with pytest.raises(ValueError):
        Tree([Node("", DIR, 0o555), Node("a", KNOB, 0o644, knob="x"),
              Node("a", KNOB, 0o644, knob="y")])


def test_removal_errno_is_eacces_under_sys_and_eperm_under_net():
    """Observed on this machine: rm of /proc/sys/... is EACCES, of /proc/net/... EPERM."""
    assert TREE.nodes["sys/net/netfilter/nf_conntrack_max"].removal_errno == errno.EACCES
    assert TREE.nodes["sys"].removal_errno == errno.EACCES
    assert TREE.nodes["net/nf_conntrack"].removal_errno == errno.EPERM
    assert TREE.nodes[""].removal_errno == errno.EPERM


def test_help_text_names_every_file_served():
    text = describe(TREE)
    for node in TREE.files():
        assert node.path in text


# -- shared snapshots ---------------------------------------------------------------------------
def test_readers_within_the_ttl_share_one_render():
    """spec/fuse.md §5: a shared TTL-cached bytes object keeps memory flat under many readers."""
    clock, renders = FakeClock(), []
    snaps = SharedSnapshots(lambda node: renders.append(node) or f"r{len(renders)}".encode(),
                            ttl=0.5, clock=clock)
    modern, old = TREE.nodes["net/nf_conntrack"], TREE.nodes["net/ip_conntrack"]
    first = snaps.get(modern)
    clock.t += 0.4
    assert snaps.get(modern) is first
    clock.t += 0.2
    assert snaps.get(modern).whole() == b"r2"
    assert snaps.get(old).whole() == b"r3"               # one cache entry per view
    assert renders == [modern, modern, old]


def test_concurrent_first_readers_wait_for_one_render():
    started, release, calls = threading.Event(), threading.Event(), itertools.count()

    def slow_render(node: Node) -> bytes:
        next(calls)
        started.set()
        release.wait(5)
        return b"table\n"

    snaps = SharedSnapshots(slow_render, ttl=10)
    results = []                    # each reader keeps its rendering, as its handle does
    node = TREE.nodes["net/nf_conntrack"]
    threads = [threading.Thread(target=lambda: results.append(snaps.get(node)))
               for _ in range(4)]
    for t in threads:
        t.start()
    started.wait(5)
    time.sleep(0.05)
    release.set()
    for t in threads:
        t.join(5)
    assert [r.whole() for r in results] == [b"table\n"] * 4
    assert next(calls) == 1                                  # rendered once


def test_a_freed_rendering_lets_its_text_go_before_it_calls_on_free():
    """on_free hands the pages back to the system: the chunks must be gone by then."""
    chunk = b"line\n" * 1000
    held = sys.getrefcount(chunk)
    seen = []
    rendering = Rendering([chunk], on_free=lambda: seen.append(sys.getrefcount(chunk)))
    assert rendering.whole() == chunk and sys.getrefcount(chunk) > held
    del rendering
    gc.collect()
    assert seen == [held]                                   # called once, text already let go


def test_a_rendering_no_reader_holds_is_freed_and_the_next_reader_renders_afresh():
    """A finished `cat` of a big listing must not leave its text in the daemon until the
    next reader comes: only the readers hold a rendering."""
    clock, renders = FakeClock(), []
    snaps = SharedSnapshots(lambda view: renders.append(view) or f"r{len(renders)}".encode(),
                            ttl=10, clock=clock)
    node = TREE.nodes["net/nf_conntrack"]
    first = snaps.get(node)
    assert first.whole() == b"r1"
    gone = weakref.ref(first)
    del first
    gc.collect()
    assert gone() is None
    assert snaps.get(node).whole() == b"r2"                 # within the TTL, but released



def test_a_reader_that_comes_while_a_rendering_is_being_freed_gets_a_fresh_one(monkeypatch):
    """on_free (malloc_trim through ctypes) lets the GIL go while the last reader's rendering
    is being freed: a reader that opens the view just then must not be handed the dying
    rendering, whose text is already gone (it read as EIO: IndexError in read())."""
    clock, renders, during_free, opened = FakeClock(), [], [], []
    snaps = SharedSnapshots(
        lambda view: renders.append(view) or (b"line %d\n" % len(renders)) * 5000,
        ttl=10, clock=clock)
    node = TREE.nodes["net/nf_conntrack"]

    def another_reader_opens() -> None:       # what another FUSE thread can do just then
        if not opened:
            opened.append(True)                # once: its own rendering is freed here too
            during_free.append(snaps.get(node).read(0, 65536))

    monkeypatch.setattr(procfs_ct.fs, "_give_back_memory", another_reader_opens)
    first = snaps.get(node)
    assert first.read(0, 7) == b"line 1\n"
    del first
    gc.collect()
    assert during_free == [(b"line 2\n" * 5000)[:65536]]   # a whole, fresh rendering

# -- the Operations object, called directly --------------------------------------------------------
class CountingSnapshots:
    def __init__(self) -> None:
        self.generation = 0

    def get(self, node: Node) -> Rendering:
        self.generation += 1
        return Rendering([f"gen {self.generation} of {node.path}\n".encode(), b"second line\n"])


@pytest.fixture
def ops():
    knobs = KnobValues("tutorial", 24 * GiB)
    return ProcFs(TREE, knobs, CountingSnapshots())


def test_a_rendering_pulls_only_the_chunks_a_read_needs_and_never_changes():
    pulled = []

    def chunks():
        for n in range(5):
            pulled.append(n)
            yield f"line {n}\n".encode()

    rendering = Rendering(chunks())
    assert rendering.read(0, 3) == b"lin"
    assert pulled == [0]                        # head -1 waits for one chunk, not the table
    assert rendering.read(5, 10) == b"0\nline 1\nl"
    assert pulled == [0, 1, 2]
    assert rendering.read(0, 7) == b"line 0\n"  # produced text stays as it was
    assert rendering.read(33, 100) == b"4\n"
    assert rendering.read(100, 10) == b""
    assert rendering.whole() == b"".join(f"line {n}\n".encode() for n in range(5))


def test_offset_zero_renders_again_other_offsets_reuse_the_handle_snapshot(ops):
    """spec/fuse.md §4 (LXCFS rule): fresh at offset 0, the handle's snapshot elsewhere."""
    fh = ops.open("/net/nf_conntrack", os.O_RDONLY)
    assert ops.read("/net/nf_conntrack", 6, 0, fh) == b"gen 1 "
    assert ops.read("/net/nf_conntrack", 100, 6, fh) == b"of net/nf_conntrack\nsecond line\n"
    assert ops.read("/net/nf_conntrack", 100, 200, fh) == b""
    assert ops.read("/net/nf_conntrack", 5, 0, fh) == b"gen 2"
    other = ops.open("/net/nf_conntrack", os.O_RDONLY)
    assert ops.read("/net/nf_conntrack", 5, 4, other) == b"3 of "  # first read at offset 4


def test_knob_reads_value_and_newline_and_alias_writes_share_it(ops):
    fh = ops.open("/sys/net/ipv4/netfilter/ip_ct_udp_timeout", os.O_WRONLY)
    assert ops.write("/sys/net/ipv4/netfilter/ip_ct_udp_timeout", b"45\n", 0, fh) == 3
    rd = ops.open("/sys/net/netfilter/nf_conntrack_udp_timeout", os.O_RDONLY)
    assert ops.read("/sys/net/netfilter/nf_conntrack_udp_timeout", 4096, 0, rd) == b"45\n"


def test_bad_value_is_einval_and_keeps_the_old_value(ops):
    """spec/conntrack.md §3.4: `abc` is EINVAL, value unchanged."""
    path = "/sys/net/netfilter/nf_conntrack_max"
    before = ops._knobs["max"]
    fh = ops.open(path, os.O_WRONLY)
    assert errno_of(ops.write, path, b"abc\n", 0, fh) == errno.EINVAL
    assert ops._knobs["max"] == before


def test_write_at_a_nonzero_offset_is_ignored_but_reported_written(ops):
    """spec/conntrack.md §3.4: sysctl_writes_strict=1 ignores writes past offset 0."""
    path = "/sys/net/netfilter/nf_conntrack_max"
    before = ops._knobs["max"]
    fh = ops.open(path, os.O_WRONLY)
    assert ops.write(path, b"77\n", 3, fh) == 3
    assert ops._knobs["max"] == before


def test_read_only_files_refuse_write_opens_and_truncate_with_eacces(ops):
    """spec/fuse.md §6: a 0444 file opened for writing is EACCES even for root."""
    for path in ("/sys/net/netfilter/nf_conntrack_count", "/net/nf_conntrack",
                 "/net/stat/nf_conntrack"):
        assert errno_of(ops.open, path, os.O_WRONLY) == errno.EACCES
        assert errno_of(ops.open, path, os.O_RDWR) == errno.EACCES
        assert errno_of(ops.open, path, os.O_RDONLY | os.O_TRUNC) == errno.EACCES
        assert errno_of(ops.truncate, path, 0) == errno.EACCES
    assert ops.truncate("/sys/net/netfilter/nf_conntrack_max", 0) == 0


@pytest.mark.parametrize("call, args, expected", [
    ("create", ("/sys/net/netfilter/new", 0o644), errno.ENOENT),
    ("mknod", ("/net/new", 0o644, 0), errno.ENOENT),
    ("mkdir", ("/net/newdir", 0o755), errno.ENOENT),
    ("symlink", ("/net/link", "x"), errno.ENOENT),
    ("link", ("/net/hard", "/net/nf_conntrack"), errno.ENOENT),
    ("unlink", ("/sys/net/netfilter/nf_conntrack_max",), errno.EACCES),
    ("unlink", ("/net/nf_conntrack",), errno.EPERM),
    ("rmdir", ("/sys/net/netfilter",), errno.EACCES),
    ("rmdir", ("/net/stat",), errno.EPERM),
    ("rename", ("/net/nf_conntrack", "/net/other"), errno.ENOENT),
    ("rename", ("/net/nf_conntrack", "/net/ip_conntrack"), errno.EPERM),
    ("rename", ("/sys/net/nf_conntrack_max", "/sys/net/netfilter/nf_conntrack_count"),
     errno.EACCES),
    ("chmod", ("/net/nf_conntrack", 0o600), errno.EPERM),
    ("chown", ("/sys/net/netfilter/nf_conntrack_max", 65534, 65534), errno.EPERM),
    ("getxattr", ("/net/nf_conntrack", "user.x"), errno.ENOSYS),   # the kernel: EOPNOTSUPP
    ("setxattr", ("/net/nf_conntrack", "user.x", b"1", 0), errno.EOPNOTSUPP),
    ("removexattr", ("/net/nf_conntrack", "user.x"), errno.EOPNOTSUPP),
    ("readlink", ("/net/nf_conntrack",), errno.EINVAL),
    ("getattr", ("/net/nope",), errno.ENOENT),
    ("open", ("/net", os.O_RDONLY), errno.EISDIR),
    ("fsync", ("/net/nf_conntrack", 0, 1), errno.EINVAL),
])
def test_changes_to_the_tree_get_the_errno_proc_gives(ops, call, args, expected):
    """spec/fuse.md §6 table, re-observed on this machine's /proc (6.18)."""
    assert errno_of(getattr(ops, call), *args) == expected


def test_touch_of_an_existing_file_and_listxattr_succeed(ops):
    assert ops.utimens("/net/nf_conntrack", None) == 0
    assert ops.listxattr("/sys/net/netfilter/nf_conntrack_max") == []


def test_files_report_size_zero_root_owner_and_mode(ops):
    """spec/fuse.md §3: st_size 0 with direct_io is the only combination every tool reads."""
    st = ops.getattr("/sys/net/netfilter/nf_conntrack_count")
    assert (st["st_size"], st["st_uid"], st["st_gid"], st["st_mode"]) == (0, 0, 0, 0o100444)
    st = ops.getattr("/net/stat")
    assert st["st_mode"] == 0o040555 and st["st_nlink"] == 2
    assert ops.getattr("/")["st_nlink"] == 4                 # ., .., net, sys


def test_an_exception_inside_a_callback_is_answered_eio_not_einval(ops):
    """spec/fuse.md §11.2: the bindings turn exceptions into EINVAL ("bad value"); we say EIO."""
    class Broken:
        def get(self, view):
            raise RuntimeError("renderer bug")
    broken = ProcFs(TREE, ops._knobs, Broken())
    fh = broken.open("/net/nf_conntrack", os.O_RDONLY)
    assert errno_of(broken.read, "/net/nf_conntrack", 10, 0, fh) == errno.EIO


def test_system_exit_inside_a_callback_does_not_escape(ops):
    """spec/fuse.md §2: SystemExit in a fusepy callback gives a garbage reply; never let it out."""
    class Exiting:
        def get(self, view):
            raise SystemExit(3)
    exiting = ProcFs(TREE, ops._knobs, Exiting())
    fh = exiting.open("/net/nf_conntrack", os.O_RDONLY)
    assert errno_of(exiting.read, "/net/nf_conntrack", 10, 0, fh) == errno.EIO


def test_no_attribute_is_named_like_a_fuse_operation(ops):
    """spec/fuse.md §11.1: `self.lock = Lock()` became the POSIX lock callback."""
    assert not OPERATION_NAMES & set(vars(ops))
    assert ops.use_ns is True


# -- the engine thread --------------------------------------------------------------------------
class FakeEngine:
    def __init__(self, fail_on: bytes = b"") -> None:
        self.fed, self.advanced = [], []
        self.fail_on = fail_on

    def feed_frame(self, ts, linktype, frame):
        if frame == self.fail_on:
            raise ValueError("malformed")
        self.fed.append((ts, frame))

    def advance(self, now, budget=None):
        self.advanced.append(now)
        return True                 # done: nothing left for another slice


WAIT = 10.0          # seconds a condition may take on a loaded machine before we give up


def start_driver(engine, frames, clock: FakeClock, **kw) -> EngineDriver:
    driver = EngineDriver(engine, frames, clock=clock, **kw)
    driver.start()
    return driver


def advanced_past(driver: EngineDriver, engine: FakeEngine, clock: FakeClock, t: float) -> bool:
    """Walk the clock to t in steps longer than the advance period, waiting at each for the
    engine thread to advance the engine past the step before: every frame due by then has
    been fed (the engine's time never passes a frame not yet fed)."""
    while clock.t < t:
        clock.t = min(t, clock.t + 0.6)
        reached = clock.t - 0.6
        if not wait_until(lambda: engine.advanced and engine.advanced[-1] >= reached, WAIT):
            return False
    return True


def test_frames_are_fed_in_order_once_due_at_their_own_time():
    clock = FakeClock(T0)
    frames = [(T0 - 1.0, 1, b"late"), (T0 + 0.2, 1, b"soon"), (T0 + 0.3, 1, b"later"),
              (T0 + 30, 1, b"not yet")]
    engine = FakeEngine()
    driver = start_driver(engine, frames, clock)
    try:
        assert wait_until(lambda: len(engine.fed) == 1, WAIT)      # due already
        assert advanced_past(driver, engine, clock, T0 + 5)
        assert [f for _, f in engine.fed] == [b"late", b"soon", b"later"]
        assert [t for t, _ in engine.fed] == [T0 - 1.0, T0 + 0.2, T0 + 0.3]   # their own times
    finally:
        driver.stop()


class BatchSource:
    """A source that hands over lists of frames, as the tap does."""

    def __init__(self, batches) -> None:
        self._batches = batches
        self.handed_over = 0

    def __iter__(self):
        return self

    def __next__(self):
        raise AssertionError("the driver must take batches from a source that has them")

    def batches(self):
        for batch in self._batches:
            self.handed_over += 1
            yield batch


def test_a_batch_source_is_fed_in_order_with_a_bad_frame_skipped_and_a_late_one_kept_back():
    clock = FakeClock(T0)
    many = [(T0 - 2 + i * 1e-4, 1, b"f%d" % i) for i in range(1500)]  # > one feed slice
    source = BatchSource([many[:1000], [(T0 - 1, 1, b"boom"), *many[1000:]],
                          [(T0 + 0.3, 1, b"due soon"), (T0 + 30, 1, b"not yet")]])
    engine = FakeEngine(fail_on=b"boom")
    driver = start_driver(engine, source, clock)
    try:
        assert wait_until(lambda: driver.stats.packets == 1500, WAIT)
        assert advanced_past(driver, engine, clock, T0 + 5)
        assert source.handed_over == 3
        assert [f for _, f in engine.fed] == [f for _, _, f in many] + [b"due soon"]
        assert driver.stats.packets == 1501 and driver.stats.packet_errors == 1
        times = [t for t, _ in engine.fed]
        assert times == sorted(times) and times[-1] == T0 + 0.3
    finally:
        driver.stop()


def test_advance_follows_the_clock_while_the_source_is_silent():
    clock = FakeClock(T0)
    engine = FakeEngine()
    driver = start_driver(engine, [], clock)
    try:
        for step in range(1, 5):
            assert advanced_past(driver, engine, clock, T0 + step)
        gaps = [b - a for a, b in zip(engine.advanced, engine.advanced[1:])]
        assert all(0 < gap <= 1.0 for gap in gaps), engine.advanced
        assert engine.advanced[-1] >= T0 + 3.5
    finally:
        driver.stop()


def test_a_packet_that_raises_is_counted_and_the_thread_goes_on():
    clock = FakeClock(T0)
    frames = [(T0, 1, b"a"), (T0, 1, b"boom"), (T0, 1, b"c")]
    engine = FakeEngine(fail_on=b"boom")
    driver = start_driver(engine, frames, clock)
    try:
        assert wait_until(lambda: driver.stats.packets + driver.stats.packet_errors == 3, WAIT)
        assert [f for _, f in engine.fed] == [b"a", b"c"]
        assert (driver.stats.packets, driver.stats.packet_errors) == (2, 1)
    finally:
        driver.stop()


def test_a_late_frame_never_moves_the_engine_clock_backwards():
    clock = FakeClock(T0 + 1)
    engine = FakeEngine()
    driver = start_driver(engine, [(T0 + 0.1, 1, b"a"), (T0 - 5, 1, b"stale")], clock)
    try:
        assert wait_until(lambda: len(engine.fed) == 2, WAIT)
        assert engine.fed[1][0] >= engine.fed[0][0]
    finally:
        driver.stop()


def test_stop_is_prompt_even_when_the_source_blocks_forever():
    started = threading.Event()

    def blocking_source():
        started.set()
        threading.Event().wait()      # a tap with no traffic
        yield (0.0, 1, b"")
    driver = EngineDriver(FakeEngine(), blocking_source(), clock=FakeClock(T0))
    driver.start()
    assert started.wait(WAIT)
    t0 = time.monotonic()
    driver.stop()
    assert time.monotonic() - t0 < 1.0
    assert not driver.running


def test_a_failing_source_ends_but_expiry_goes_on():
    def broken_source():
        yield (T0, 1, b"one")
        raise OSError("capture truncated")
    clock = FakeClock(T0)
    engine = FakeEngine()
    driver = start_driver(engine, broken_source(), clock)
    try:
        assert wait_until(lambda: driver.stats.source_done, WAIT)
        assert advanced_past(driver, engine, clock, T0 + 2)
        assert [f for _, f in engine.fed] == [b"one"]
        assert driver.stats.source_errors == 1
    finally:
        driver.stop()


def test_render_runs_each_chunk_under_the_engine_lock_with_the_driver_clock():
    engine = FakeEngine()
    driver = EngineDriver(engine, [])
    held = []

    def render(served, now):
        held.append(served.engine_lock.locked())
        yield f"{len(served.engine.fed)} at ".encode()
        held.append(served.engine_lock.locked())
        yield f"{now:.3f}\n".encode()
    before = time.time()
    text = driver.render(render).decode()
    assert text.startswith("0 at ")
    assert before - 0.01 <= float(text.split()[2]) <= time.time() + 0.01
    assert held == [True, True]


@pytest.mark.parametrize("pieces", [[b"abc", b"", b"defgh", b"i", b"jklmnop"], [b"abcdefghijklmnop"]])
def test_a_read_spanning_chunks_gets_exactly_the_bytes_at_its_offsets(pieces):
    text = b"".join(pieces)
    rendering = Rendering(iter(pieces))
    for offset in range(len(text) + 2):
        for size in range(0, len(text) + 3):
            assert rendering.read(offset, size) == text[offset:offset + size], (offset, size)
