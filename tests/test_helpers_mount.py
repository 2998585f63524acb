"""FTP sessions of the synthetic source: the default mount (tutorial profile, helpers
attached by port as 2.6 did with ip_conntrack_ftp loaded) shows expectations and the
expected data connections; the engine alone shows them on a fake clock."""
from __future__ import annotations

import re

from conftest import wait_until
from engine.core import Engine
from engine.ctstate import CtState
from engine.linklayer import LINKTYPE_ETHERNET
from enginehelp import T0, view_text
from procfs_ct.sources.synthetic import SyntheticTraffic

GiB = 1 << 30
FTP_EXPECT = re.compile(r"^\d+ proto=6 src=\S+ dst=\S+ sport=0 dport=\d+ $")
FTP_EXPECT_MODERN = re.compile(r"^\d+ l3proto = 2 proto=6 src=\S+ dst=\S+ sport=0 dport=\d+ ftp$")
MASTER_WITH_CHILD = re.compile(r" dport=21 .* use=2$")


def test_synthetic_ftp_sessions_expect_and_relate_within_seconds_of_fake_time():
    eng = Engine("tutorial", ram_bytes=24 * GiB, ncpu=2)
    related_data = 0
    for ts, frame in SyntheticTraffic(seed=0, start=T0).frames():
        if ts > T0 + 5:
            break
        result = eng.feed_frame(ts, LINKTYPE_ETHERNET, frame)
        if result is not None and result.state == CtState.RELATED and result.entry is not None \
                and result.entry.master is not None:
            assert result.entry.master.tuple()[4] in (21, 69)
            related_data += 1
    expectations = view_text(eng, "net/ip_conntrack_expect", T0 + 5).splitlines()
    assert any(FTP_EXPECT.match(line) for line in expectations), expectations
    assert related_data > 0
    assert eng.tracker.stats["expect_new"] > 0


def test_the_default_mount_shows_expectations_and_expected_connections(mount_factory):
    mount = mount_factory()                     # the defaults: synthetic source, tutorial

    def ftp_lines(view, pattern):
        return [line for line in mount.read(view).splitlines() if pattern.search(line)]

    assert wait_until(lambda: ftp_lines("net/ip_conntrack_expect", FTP_EXPECT), 30)
    assert wait_until(lambda: ftp_lines("net/nf_conntrack_expect", FTP_EXPECT_MODERN), 30)
    # A control connection whose data connection is in the table holds it (use=2).
    assert wait_until(lambda: ftp_lines("net/ip_conntrack", MASTER_WITH_CHILD), 30)
    stat = mount.read("net/stat/ip_conntrack").splitlines()
    header, row = stat[0].split(), stat[1].split()
    counts = {name: int(value, 16) for name, value in zip(header, row)}
    assert counts["expect_new"] > 0 and counts["expect_create"] >= counts["expect_new"]
