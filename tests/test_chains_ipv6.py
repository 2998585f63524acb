"""IPv6 beside the iptables chains: tracked as without rules, unseen by the IPv4 tables.

ip6tables is not emulated, so `procfs-ct replay --rules FILE` of an IPv6 capture must give
what the kernel gives with an IPv4 ruleset and empty ip6tables chains: the same
nf_conntrack listing and per-frame ctstate as `replay` without rules (the kernel captures
under tests/data/kernel/, whose snapshots the plain replay already matches), every verdict
ACCEPT, and not one IPv4 rule counted.  The ruleset below would change all of that if the
IPv4 tables saw IPv6 packets: DROP policies, a raw NOTRACK for UDP, counting rules that
match any packet.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from conftest import child_env, procfs_ct_command
from engine.capture import PcapWriter, read_capture

KERNEL = Path(__file__).parent / "data" / "kernel"
ETHERTYPE_IPV6 = b"\x86\xdd"
IPV6_CAPTURES = ["tcp6_client_close", "udp6_request_reply", "udp6_fragmented",
                 "icmpv6_echo", "sctp6_association"]
IPV4_CAPTURE = "tcp_client_close"

IPV4_RULES = """\
*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -p udp -j NOTRACK
-A OUTPUT -p udp -j NOTRACK
COMMIT
*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT DROP [0:0]
-A INPUT -m state --state ESTABLISHED
-A OUTPUT -m state --state NEW
-A OUTPUT -p tcp --syn -j ACCEPT
-A OUTPUT -p tcp -m state --state ESTABLISHED,RELATED -j ACCEPT
-A INPUT -p tcp -m state --state ESTABLISHED -j ACCEPT
COMMIT
"""
COUNTERS = re.compile(r"^\[(\d+):(\d+)\] ", re.MULTILINE)


def replay(capture, *extra: str) -> str:
    done = subprocess.run(procfs_ct_command() + ["replay", str(capture), "--profile", "linux",
                                                 *extra],
                          capture_output=True, text=True, env=child_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def rules_file(tmp_path):
    path = tmp_path / "rules"
    path.write_text(IPV4_RULES)
    return path


def without_verdict(ctstate: str) -> tuple[str, set[str]]:
    """The --ctstate lines less their verdict column, and the verdicts seen."""
    lines, verdicts = [], set()
    for line in ctstate.splitlines():
        head, _, last = line.rpartition(" ")
        if last in ("ACCEPT", "DROP"):
            verdicts.add(last)
            line = head
        lines.append(line)
    return "\n".join(lines), verdicts


def counted(save_text: str) -> list[str]:
    """The rule and policy lines of an iptables-save -c output whose counters are not 0."""
    return [line for line in save_text.splitlines()
            if (match := COUNTERS.search(line)) and match.group(1) != "0"
            or line.startswith(":") and not line.endswith("[0:0]")]


@pytest.mark.parametrize("name", IPV6_CAPTURES)
def test_ipv6_is_tracked_as_without_rules(name, rules_file):
    capture = KERNEL / name / "capture.pcap"
    assert replay(capture, "--rules", str(rules_file)) == replay(capture)
    plain = replay(capture, "--ctstate")
    assert "NEW" in plain                       # the capture does make entries
    with_rules, verdicts = without_verdict(replay(capture, "--ctstate", "--rules",
                                                  str(rules_file)))
    assert with_rules == plain.rstrip("\n")
    assert verdicts == {"ACCEPT"}
    save = replay(capture, "--rules", str(rules_file), "--format", "iptables-save")
    assert "-A OUTPUT -m state --state NEW" in save
    assert counted(save) == []                  # no IPv4 rule or policy saw a packet


def test_ipv4_counters_ignore_ipv6_frames_beside(tmp_path, rules_file):
    """IPv4 and IPv6 frames in one capture: the IPv4 counters are the IPv4 frames' alone,
    the IPv6 frames' states those of the IPv6 capture replayed without rules."""
    with open(KERNEL / IPV4_CAPTURE / "capture.pcap", "rb") as fileobj:
        ipv4 = list(read_capture(fileobj))
    with open(KERNEL / "udp6_request_reply" / "capture.pcap", "rb") as fileobj:
        ipv6 = list(read_capture(fileobj))
    # The IPv6 exchange is moved to the middle of the IPv4 connection's time.
    shift = ipv4[len(ipv4) // 2].ts - ipv6[0].ts
    mixed = sorted(ipv4 + [frame._replace(ts=frame.ts + shift) for frame in ipv6],
                   key=lambda frame: frame.ts)
    assert mixed[0] in ipv4 and mixed[-1] in ipv4
    assert all(frame.data[12:14] == ETHERTYPE_IPV6 for frame in ipv6)
    path = tmp_path / "mixed.pcap"
    with open(path, "wb") as fileobj:
        writer = PcapWriter(fileobj, ipv4[0].linktype)
        for frame in mixed:
            writer.write(frame.ts, frame.data)
    save_mixed = replay(path, "--rules", str(rules_file), "--format", "iptables-save")
    save_ipv4 = replay(KERNEL / IPV4_CAPTURE / "capture.pcap", "--rules", str(rules_file),
                       "--format", "iptables-save")
    strip = lambda text: [line for line in text.splitlines() if not line.startswith("# ")]
    assert counted(save_ipv4) != []             # the IPv4 frames do count
    assert strip(save_mixed) == strip(save_ipv4)
    states, _ = without_verdict(replay(path, "--ctstate", "--rules", str(rules_file)))
    ipv6_states = [line.split(" ", 1)[1] for line, frame in zip(states.splitlines(), mixed)
                   if frame.data[12:14] == ETHERTYPE_IPV6]
    alone = [line.split(" ", 1)[1]
             for line in replay(KERNEL / "udp6_request_reply" / "capture.pcap",
                                "--ctstate").splitlines()]
    assert ipv6_states == alone
