"""`procfs-ct conntrack`: conntrack-tools' formats made from /proc lines (no FUSE), then
every form through `procfs-ct exec` against a mount fed by the known capture."""
from __future__ import annotations

import io
import re
import threading
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, child_env, procfs_ct_command, wait_until
from exechelp import (KNOWN_ENTRIES, known_capture, linux_mount, replay, run_exec,  # noqa: F401
                      same_table, sh_in)
from procfs_ct import cmd_conntrack, conntrack_format as fmt

# Observed on this machine (kernel 6.18, conntrack-tools 1.4.7, one network namespace):
# the same entries read from /proc/net/nf_conntrack, and as `conntrack -L` printed them.
KERNEL_PROC = [
    "ipv4     2 tcp      6 119 TIME_WAIT src=127.0.0.1 dst=127.0.0.1 sport=35700 dport=8080 src=127.0.0.1 dst=127.0.0.1 sport=8080 dport=35700 [ASSURED] mark=0 zone=0 use=2",
    "ipv4     2 icmp     1 29 src=127.0.0.1 dst=127.0.0.1 type=8 code=0 id=15015 src=127.0.0.1 dst=127.0.0.1 type=0 code=0 id=15015 mark=0 zone=0 use=2",
    "ipv4     2 udp      17 29 src=127.0.0.1 dst=127.0.0.1 sport=43203 dport=9999 [UNREPLIED] src=127.0.0.1 dst=127.0.0.1 sport=9999 dport=43203 mark=0 zone=0 use=2",
]
CONNTRACK_L = [
    "tcp      6 119 TIME_WAIT src=127.0.0.1 dst=127.0.0.1 sport=35700 dport=8080 src=127.0.0.1 dst=127.0.0.1 sport=8080 dport=35700 [ASSURED] mark=0 use=1",
    "icmp     1 29 src=127.0.0.1 dst=127.0.0.1 type=8 code=0 id=15015 src=127.0.0.1 dst=127.0.0.1 type=0 code=0 id=15015 mark=0 use=1",
    "udp      17 29 src=127.0.0.1 dst=127.0.0.1 sport=43203 dport=9999 [UNREPLIED] src=127.0.0.1 dst=127.0.0.1 sport=9999 dport=43203 mark=0 use=1",
]
# `conntrack -E` lines for entries whose /proc lines are the PROC_AT_EVENT lines
EVENTS = [
    ("NEW", "ipv4     2 tcp      6 120 SYN_SENT src=127.0.0.1 dst=127.0.0.1 sport=60698 dport=8081 [UNREPLIED] src=127.0.0.1 dst=127.0.0.1 sport=8081 dport=60698 mark=0 zone=0 use=2",
     "    [NEW] tcp      6 120 SYN_SENT src=127.0.0.1 dst=127.0.0.1 sport=60698 dport=8081 [UNREPLIED] src=127.0.0.1 dst=127.0.0.1 sport=8081 dport=60698"),
    ("UPDATE", "ipv4     2 tcp      6 432000 ESTABLISHED src=127.0.0.1 dst=127.0.0.1 sport=60698 dport=8081 src=127.0.0.1 dst=127.0.0.1 sport=8081 dport=60698 [ASSURED] mark=0 zone=0 use=2",
     " [UPDATE] tcp      6 432000 ESTABLISHED src=127.0.0.1 dst=127.0.0.1 sport=60698 dport=8081 src=127.0.0.1 dst=127.0.0.1 sport=8081 dport=60698 [ASSURED]"),
]
KERNEL_STAT = ("entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n"
               "00000003  00000000 00000002 00000000 0000000a 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001  00000000 00000000 00000000 00000000\n"
               "00000003  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000  00000000 00000000 00000000 00000000\n")
CONNTRACK_S = [
    "cpu=0   \tfound=2 invalid=10 insert=0 insert_failed=0 drop=0 early_drop=0 error=1 search_restart=0 clash_resolve=0 chaintoolong=0 ",
    "cpu=1   \tfound=0 invalid=0 insert=0 insert_failed=0 drop=0 early_drop=0 error=0 search_restart=0 clash_resolve=0 chaintoolong=0 ",
]
SUMMARY = "conntrack v1.4.7 (conntrack-tools): {} flow entries have been shown.\n"
TRY = "Try `conntrack -h' or 'conntrack --help' for more information.\n"


# -- formats, without FUSE --------------------------------------------------------------------
def test_list_lines_as_conntrack_prints_them():
    flows = [fmt.parse_line(line) for line in KERNEL_PROC]
    assert [fmt.list_line(f) for f in flows] == CONNTRACK_L
    assert [fmt.list_line(f, extended=True) for f in flows] == \
        ["ipv4     2 " + line for line in CONNTRACK_L]


def test_event_lines_as_conntrack_prints_them():
    for kind, proc, printed in EVENTS:
        assert fmt.event_line(kind, fmt.parse_line(proc)) == printed
    gone = fmt.event_line("DESTROY", fmt.parse_line(KERNEL_PROC[2]))
    assert gone == ("[DESTROY] udp      17 src=127.0.0.1 dst=127.0.0.1 sport=43203 dport=9999 "
                    "[UNREPLIED] src=127.0.0.1 dst=127.0.0.1 sport=9999 dport=43203")


def test_stats_as_conntrack_prints_them():
    assert fmt.stat_lines(fmt.parse_stat(KERNEL_STAT)) == CONNTRACK_S


def test_events_from_two_listings():
    syn, established = (fmt.parse_line(proc) for _, proc, _ in EVENTS)
    udp = fmt.parse_line(KERNEL_PROC[2])
    older_udp = fmt.parse_line(KERNEL_PROC[2].replace(" 29 ", " 30 "))
    assert fmt.diff_events(fmt.by_key([syn, older_udp]), fmt.by_key([established, udp])) == [
        ("UPDATE", established)]                     # a timer counting down is no event
    assert fmt.diff_events(fmt.by_key([udp]), fmt.by_key([syn])) == [("NEW", syn), ("DESTROY", udp)]


@pytest.fixture
def proc_root(tmp_path, monkeypatch):
    """A directory shaped like /proc holding the kernel's recorded files."""
    (tmp_path / "net/stat").mkdir(parents=True)
    (tmp_path / "sys/net/netfilter").mkdir(parents=True)
    (tmp_path / "net/nf_conntrack").write_text("\n".join(KERNEL_PROC) + "\n")
    (tmp_path / "net/nf_conntrack_expect").write_text("")
    (tmp_path / "net/stat/nf_conntrack").write_text(KERNEL_STAT)
    (tmp_path / "sys/net/netfilter/nf_conntrack_count").write_text("3\n")
    monkeypatch.setenv(cmd_conntrack.ROOT_ENV, str(tmp_path))
    return tmp_path


def conntrack(*argv: str) -> tuple:
    out, err = io.StringIO(), io.StringIO()
    status = cmd_conntrack.run_argv(list(argv), out, err)
    return status, out.getvalue(), err.getvalue()


def test_list_filters(proc_root):
    assert conntrack("-L") == (0, "".join(l + "\n" for l in CONNTRACK_L), SUMMARY.format(3))
    for argv, wanted in ((["-p", "tcp"], [0]), (["-p", "17", "--dport", "9999"], [2]),
                         (["-p", "tcp", "--state", "TIME_WAIT"], [0]),
                         (["-p", "tcp", "--state", "ESTABLISHED"], []),
                         (["-s", "127.0.0.1", "-u", "SEEN_REPLY"], [0, 1]),
                         (["--status", "ASSURED"], [0]), (["-u", "UNSET"], [0, 1, 2]),
                         (["-d", "127.1"], [0, 1, 2]),                   # inet_aton: 127.0.0.1 (["-f", "ipv6"], []), (["-n"], []),
                         (["-p", "icmp", "--icmp-type", "8"], [1]), (["-m", "1"], []),
                         (["-p", "tcp", "-r", "127.0.0.1", "-q", "127.0.0.1",
                           "--reply-port-src", "8080"], [0]),
                         (["-p", "tcp", "--reply-port-dst", "8080"], [])):
        status, out, err = conntrack("-L", *argv)
        assert (status, out, err) == (0, "".join(CONNTRACK_L[i] + "\n" for i in wanted),
                                      SUMMARY.format(len(wanted))), argv


def test_count_stats_expect(proc_root):
    assert conntrack("-C") == (0, "3\n", "")
    assert conntrack("-S") == (0, "".join(l + "\n" for l in CONNTRACK_S), "")
    assert conntrack("-L", "expect") == (
        0, "", "conntrack v1.4.7 (conntrack-tools): 0 expectations have been shown.\n")
    assert conntrack("-C", "expect") == (0, "0\n", "")


def test_usage_errors_as_conntrack_reports_them(proc_root):
    # messages and exit codes observed from conntrack-tools 1.4.7 on this machine
    for argv, message in ((["-L", "-p", "foo"], "`foo' unsupported protocol"),
                          (["-X"], "unknown option `-X'"),
                          (["-L", "--dport", "80"], "unknown option `--dport'"),
                          (["-L", "-p", "tcp", "--state", "FOO"], "unknown TCP state `FOO'"),
                          (["-L", "--status", "FOO"], "Bad parameter `FOO'"),
                          (["-L", "-s", "abc"], "Invalid IP address `abc'"),
                          (["-L", "-o", "foo"], "Bad parameter `foo'"),
                          (["-L", "-f", "inet"], "`inet' unsupported protocol"),
                          (["-L", "-L"], "Invalid commands combination"),
                          (["-L", "-C"], "Invalid commands combination"),
                          (["-L", "extra"], "unknown type `extra'"),
                          (["-C", "-p", "tcp"], "Illegal option `--protonum' with this command"),
                          (["-E", "-t", "1"], "Illegal option `--timeout' with this command")):
        assert conntrack(*argv) == (2, "", f"{fmt.VERSION}: {message}\n{TRY}"), argv


def test_write_commands_are_refused(proc_root):
    before = (proc_root / "net/nf_conntrack").read_text()
    for command in ("-D", "-U", "-I", "-F"):
        status, out, err = conntrack(command, "-p", "tcp")
        assert status == 1 and out == ""
        assert err.startswith(f"{fmt.VERSION}: Operation failed: Operation not permitted ({command}:")
    assert (proc_root / "net/nf_conntrack").read_text() == before


def test_never_opens_a_socket(proc_root, monkeypatch):
    def no_socket(*args, **kwargs):
        raise AssertionError("procfs-ct conntrack opened a socket")
    monkeypatch.setattr(socket, "socket", no_socket)
    for argv in (["-L"], ["-C"], ["-S"], ["-L", "expect"]):
        assert conntrack(*argv)[0] == 0


def test_version_and_help(proc_root):
    assert conntrack("-V") == (0, fmt.VERSION + "\n", "")
    status, out, err = conntrack()
    assert status == 0 and out.startswith("Command line interface for the connection tracking")


# -- through procfs-ct exec, against the known capture ------------------------------------------
def netlink_form(proc_line: str) -> str:
    """What conntrack -L prints for a modern /proc line (observed: no l3 columns, no zone=0,
    one reference less)."""
    assert proc_line.startswith("ipv4     2 ")
    return proc_line[len("ipv4     2 "):].replace(" zone=0", "").replace(" use=2", " use=1")


@pytest.mark.mount
def test_list_forms_inside_exec(linux_mount, known_capture):
    expected = replay(known_capture, "linux", "nf_conntrack").splitlines()
    forms = {"-L": lambda l: True,
             "-L -p tcp": lambda l: " tcp " in l,
             "-L -p udp --dport 53": lambda l: " udp " in l and "dport=53 " in l,
             "-L -s 10.0.0.5": lambda l: "src=10.0.0.5 " in l,
             "-L -d 192.168.1.20 -p tcp --sport 50003": lambda l: "sport=50003 " in l,
             "-L -p tcp --state SYN_SENT": lambda l: "SYN_SENT" in l,
             "-L --status ASSURED": lambda l: "[ASSURED]" in l,
             "-L -f ipv4 -p tcp --dport 443": lambda l: "dport=443 src" in l}
    script = "; ".join(f"echo '== {form}'; conntrack {form} 2>&1" for form in forms)
    done = sh_in(linux_mount.mnt, script)
    assert done.returncode == 0, done.stderr
    blocks = done.stdout.split("== ")[1:]
    assert len(blocks) == len(forms)
    for block, (form, keep) in zip(blocks, forms.items()):
        lines = block.splitlines()
        assert lines[0] == form
        wanted = [netlink_form(l) for l in expected if keep(l)]
        assert wanted, form
        assert lines[-1] == SUMMARY.format(len(wanted)).strip(), form
        same_table(lines[1:-1], wanted)
    extended = sh_in(linux_mount.mnt, "conntrack -L -o extended -p udp 2>/dev/null")
    same_table(extended.stdout.splitlines(),
               [netlink_form(l).replace("udp ", "ipv4     2 udp ", 1) for l in expected if " udp " in l])


@pytest.mark.mount
def test_count_stats_expect_and_refusals_inside_exec(linux_mount):
    done = sh_in(linux_mount.mnt, "conntrack -C; conntrack -S; conntrack -L expect; "
                                  "conntrack -D -p tcp; echo rc=$?; conntrack -C")
    lines = done.stdout.splitlines()
    assert lines[0] == str(KNOWN_ENTRIES) == lines[-1]
    stat_rows = len(linux_mount.read("net/stat/nf_conntrack").splitlines()) - 1
    assert [l.split("\t")[0].strip() for l in lines[1:1 + stat_rows]] == \
        [f"cpu={n}" for n in range(stat_rows)]
    assert "rc=1" in lines
    assert "0 expectations have been shown." in done.stderr
    assert "Operation failed: Operation not permitted (-D:" in done.stderr


@pytest.mark.mount
def test_events_follow_the_table(mount_factory):
    """-E on a mount that taps lo: a UDP exchange shows [NEW], then (its timer set to 1 s
    by the knob) [DESTROY]; the lines are waited for, not slept for."""
    mount = mount_factory("--source", "tap:lo", "--profile", "linux")
    mount.write("sys/net/netfilter/nf_conntrack_udp_timeout", "1")
    events = subprocess.Popen(procfs_ct_command() + ["exec", "--mount", str(mount.mnt), "--",
                                                     "conntrack", "-E", "-p", "udp"],
                              cwd=REPO, env=child_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiver.bind(("127.0.0.1", 0))
        port = receiver.getsockname()[1]
        seen: list = []
        threading.Thread(target=lambda: seen.extend(events.stdout), daemon=True).start()

        def lines_for(kind: str) -> list:
            return [line.rstrip("\n") for line in list(seen)
                    if line.startswith(kind) and f"dport={port}" in line]

        def ping_and_look() -> list:
            # Sent until -E, which reports changes after its first listing, shows one.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                sender.sendto(b"ping", ("127.0.0.1", port))
            return lines_for("    [NEW] ")
        assert wait_until(ping_and_look, 30), "".join(seen)
        new = lines_for("    [NEW] ")[0]
        # seconds left when the poll saw it: 1 (the knob) or 0 (a poll later)
        assert re.match(r"    \[NEW\] udp      17 [01] src=127\.0\.0\.1 dst=127\.0\.0\.1 sport=", new), new
        assert new.endswith(f"dport={port} [UNREPLIED] src=127.0.0.1 dst=127.0.0.1 sport={port} "
                            f"dport={new.split('sport=')[1].split()[0]}")
        # No more packets: the 1-second timer runs out and the entry goes.
        assert wait_until(lambda: lines_for("[DESTROY] udp      17 src="), 30), "".join(seen)
        receiver.close()
    finally:
        events.terminate()          # exec passes SIGTERM on to conntrack, which stops as on ^C
        try:
            out, err = events.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            events.kill()
            raise
    assert events.returncode == 0
    assert err.rstrip().endswith("flow events have been shown.")
