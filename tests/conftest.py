"""Fixtures that really mount procfs-ct (FUSE) and always clean up.

`mount_factory(*args, foreground=True)` starts `procfs-ct mount MNT ...` as a subprocess
on a fresh mountpoint, waits until net/nf_conntrack exists, and in teardown stops it
(SIGTERM, then a lazy unmount and SIGKILL if it will not go), even when the test
failed.  The mountpoint lives in a world-traversable temporary directory so that a
reader dropped to uid 65534 can reach it.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import pytest

REPO = Path(__file__).resolve().parent.parent
READY_SECONDS = 20.0
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def procfs_ct_command() -> List[str]:
    """The `procfs-ct` command of this checkout: what the venv's script runs, cli.main().
    (Not `python -m procfs_ct.cli`: that imports cli twice, and UsageError with it.)"""
    return [sys.executable, "-c", "import sys; from procfs_ct.cli import main; sys.exit(main())"]


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["LC_ALL"] = "C"                     # tool messages in English, plain quotes
    return env


def mounts_at(path: Path) -> List[str]:
    """Filesystem types mounted exactly at path, from /proc/self/mountinfo (never stats it)."""
    found = []
    target = str(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            mount_point = fields[4].encode().decode("unicode_escape")
            if mount_point == target:
                fstype = fields[fields.index("-") + 1]
                found.append(fstype)
    return found


def is_mounted(path: Path) -> bool:
    return bool(mounts_at(path))


class FakeClock:
    """A clock the test moves: `.t` is the time; read as clock() or clock.now()."""

    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def now(self) -> float:
        return self.t

    __call__ = now


def wait_until(predicate, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def force_unmount(path: Path) -> None:
    tool = shutil.which("fusermount") or shutil.which("fusermount3")
    cmd = [tool, "-uz", str(path)] if tool else ["umount", "-l", str(path)]
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def fuse_unavailable() -> Optional[str]:
    if os.geteuid() != 0:
        return "FUSE mount tests run as root (allow_other, setpriv, unshare)"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    return None


class Mount:
    """One running procfs-ct mount started by a test."""

    def __init__(self, base: Path, args: List[str], foreground: bool) -> None:
        self.base = base
        self.mnt = base / "mnt"
        self.mnt.mkdir()
        self.log = base / "procfs-ct.log"
        self.pid_file = base / "procfs-ct.pid"
        self.args = args
        self.foreground = foreground
        self.proc: Optional[subprocess.Popen] = None
        self.daemon_pid: Optional[int] = None
        self.start_output = ""
        self.started_at = 0.0

    # -- starting and stopping -------------------------------------------------------------
    def command(self) -> List[str]:
        cmd = procfs_ct_command() + ["mount", str(self.mnt), "--pid-file", str(self.pid_file),
                                     "--log-file", str(self.log)] + self.args
        return cmd + (["--foreground"] if self.foreground else [])

    def start(self) -> "Mount":
        self.started_at = time.time()
        self.proc = subprocess.Popen(self.command(), cwd=REPO, env=child_env(),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        if not self.foreground:
            out, err = self.proc.communicate(timeout=READY_SECONDS + 5)
            self.start_output = out
            assert self.proc.returncode == 0, f"daemon start failed: {out}{err}{self.log_text()}"
            self.daemon_pid = int(self.pid_file.read_text())
        ok = wait_until(self._ready, READY_SECONDS)
        assert ok, f"mount did not come up: {self.log_text()}"
        return self

    def _ready(self) -> bool:
        if self.foreground and self.proc.poll() is not None:
            raise AssertionError(f"procfs-ct exited {self.proc.returncode}: "
                                 f"{self.proc.stderr.read()}{self.log_text()}")
        return "fuse.procfs-ct" in mounts_at(self.mnt) and (self.mnt / "net/nf_conntrack").exists()

    @property
    def pid(self) -> int:
        if self.foreground:
            return self.proc.pid
        assert self.daemon_pid is not None, "the daemon never started"
        return self.daemon_pid

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def exited(self) -> bool:
        """The daemon is gone (a zombie counts as gone: kill -0 would still succeed)."""
        if self.foreground:
            return self.proc.poll() is not None
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                return f.read().split(") ")[-1].startswith("Z")
        except (FileNotFoundError, ProcessLookupError, ValueError):
            return True

    def stop(self) -> None:
        """SIGTERM, then insist; never leaves a mount or a process behind."""
        try:
            pid = self.pid
        except AssertionError:
            pid = None
        if pid is not None and not self.exited():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if not wait_until(self.exited, 10):
                force_unmount(self.mnt)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                wait_until(self.exited, 5)
        if self.proc is not None and self.foreground:
            try:
                self.proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if is_mounted(self.mnt):
            force_unmount(self.mnt)
            wait_until(lambda: not is_mounted(self.mnt), 5)

    # -- helpers for tests ----------------------------------------------------------------------
    def path(self, rel: str) -> Path:
        return self.mnt / rel

    def read(self, rel: str) -> str:
        return (self.mnt / rel).read_text()

    def write(self, rel: str, text: str) -> None:
        (self.mnt / rel).write_text(text)

    def sh(self, script: str, *, as_nobody: bool = False, timeout: float = 30,
           check: bool = False) -> subprocess.CompletedProcess:
        """Run a bash script with $MNT set, in the C locale; returns stdout/stderr text."""
        cmd = (NOBODY if as_nobody else []) + ["bash", "-c", script]
        env = child_env()
        env["MNT"] = str(self.mnt)
        return subprocess.run(cmd, env=env, cwd=self.base, capture_output=True, text=True,
                              timeout=timeout, check=check)

    def log_text(self) -> str:
        try:
            return "\n--- daemon log ---\n" + self.log.read_text()
        except OSError:
            return ""


def make_base_dir() -> Path:
    base = Path(tempfile.mkdtemp(prefix="procfs-ct-test-"))
    base.chmod(0o755)                       # uid 65534 must be able to reach the mountpoint
    return base


@pytest.fixture
def mount_factory():
    """Start mounts: mount_factory("--source", "none", foreground=True) -> Mount."""
    reason = fuse_unavailable()
    if reason:
        pytest.skip(reason)
    started: List[Mount] = []

    def start(*args: str, foreground: bool = True) -> Mount:
        mount = Mount(make_base_dir(), list(args), foreground)
        started.append(mount)
        return mount.start()

    yield start
    for mount in started:
        mount.stop()
        if not is_mounted(mount.mnt):
            shutil.rmtree(mount.base, ignore_errors=True)


@pytest.fixture
def idle_mount(mount_factory) -> Mount:
    """A tutorial-profile mount with no traffic: every value is a default."""
    return mount_factory("--source", "none")


@pytest.fixture(scope="session")
def capture_file(tmp_path_factory) -> Path:
    """Three seconds of synthetic traffic as a pcap, written by `procfs-ct generate`."""
    out = tmp_path_factory.mktemp("capture") / "synthetic.pcap"
    done = subprocess.run(procfs_ct_command() + ["generate", "--out", str(out), "--seconds", "3",
                                                 "--seed", "7"],
                          cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out.parent.chmod(0o755)
    return out


@pytest.fixture
def busy_mount(mount_factory, capture_file) -> Mount:
    """A mount whose table holds the capture's connections (replayed as fast as possible)."""
    mount = mount_factory("--source", f"pcap:{capture_file}@0")
    assert wait_until(lambda: int(mount.read("sys/net/netfilter/nf_conntrack_count")) > 50, 10), \
        mount.log_text()
    return mount


def run_in_netns(name: str, *argv: str, **kw) -> subprocess.CompletedProcess:
    """argv in network namespace `name`'s stack, with this test's mounts (nsenter --net)."""
    return subprocess.run(["nsenter", f"--net=/run/netns/{name}", *argv],
                          capture_output=True, text=True, timeout=60, env=child_env(),
                          cwd=REPO, **kw)
