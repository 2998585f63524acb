"""Shared helpers for the `procfs-ct exec` / `conntrack` / legacy-script tests.

The known capture holds only entries whose timers outlive any test run (TCP
ESTABLISHED 5 days, SYN_SENT and UDP streams 2 minutes), so a mount fed by it and
`procfs-ct replay` of it show the same entries, state and flags; only the seconds
left differ (the mount's timers run on the wall clock), and only downwards.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Dict, List, Sequence

import pytest

from conftest import REPO, child_env, procfs_ct_command, wait_until
from engine.build import build_ethernet, build_tcp_datagram, build_udp_datagram
from engine.capture import PcapWriter
from engine.linklayer import LINKTYPE_ETHERNET
from engine.packet import ACK, SYN

T0 = 1_790_000_000.0
ESTABLISHED = [(f"10.0.0.{n}", "192.168.1.10", 40000 + n, port)
               for n, port in zip(range(1, 13), [22, 80, 443] * 4)]
SYN_ONLY = [(f"10.0.1.{n}", "192.168.1.20", 50000 + n, 8080) for n in range(1, 5)]
UDP_STREAMS = [("10.0.2.1", "192.168.1.53", 53001, 53), ("10.0.2.2", "192.168.1.123", 123, 123)]
UDP_STREAM_GAP = 2.1        # seconds: past the modern 2-second rule, the UDP flows become streams
KNOWN_FRAMES = 3 * len(ESTABLISHED) + len(SYN_ONLY) + 4 * len(UDP_STREAMS)
CAPTURE_SPAN = 3            # seconds from the known capture's first packet to its last, rounded up
KNOWN_ENTRIES = len(ESTABLISHED) + len(SYN_ONLY) + len(UDP_STREAMS)
LEGACY = REPO / "tests" / "legacy"

_SECONDS = re.compile(r"^((?:ipv4\s+\d+ )?\S+\s+\d+) (\d+) ")


def write_known_capture(path: Path) -> Path:
    """A pcap of 12 established TCP connections, 4 unanswered SYNs and 2 UDP streams."""
    frames = []
    t = T0
    for src, dst, sport, dport in ESTABLISHED:
        frames += [(t, build_tcp_datagram(src, dst, sport, dport, seq=1000, flags=SYN)),
                   (t + 0.001, build_tcp_datagram(dst, src, dport, sport, seq=5000, ack=1001,
                                                  flags=SYN | ACK)),
                   (t + 0.002, build_tcp_datagram(src, dst, sport, dport, seq=1001, ack=5001,
                                                  flags=ACK))]
        t += 0.01
    for src, dst, sport, dport in SYN_ONLY:
        frames.append((t, build_tcp_datagram(src, dst, sport, dport, seq=7000, flags=SYN)))
        t += 0.01
    for src, dst, sport, dport in UDP_STREAMS:
        frames += [(t, build_udp_datagram(src, dst, sport, dport, b"query")),
                   (t + 0.01, build_udp_datagram(dst, src, dport, sport, b"answer"))]
    t += UDP_STREAM_GAP
    for src, dst, sport, dport in UDP_STREAMS:
        frames += [(t, build_udp_datagram(src, dst, sport, dport, b"again")),
                   (t + 0.01, build_udp_datagram(dst, src, dport, sport, b"answer"))]
    with open(path, "wb") as f:
        writer = PcapWriter(f, linktype=LINKTYPE_ETHERNET)
        for ts, datagram in sorted(frames, key=lambda item: item[0]):
            writer.write(ts, build_ethernet(datagram))
    return path


def replay(capture: Path, profile: str, fmt: str) -> str:
    """`procfs-ct replay` of the capture: the engine's table at the last packet."""
    done = subprocess.run(procfs_ct_command() + ["replay", str(capture), "--profile", profile,
                                                 "--format", fmt],
                          cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def split_seconds(line: str) -> tuple:
    """(the line with its seconds field blanked, the seconds)."""
    match = _SECONDS.match(line)
    assert match, f"not a listing line: {line!r}"
    return f"{match.group(1)} _ {line[match.end():]}", int(match.group(2))


def same_table(got: Sequence[str], expected: Sequence[str]) -> None:
    """The same entries (any order) with plausible timers: the mount replays the capture
    on the wall clock, so a timer may have started up to CAPTURE_SPAN seconds later than
    in the replay (scheduling), and since then only counted down."""
    got_map: Dict[str, int] = dict(split_seconds(line) for line in got if line.strip())
    want_map: Dict[str, int] = dict(split_seconds(line) for line in expected if line.strip())
    assert sorted(got_map) == sorted(want_map), (sorted(set(got_map) ^ set(want_map)))
    for key, seconds in got_map.items():
        assert 0 < seconds <= want_map[key] + CAPTURE_SPAN, (key, seconds, want_map[key])


def run_exec(args: Sequence[str], *, timeout: float = 120, env_extra: Dict[str, str] = None,
             stdin: str = None) -> subprocess.CompletedProcess:
    """`procfs-ct exec ARGS...` in the C locale; stdout/stderr as text."""
    env = child_env()
    env.update(env_extra or {})
    return subprocess.run(procfs_ct_command() + ["exec"] + list(args), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, input=stdin)


def sh_in(mnt: Path, script: str, **kwargs) -> subprocess.CompletedProcess:
    """A bash script run by `procfs-ct exec --mount MNT`."""
    return run_exec(["--mount", str(mnt), "--", "bash", "-c", script], **kwargs)


def count_states(listing: str) -> List[str]:
    """What tests/legacy/ct-states.sh prints, computed in Python from an ip_conntrack listing."""
    lines = [line.split() for line in listing.splitlines() if line.strip()]
    tcp_states: Dict[str, int] = {}
    for fields in lines:
        if fields[0] == "tcp":
            tcp_states[fields[3]] = tcp_states.get(fields[3], 0) + 1
    out = [f"{state} {n}" for state, n in sorted(tcp_states.items())]
    out.append(f"UDP {sum(1 for f in lines if f[0] == 'udp')}")
    out.append(f"ICMP {sum(1 for f in lines if f[0] == 'icmp')}")
    out.append(f"ASSURED {sum(1 for f in lines if '[ASSURED]' in f)}")
    out.append(f"UNREPLIED {sum(1 for f in lines if '[UNREPLIED]' in f)}")
    out.append(f"TOTAL {len(lines)}")
    return out


# -- fixtures (imported by the test modules that use them) ----------------------------------
@pytest.fixture(scope="session")
def known_capture(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("known")
    directory.chmod(0o755)
    return write_known_capture(directory / "known.pcap")


def _known_mount(mount_factory, capture: Path, profile: str):
    # At the capture's own pace (@1): the UDP streams need their 2 seconds to pass.
    mount = mount_factory("--source", f"pcap:{capture}@1", "--profile", profile)
    assert wait_until(lambda: f"packets {KNOWN_FRAMES}\n" in mount.read("net/stat/procfs_ct_source"),
                      30), mount.log_text()
    return mount


@pytest.fixture
def linux_mount(mount_factory, known_capture):
    """A linux-profile mount holding the known capture's entries."""
    return _known_mount(mount_factory, known_capture, "linux")


@pytest.fixture
def tutorial_mount(mount_factory, known_capture):
    """A tutorial-profile (2.4/2.6) mount holding the known capture's entries."""
    return _known_mount(mount_factory, known_capture, "tutorial")
