"""Namespace plumbing for the kernel scenarios: namespaces, tcpdump, the snapshot.

Runs as root. Every namespace is called `pct-<scenario>` and is deleted in a `finally`;
only the loopback of those namespaces carries traffic. The initial namespace is only read,
except `nf_conntrack_max`, which the table-full scenario may lower for the length of its
traffic (see `GlobalConntrackMax`).
"""
from __future__ import annotations

import os
import platform
import signal
import subprocess
import time
from pathlib import Path
from typing import Optional

NS_PREFIX = os.environ.get("PCT_NS_PREFIX", "pct-")   # another prefix for a parallel run
CONNTRACK_MAX = "/proc/sys/net/netfilter/nf_conntrack_max"
CONNTRACK_COUNT = "/proc/sys/net/netfilter/nf_conntrack_count"


def run(*argv: str, stdin: Optional[str] = None) -> str:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def namespaces() -> list[str]:
    return [line.split()[0] for line in run("ip", "netns", "list").splitlines() if line.strip()]


def create_namespace(name: str) -> None:
    if name in namespaces():          # left over from an interrupted run of ours
        run("ip", "netns", "del", name)
    run("ip", "netns", "add", name)
    run("ip", "-n", name, "link", "set", "lo", "up")


def delete_namespace(name: str) -> None:
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


def kernel_hz() -> Optional[int]:
    """CONFIG_HZ from /proc/config.gz when the kernel exposes it."""
    import gzip
    try:
        with gzip.open("/proc/config.gz", "rt") as config:
            for line in config:
                if line.startswith("CONFIG_HZ="):
                    return int(line.split("=", 1)[1])
    except OSError:
        pass
    return None


def kernel_release() -> str:
    return platform.release()


class Tcpdump:
    """tcpdump -i IFACE (default lo) -w FILE in the current namespace; started and stopped
    cleanly. The wire scenarios capture `any` (cooked, with the packet direction) and
    `nflog:N` (the packets nft log rules sent to group N)."""

    def __init__(self, path: Path, interface: str = "lo") -> None:
        self.path = path
        self.proc = subprocess.Popen(
            # -B: in immediate mode libpcap gives every ring slot the full snap length
            # (256 KiB with -s 0), so the default 2 MiB buffer holds 8 packets and a burst
            # of loopback traffic overflows it; 128 MiB holds about 500.
            ["tcpdump", "-i", interface, "-w", str(path), "--immediate-mode", "-U", "-s", "0",
             "-B", "131072"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.banner = self._wait_for("listening on", timeout=10)

    def _wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        assert self.proc.stderr is not None
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            if text in line:
                return line.strip()
        self.proc.kill()
        raise RuntimeError(f"tcpdump did not say {text!r}")

    def stop(self) -> str:
        """SIGINT, wait for the file to be complete; returns tcpdump's closing statistics."""
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
            raise RuntimeError("tcpdump did not stop on SIGINT")
        return err.strip()


def read_snapshot() -> dict:
    """The table as the kernel lists it, with wall-clock times around the read, then stats."""
    before = time.time()
    with open("/proc/net/nf_conntrack") as listing:
        text = listing.read()
    after = time.time()
    with open("/proc/net/stat/nf_conntrack") as stat:
        stat_text = stat.read()
    with open(CONNTRACK_COUNT) as count:
        count_text = count.read()
    return {
        "before": before,
        "after": after,
        "at": (before + after) / 2,
        "listing": text.splitlines(),
        "stat": stat_text,
        "count": int(count_text),
    }


def write_knob(name: str, value: int) -> None:
    """Set a per-namespace conntrack knob (name without the nf_conntrack_ prefix)."""
    with open(f"/proc/sys/net/netfilter/nf_conntrack_{name}", "w") as knob:
        knob.write(f"{value}\n")


class GlobalConntrackMax:
    """nf_conntrack_max of the initial namespace, through a descriptor opened there.

    The limit is global (init namespace only), so the table-full scenario lowers it for a
    moment. The outer process opens the file before entering the scenario namespace and
    hands the descriptor down; writes go through pwrite at offset 0 (a write at a non-zero
    offset is silently ignored by the kernel).
    """

    def __init__(self, fd: int, original: int) -> None:
        self.fd, self.original = fd, original

    @classmethod
    def open_if_idle(cls) -> tuple[Optional["GlobalConntrackMax"], str]:
        """Open it only when the initial namespace tracks nothing; else (None, reason)."""
        with open(CONNTRACK_COUNT) as count:
            init_count = int(count.read())
        if init_count != 0:
            return None, f"initial namespace nf_conntrack_count is {init_count}, not 0"
        with open(CONNTRACK_MAX) as current:
            original = int(current.read())
        return cls(os.open(CONNTRACK_MAX, os.O_WRONLY), original), ""

    def set(self, value: int) -> None:
        os.pwrite(self.fd, f"{value}\n".encode(), 0)

    def restore(self) -> None:
        self.set(self.original)
        with open(CONNTRACK_MAX) as current:
            if int(current.read()) != self.original:
                raise RuntimeError("could not restore nf_conntrack_max")

    def close(self) -> None:
        os.close(self.fd)
