"""iptables commands on a live mount started without --rules, against the kernel.

The mount runs in a network namespace `pcti-*` (nsenter --net only: the FUSE mount stays
in this test's mount namespace) with `--source tap:lo` and no --rules.  The same rule is
given to the mount through `procfs-ct iptables --mount` and to the namespace's kernel
through iptables-legacy; traffic over the namespace's lo then has to leave both listings
with the same counters (the rule's and the policies').
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, Mount, child_env, run_in_netns, fuse_unavailable, make_base_dir, procfs_ct_command, wait_until

NAMESPACE = f"pcti-live-{os.getpid()}"
RULE = ["-A", "INPUT", "-p", "udp", "--dport", "9"]
LISTING = ["-L", "-v", "-n", "-x"]
# A datagram to a closed port over lo: 20 + 8 + 7 bytes in, and the port unreachable back.
TRAFFIC = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
           "s.connect(('127.0.0.1', 9)); s.send(b'anyone?'); s.settimeout(2)\n"
           "try: s.recv(100)\nexcept ConnectionRefusedError: pass")
COUNTED = ("1", "35")                  # the rule's packets and bytes


def rule_counters(listing: str) -> tuple[str, str]:
    """The counters of the `udp dpt:9` rule in an `iptables -L -v -n -x` listing."""
    line = next(line for line in listing.splitlines() if line.endswith("udp dpt:9"))
    return tuple(line.split()[:2])


def _missing() -> str:
    if os.geteuid() != 0:
        return "needs root (network namespaces, AF_PACKET)"
    for tool in ("ip", "nsenter", "iptables-legacy"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return fuse_unavailable() or ""


def in_namespace(*argv: str, **kw) -> subprocess.CompletedProcess:
    """argv in the namespace's network stack, this test's mounts."""
    return run_in_netns(NAMESPACE, *argv, **kw)


class NamespaceMount(Mount):
    """A procfs-ct mount whose process lives in the namespace's network stack."""

    def command(self) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{NAMESPACE}"] + super().command()


@pytest.fixture
def live_mount():
    subprocess.run(["ip", "netns", "add", NAMESPACE], check=True)
    mount = None
    try:
        subprocess.run(["ip", "-n", NAMESPACE, "link", "set", "lo", "up"], check=True)
        mount = NamespaceMount(make_base_dir(), ["--source", "tap:lo", "--profile", "linux"],
                               foreground=True)
        yield mount.start()
    finally:
        if mount is not None:
            mount.stop()
            shutil.rmtree(mount.base, ignore_errors=True)
        subprocess.run(["ip", "netns", "del", NAMESPACE])


def iptables(mount: Mount, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(procfs_ct_command() + ["iptables", "--mount", str(mount.mnt), *argv],
                          capture_output=True, text=True, env=child_env(), cwd=REPO, timeout=60)


@pytest.mark.kernel
@pytest.mark.mount
@pytest.mark.skipif(bool(_missing()), reason=_missing() or "-")
def test_mount_without_rules_takes_commands_and_counts_like_the_kernel(live_mount):
    assert iptables(live_mount, "-S").stdout == in_namespace("iptables-legacy", "-S").stdout
    done = iptables(live_mount, *RULE)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    in_namespace("iptables-legacy", *RULE, check=True)
    sent = in_namespace(sys.executable, "-c", TRAFFIC)
    assert sent.returncode == 0, sent.stderr
    kernel = in_namespace("iptables-legacy", *LISTING, check=True).stdout
    assert rule_counters(kernel) == COUNTED
    # The engine thread reads the tap behind the kernel: wait for the same listing.
    listing = lambda: iptables(live_mount, *LISTING).stdout    # noqa: E731
    wait_until(lambda: listing() == kernel, 20)
    assert listing() == kernel, live_mount.log_text()
