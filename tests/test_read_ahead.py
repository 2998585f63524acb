"""Listings rendered ahead of a sequential reader (procfs_ct/fs.py ReadAhead): the
Operations object called directly for what the daemon does when, a real mount for what
readers see."""
from __future__ import annotations

import errno
import re
import subprocess
import threading
from pathlib import Path
from typing import Dict, List

import pytest

from bench.shapes import datagrams
from conftest import wait_until
from engine.build import build_ethernet
from engine.capture import PcapWriter
from engine.knobs import KNOBS, KnobValues
from engine.render import render_listing
from engine.replay import replay
from procfs_ct.fs import READ_AHEAD_READS, ProcFs, SharedSnapshots
from procfs_ct.fuse_compat import FuseOSError
from procfs_ct.tree import PROC_VIEWS, build_tree

GiB = 1 << 30
TREE = build_tree(PROC_VIEWS, KNOBS)
VIEW = "/net/nf_conntrack"
LINE = 10                   # bytes of each chunk of the fake renderer: one "line NNNN\n"
COUNT = "sys/net/netfilter/nf_conntrack_count"


class FakeRenderer:
    """A listing of `lines` ten-byte chunks that records what was pulled, can hold the
    renderer inside chunk `hold_at` until released, and can fail at chunk `fail_at`."""

    def __init__(self, lines: int = 100, hold_at: int = -1, fail_at: int = -1) -> None:
        self.lines, self.hold_at, self.fail_at = lines, hold_at, fail_at
        self.pulled: List[int] = []
        self.closed = threading.Event()
        self.holding, self.release = threading.Event(), threading.Event()

    def text(self) -> bytes:
        return b"".join(b"line %04d\n" % n for n in range(self.lines))

    def __call__(self, node) -> object:
        def chunks():
            try:
                for n in range(self.lines):
                    if n == self.hold_at:
                        self.holding.set()
                        assert self.release.wait(10)
                    if n == self.fail_at:
                        raise ValueError("renderer bug")
                    self.pulled.append(n)
                    yield b"line %04d\n" % n
            finally:
                self.closed.set()
        return chunks()


def operations(renderer: FakeRenderer) -> ProcFs:
    return ProcFs(TREE, KnobValues("linux", 24 * GiB), SharedSnapshots(renderer, ttl=0))


def test_a_reader_that_reads_on_gets_its_next_reads_rendered_ahead_and_no_further():
    renderer = FakeRenderer()
    ops = operations(renderer)
    fh = ops.open(VIEW, 0)
    assert ops.read(VIEW, 2 * LINE, 0, fh) == renderer.text()[:2 * LINE]
    assert renderer.pulled == [0, 1]            # a first read is never followed by more
    assert ops.read(VIEW, 2 * LINE, 2 * LINE, fh) == renderer.text()[2 * LINE:4 * LINE]
    ahead_lines = 4 + 2 * READ_AHEAD_READS
    assert wait_until(lambda: len(renderer.pulled) == ahead_lines, 10), renderer.pulled
    assert wait_until(ops._read_ahead.idle, 10)
    assert renderer.pulled == list(range(ahead_lines))      # its next reads, not the table
    assert ops.read(VIEW, 2 * LINE, 4 * LINE, fh) == renderer.text()[4 * LINE:6 * LINE]
    whole = b"".join(ops.read(VIEW, 7 * LINE, offset, fh)
                     for offset in range(6 * LINE, 100 * LINE + 1, 7 * LINE))
    assert renderer.text()[:6 * LINE] + whole == renderer.text()
    ops.release(VIEW, fh)


def test_a_reader_that_closes_while_rendered_ahead_frees_its_text_and_stops_the_work():
    """The job holds the rendering only while it makes a chunk: the release frees it (its
    renderer is closed) and nothing more is rendered for a reader that is gone."""
    renderer = FakeRenderer(hold_at=5)
    ops = operations(renderer)
    fh = ops.open(VIEW, 0)
    ops.read(VIEW, 2 * LINE, 0, fh)
    ops.read(VIEW, 2 * LINE, 2 * LINE, fh)
    assert renderer.holding.wait(10)            # the read-ahead is inside chunk 5
    ops.release(VIEW, fh)
    renderer.release.set()
    assert renderer.closed.wait(10)
    assert wait_until(ops._read_ahead.idle, 10)
    assert renderer.pulled == [0, 1, 2, 3, 4, 5]


def test_a_renderer_that_fails_ahead_of_the_reader_fails_its_read_not_shortens_the_text():
    renderer = FakeRenderer(fail_at=6)
    ops = operations(renderer)
    fh = ops.open(VIEW, 0)
    ops.read(VIEW, 2 * LINE, 0, fh)
    ops.read(VIEW, 2 * LINE, 2 * LINE, fh)
    assert renderer.closed.wait(10) and wait_until(ops._read_ahead.idle, 10)
    assert ops.read(VIEW, 2 * LINE, 4 * LINE, fh) == renderer.text()[4 * LINE:6 * LINE]
    with pytest.raises(FuseOSError) as caught:
        ops.read(VIEW, 2 * LINE, 6 * LINE, fh)
    assert caught.value.errno == errno.EIO


# -- mounted -----------------------------------------------------------------------------------
GATEWAY_ENTRIES = 6000
SECONDS = re.compile(rb"^(?:ipv4 +2 )?\S+ +\d+ (\d+) ")


def gateway_capture(path: Path, entries: int) -> Path:
    """The gateway shape's datagrams (bench/shapes.py) as one pcap, every frame at one
    instant: replayed as fast as possible, every entry of the mount is made at the same
    engine time, so its listing differs from the in-process one only by one shift of time."""
    with open(path, "wb") as fileobj:
        writer = PcapWriter(fileobj)
        for datagram in datagrams("gateway", entries):
            writer.write(1_700_000_000.0, build_ethernet(datagram))
    return path


def first_seconds(text: bytes) -> int:
    return int(SECONDS.match(text).group(1))


def test_cat_of_a_gateway_table_is_byte_for_byte_the_in_process_rendering(mount_factory,
                                                                         tmp_path):
    """cat reads 128 KiB at a time, so all but its first reads are rendered ahead."""
    capture = gateway_capture(tmp_path / "gateway.pcap", GATEWAY_ENTRIES)
    replayed = replay(str(capture), profile="linux")
    tracker, made = replayed.engine.tracker, replayed.at
    mount = mount_factory("--source", f"pcap:{capture}@0", "--profile", "linux")
    assert wait_until(lambda: int(mount.read(COUNT)) == len(tracker), 60), mount.log_text()
    for view, modern in (("net/nf_conntrack", True), ("net/ip_conntrack", False)):
        mounted = subprocess.run(["cat", str(mount.path(view))], capture_output=True,
                                 check=True).stdout
        assert len(mounted) > 4 * 131072                    # several reads rendered ahead
        # Every entry was made at one instant: the mount's time since then, rounded up, is
        # what the in-process rendering half a second after `made` is behind by.
        behind = first_seconds(render_listing(tracker, made + 0.5, modern)) - first_seconds(mounted)
        assert render_listing(tracker, made + 0.5 + behind, modern) == mounted, view


def entry_lines(text: bytes) -> Dict[bytes, bytes]:
    """Each line by its entry (the line without its seconds and state), checking that
    every line is whole and no entry is listed twice."""
    assert text.endswith(b"\n")
    lines: Dict[bytes, bytes] = {}
    for line in text.splitlines():
        assert re.match(rb"^ipv[46] +\d+ [a-z0-9-]+ +\d+ \d+ .*\bzone=\d+ use=\d+$",
                        line), line
        tuple_text = line[line.index(b"src="):line.index(b"src=", line.index(b"src=") + 1)]
        assert tuple_text not in lines, line
        lines[tuple_text] = line
    return lines


@pytest.fixture
def changing_mount(mount_factory):
    """A mount whose table changes all the time (2000 packets a second), with a few
    thousand entries: a listing of many 16 KiB reads."""
    mount = mount_factory("--source", "synthetic:2000", "--profile", "linux")
    assert wait_until(lambda: int(mount.read(COUNT)) > 1500, 60), mount.log_text()
    return mount


def read_in_steps(path: Path, size: int, between=lambda: None, stop_after: int = 0) -> bytes:
    parts = []
    with open(path, "rb", buffering=0) as f:
        while True:
            data = f.read(size)
            if not data:
                break
            parts.append(data)
            if stop_after and len(parts) == stop_after:
                break
            between()
    return b"".join(parts)


def test_a_listing_read_while_the_table_changes_has_whole_lines_each_entry_once(changing_mount):
    mount = changing_mount
    counts = []

    def table_changes() -> None:                # the engine goes on between two reads
        before = mount.read("net/stat/procfs_ct_source")
        assert wait_until(lambda: mount.read("net/stat/procfs_ct_source") != before, 10)
        counts.append(1)
    text = read_in_steps(mount.path("net/nf_conntrack"), 16384, table_changes)
    assert len(counts) >= 10
    assert len(entry_lines(text)) > 1500


def test_two_readers_at_once_and_one_that_stops_early(changing_mount):
    """Two whole readers and one that reads two blocks and closes, at the same time: each
    whole listing is whole lines with every entry once, the early one's bytes are a
    prefix of whole lines, and the mount goes on serving."""
    mount = changing_mount
    path = mount.path("net/nf_conntrack")
    texts: Dict[str, bytes] = {}
    readers = [threading.Thread(target=lambda name=name, size=size, stop=stop:
                                texts.__setitem__(name, read_in_steps(path, size,
                                                                      stop_after=stop)))
               for name, size, stop in (("a", 16384, 0), ("b", 65536, 0), ("early", 16384, 2))]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(60)
    assert len(entry_lines(texts["a"])) > 1500 and len(entry_lines(texts["b"])) > 1500
    early = texts["early"]
    assert len(early) == 2 * 16384
    entry_lines(early[:early.rindex(b"\n") + 1])
    head = subprocess.run(["head", "-1", str(path)], capture_output=True, check=True).stdout
    assert head.count(b"\n") == 1 and len(entry_lines(head)) == 1
    assert len(entry_lines(path.read_bytes())) > 1500
    assert "Traceback" not in mount.log.read_text()
