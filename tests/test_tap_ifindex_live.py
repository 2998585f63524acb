"""Interface names on a live mount, against the kernel: `-i`/`-o` rules over a veth.

Two namespaces `pctl-srv-*` and `pctl-cli-*` joined by a veth pair (pctlv0 in the server,
pctlv1 in the client).  The server's kernel (iptables-legacy) and a mount in the server's
network stack (`--source tap:pctlv0 --rules FILE`, nsenter --net only: the FUSE mount stays
in this test's mount namespace) hold the same rules, `-i pctlv0` and `-o pctlv0` among them.
The client sends UDP to a closed port of the server (the port unreachable goes back out of
pctlv0) and pings it.  Then `procfs-ct iptables -L -v -n -x --mount` must print what
`iptables-legacy -L -v -n -x` prints, and the mount's net/nf_conntrack hold the kernel's
entries: the tap's SLL2 frames carry the interface index (named from the namespace's
if_nameindex) and the packet type the hooks follow (PACKET_HOST in at PREROUTING,
PACKET_OUTGOING out at OUTPUT); a LOG rule's `MAC=` is the veth header the kernel prints
(this device's address, the sender's, 08:00).  IPv6 is off in both namespaces: the
kernel's iptables rules make it track IPv4 only.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import (REPO, Mount, child_env, run_in_netns, fuse_unavailable, make_base_dir, procfs_ct_command,
                      wait_until)
from taphelp import assert_same_table, entry_summary

SERVER, CLIENT = f"pctl-srv-{os.getpid()}", f"pctl-cli-{os.getpid()}"
SERVER_DEV, CLIENT_DEV = "pctlv0", "pctlv1"
SERVER_IP, CLIENT_IP = "10.232.0.1", "10.232.0.2"
PORT = 7010
RULES = f"""*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i {SERVER_DEV} -p udp --dport {PORT}
-A INPUT -i lo -p udp --dport {PORT}
-A INPUT -i {SERVER_DEV} -p icmp
-A INPUT -m state --state NEW,ESTABLISHED,RELATED
-A OUTPUT -o {SERVER_DEV} -p icmp
-A INPUT -i {SERVER_DEV} -p udp -j LOG --log-prefix "pctl-in: "
-A OUTPUT -o lo
COMMIT
"""
LISTING = ["-L", "-v", "-n", "-x"]
UDP, ICMP = "17", "1"
DATAGRAMS = 3
TRAFFIC = (f"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
           f"s.bind(('{CLIENT_IP}', 40090))\n"
           f"for n in range({DATAGRAMS}): s.sendto(b'hello?', ('{SERVER_IP}', {PORT}))\n")


def _missing() -> str:
    if os.geteuid() != 0:
        return "needs root (network namespaces, AF_PACKET)"
    for tool in ("ip", "nsenter", "ping", "iptables-legacy", "iptables-legacy-restore"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return fuse_unavailable() or ""


in_namespace = run_in_netns         # (name, *argv): conftest's


class ServerMount(Mount):
    """A procfs-ct mount whose process lives in the server's network stack."""

    def command(self) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{SERVER}"] + super().command()


@pytest.fixture
def veth_pair():
    """The two namespaces and their veth pair, IPv6 off; both deleted afterwards."""
    try:
        for name in (SERVER, CLIENT):
            subprocess.run(["ip", "netns", "add", name], check=True)
            for knob in ("all", "default"):
                in_namespace(name, "sysctl", "-qw", f"net.ipv6.conf.{knob}.disable_ipv6=1",
                             check=True)
            subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "link", "add", SERVER_DEV, "netns", SERVER, "type", "veth",
                        "peer", "name", CLIENT_DEV, "netns", CLIENT], check=True)
        for name, dev, address in ((SERVER, SERVER_DEV, SERVER_IP),
                                   (CLIENT, CLIENT_DEV, CLIENT_IP)):
            subprocess.run(["ip", "-n", name, "addr", "add", f"{address}/24", "dev", dev],
                           check=True)
            subprocess.run(["ip", "-n", name, "link", "set", dev, "up"], check=True)
        yield
    finally:
        for name in (SERVER, CLIENT):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture
def server_mount(veth_pair, tmp_path):
    rules = tmp_path / "rules"
    rules.write_text(RULES)
    in_namespace(SERVER, "iptables-legacy-restore", str(rules), check=True)
    mount = ServerMount(make_base_dir(), ["--source", f"tap:{SERVER_DEV}", "--profile", "linux",
                                          "--rules", str(rules)], foreground=True)
    try:
        yield mount.start()
    finally:
        mount.stop()
        shutil.rmtree(mount.base, ignore_errors=True)


def mount_listing(mount: Mount) -> str:
    done = subprocess.run(procfs_ct_command() + ["iptables", "--mount", str(mount.mnt),
                                                 *LISTING],
                          capture_output=True, text=True, env=child_env(), cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.kernel
@pytest.mark.mount
@pytest.mark.skipif(bool(_missing()), reason=_missing() or "-")
def test_interface_rules_on_a_live_tap_count_as_the_kernel(server_mount):
    sent = in_namespace(CLIENT, sys.executable, "-c", TRAFFIC)
    assert sent.returncode == 0, sent.stderr
    in_namespace(CLIENT, "ping", "-c", "2", "-i", "0.2", "-W", "2", SERVER_IP, check=True)
    kernel = in_namespace(SERVER, "iptables-legacy", *LISTING, check=True).stdout
    # The -i/-o rules did count in the kernel: the test means something.  Columns: pkts
    # bytes [target] prot opt in out source destination; these rules have no target, and
    # iptables 1.8.9 prints protocols by number.
    rules = [line.split() for line in kernel.splitlines() if line.startswith(" ")]
    udp_in = next(rule for rule in rules if rule[2] == UDP and rule[4] == SERVER_DEV)
    assert udp_in[:2] == [str(DATAGRAMS), str(DATAGRAMS * (20 + 8 + 6))]
    icmp_out = next(rule for rule in rules if rule[2] == ICMP and rule[5] == SERVER_DEV)
    assert int(icmp_out[0]) == DATAGRAMS + 2     # the port unreachables, the echo replies
    # The engine thread reads the tap behind the kernel: wait for the same listing.
    wait_until(lambda: mount_listing(server_mount) == kernel, 20)
    assert mount_listing(server_mount) == kernel, server_mount.log_text()
    # And the conntrack table the same traffic left.
    mount_lines = server_mount.read("net/nf_conntrack").splitlines()
    kernel_lines = in_namespace(SERVER, "cat", "/proc/net/nf_conntrack",
                                check=True).stdout.splitlines()
    assert_same_table(mount_lines, kernel_lines)
    assert {kind for kind, *_ in entry_summary(kernel_lines)} == {"udp", "icmp"}
    # LOG's MAC= on the veth: this device's address, the sender's, IPv4 -- the device's own
    # learnt from its first outgoing frame (its ARP reply came before any datagram).
    mac = lambda name, dev: json.loads(subprocess.run(  # noqa: E731
        ["ip", "-n", name, "-j", "link", "show", "dev", dev], capture_output=True, text=True,
        check=True).stdout)[0]["address"]
    logged = [line for line in server_mount.log.read_text().splitlines() if "pctl-in: " in line]
    assert len(logged) == DATAGRAMS
    expected = f"MAC={mac(SERVER, SERVER_DEV)}:{mac(CLIENT, CLIENT_DEV)}:08:00 "
    assert all(f"IN={SERVER_DEV} OUT= {expected}" in line for line in logged), logged
