"""procps `sysctl` inside `procfs-ct exec`: every generation's names, -w, -p FILE,
--system, -a, and error messages and exit codes as the kernel gives them."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import child_env
from exechelp import LEGACY, known_capture, linux_mount, sh_in  # noqa: F401

pytestmark = pytest.mark.mount

# one name per generation -> the file under the mount that holds its value
GENERATIONS = {
    "net.ipv4.ip_conntrack_max": "sys/net/ipv4/ip_conntrack_max",                    # 2.4
    "net.ipv4.netfilter.ip_ct_tcp_timeout_established":                                # tutorial
        "sys/net/ipv4/netfilter/ip_ct_tcp_timeout_established",
    "net.ipv4.netfilter.ip_conntrack_tcp_timeout_established":                         # 2.6
        "sys/net/ipv4/netfilter/ip_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_established":                              # modern
        "sys/net/netfilter/nf_conntrack_tcp_timeout_established",
    "net.nf_conntrack_max": "sys/net/nf_conntrack_max",
}
# `sysctl -w` calls the kernel answers with an error (checked against it below)
KERNEL_ERRORS = ("net.netfilter.nf_conntrack_tcp_loose=7", "net.netfilter.nf_conntrack_udp_timeout=abc",
                 "net.netfilter.nf_conntrack_count=5", "net.netfilter.nf_conntrack_bogus=1",
                 "net.netfilter.nf_conntrack_tcp_loose=", "net.netfilter.nf_conntrack_tcp_loose")
SYSCTL_DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d",
               "/lib/sysctl.d")


def conf_pairs() -> list:
    pairs = []
    for line in (LEGACY / "conntrack-sysctl.conf").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, value = (part.strip() for part in line.split("="))
            pairs.append((key, value))
    return pairs


def test_every_generation_reads(linux_mount):
    done = sh_in(linux_mount.mnt, "sysctl " + " ".join(GENERATIONS))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{name} = {linux_mount.read(path).strip()}"
                                        for name, path in GENERATIONS.items()]


def test_write_one_name_read_every_other(linux_mount):
    done = sh_in(linux_mount.mnt, "sysctl -w net.ipv4.netfilter.ip_ct_tcp_timeout_established=3600 "
                                  "&& sysctl -w net.ipv4.ip_conntrack_max=1234 && sysctl -n "
                                  + " ".join(GENERATIONS))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "net.ipv4.netfilter.ip_ct_tcp_timeout_established = 3600",
        "net.ipv4.ip_conntrack_max = 1234", "1234", "3600", "3600", "3600", "1234"]
    assert linux_mount.read("sys/net/netfilter/nf_conntrack_max").strip() == "1234"


def test_load_a_file(linux_mount):
    done = sh_in(linux_mount.mnt, f"sysctl -p {LEGACY / 'conntrack-sysctl.conf'}")
    assert done.returncode == 0, done.stderr
    pairs = conf_pairs()
    assert done.stdout.splitlines() == [f"{key} = {value}" for key, value in pairs]
    assert linux_mount.read("sys/net/netfilter/nf_conntrack_tcp_timeout_established").strip() == "7200"
    assert linux_mount.read("sys/net/netfilter/nf_conntrack_tcp_timeout_time_wait").strip() == "60"
    assert linux_mount.read("sys/net/netfilter/nf_conntrack_max").strip() == "40000"


def test_system_applies_sysctl_d(linux_mount):
    # Private copies of the configuration directories (we are in our own mount namespace):
    # only the conntrack file is applied, the host's own settings are not re-applied.
    hide = "; ".join(f"[ -d {d} ] && mount -t tmpfs none {d}" for d in SYSCTL_DIRS)
    script = (f"{hide}; [ -e /etc/sysctl.conf ] && mount --bind /dev/null /etc/sysctl.conf; "
              f"cp {LEGACY / 'conntrack-sysctl.conf'} /etc/sysctl.d/60-conntrack.conf && sysctl --system")
    done = sh_in(linux_mount.mnt, script)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "* Applying /etc/sysctl.d/60-conntrack.conf ..." in lines
    assert [line for line in lines if not line.startswith("*")] == [
        f"{key} = {value}" for key, value in conf_pairs()]
    assert linux_mount.read("sys/net/netfilter/nf_conntrack_udp_timeout_stream").strip() == "90"


def test_all_lists_emulated_and_real_keys(linux_mount):
    done = sh_in(linux_mount.mnt, "sysctl -a 2>/dev/null | grep -E '^(net.netfilter.nf_conntrack_max|"
                                  "net.ipv4.netfilter.ip_ct_udp_timeout|net.ipv4.ip_conntrack_max|"
                                  "kernel.pid_max) '")
    assert done.returncode == 0, done.stderr
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = f.read().strip()
    maximum = linux_mount.read("sys/net/netfilter/nf_conntrack_max").strip()
    assert sorted(done.stdout.splitlines()) == sorted([
        f"kernel.pid_max = {pid_max}", f"net.ipv4.ip_conntrack_max = {maximum}",
        f"net.ipv4.netfilter.ip_ct_udp_timeout = {linux_mount.read('sys/net/netfilter/nf_conntrack_udp_timeout').strip()}",
        f"net.netfilter.nf_conntrack_max = {maximum}"])


@pytest.mark.kernel
def test_errors_as_the_kernel_gives_them(linux_mount):
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is missing")
    for call in KERNEL_ERRORS:
        # The kernel's answer, in a fresh network namespace (its own conntrack knobs).
        kernel = subprocess.run(["unshare", "--net", "sysctl", "-w", call], env=child_env(),
                                capture_output=True, text=True, timeout=30)
        ours = sh_in(linux_mount.mnt, f"sysctl -w '{call}'")
        assert (ours.stdout, ours.stderr, ours.returncode) == \
            (kernel.stdout, kernel.stderr, kernel.returncode), call
        assert kernel.stderr                      # each of them is an error
    assert linux_mount.read("sys/net/netfilter/nf_conntrack_tcp_loose").strip() == "1"
