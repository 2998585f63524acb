"""What a knob write costs in FUSE requests, counted on the daemon's /dev/fuse with strace.

Each request is a round trip through the daemon's GIL, which the engine thread holds most
of the time under traffic, so the count is the knob write's latency (bench/trace/
knobtrace.py).  `echo N > knob` is OPEN (with O_TRUNC) and WRITE, then an asynchronous
RELEASE: no FLUSH (procfs has none; the kernel stops sending it after libfuse's ENOSYS),
no SETATTR (atomic_o_trunc), no GETXATTR (the truncate's security.capability check: the
kernel stops asking after getxattr's ENOSYS), no LOOKUP or GETATTR (the tree's names and
attributes are cached)."""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from collections import Counter

import pytest

from conftest import wait_until

pytestmark = pytest.mark.mount

MODERN = "sys/net/netfilter/nf_conntrack_udp_timeout"
WRITES = 5
# fuse_in_header.opcode (include/uapi/linux/fuse.h)
OPCODES = {1: "LOOKUP", 3: "GETATTR", 4: "SETATTR", 14: "OPEN", 16: "WRITE", 18: "RELEASE",
           22: "GETXATTR", 25: "FLUSH"}
DUMP_FIRST_LINE = re.compile(r"^ \| 00000 ((?: [0-9a-f]{2}){8})")


def fuse_fd(pid: int) -> int:
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/fuse":
                return int(fd)
        except OSError:
            pass
    raise AssertionError("the daemon holds no /dev/fuse")


def opcodes_read(prefix: str) -> Counter:
    """The opcodes of the requests in strace's dumps of what was read from /dev/fuse."""
    seen: Counter = Counter()
    for path in glob.glob(prefix + ".*"):
        with open(path) as dump:
            for line in dump:
                match = DUMP_FIRST_LINE.match(line)
                if match:
                    header = bytes.fromhex(match.group(1).replace(" ", ""))
                    code = int.from_bytes(header[4:8], "little")
                    seen[OPCODES.get(code, str(code))] += 1
    return seen


def test_echo_to_a_knob_is_one_open_and_one_write(idle_mount, tmp_path):
    if shutil.which("strace") is None:
        pytest.skip("needs strace")
    idle_mount.sh(f"cat $MNT/{MODERN} && echo 30 > $MNT/{MODERN} && echo 30 > $MNT/{MODERN}", check=True)
    pid = idle_mount.pid
    prefix = str(tmp_path / "trace")
    errors = tmp_path / "strace.err"
    with open(errors, "w") as err:
        tracer = subprocess.Popen(["strace", "-ff", "-o", prefix, "-e", "trace=read",
                                   "-e", f"read={fuse_fd(pid)}", "-e", "signal=none",
                                   "-p", str(pid)], stderr=err)
    try:
        # strace says "Process PID attached with N threads" once it holds them all.
        attached = wait_until(lambda: "attached" in errors.read_text(), 10)
        assert attached, errors.read_text()
        idle_mount.sh("; ".join(f"echo {31 + n} > $MNT/{MODERN}" for n in range(WRITES)),
                      check=True)
    finally:
        tracer.terminate()                   # detaches; the daemon goes on
        tracer.wait(10)
    assert idle_mount.read(MODERN) == f"{30 + WRITES}\n"
    seen = opcodes_read(prefix)
    # RELEASE follows close() asynchronously: some may come after strace has left.  The
    # kernel asks for the attributes once per process that opens the knob (one GETATTR
    # for the one shell here; six shells of one write each made six), not per write.
    assert seen["OPEN"] == seen["WRITE"] == WRITES, seen
    assert seen["GETATTR"] <= 1, seen
    assert set(seen) <= {"OPEN", "WRITE", "RELEASE", "GETATTR"}, seen
