"""The legacy corpus (tests/legacy/) run unchanged under `procfs-ct exec`, each output
checked against the engine's table for the known capture (`procfs-ct replay`)."""
from __future__ import annotations

import os
import shutil

import pytest

from exechelp import (ESTABLISHED, KNOWN_ENTRIES, LEGACY, SYN_ONLY, UDP_STREAMS,  # noqa: F401
                      count_states, known_capture, replay, sh_in, tutorial_mount)

pytestmark = pytest.mark.mount
MUNIN = "/usr/share/munin/plugins"


def test_rc_firewall_tunes_by_echo(tutorial_mount):
    done = sh_in(tutorial_mount.mnt, str(LEGACY / "rc.firewall"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["Tuning ip_conntrack...", "ip_conntrack_max is now 32768",
                                        "ESTABLISHED timeout is now 86400"]
    read = lambda rel: tutorial_mount.read(rel).strip()  # noqa: E731
    assert read("sys/net/netfilter/nf_conntrack_max") == "32768"
    assert read("sys/net/netfilter/nf_conntrack_tcp_timeout_established") == "86400"
    assert read("sys/net/netfilter/nf_conntrack_udp_timeout") == "20"
    assert read("sys/net/netfilter/nf_conntrack_udp_timeout_stream") == "120"
    assert read("sys/net/netfilter/nf_conntrack_icmp_timeout") == "15"
    assert read("sys/net/netfilter/nf_conntrack_tcp_be_liberal") == "1"


def test_state_counter(tutorial_mount, known_capture):
    done = sh_in(tutorial_mount.mnt, str(LEGACY / "ct-states.sh"))
    assert done.returncode == 0, done.stderr
    expected = count_states(replay(known_capture, "tutorial", "ip_conntrack"))
    assert done.stdout.splitlines() == expected
    assert f"ESTABLISHED {len(ESTABLISHED)}" in expected and f"TOTAL {KNOWN_ENTRIES}" in expected


def test_cron_alarm(tutorial_mount):
    ok = sh_in(tutorial_mount.mnt, str(LEGACY / "ct-alarm.sh"))
    maximum = int(tutorial_mount.read("sys/net/ipv4/ip_conntrack_max"))
    assert (ok.returncode, ok.stdout) == (
        0, f"OK: ip_conntrack table {KNOWN_ENTRIES}/{maximum} ({KNOWN_ENTRIES * 100 // maximum}%)\n")
    # Shrink the table under the alarm: 18 of 20 entries is 90 %.
    alarm = sh_in(tutorial_mount.mnt, f"echo 20 > /proc/sys/net/ipv4/ip_conntrack_max; "
                                      f"{LEGACY / 'ct-alarm.sh'}")
    assert (alarm.returncode, alarm.stdout) == (
        1, f"WARNING: ip_conntrack table {KNOWN_ENTRIES}/20 (90%)\n")


def _parsed(listing: str) -> list:
    """What ct-parse.pl prints, computed independently from the replay's listing."""
    out = []
    for line in listing.splitlines():
        fields = line.split()
        values = dict(f.split("=", 1) for f in fields if "=" in f)
        pairs = [f.split("=", 1) for f in fields if "=" in f]
        first = dict(pairs[:4]) if fields[0] in ("tcp", "udp") else dict(pairs[:2])
        state = fields[3] if fields[0] == "tcp" else "-"
        flags = [f[1:-1] for f in fields if f.startswith("[")]
        out.append(f"{fields[0]} {first['src']}:{first.get('sport', '-')} -> "
                   f"{first['dst']}:{first.get('dport', '-')} {state}"
                   + (" " + ",".join(flags) if flags else ""))
        assert values
    return sorted(out)


def test_perl_regex_parser(tutorial_mount, known_capture):
    if shutil.which("perl") is None:
        pytest.skip("perl is not installed")
    done = sh_in(tutorial_mount.mnt, str(LEGACY / "ct-parse.pl"))
    assert done.returncode == 0, done.stderr
    expected = _parsed(replay(known_capture, "tutorial", "ip_conntrack"))
    assert done.stdout.splitlines() == expected
    assert len(expected) == KNOWN_ENTRIES


def test_program_that_drops_privileges(tutorial_mount):
    done = sh_in(tutorial_mount.mnt, str(LEGACY / "ct-dropper.py"))
    assert done.returncode == 0, done.stderr
    maximum = tutorial_mount.read("sys/net/netfilter/nf_conntrack_max").strip()
    assert done.stdout == f"uid=65534 entries={KNOWN_ENTRIES} count={KNOWN_ENTRIES} max={maximum}\n"


@pytest.mark.skipif(not os.path.exists(f"{MUNIN}/fw_conntrack"),
                    reason="munin-plugins-core is not installed")
def test_munin_fw_conntrack(tutorial_mount):
    """A third-party plugin that hard-codes /proc/net/ip_conntrack (Debian munin-plugins-core)."""
    done = sh_in(tutorial_mount.mnt, f"{MUNIN}/fw_conntrack; {MUNIN}/fw_forwarded_local")
    assert done.returncode == 0, done.stderr
    values = dict(line.split(".value ") for line in done.stdout.splitlines())
    assert values["established"] == str(len(ESTABLISHED))
    assert values["syn_sent"] == str(len(SYN_ONLY))
    assert values["udp"] == str(len(UDP_STREAMS))
    assert values["assured"] == str(len(ESTABLISHED) + len(UDP_STREAMS))
    assert values["total"] == str(KNOWN_ENTRIES)
