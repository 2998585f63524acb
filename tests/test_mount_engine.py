"""The mount and the engine thread together: knob writes reach the very next packets,
readers in parallel with a fast source see whole lines, and a mount fed by a capture
shows what `procfs-ct replay` computes for the same instant (one engine, two views)."""
from __future__ import annotations

import re
import subprocess
import threading
import time
from collections import defaultdict

import pytest

from conftest import REPO, child_env, procfs_ct_command, wait_until
from engine.capture import read_capture

pytestmark = pytest.mark.mount

UDP_TIMEOUT = "sys/net/ipv4/netfilter/ip_conntrack_udp_timeout"
MAX = "sys/net/ipv4/ip_conntrack_max"
COUNT = "sys/net/ipv4/netfilter/ip_conntrack_count"
STAT = "net/stat/ip_conntrack"
IP_CT_LINE = re.compile(r"^(tcp|udp|icmp|unknown) +\d+ \d+ .*\buse=\d+$")
NF_CT_LINE = re.compile(r"^ipv4 +2 (tcp|udp|icmp|unknown) +\d+ \d+ .*\bzone=\d+ use=\d+$")


def udp_timeouts(listing: str) -> list:
    return [int(line.split()[2]) for line in listing.splitlines() if line.startswith("udp ")]


def stat_column(text: str, name: str) -> int:
    """Sum over CPUs of one column of net/stat/*conntrack (hex, docs/spec/conntrack.md §2)."""
    header, *rows = text.splitlines()
    index = header.split().index(name)
    return sum(int(row.split()[index], 16) for row in rows)


def test_a_knob_write_applies_to_the_next_udp_entries(mount_factory):
    """DESIGN: "A write takes effect for the next packet the engine processes": with the
    UDP timeout raised to 3000 s, new UDP entries show a seconds-left near 3000, which the
    tutorial default (30 s, stream 180 s) can never produce."""
    mount = mount_factory("--source", "synthetic:1000")
    assert wait_until(lambda: udp_timeouts(mount.read("net/ip_conntrack")), 10)
    assert max(udp_timeouts(mount.read("net/ip_conntrack"))) <= 180
    mount.sh(f"echo 3000 > $MNT/{UDP_TIMEOUT}", check=True)
    assert wait_until(lambda: any(2990 <= t <= 3000 for t in
                                  udp_timeouts(mount.read("net/ip_conntrack"))), 10)


def test_lowering_max_makes_new_flows_drop_instead_of_growing_the_table(mount_factory):
    """docs/spec/conntrack.md §7.2: a full table early-drops an unassured entry or drops the new
    flow's packet; the count stops growing and the drop counters rise."""
    mount = mount_factory("--source", "synthetic:1000")
    assert wait_until(lambda: int(mount.read(COUNT)) > 200, 10)
    stats_before = mount.read(STAT)
    limit = int(mount.read(COUNT)) // 2
    mount.sh(f"echo {limit} > $MNT/{MAX}", check=True)
    at_write = int(mount.read(COUNT))
    counts = []
    for _ in range(15):
        time.sleep(0.2)
        counts.append(int(mount.read(COUNT)))
    assert max(counts) <= at_write
    stats_after = mount.read(STAT)
    dropped = (stat_column(stats_after, "drop") + stat_column(stats_after, "early_drop")
               - stat_column(stats_before, "drop") - stat_column(stats_before, "early_drop"))
    assert dropped > 0


def test_parallel_readers_with_a_fast_source_never_see_a_torn_line(mount_factory):
    """Each read at offset 0 takes a consistent snapshot and other offsets come from it,
    so even 333-byte reads and shell `read` loops reassemble whole lines while 2000
    packets a second change the table."""
    mount = mount_factory("--source", "synthetic:2000")
    assert wait_until(lambda: int(mount.read(COUNT)) > 500, 15)
    bad, reads, stop = [], defaultdict(int), threading.Event()

    def check(kind: str, text: str, pattern: re.Pattern) -> None:
        reads[kind] += 1
        if not text.endswith("\n"):
            bad.append((kind, text[-120:]))
        for line in text.splitlines():
            if not pattern.match(line) or line.count(" src=") != 2:
                bad.append((kind, line))

    def python_reader(view: str, pattern: re.Pattern, chunk: int) -> None:
        try:
            python_reads(view, pattern, chunk)
        except OSError as exc:          # a failed read is a finding, not a dead thread
            bad.append((f"python {chunk} {view}", repr(exc)))

    def python_reads(view: str, pattern: re.Pattern, chunk: int) -> None:
        while not stop.is_set():
            with open(mount.path(view), "rb", buffering=0) as f:
                parts = []
                while True:
                    data = f.read(chunk)
                    if not data:
                        break
                    parts.append(data)
            check(f"python {chunk} {view}", b"".join(parts).decode(), pattern)

    def shell_reader(script: str, pattern: re.Pattern) -> None:
        while not stop.is_set():
            done = mount.sh(script)
            if done.returncode != 0:
                bad.append((script[:20], done.stderr))
                return
            check(script[:20], done.stdout, pattern)

    readers = [
        threading.Thread(target=python_reader, args=("net/ip_conntrack", IP_CT_LINE, 333)),
        threading.Thread(target=python_reader, args=("net/nf_conntrack", NF_CT_LINE, 65536)),
        threading.Thread(target=shell_reader, args=("cat $MNT/net/nf_conntrack", NF_CT_LINE)),
        threading.Thread(target=shell_reader, args=(
            'while IFS= read -r l; do printf "%s\\n" "$l"; done < $MNT/net/ip_conntrack',
            IP_CT_LINE)),
    ]
    for reader in readers:
        reader.start()
    time.sleep(4)
    stop.set()
    for reader in readers:
        reader.join(60)
    assert not bad, f"{bad[:5]}{mount.log_text()}"
    assert len(reads) == 4 and all(n >= 1 for n in reads.values()), dict(reads)


def without_timeout(line: str, column: int) -> tuple:
    fields = line.split()
    return " ".join(fields[:column] + fields[column + 1:]), int(fields[column])


def assert_same_table(mounted: str, replayed: str, column: int) -> None:
    """Equal line for line (order is arbitrary, spec §1.3); seconds-left within 1 s, since
    the two renders cannot fall on exactly the same instant."""
    def index(text: str) -> dict:
        table = defaultdict(list)
        for line in text.splitlines():
            key, seconds = without_timeout(line, column)
            table[key].append(seconds)
        return table
    got, want = index(mounted), index(replayed)
    assert sorted(got) == sorted(want)
    for key in want:
        for a, b in zip(sorted(got[key]), sorted(want[key])):
            assert abs(a - b) <= 1, (key, a, b)


@pytest.mark.parametrize("profile, view, fmt, column", [
    ("tutorial", "net/ip_conntrack", "ip_conntrack", 2),
    ("linux", "net/nf_conntrack", "nf_conntrack", 4),
])
def test_a_mount_fed_by_a_capture_shows_what_replay_computes(mount_factory, capture_file,
                                                             profile, view, fmt, column):
    """One engine, two views: the capture replayed live at 1x, read through the mount,
    equals `procfs-ct replay --at` of the same capture at the same capture instant."""
    mount = mount_factory("--source", f"pcap:{capture_file}", "--profile", profile)
    # The engine thread says so once it has fed the last frame (the source reads ahead).
    assert wait_until(lambda: "traffic source exhausted" in mount.log.read_text(), 30), \
        mount.log_text()
    log = mount.log.read_text()
    first_due = float(re.search(r"first frame due at ([0-9.]+)", log).group(1))
    with open(capture_file, "rb") as f:
        frames = list(read_capture(f))
    assert f"exhausted after {len(frames)} packets" in log
    capture_start = frames[0].ts
    before = time.time()
    mounted = mount.read(view)
    after = time.time()
    at = capture_start + (before + after) / 2 - first_due
    replayed = subprocess.run(
        procfs_ct_command() + ["replay", str(capture_file), "--profile", profile,
                               "--format", fmt, "--at", repr(at)],
        cwd=REPO, env=child_env(), capture_output=True, text=True, check=True).stdout
    assert len(mounted.splitlines()) > 50
    assert_same_table(mounted, replayed, column)
    # The source counters a user can read: every frame of the capture reached the engine.
    counters = dict(line.split() for line in mount.read("net/stat/procfs_ct_source").splitlines())
    assert int(counters["packets"]) == len(frames)
    assert int(counters["packet_errors"]) == 0 and counters["source_done"] == "1"
