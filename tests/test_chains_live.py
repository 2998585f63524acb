"""Loopback through the chains against the running kernel: a namespace `pctc-*` with
iptables-legacy rules that count per state in raw, filter INPUT and OUTPUT, forged packets
over lo, and `tcpdump -i any` of them; the capture replayed with the same rules must leave
the kernel's counters and its `invalid` stat.

What it pins down: a loopback packet that OUTPUT found INVALID carries no entry, so
PREROUTING looks it up again (the kernel counts it invalid twice, and raw PREROUTING sees
it INVALID twice over); one with an entry keeps it and is not looked up again.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.replay import replay
from engine.rules import Ruleset
from kernelhelp import stat_totals

NAMESPACE = f"pctc-lo-{os.getpid()}"
RULES = """*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -m state --state INVALID
-A PREROUTING -m state --state NEW
-A OUTPUT -m state --state INVALID
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m state --state INVALID
-A INPUT -m state --state NEW
-A INPUT -m state --state RELATED
-A INPUT -m state --state ESTABLISHED
-A OUTPUT -m state --state INVALID
-A OUTPUT -m state --state NEW
-A OUTPUT -m state --state RELATED
-A OUTPUT -m state --state ESTABLISHED
COMMIT
"""
# Forged over lo: a SYN+FIN (INVALID; the stack answers RST, INVALID too) and a UDP datagram
# to a closed port (NEW; the port unreachable is RELATED).  Four frames in all.
TRAFFIC = r"""
import socket, sys
sys.path.insert(0, sys.argv[1])
from engine.build import build_tcp_datagram, build_udp_datagram
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
raw.sendto(build_tcp_datagram("127.0.0.1", "127.0.0.1", 40000, 9, flags=0x03, seq=5), ("127.0.0.1", 0))
raw.sendto(build_udp_datagram("127.0.0.1", "127.0.0.1", 40001, 9, b"x"), ("127.0.0.1", 0))
"""
FRAMES = 4


def _missing() -> str:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "iptables-legacy", "iptables-legacy-save", "tcpdump"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return ""


def ns(*argv: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", NAMESPACE, *argv], capture_output=True,
                          text=True, check=True, timeout=30, **kw)


@pytest.mark.kernel
@pytest.mark.skipif(bool(_missing()), reason=_missing() or "-")
def test_loopback_invalid_is_looked_up_again_as_the_kernel_does(tmp_path):
    capture = tmp_path / "lo.pcap"
    subprocess.run(["ip", "netns", "add", NAMESPACE], check=True)
    try:
        ns("ip", "link", "set", "lo", "up")
        ns("iptables-legacy-restore", input=RULES)
        dump = subprocess.Popen(["ip", "netns", "exec", NAMESPACE, "tcpdump", "-i", "any",
                                 "-U", "-c", str(FRAMES), "-w", str(capture)],
                                stderr=subprocess.PIPE, text=True)
        try:
            line = ""
            while "listening" not in line:            # "tcpdump: listening on any ..."
                line = dump.stderr.readline()
                assert line, "tcpdump stopped before listening"
            ns(sys.executable, "-c", TRAFFIC, str(Path(__file__).resolve().parent.parent))
            dump.wait(timeout=30)
        finally:
            if dump.poll() is None:
                dump.kill()
                dump.wait()
        kernel_save = ns("iptables-legacy-save", "-c").stdout
        kernel_invalid = stat_totals(ns("cat", "/proc/net/stat/nf_conntrack").stdout)["invalid"]
    finally:
        subprocess.run(["ip", "netns", "del", NAMESPACE])
    rules = Ruleset.load_restore(RULES)
    result = replay(str(capture), profile="linux", rules=rules)
    assert [v.state.name for v in result.verdicts if v] == ["INVALID", "INVALID", "NEW", "RELATED"]
    strip = lambda text: re.sub(r"^#.*\n", "", text, flags=re.M)   # noqa: E731
    engine_save = "".join(rules.save(counters=True, table=t) for t in ("raw", "filter"))
    kernel_tables = re.split(r"(?=^\*)", strip(kernel_save), flags=re.M)
    assert "".join(sorted(kernel_tables)) == "".join(sorted(re.split(r"(?=^\*)", engine_save, flags=re.M)))
    assert kernel_invalid == result.engine.tracker.stats["invalid"] == 4
