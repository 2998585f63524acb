"""The whole path against the kernel: `procfs-ct mount MNT --foreground --source tap:lo
--profile linux` inside a network namespace, real traffic there, and MNT/net/nf_conntrack
compared with the namespace's /proc/net/nf_conntrack read at the same instant.  The
engine thread answers most of the tap's frames by its fast path (engine/fastpath.py):
the mount's source counters must say it did.

Issue 4, "Live differential test against the kernel": same entries, states and flags;
seconds left within 1 (docs/spec/conntrack.md §9: both round toward zero).  The traffic and the
comparison are the ones of test_tap.py (TCP lifecycles, a refused connect, UDP with and
without a reply, port-unreachable, an ICMP echo); here they go through the FUSE mount, the
engine thread and the tap source as a user would run them.

`ip netns exec` gives each command its own mount namespace, so one helper process inside
the namespace starts the mount as its child (which shares its mounts), makes the traffic,
reads both files, and stops the mount.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from taphelp import TRAFFIC_ENTRIES, assert_same_table, entry_summary, listing_key, make_traffic, namespace  # noqa: F401

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MOUNT_TIMEOUT = 20.0


@pytest.mark.kernel
@pytest.mark.mount
def test_mount_with_tap_source_matches_the_kernel(namespace, tmp_path):
    """spec §10 namespace 1, through the mount: TIME_WAIT, ESTABLISHED and CLOSE_WAIT TCP
    entries [ASSURED], a replied UDP entry, `sport=40051 dport=9 [UNREPLIED]` after the port
    unreachable, the echo `type=8 code=0 id=4660`; the refused connect leaves nothing."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, str(Path(__file__)),
                           str(mnt), str(tmp_path)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    log = (tmp_path / "mount.log").read_text() if (tmp_path / "mount.log").exists() else ""
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\nmount log:\n{log}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert_same_table(result["mount"], result["kernel"])
    assert entry_summary(result["kernel"]) == TRAFFIC_ENTRIES
    # The engine thread's fast path (engine/fastpath.py) answered the tap's common frames.
    counters = dict(line.split() for line in result["source"].splitlines())
    assert int(counters["fast_path"]) > 0, result["source"]


# ---------------------------------------------------------------------------------------------
# The helper: runs inside the namespace (python3 tests/test_live_differential.py MNT WORKDIR)
# ---------------------------------------------------------------------------------------------
def read_both(mnt: Path) -> tuple[list[str], list[str]]:
    """The mount's listing and the kernel's, read back to back."""
    mount_text = (mnt / "net" / "nf_conntrack").read_text()
    with open("/proc/net/nf_conntrack") as listing:
        kernel_text = listing.read()
    return mount_text.splitlines(), kernel_text.splitlines()


def start_mount(mnt: Path, workdir: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "procfs_ct.cli", "mount", str(mnt), "--foreground",
         "--source", "tap:lo", "--profile", "linux",
         "--log-file", str(workdir / "mount.log"), "--pid-file", str(workdir / "mount.pid")],
        cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + MOUNT_TIMEOUT
    while not os.path.ismount(mnt):
        if proc.poll() is not None:
            raise RuntimeError(f"mount exited with {proc.returncode}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("mount did not appear")
        time.sleep(0.05)
    return proc


def stop_mount(proc: subprocess.Popen, mnt: Path) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if os.path.ismount(mnt):
        subprocess.run(["fusermount", "-u", "-z", str(mnt)], capture_output=True)


def main(mnt: Path, workdir: Path) -> None:
    proc = start_mount(mnt, workdir)
    try:
        time.sleep(0.5)                 # the tap is open before FUSE mounts; be generous
        keep = make_traffic()
        time.sleep(1.2)                 # delayed ACKs out, timers counting down
        # The engine thread may lag the kernel by a moment: wait (bounded) for the same
        # entries, then take the snapshot that is compared.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            mount_lines, kernel_lines = read_both(mnt)
            if sorted(map(listing_key, mount_lines)) == sorted(map(listing_key, kernel_lines)):
                break
            time.sleep(0.1)
        mount_lines, kernel_lines = read_both(mnt)
        source = (mnt / "net" / "stat" / "procfs_ct_source").read_text()
        for sock in keep:
            sock.close()
    finally:
        stop_mount(proc, mnt)
    print(json.dumps({"mount": mount_lines, "kernel": kernel_lines, "source": source}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
