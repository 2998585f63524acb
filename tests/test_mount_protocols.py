"""SCTP, UDP-Lite and protocol 58 through a real mount: stored kernel captures replayed into a
mounted engine (linux profile), read with `cat` as a script would (engine logic itself is
tested in test_sctp.py and test_protocols.py)."""
from __future__ import annotations

import re

import pytest

from conftest import REPO, wait_until

pytestmark = pytest.mark.mount

KERNEL_DATA = REPO / "tests" / "data" / "kernel"
SCTP_ESTABLISHED = re.compile(
    r"^ipv4     2 sctp     132 (\d+) ESTABLISHED src=127\.0\.0\.1 dst=127\.0\.0\.2 sport=45002 "
    r"dport=6000 src=127\.0\.0\.2 dst=127\.0\.0\.1 sport=6000 dport=45002 \[ASSURED\] "
    r"mark=0 zone=0 use=2$", re.M)


def replayed_mount(mount_factory, scenario: str):
    """A linux-profile mount fed the scenario's capture as fast as it can be read."""
    capture = KERNEL_DATA / scenario / "capture.pcap"
    mount = mount_factory("--source", f"pcap:{capture}@0", "--profile", "linux")
    assert wait_until(lambda: "traffic source exhausted" in mount.log.read_text(), 30), \
        mount.log_text()
    return mount


def test_sctp_association_and_its_knob_through_the_mount(mount_factory):
    mount = replayed_mount(mount_factory, "sctp_association")
    done = mount.sh('cat "$MNT/net/nf_conntrack"; '
                    'cat "$MNT/sys/net/netfilter/nf_conntrack_sctp_timeout_established"',
                    check=True)
    match = SCTP_ESTABLISHED.search(done.stdout)
    assert match and 200 <= int(match.group(1)) <= 210, done.stdout
    assert done.stdout.endswith("\n210\n")
    mount.sh('echo 100 > "$MNT/sys/net/netfilter/nf_conntrack_sctp_timeout_established"',
             check=True)
    assert mount.read("sys/net/netfilter/nf_conntrack_sctp_timeout_established") == "100\n"


def test_refused_protocols_count_invalid_through_the_mount(mount_factory):
    """foreign_protocols: ICMPv6 inside IPv4 twice and a 1-byte UDP-Lite header are INVALID
    (3 in the kernel's stat file too); protocol 33 makes a generic entry."""
    mount = replayed_mount(mount_factory, "foreign_protocols")
    done = mount.sh('cat "$MNT/net/nf_conntrack" "$MNT/net/stat/nf_conntrack"', check=True)
    listing, header, first_cpu = done.stdout.splitlines()[:3]
    assert listing.startswith("ipv4     2 unknown  33 ")
    assert int(first_cpu.split()[header.split().index("invalid")], 16) == 3
