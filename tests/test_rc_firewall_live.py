"""tests/legacy/rc.firewall run unchanged under `procfs-ct exec`, end to end.

In a network namespace `pcti-rc-*`: `procfs-ct exec --source tap:lo --profile linux` runs
this file's helper, which inside the exec runs rc.firewall (it calls /usr/sbin/iptables by
its absolute path: the emulated one there), captures with `tcpdump -i any` while sending
traffic over lo (an allowed port, a closed port, a SYN/ACK out of nowhere and a NEW ACK
forged on a raw socket, UDP to an open and a closed port, an echo request; tests/kernel/
forge.py builds the forged ones), and then reads
`iptables-save -c` and `iptables -L -v -n` inside the exec.  Both must equal what `procfs-ct
replay CAPTURE --rules SAME --format iptables-save` makes of the capture of that traffic.

The test passes rc.firewall's addresses so that the loopback traffic meets the "internet"
rules: INET_IFACE=lo, INET_IP=127.0.0.1 and a LO_IFACE that does not exist (the tutorial's
loopback exemptions never match).  Traffic only flows over the namespace's lo.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "kernel"))

from conftest import REPO, child_env, fuse_unavailable, procfs_ct_command  # noqa: E402
from engine.rules import Ruleset, apply_command  # noqa: E402

RC_FIREWALL = HERE / "legacy" / "rc.firewall"
NAMESPACE = f"pcti-rc-{os.getpid()}"
ADDRESSES = {"INET_IP": "127.0.0.1", "INET_IFACE": "lo", "LO_IFACE": "nolo0",
             "LO_IP": "127.0.0.2"}
LOCAL = "127.0.0.1"
CATCH_UP_SECONDS = 30.0
# The last datagram sent (to a socket that never answers): once tcpdump has written both of
# its copies (out and back in through lo) it has written everything before it, and may stop.
MARKER = b"pcti-end-of-traffic"
MARKER_PORT = 7002


def _missing() -> str:
    if os.geteuid() != 0:
        return "needs root (network namespaces, AF_PACKET, mount namespaces)"
    for tool in ("ip", "tcpdump"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return fuse_unavailable() or ""


def without_comments(text: str) -> str:
    return re.sub(r"^#.*\n", "", text, flags=re.M)


@pytest.mark.kernel
@pytest.mark.mount
@pytest.mark.skipif(bool(_missing()), reason=_missing() or "-")
def test_rc_firewall_under_exec_counts_as_the_replay_of_its_capture(tmp_path):
    tmp_path.chmod(0o755)
    subprocess.run(["ip", "netns", "add", NAMESPACE], check=True)
    try:
        subprocess.run(["ip", "-n", NAMESPACE, "link", "set", "lo", "up"], check=True)
        done = subprocess.run(
            ["ip", "netns", "exec", NAMESPACE, *procfs_ct_command(), "exec", "--profile", "linux",
             "--source", "tap:lo", "--", sys.executable, str(Path(__file__)), str(tmp_path)],
            capture_output=True, text=True, timeout=180, env=child_env(), cwd=REPO)
    finally:
        subprocess.run(["ip", "netns", "del", NAMESPACE])
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["rc_firewall"] == ["Tuning ip_conntrack...", "ip_conntrack_max is now 32768",
                                     "ESTABLISHED timeout is now 86400"]
    expected = without_comments(result["replay"])
    assert without_comments(result["save"]) == expected
    replayed = Ruleset.load_restore(expected, counters=True)
    assert result["list"] == apply_command(replayed, ["-L", "-v", "-n"])
    # The traffic reached what it was sent for (not a comparison of two empty tables).
    counted = {line.split("] ", 1)[1]: line.split("] ", 1)[0] + "]"
               for line in expected.splitlines() if line.startswith("[")}
    # A SYN/ACK without an entry is INVALID to conntrack, not NEW: the tutorial's REJECT rule
    # never matches on a modern kernel (tests/data/rules/rc_firewall/save.txt counts 0 too).
    assert counted["-A bad_tcp_packets -p tcp -m tcp --tcp-flags SYN,ACK SYN,ACK -m state "
                   "--state NEW -j REJECT --reject-with tcp-reset"] == "[0:0]"
    assert counted["-A bad_tcp_packets -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -m state "
                   "--state NEW -j DROP"] == "[1:40]"
    assert counted["-A udp_packets -p udp -m udp --dport 7000 -j ACCEPT"] == "[1:31]"
    assert counted["-A icmp_packets -p icmp -m icmp --icmp-type 8 -j ACCEPT"] == "[1:84]"
    assert counted["-A tcp_packets -p tcp -m tcp --dport 22 -j allowed"] == "[2:100]"

# ---------------------------------------------------------------------------------------------
# The helper: runs inside `procfs-ct exec` (python3 tests/test_rc_firewall_live.py WORKDIR)
# ---------------------------------------------------------------------------------------------
def servers(stop: threading.Event) -> list[socket.socket]:
    """An echoing TCP server on :22 and UDP server on :7000 (what rc.firewall allows)."""
    tcp = socket.socket()
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((LOCAL, 22))
    tcp.listen(4)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((LOCAL, 7000))

    def serve_tcp() -> None:
        conn, _ = tcp.accept()
        with conn:
            while data := conn.recv(100):
                conn.sendall(data)

    def serve_udp() -> None:
        data, peer = udp.recvfrom(100)
        udp.sendto(data, peer)

    for target in (serve_tcp, serve_udp):
        threading.Thread(target=target, daemon=True).start()
    return [tcp, udp]


def traffic() -> None:
    import forge
    stop = threading.Event()
    socks = servers(stop)
    client = socket.socket()                       # the allowed port, a whole connection
    client.bind((LOCAL, 41001))
    client.connect((LOCAL, 22))
    client.sendall(b"hello")
    assert client.recv(100) == b"hello"
    client.close()
    closed = socket.socket()                       # a closed port: the SYN dies at INPUT
    closed.bind((LOCAL, 41002))
    closed.settimeout(2)
    closed.connect_ex((LOCAL, 25))
    closed.close()
    raw = forge.RawSender(gap=0.2)
    for sport, dport, flags in ((41003, 22, "SA"), (41004, 23, "A")):   # out of nowhere
        segment = forge.tcp_segment(LOCAL, LOCAL, sport, dport, forge.flags_from(flags), 1000, 2000)
        raw.send(forge.ipv4(LOCAL, LOCAL, 6, segment, ident=sport))
    raw.close()
    for port in (7000, 7001):                      # UDP: allowed, and nobody listening
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.settimeout(1)
        udp.bind((LOCAL, 41000 + port % 100 + 10))
        udp.sendto(b"abc", (LOCAL, port))
        try:
            udp.recv(100)
        except OSError:
            pass
        udp.close()
    subprocess.run(["ping", "-c", "1", "-W", "1", LOCAL], capture_output=True)
    stop.set()
    for sock in socks:
        sock.close()


def inside(workdir: Path) -> None:
    env = {**os.environ, **ADDRESSES}
    firewall = subprocess.run(["sh", str(RC_FIREWALL)], env=env, capture_output=True, text=True)
    assert firewall.returncode == 0 and not firewall.stderr, firewall.stderr
    rules = workdir / "rules"
    rules.write_text(subprocess.run(["iptables-save"], capture_output=True, text=True,
                                    check=True).stdout)
    capture = workdir / "capture.pcap"
    dump = subprocess.Popen(["tcpdump", "-i", "any", "-U", "-w", str(capture)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    line = ""
    while "listening" not in line:                 # "tcpdump: listening on any ..."
        line = dump.stderr.readline()
        assert line, "tcpdump stopped before listening"
    try:
        traffic()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as marker:
            sink.bind((LOCAL, MARKER_PORT))
            marker.sendto(MARKER, (LOCAL, MARKER_PORT))
            deadline = time.monotonic() + CATCH_UP_SECONDS
            while capture.read_bytes().count(MARKER) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        dump.send_signal(signal.SIGINT)
        dump.wait(10)
    replay = subprocess.run(procfs_ct_command() + ["replay", str(capture), "--profile", "linux",
                                                   "--rules", str(rules), "--format",
                                                   "iptables-save"],
                            capture_output=True, text=True, check=True, env=child_env(), cwd=REPO)
    expected = without_comments(replay.stdout)
    save = lambda: subprocess.run(["iptables-save", "-c"], capture_output=True,   # noqa: E731
                                  text=True, check=True).stdout
    deadline = time.monotonic() + CATCH_UP_SECONDS   # the engine thread reads the tap behind
    while without_comments(save()) != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    listing = subprocess.run(["iptables", "-L", "-v", "-n"], capture_output=True, text=True,
                             check=True).stdout
    (workdir / "result.json").write_text(json.dumps({
        "rc_firewall": firewall.stdout.splitlines(), "replay": replay.stdout, "save": save(),
        "list": listing}))


if __name__ == "__main__":
    inside(Path(sys.argv[1]))
