"""`procfs-ct exec` and `procfs-ct shell`: the emulation at the real /proc paths, the rest
of /proc passed through, /proc's permission rules, and nothing left behind."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, child_env, procfs_ct_command
from exechelp import (KNOWN_ENTRIES, known_capture, linux_mount, replay, run_exec,  # noqa: F401
                      same_table, sh_in)

pytestmark = pytest.mark.mount
LISTING_PATHS = ("/proc/net/nf_conntrack", "/proc/self/net/nf_conntrack",
                 "/proc/$$/net/nf_conntrack", "/proc/$$/task/$$/net/nf_conntrack")


def sections(text: str) -> list:
    return [part.strip("\n").splitlines() for part in text.split("==\n")]


def test_listings_at_every_real_path(linux_mount, known_capture):
    script = "; echo ==; ".join(f"cat {path}" for path in LISTING_PATHS)
    script += "; echo ==; cat /proc/net/ip_conntrack"
    done = sh_in(linux_mount.mnt, script)
    assert done.returncode == 0, done.stderr
    parts = sections(done.stdout)
    expected = replay(known_capture, "linux", "nf_conntrack").splitlines()
    assert len(parts) == len(LISTING_PATHS) + 1
    for part in parts[:-1]:
        assert len(part) == KNOWN_ENTRIES
        same_table(part, expected)
    same_table(parts[-1], replay(known_capture, "linux", "ip_conntrack").splitlines())


def test_directories_list_real_and_emulated_entries(linux_mount):
    done = sh_in(linux_mount.mnt, "ls /proc/net; echo ==; ls /proc/net/stat; echo ==; "
                                  "ls /proc/sys/net/ipv4/netfilter; echo ==; ls /proc/sys/net/ipv4")
    assert done.returncode == 0, done.stderr
    net, stat, netfilter, ipv4 = sections(done.stdout)
    assert {"ip_conntrack", "nf_conntrack", "nf_conntrack_expect", "dev", "tcp"} <= set(net)
    assert {"ip_conntrack", "nf_conntrack"} <= set(stat)
    assert "ip_ct_tcp_timeout_established" in netfilter
    # ipv4 merges the kernel's knobs (tcp_*) with the emulated ones (ip_conntrack_max)
    assert {"ip_conntrack_max", "tcp_syncookies", "ip_forward", "netfilter"} <= set(ipv4)


def test_knobs_and_real_files_side_by_side(linux_mount):
    done = sh_in(linux_mount.mnt, "cat /proc/sys/net/netfilter/nf_conntrack_max "
                                  "/proc/sys/net/ipv4/netfilter/ip_conntrack_count "
                                  "/proc/sys/kernel/pid_max; head -1 /proc/meminfo")
    assert done.returncode == 0, done.stderr
    maximum, count, pid_max, meminfo = done.stdout.splitlines()
    assert maximum == linux_mount.read("sys/net/netfilter/nf_conntrack_max").strip()
    assert int(count) == KNOWN_ENTRIES
    assert pid_max == Path("/proc/sys/kernel/pid_max").read_text().strip()
    assert meminfo.startswith("MemTotal:")


def test_ps_free_top_work_inside(linux_mount):
    done = sh_in(linux_mount.mnt, "ps -p $$ -o comm=; echo ==; ps -e | wc -l; echo ==; "
                                  "free | head -2; echo ==; top -bn1 | head -5")
    assert done.returncode == 0, done.stderr
    me, count, free, top = sections(done.stdout)
    assert me == ["bash"]
    assert int(count[0]) > 5
    assert free[1].startswith("Mem:") and int(free[1].split()[1]) > 0
    assert top[0].startswith("top - ") and any(line.startswith("Tasks:") for line in top)
    assert done.stderr == ""


def test_self_and_thread_self_are_the_caller(linux_mount):
    script = ("echo $BASHPID $(readlink /proc/self); "
              "python3 -c 'import os, threading\n"
              "def look(): print(os.getpid(), threading.get_native_id(), "
              "os.readlink(\"/proc/self\"), os.readlink(\"/proc/thread-self\"))\n"
              "t = threading.Thread(target=look); t.start(); t.join()'")
    done = sh_in(linux_mount.mnt, script)
    assert done.returncode == 0, done.stderr
    shell, python = done.stdout.splitlines()
    bash_pid, subshell_self = shell.split()
    assert subshell_self != bash_pid       # readlink ran as a process of its own
    pid, tid, self_link, thread_link = python.split()
    assert tid != pid                      # asked from a second thread
    assert self_link == pid
    assert thread_link == f"{pid}/task/{tid}"


def test_magic_links_still_open(linux_mount):
    done = sh_in(linux_mount.mnt, "cat <(echo substituted); echo piped | cat /dev/stdin; "
                                  "ls /proc/self/fd/ | wc -l; readlink /proc/self/ns/mnt")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == ["substituted", "piped"]
    assert int(lines[2]) >= 3
    inside_ns = lines[3]
    assert inside_ns.startswith("mnt:[") and inside_ns != os.readlink("/proc/self/ns/mnt")


def test_permissions_as_in_proc(linux_mount):
    script = r"""
    [ -w /proc/sys/net/netfilter/nf_conntrack_count ] && echo count-writable || echo count-readonly
    [ -w /proc/sys/net/netfilter/nf_conntrack_max ] && echo max-writable || echo max-readonly
    echo 5 > /proc/sys/net/netfilter/nf_conntrack_count || echo refused-root
    head -1 /proc/$$/maps > /dev/null && echo root-reads-maps
    setpriv --reuid=65534 --regid=65534 --clear-groups sh -c "
        head -1 /proc/$$/maps > /dev/null 2>&1 || echo nobody-not-root-maps
        head -1 /proc/self/maps > /dev/null && echo nobody-own-maps
        readlink /proc/$$/exe || echo nobody-not-root-exe"
    setpriv --reuid=65534 --regid=65534 --clear-groups sh -c '
        [ -w /proc/sys/net/netfilter/nf_conntrack_max ] && echo nobody-writable || echo nobody-readonly
        echo 3 > /proc/sys/net/netfilter/nf_conntrack_max || echo refused-nobody
        cat /proc/sys/kernel/pid_max > /dev/null && echo nobody-reads-kernel'
    """
    done = sh_in(linux_mount.mnt, script)
    # maps and exe of a root process: 0444 and a link, but the kernel's ptrace check
    # refuses another user (checked with the caller's own credentials)
    assert done.stdout.split() == ["count-readonly", "max-writable", "refused-root",
                                   "root-reads-maps", "nobody-not-root-maps", "nobody-own-maps",
                                   "nobody-not-root-exe", "nobody-readonly", "refused-nobody",
                                   "nobody-reads-kernel"]
    assert "nf_conntrack_count: Permission denied" in done.stderr
    assert "nf_conntrack_max: Permission denied" in done.stderr
    assert linux_mount.read("sys/net/netfilter/nf_conntrack_max").strip() != "3"


def test_dropped_privileges_read_the_same_numbers(linux_mount):
    reads = ("wc -l < /proc/net/nf_conntrack; cat /proc/sys/net/netfilter/nf_conntrack_count; "
             "grep -c ESTABLISHED /proc/net/ip_conntrack; tail -1 /proc/net/stat/nf_conntrack")
    script = (f"{reads}; echo ==; setpriv --reuid nobody --regid nogroup --clear-groups "
              f"sh -c '{reads}'; echo ==; runuser -u nobody -- cat /proc/net/nf_conntrack | wc -l")
    done = sh_in(linux_mount.mnt, script)
    assert done.returncode == 0, done.stderr
    root, nobody, runuser = sections(done.stdout)
    assert root == nobody
    assert int(root[0]) == int(root[1]) == KNOWN_ENTRIES
    assert runuser == [str(KNOWN_ENTRIES)]


def _host_mounts() -> list:
    """The host's mount table, less what other tests running meanwhile mount under /tmp
    (ours would be /tmp/procfs-ct-exec-*, /proc or /usr/sbin: all kept)."""
    kept = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if not point.startswith(("/tmp/", "/run/netns/")) or "procfs-ct-exec" in point:
            kept.append(line)
    return kept


def _leftovers(workdir: str) -> list:
    """What remains of one exec's private directory: the directory itself and any process
    whose command line names it (other tests, and other checkouts' suites on the same
    machine, run their own execs meanwhile: only this one's are looked for)."""
    found = [workdir] if os.path.exists(workdir) else []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if workdir.encode() in cmdline:
            found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


def test_own_daemon_leaves_nothing_behind(known_capture):
    before_mounts = _host_mounts()
    done = run_exec(["--profile", "linux", "--source", f"pcap:{known_capture}@0", "--",
                     "sh", "-c", "while [ $(cat /proc/sys/net/netfilter/nf_conntrack_count) "
                     f"-lt {KNOWN_ENTRIES} ]; do :; done; wc -l < /proc/net/nf_conntrack; "
                     "grep -c procfs-ct /proc/self/mountinfo; "
                     "grep -o ' /[^ ]*/ct ' /proc/self/mountinfo; exit 7"])
    assert done.returncode == 7, done.stderr
    entries, mounts, daemon_mount = done.stdout.split()
    assert int(entries) == KNOWN_ENTRIES
    assert int(mounts) >= 2                 # the view and the daemon's mount, inside only
    workdir = os.path.dirname(daemon_mount)
    assert os.path.basename(workdir).startswith("procfs-ct-exec-"), daemon_mount
    assert _leftovers(workdir) == []
    assert _host_mounts() == before_mounts


def test_exit_status_and_usage_errors(linux_mount, tmp_path):
    mnt = str(linux_mount.mnt)
    assert run_exec(["--mount", mnt, "--", "sh", "-c", "exit 42"]).returncode == 42
    missing = run_exec(["--mount", mnt, "--", "no-such-program-pcte"])
    assert missing.returncode == 127
    assert missing.stderr == "procfs-ct exec: no-such-program-pcte: No such file or directory\n"
    for args, message in (([], "procfs-ct exec: no COMMAND given"),
                          (["--mount", str(tmp_path), "--", "true"],
                           f"procfs-ct exec: --mount {tmp_path}: not a procfs-ct mount"),
                          (["--mount", mnt, "--source", "none", "--", "true"],
                           "procfs-ct exec: --source: a mount option, but --mount names")):
        done = run_exec(args)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith(message) and done.stderr.count("\n") == 1, done.stderr
    bad_source = run_exec(["--source", "bogus:1", "--", "true"])
    assert bad_source.returncode == 2
    assert bad_source.stderr.startswith("procfs-ct exec: ") and "Traceback" not in bad_source.stderr


def test_shell_runs_an_interactive_shell_inside(linux_mount):
    env = child_env()
    env["SHELL"] = "/bin/bash"
    done = subprocess.run(procfs_ct_command() + ["shell", "--mount", str(linux_mount.mnt)],
                          cwd=REPO, env=env, input="wc -l < /proc/net/nf_conntrack\nexit 3\n",
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert done.stdout.split() == [str(KNOWN_ENTRIES)]


def test_conntrack_is_ours_inside(linux_mount):
    done = sh_in(linux_mount.mnt, "command -v conntrack; cat /usr/sbin/conntrack; "
                                  "/usr/sbin/conntrack -C")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert re.search(r"/procfs-ct-exec-[^/]+/bin/conntrack$", lines[0])
    assert "procfs_ct.cli" in done.stdout
    assert lines[-1] == str(KNOWN_ENTRIES)


def test_what_the_command_leaves_running_is_stopped(linux_mount):
    done = sh_in(linux_mount.mnt, "sleep 1000 & echo $!; (trap '' TERM; exec sleep 999) & echo $!")
    assert done.returncode == 0, done.stderr
    pids = done.stdout.split()
    assert len(pids) == 2
    # gone, not even zombies: the supervisor adopted them as subreaper and collected them
    assert [pid for pid in pids if os.path.exists(f"/proc/{pid}")] == []
