"""The two real systems a figure compares: a kernel network namespace and a procfs-ct mount.

Namespace: `ip netns add`, lo up, an nft ruleset (a `ct state` rule makes conntrack track
the namespace's traffic), removed on exit.  Mount: `procfs-ct mount MNT --foreground`
on a capture played as fast as possible (pcap:FILE@0), waited for until its table holds
the expected count, unmounted on exit.  Both clean up after a failure too.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from typing import Dict, List, Optional, Tuple

from .common import PYTHON, REPO

# Conntrack on in OUTPUT (a ct state rule), datagrams to the blaster's ports dropped at input
# so that lo does not answer them with ICMP port unreachable.
CT_RULESET = """table inet bench {
  chain out { type filter hook output priority 0; policy accept;
    ct state new counter
  }
}
"""
DROP_RULESET = """table inet bench {
  chain in { type filter hook input priority 0; policy accept;
    udp dport 9000-65535 drop
  }
}
"""


def available() -> Optional[str]:
    """None if namespaces, nft and FUSE can be used here, else why not."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} not found"
    return None


# Outgoing traffic tracked (a ct state rule in OUTPUT) and everything arriving dropped at
# input, so that the namespace's own stack answers nothing (no RST to a SYN, no echo reply,
# no port unreachable) and the table holds exactly what the benchmark sent.
FILL_RULESET = """table inet bench {
  chain out { type filter hook output priority 0; policy accept;
    ct state new counter
  }
  chain in { type filter hook input priority 0; policy drop; }
}
"""
# Addresses the shapes use, put on lo: a prefix on a loopback device is all local, so
# datagrams to any address in it loop back.
SHAPE_PREFIXES = ("10.0.0.1/8", "192.168.0.1/16")
NAME_PREFIX = os.environ.get("PROCFS_CT_BENCH_NETNS_PREFIX", "pctb-")   # namespaces: PREFIX + pid


class Namespace:
    """A network namespace of our own (`pctb-PID-N`), with lo up, a ruleset, sysctls and
    addresses; `proc_net(name)` is one of its /proc/net files as seen from outside (through
    a process that lives in it), so one reader can take turns between it and a mount."""

    def __init__(self, ruleset: str = CT_RULESET, sysctls: Optional[Dict[str, str]] = None,
                 addresses: Tuple[str, ...] = ()):
        self.name = f"{NAME_PREFIX}{os.getpid()}-{id(self) & 0xFFFF}"
        self.ruleset = ruleset
        self.sysctls = sysctls or {}
        self.addresses = addresses
        self._holder: Optional[subprocess.Popen] = None

    def __enter__(self) -> "Namespace":
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        try:
            self.run(["ip", "link", "set", "lo", "up"])
            for address in self.addresses:
                self.run(["ip", "addr", "add", address, "dev", "lo"])
            if self.ruleset:
                self.run(["nft", "-f", "-"], input=self.ruleset)
            for key, value in self.sysctls.items():
                self.run(["sysctl", "-qw", f"{key}={value}"])
        except BaseException:
            self.__exit__()
            raise
        return self

    def run(self, command: List[str], input: Optional[str] = None) -> str:
        done = subprocess.run(["ip", "netns", "exec", self.name] + command, input=input,
                              capture_output=True, text=True, check=True)
        return done.stdout

    def proc_net(self, name: str) -> str:
        """/proc/PID/net/NAME of a process in the namespace: the namespace's file."""
        if self._holder is None:
            self._holder = subprocess.Popen(["ip", "netns", "exec", self.name, "sleep", "86400"])
            own = os.readlink("/proc/self/ns/net")
            for _ in range(500):            # until `ip netns exec` has entered it and exec'd
                try:
                    if os.readlink(f"/proc/{self._holder.pid}/ns/net") != own:
                        break
                except OSError:
                    pass
                time.sleep(0.01)
        return f"/proc/{self._holder.pid}/net/{name}"

    def __exit__(self, *exc: object) -> None:
        if self._holder is not None:
            self._holder.kill()             # only the holder we started
            self._holder.wait()
            self._holder = None
        subprocess.run(["ip", "netns", "del", self.name], stderr=subprocess.DEVNULL)


class Mount:
    """`procfs-ct mount` in the foreground on a source; `path(rel)` names its files."""

    def __init__(self, source: str, *, max_entries: Optional[int] = None, expect: int = 0,
                 knobs: Optional[Dict[str, int]] = None, ready_timeout: float = 600,
                 launcher: Optional[List[str]] = None, env: Optional[Dict[str, str]] = None):
        self.source = source
        # What runs `procfs_ct.cli`'s arguments (bench/trace wraps the daemon), and more
        # environment for it.
        self.launcher = launcher or [PYTHON, "-m", "procfs_ct.cli"]
        self.env = env or {}
        self.max_entries = max_entries
        self.expect = expect
        self.knobs = knobs or {}
        self.ready_timeout = ready_timeout
        self.dir = tempfile.mkdtemp(prefix="procfs-ct-bench-")
        self.mnt = os.path.join(self.dir, "mnt")
        self.proc: Optional[subprocess.Popen] = None
        self.load_seconds = 0.0

    def path(self, rel: str) -> str:
        return os.path.join(self.mnt, rel)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> "Mount":
        os.mkdir(self.mnt)
        command = self.launcher + ["mount", self.mnt, "--foreground",
                   "--source", self.source, "--profile", "linux",
                   "--log-file", os.path.join(self.dir, "log"),
                   "--pid-file", os.path.join(self.dir, "pid")]
        if self.max_entries is not None:
            command += ["--max", str(self.max_entries)]
        if self.knobs:
            # Knob values before the first packet: the state file is read at start.
            state = os.path.join(self.dir, "state.json")
            with open(state, "w") as fileobj:
                json.dump({"knobs": self.knobs}, fileobj)
            # --state-interval 0: saved only at unmount.  The default periodic save
            # serialises the whole table every few seconds (seconds of CPU at 262,144
            # entries), which the kernel never does and which lands inside the timings.
            command += ["--state-file", state, "--state-interval", "0"]
        start = time.monotonic()
        self.proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL,
                                     env=dict(os.environ, **self.env, PYTHONPATH=REPO))
        try:
            self._wait_ready(start)
        except BaseException:
            self.__exit__()
            raise
        self.load_seconds = time.monotonic() - start
        return self

    def count(self) -> int:
        with open(self.path("sys/net/netfilter/nf_conntrack_count")) as fileobj:
            return int(fileobj.read())

    def _wait_ready(self, start: float) -> None:
        while time.monotonic() - start < self.ready_timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"procfs-ct mount exited ({self.proc.returncode}); "
                                   f"see {self.dir}/log")
            if os.path.ismount(self.mnt):
                try:
                    if self.count() >= self.expect:
                        return
                except OSError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"mount did not reach {self.expect} entries in time")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            subprocess.run(["fusermount", "-u", self.mnt], stderr=subprocess.DEVNULL)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()            # only the mount we started
                self.proc.wait()
                subprocess.run(["fusermount", "-uz", self.mnt], stderr=subprocess.DEVNULL)
        shutil.rmtree(self.dir, ignore_errors=True)
