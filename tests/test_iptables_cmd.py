"""procfs-ct iptables / iptables-save / iptables-restore against a real mount: the commands
write requests to MNT/net/procfs_ct_iptables and print what the daemon answers.  What the
mount answers is compared with the rules engine applied to the same rules here (the engine's
texts are checked against iptables-legacy in tests/test_rules_forms.py)."""
from __future__ import annotations

import os
import stat
import subprocess

import pytest

from conftest import REPO, child_env, procfs_ct_command
from engine.rules import Ruleset
from engine.rules.commands import apply_command

RULES = ("*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"
         ":tcp_packets - [0:0]\n"
         "-A INPUT -m state --state ESTABLISHED,RELATED -j ACCEPT\n"
         "-A INPUT -p tcp -j tcp_packets\n"
         "-A tcp_packets -p tcp --dport 22 -j ACCEPT\nCOMMIT\n")


def run(mount, *argv: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(procfs_ct_command() + [argv[0], "--mount", str(mount.mnt)]
                          + list(argv[1:]), input=stdin, capture_output=True, text=True,
                          env=child_env(), cwd=REPO, timeout=60)


def rules_mount(mount_factory, tmp_path):
    path = tmp_path / "rules"
    path.write_text(RULES)
    return mount_factory("--source", "none", "--rules", str(path))


def test_channel_is_root_only_with_and_without_rules(mount_factory, tmp_path):
    for mount in (rules_mount(mount_factory, tmp_path), mount_factory("--source", "none")):
        mode = os.stat(mount.path("net/procfs_ct_iptables")).st_mode
        assert stat.S_IMODE(mode) == 0o600


def test_refused_first_command_leaves_a_mount_without_tables(mount_factory):
    """Without --rules nothing is loaded until a command succeeds (a refused one loads none)."""
    mount = mount_factory("--source", "none")
    done = run(mount, "iptables", "-A", "nochain", "-j", "ACCEPT")
    assert done.returncode == 1 and done.stderr.startswith("iptables: ")
    assert run(mount, "iptables-save").stdout == ""
    assert run(mount, "iptables", "-P", "INPUT", "DROP").returncode == 0
    assert run(mount, "iptables-save").stdout.startswith("*filter\n:INPUT DROP [0:0]\n")


def test_list_and_change_rules(mount_factory, tmp_path):
    mount = rules_mount(mount_factory, tmp_path)
    expected = Ruleset.load_restore(RULES)
    for argv in (["-S"], ["-L", "-n"], ["-A", "INPUT", "-p", "udp", "-j", "DROP"],
                 ["-D", "INPUT", "1"], ["-S"], ["-L", "-v", "-n", "-x", "--line-numbers"]):
        done = run(mount, "iptables", *argv)
        assert (done.stdout, done.stderr, done.returncode) == \
            (apply_command(expected, argv), "", 0), argv
    saved = run(mount, "iptables-save", "-c")
    assert saved.returncode == 0
    assert saved.stdout == expected.save(counters=True)
    assert "[0:0] -A INPUT -p udp -j DROP" in saved.stdout


def test_refused_command_changes_nothing(mount_factory, tmp_path):
    mount = rules_mount(mount_factory, tmp_path)
    before = run(mount, "iptables-save").stdout
    done = run(mount, "iptables", "-D", "INPUT", "9")
    assert (done.stdout, done.stderr, done.returncode) == \
        ("", "iptables: Index of deletion too big.\n", 1)
    done = run(mount, "iptables", "-A", "nochain", "-j", "ACCEPT")
    assert done.returncode == 1 and done.stderr.startswith("iptables: ")
    assert run(mount, "iptables-save").stdout == before


def test_restore_atomic_and_noflush(mount_factory, tmp_path):
    mount = rules_mount(mount_factory, tmp_path)
    before = run(mount, "iptables-save").stdout
    bad = "*filter\n-A INPUT -j ACCEPT\n-A INPUT -j nosuchtarget\nCOMMIT\n"
    done = run(mount, "iptables-restore", "-n", stdin=bad)
    assert done.returncode != 0 and "line" in done.stderr
    assert run(mount, "iptables-save").stdout == before
    done = run(mount, "iptables-restore", "-n",
               stdin="*filter\n-A OUTPUT -p icmp -j ACCEPT\nCOMMIT\n")
    assert done.returncode == 0, done.stderr
    expected = Ruleset.load_restore(RULES).restore(
        "*filter\n-A OUTPUT -p icmp -j ACCEPT\nCOMMIT\n", noflush=True)
    assert run(mount, "iptables-save").stdout == expected.save(counters=False)
    done = run(mount, "iptables-restore", stdin="*filter\nCOMMIT\n")
    assert run(mount, "iptables", "-S").stdout == apply_command(Ruleset.load_restore(
        "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"),
        ["-S"])


def test_bad_mount_is_one_line(tmp_path):
    done = subprocess.run(procfs_ct_command() + ["iptables", "--mount", str(tmp_path), "-S"],
                          capture_output=True, text=True, env=child_env(), cwd=REPO)
    assert done.returncode == 2
    assert done.stderr.startswith("procfs-ct iptables: ") and done.stderr.count("\n") == 1


def exec_run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(procfs_ct_command() + ["exec", *argv], capture_output=True, text=True,
                          env=child_env(), cwd=REPO, timeout=120)


def test_exec_with_rules_serves_iptables_at_its_absolute_paths(tmp_path):
    """`exec --rules` starts its mount with them; /usr/sbin/iptables (and /sbin's, and the
    -legacy names where installed) are the emulated commands; ip6tables is left alone."""
    if os.geteuid() != 0:
        pytest.skip("needs root (a mount namespace)")
    path = tmp_path / "rules"
    path.write_text(RULES)
    names = ["/usr/sbin/iptables -S", "/sbin/iptables-save", "iptables -S"]
    names += [f"/usr/sbin/{name}" for name in ("iptables-legacy -S", "iptables-legacy-save")
              if os.path.lexists(f"/usr/sbin/{name.split()[0]}")]
    done = exec_run("--source", "none", "--rules", str(path), "--", "sh", "-c",
                    "; ".join(f"{cmd}; echo =" for cmd in names))
    assert done.returncode == 0, done.stderr
    outputs = done.stdout.split("=\n")[:-1]
    expected = Ruleset.load_restore(RULES)
    for cmd, out in zip(names, outputs):
        want = expected.save(counters=False) if cmd.endswith("-save") else apply_command(expected, ["-S"])
        assert out == want, cmd


def test_exec_with_bad_rules_is_one_line(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root (a mount namespace)")
    done = exec_run("--source", "none", "--rules", str(tmp_path / "missing"), "--", "true")
    assert done.returncode == 2
    assert done.stderr == f"procfs-ct exec: --rules {tmp_path / 'missing'}: No such file or directory\n"
