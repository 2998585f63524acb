"""`procfs-ct replay --rules` on the command line: the verdict column of --ctstate, the
iptables-save format, --local, --set, and one clear line (exit 2) for every bad argument."""
from __future__ import annotations

import subprocess

import pytest

from conftest import child_env, procfs_ct_command
from engine.knobs import KNOBS_BY_NAME
from procfs_ct.cmd_replay import knob_named
from ruleshelp import DATA

SCENARIO = DATA / "rc_firewall"
CAPTURE = str(SCENARIO / "capture.pcap")
RULES = str(SCENARIO / "rules")
BASE = ["--profile", "linux", "--iface", "1=lo,2=va", "--set", "nf_conntrack_checksum=0"]


def replay(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(procfs_ct_command() + ["replay", *args], capture_output=True,
                          text=True, env=child_env(), timeout=120)


def test_ctstate_lines_end_in_the_final_verdict():
    done = replay(CAPTURE, "--rules", RULES, *BASE, "--ctstate")
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    # A frame conntrack never saw (the copy of a REJECT reply) has no verdict column.
    unseen = [row for row in rows if row[1] == "NOTSEEN"]
    assert all(len(row) == 2 for row in unseen)
    rows = [row for row in rows if row[1] != "NOTSEEN"]
    assert {row[-1] for row in rows} == {"ACCEPT", "DROP"}
    # rc.firewall drops new non-SYN packets: a NEW packet that is not a SYN is a DROP.
    drops = sum(1 for row in rows if row[-1] == "DROP")
    assert drops >= 3
    plain = replay(CAPTURE, *BASE, "--ctstate")
    assert plain.returncode == 0 and all(len(line.split()) in (2, 3)
                                         for line in plain.stdout.splitlines())
    assert not any(line.endswith(("ACCEPT", "DROP")) for line in plain.stdout.splitlines())


def test_local_addresses_send_other_traffic_through_forward(tmp_path):
    rules = tmp_path / "fwd.rules"
    rules.write_text("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                     "COMMIT\n")
    as_host = replay(CAPTURE, "--rules", str(rules), *BASE, "--format", "iptables-save")
    as_router = replay(CAPTURE, "--rules", str(rules), *BASE, "--local", "127.0.0.1",
                       "--format", "iptables-save")
    assert ":FORWARD DROP [0:0]" in as_host.stdout
    # 10.99.0.1 is not declared local: what arrives for it is forwarded, and dropped there.
    forwarded = [line for line in as_router.stdout.splitlines() if line.startswith(":FORWARD")]
    assert forwarded and forwarded[0] != ":FORWARD DROP [0:0]"


@pytest.mark.parametrize("spelling", [
    "tcp_timeout_established", "nf_conntrack_tcp_timeout_established",
    "ip_conntrack_tcp_timeout_established",
    "sys/net/netfilter/nf_conntrack_tcp_timeout_established",
    "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_established"])
def test_every_spelling_of_a_knob_names_it(spelling):
    assert knob_named(spelling) == "tcp_timeout_established"
    assert "tcp_timeout_established" in KNOBS_BY_NAME


def test_set_changes_what_the_table_shows():
    shown = replay(CAPTURE, *BASE, "--set", "nf_conntrack_udp_timeout=5")
    default = replay(CAPTURE, *BASE)
    assert shown.returncode == default.returncode == 0
    udp = [line for line in shown.stdout.splitlines() if " udp " in line]
    assert udp and all(int(line.split()[4]) <= 5 for line in udp)
    assert any(int(line.split()[4]) > 5 for line in default.stdout.splitlines() if " udp " in line)


@pytest.mark.parametrize("args, message", [
    (["--set", "nf_conntrack_max=x"], "--set nf_conntrack_max=x: not a number (Invalid argument)"),
    (["--set", "net.netfilter.nf_conntrack_count=3"],
     "--set net.netfilter.nf_conntrack_count=3: count is read-only (Permission denied)"),
    (["--set", "nf_conntrack_tcp_loose=1", "--set", "nf_conntrack_log_invalid=300"],
     "--set nf_conntrack_log_invalid=300: outside the u8 limits 0..255 (Invalid argument)"),
    (["--set", "no_such_knob=3"], "--set no_such_knob=3: no knob is called 'no_such_knob'"),
    (["--set", "nf_conntrack_max"], "--set nf_conntrack_max: expected KNOB=VALUE"),
    (["--iface", "va"], "--iface: 'va' is not INDEX=NAME"),
    (["--local", "10.99.0.300"], "--local: '10.99.0.300' is not an IPv4 address"),
    (["--format", "iptables-save"], "--format iptables-save needs --rules FILE"),
    (["--rules", "/nonexistent/rules"], "--rules /nonexistent/rules: No such file"),
])
def test_bad_arguments_are_one_line_and_exit_2(args, message):
    done = replay(CAPTURE, *args)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith(f"procfs-ct replay: {message}")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_a_refused_ruleset_names_its_line(tmp_path):
    rules = tmp_path / "bad.rules"
    rules.write_text("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --frobnicate\nCOMMIT\n")
    done = replay(CAPTURE, "--rules", str(rules))
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"procfs-ct replay: --rules {rules}: line 3: ")
