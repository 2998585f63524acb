"""The chains in front of the state machine against the kernel: every tests/data/rules
scenario's capture (`tcpdump -i any` in the namespace while iptables-legacy held the
ruleset) replayed with its ruleset through `procfs-ct replay --rules` leaves the counters
the kernel's `iptables-legacy-save -c` printed, rule by rule and policy by policy
(packets and bytes), and the conntrack table the kernel listed.

Two things every replay of these captures needs, both said on the command line as a user
would: the interface names of the cooked capture's indexes (ifaces.json, `--iface`), and
`nf_conntrack_checksum=0`: the peer's packets crossed the veth pair with offloaded,
unfinished checksums (CHECKSUM_PARTIAL), which the kernel never verifies and the capture
cannot tell from broken ones.
"""
from __future__ import annotations

import calendar
import json
import re
import subprocess
import time
from functools import lru_cache

import pytest

from conftest import child_env, procfs_ct_command
from engine.capture import read_capture
from engine.linklayer import ip_version, strip_ip
from engine.replay import replay
from engine.rules import Ruleset
from kernelhelp import load_kernel_module
from ruleshelp import DATA, save_stamp, scenarios

SCENARIOS = scenarios()
listing = load_kernel_module("listing")
CHECKSUM_OFF = "nf_conntrack_checksum=0"

# Where the engine and the kernel still disagree, and why.
LISTING_DISAGREES: dict[str, str] = {}


def iface_names(name: str) -> dict[int, str]:
    return {int(k): v for k, v in json.loads((DATA / name / "ifaces.json").read_text()).items()}


def listing_time(name: str) -> float:
    """When the kernel's table was listed: right after iptables-save stamped its second."""
    stamp = save_stamp((DATA / name / "save.txt").read_text())
    return calendar.timegm(time.strptime(stamp)) + 0.5


@lru_cache(maxsize=None)
def replayed(name: str):
    base = DATA / name
    return replay(str(base / "capture.pcap"), profile="linux",
                  rules=Ruleset.load_restore((base / "rules").read_text()),
                  iface_names=iface_names(name), knob_writes=[("checksum", b"0\n")],
                  at=listing_time(name))


def without_stamps(save_text: str) -> str:
    return "".join(line for line in save_text.splitlines(True) if not line.startswith("# "))


def test_enough_scenarios():
    assert len(SCENARIOS) >= 20


@pytest.mark.parametrize("name", SCENARIOS)
def test_replay_command_counts_as_the_kernel(name):
    base = DATA / name
    ifaces = ",".join(f"{k}={v}" for k, v in iface_names(name).items())
    done = subprocess.run(procfs_ct_command() + [
        "replay", str(base / "capture.pcap"), "--profile", "linux", "--rules",
        str(base / "rules"), "--iface", ifaces, "--set", CHECKSUM_OFF,
        "--format", "iptables-save"], capture_output=True, text=True, env=child_env(),
        timeout=120)
    assert done.returncode == 0, done.stderr
    assert without_stamps(done.stdout) == without_stamps((base / "save.txt").read_text())


@pytest.mark.parametrize("name", SCENARIOS)
def test_counters_rule_by_rule(name):
    """The same through the in-process API, stamped as the kernel's save was."""
    kernel = (DATA / name / "save.txt").read_text()
    rules = replayed(name).chains.ruleset
    assert rules.save(counters=True, stamp=save_stamp(kernel)) == kernel


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(reason=LISTING_DISAGREES[n], strict=True))
    if n in LISTING_DISAGREES else n for n in SCENARIOS])
def test_table_is_the_kernels(name):
    kernel = (DATA / name / "nf_conntrack.txt").read_text().splitlines()
    engine = replayed(name).text("nf_conntrack").splitlines()
    assert listing.compare_listings(kernel, engine, tolerance=1) == []


def kernel_drops(save_text: str) -> int:
    """Packets the kernel dropped, from its counters: DROP policies and DROP/REJECT rules."""
    dropped = 0
    for line in save_text.splitlines():
        policy = re.match(r"^:\S+ DROP \[(\d+):", line)
        rule = re.match(r"^\[(\d+):\d+\] -A .* -j (?:DROP|REJECT)(?: |$)", line)
        dropped += int((policy or rule).group(1)) if policy or rule else 0
    return dropped


def ipv4_frames(name: str) -> list[bool]:
    """Per capture frame: does it carry IPv4?  The veth's IPv6 frames (duplicate address
    detection, MLD reports) are tracked as without rules -- no ip6tables here -- and the
    IPv4 tables neither see nor count them, nor routing's drops of them."""
    with open(DATA / name / "capture.pcap", "rb") as fileobj:
        return [ip_version(strip_ip(frame.linktype, frame.data)[0] or b"") == 4
                for frame in read_capture(fileobj)]


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_frames_dropped_are_as_many_as_the_kernel_dropped(name):
    """Every drop of these scenarios hit a packet that arrived (so the capture holds it):
    the IPv4 frames whose final verdict is DROP are as many as the kernel's counters
    dropped."""
    dropped = [drop for drop, ipv4 in zip(replayed(name).dropped, ipv4_frames(name)) if ipv4]
    assert sum(dropped) == kernel_drops((DATA / name / "save.txt").read_text())


def test_connmark_is_kept_on_the_entry():
    name = "connmark_save_restore"
    kernel_marks = sorted(int(dict(e.extras)["mark"])
                          for e in listing.parse_listing((DATA / name / "nf_conntrack.txt").read_text()))
    engine_marks = sorted(entry.mark for entry in replayed(name).engine.tracker.entries())
    assert kernel_marks == engine_marks and any(kernel_marks)


def test_notrack_leaves_no_entry_and_the_packets_untracked():
    result = replayed("notrack_raw")
    untracked = [v for v in result.verdicts if v is not None and v.state.name == "UNTRACKED"]
    assert len(untracked) >= 3
    table = result.text("nf_conntrack")
    assert "dport=7030" not in table and "dport=7031" in table


def test_reject_replies_are_not_counted_twice():
    """The kernel's REJECT replies are in the capture too; the engine sends its own."""
    chains = replayed("reject_icmp_variants").chains
    assert chains.stats.replies_sent >= 5
    assert chains.stats.captured_replies_skipped == chains.stats.replies_sent


@pytest.mark.parametrize("name", SCENARIOS)
def test_log_mac_is_the_kernels_mac_header(name):
    """LOG's MAC= at PREROUTING, for every packet of the capture, is the MAC header the
    kernel's NFLOG recorder saw on the same packet there (records.json `hwheader`): lo's
    zeros, and on the veth the device's own address (learnt from its outgoing frames, ARP
    included) before the sender's."""
    base = DATA / name
    result = replay(str(base / "capture.pcap"), profile="linux",
                    rules=Ruleset.load_restore("*mangle\n-A PREROUTING -j LOG\nCOMMIT\n"),
                    iface_names=iface_names(name), knob_writes=[("checksum", b"0\n")])
    logged = [re.search(r" MAC=(\S*) ", line).group(1).replace(":", "")
              for _, line in result.chains.stats.logs]
    records = json.loads((base / "records.json").read_text())
    assert logged == [rec["hwheader"] for rec in records if rec["hook"] == "PREROUTING"]
