"""Big listings rendered by forked children, read through a real mount
(procfs_ct/forkrender.py): the text is the in-process rendering of the same table, the
children are there while a reader reads and gone once it closes (early, too), a killed
child fails the reader's later reads with EIO, and the unmount leaves no child behind."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import List

import pytest

from bench.shapes import datagrams
from conftest import wait_until
from engine.build import build_ethernet, build_ipv4, build_ipv6, build_udp
from engine.capture import PcapWriter
from engine.render import render_listing
from engine.replay import replay
from procfs_ct import forkrender
from test_read_ahead import first_seconds

pytestmark = pytest.mark.mount

COUNT = "sys/net/netfilter/nf_conntrack_count"
READ = 131072               # what cat asks per read
AT = 1_700_000_000.0
LONG = {"udp_timeout": 3600, "udp_timeout_stream": 3600, "icmp_timeout": 3600,
        "tcp_timeout_syn_sent": 3600, "generic_timeout": 3600, "gre_timeout": 3600,
        "icmpv6_timeout": 3600}


def mixed_capture(path: Path, entries: int) -> Path:
    """The gateway shape's datagrams (bench/shapes.py), GRE between 200 pairs (the linux
    profile's GRE tracker), a protocol without a tracker and 300 IPv6 UDP flows, every
    frame at one instant (see test_read_ahead.gateway_capture)."""
    with open(path, "wb") as fileobj:
        writer = PcapWriter(fileobj)
        for datagram in datagrams("gateway", entries):
            writer.write(AT, build_ethernet(datagram))
        for n in range(200):
            writer.write(AT, build_ethernet(build_ipv4(f"10.9.0.{n + 1}", "192.168.9.1", 47,
                                                       b"\x00\x00\x08\x00" + b"g" * 20)))
            writer.write(AT, build_ethernet(build_ipv4(f"10.9.1.{n + 1}", "192.168.9.1", 253,
                                                       b"s" * 28)))
        for n in range(300):
            src, dst = f"fd00::1:{n + 1:x}", "fd00::53"
            writer.write(AT, build_ethernet(build_ipv6(src, dst, 17,
                                                       build_udp(src, dst, 2000 + n, 53, b"q")),
                                            ethertype=0x86DD))
    return path


def children(pid: int) -> List[int]:
    """The processes whose parent is `pid` (zombies too: they are not reaped)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


@pytest.fixture
def forking(monkeypatch):
    """Mounts started from here fork 2 children for a listing of 1,000 entries or more."""
    monkeypatch.setenv(forkrender.ENV_CHILDREN, "2")
    monkeypatch.setenv(forkrender.ENV_MIN_ENTRIES, "1000")


def mount_of(mount_factory, tmp_path: Path, capture: Path, entries: int, knobs: dict):
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"knobs": knobs}))
    mount = mount_factory("--source", f"pcap:{capture}@0", "--profile", "linux",
                          "--state-file", str(state), "--state-interval", "0")
    assert wait_until(lambda: int(mount.read(COUNT)) >= entries, 120), mount.log_text()
    assert wait_until(lambda: "traffic source exhausted" in mount.log_text(), 60)
    return mount


def test_a_forked_listing_is_byte_for_byte_the_in_process_rendering(forking, mount_factory,
                                                                     tmp_path):
    """GRE, a protocol without a tracker, accounting (listing_line()) and IPv6 (nf_conntrack
    only) among 8,000 gateway entries; the children are there while the reader pauses
    after two reads, and gone when it has read the rest."""
    knobs = dict(LONG, acct=1)
    capture = mixed_capture(tmp_path / "mixed.pcap", 8000)
    replayed = replay(str(capture), profile="linux", knobs_overrides=knobs)
    tracker, made = replayed.engine.tracker, replayed.at
    mount = mount_of(mount_factory, tmp_path, capture, len(tracker), knobs)
    before = children(mount.pid)
    for view, modern in (("net/nf_conntrack", True), ("net/ip_conntrack", False)):
        with open(mount.path(view), "rb", buffering=0) as f:
            text = f.read(READ) + f.read(READ)       # the second read forks
            assert wait_until(lambda: len(children(mount.pid)) == len(before) + 2, 10), \
                mount.log_text()
            while True:
                data = f.read(READ)
                if not data:
                    break
                text += data
        assert b"gre " in text and (b"packets=" in text) == (b"ipv6" in text) == modern
        behind = first_seconds(render_listing(tracker, made + 0.5, modern)) - first_seconds(text)
        assert render_listing(tracker, made + 0.5 + behind, modern) == text, view
        assert wait_until(lambda: children(mount.pid) == before, 10)
    assert "Traceback" not in mount.log_text()


@pytest.fixture
def big_mount(forking, mount_factory, tmp_path):
    """30,000 gateway entries: each child's share of nf_conntrack (~2.5 MB) is more than
    its pipe holds, so a child is still rendering while a reader pauses."""
    capture = mixed_capture(tmp_path / "big.pcap", 30000)
    return mount_of(mount_factory, tmp_path, capture, 30000, LONG)


def test_a_reader_that_closes_early_leaves_no_child(big_mount):
    mount = big_mount
    before = children(mount.pid)
    head = subprocess.run(["head", "-c", "300000", str(mount.path("net/nf_conntrack"))],
                          capture_output=True, check=True).stdout
    assert len(head) == 300000
    assert wait_until(lambda: children(mount.pid) == before, 10), children(mount.pid)
    with open(mount.path("net/nf_conntrack"), "rb", buffering=0) as f:
        f.read(READ), f.read(READ)
        assert wait_until(lambda: len(children(mount.pid)) == len(before) + 2, 10)
    assert wait_until(lambda: children(mount.pid) == before, 10), children(mount.pid)


def test_a_killed_child_fails_the_later_reads_with_eio(big_mount):
    mount = big_mount
    before = set(children(mount.pid))
    # No whole read first: a second open within SNAPSHOT_TTL of it, its release still on
    # its way, would share that finished rendering and fork nothing.
    entries = int(mount.read(COUNT))
    with open(mount.path("net/nf_conntrack"), "rb", buffering=0) as f:
        text = f.read(READ) + f.read(READ)
        assert wait_until(lambda: len(set(children(mount.pid)) - before) == 2, 10)
        os.kill(min(set(children(mount.pid)) - before), signal.SIGKILL)
        with pytest.raises(OSError) as caught:
            while True:
                data = f.read(READ)
                assert data, "the text ended short without an error"
                text += data
    assert caught.value.errno == errno.EIO
    assert 1000 <= text.count(b"\n") < entries
    assert wait_until(lambda: set(children(mount.pid)) == before, 10), children(mount.pid)


def test_the_unmount_leaves_no_child_behind(big_mount):
    mount = big_mount
    before = set(children(mount.pid))
    reader = open(mount.path("net/nf_conntrack"), "rb", buffering=0)
    reader.read(READ), reader.read(READ)
    assert wait_until(lambda: len(set(children(mount.pid)) - before) == 2, 10)
    forked = set(children(mount.pid)) - before
    mount.signal(signal.SIGTERM)                # a reader still holds the listing open
    assert wait_until(mount.exited, 20), mount.log_text()
    reader.close()
    assert not any(os.path.exists(f"/proc/{pid}") for pid in forked)
