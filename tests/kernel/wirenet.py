"""The wire topology: a client namespace and a server namespace joined by a veth pair.

    client (pctw-<n>-c)  wire0 10.99.0.1 02:00:00:00:00:01
        |  veth
    server (pctw-<n>-s)  wire0 10.99.0.2 02:00:00:00:00:02   <- the observed host
                         wire1 10.98.0.2 02:00:00:00:00:03   (forwarding scenarios only)
        |  veth
    far    (pctw-<n>-f)  wire0 10.98.0.1 02:00:00:00:00:04

In the forwarding scenarios the server routes between client and far (ip_forward=1): their
packets cross it PREROUTING -> FORWARD -> POSTROUTING, so conntrack meets them once, at
PREROUTING, and its capture holds each packet twice (in on one veth, out on the other).

Only the server namespace loads conntrack (its nft table uses `ct state`); the client has no
rules, so conntrack never registers its hooks there and the client behaves as a plain host.
IPv6 is off and the neighbours are permanent, so the capture holds IPv4 only, no ARP.
An IPv6 scenario's topology (ipv6=True) keeps IPv6 on, with fd00:99::1 (client) and
fd00:99::2 (server) added `nodad`, no link-local addresses (addr_gen_mode 1), no router
solicitations and permanent IPv6 neighbours: nothing but the multicast listener reports of
joining the addresses' groups (before the capture starts) is sent unasked.

Checksum offload is off on both ends (`ethtool -K wire0 tx off sg off tso off gso off`):
with it on, a socket's packet crosses the veth as CHECKSUM_PARTIAL, the receiver trusts it
without verifying, and the captured bytes carry only the pseudo-header sum, which a replay
would (rightly) call a bad checksum. Without offload every packet carries its real checksum
and arrives as CHECKSUM_NONE: the server's conntrack verifies it (observed: a forged SYN
with a corrupted checksum is INVALID there with nf_conntrack_checksum=1). The receiving
veth's rx checksumming does not hide anything on this kernel (veth stopped promoting
CHECKSUM_NONE to CHECKSUM_UNNECESSARY in 4.x), so `rx` stays on. One scenario keeps the
client's offload on to show what a capture of such traffic looks like.

Python 3.11 has no os.setns: `inside(ns)` calls setns(2) through ctypes, so one process can
make sockets in both namespaces (a socket stays in the namespace it was made in).
"""
from __future__ import annotations

import ctypes
import os
import socket
import time
from contextlib import contextmanager
from typing import Iterator, Optional

import netns

NS_PREFIX = os.environ.get("PCT_WIRE_NS_PREFIX", "pctw-")   # another prefix for a parallel run
DEV = "wire0"
CLIENT, SERVER = "10.99.0.1", "10.99.0.2"
ROUTER = "10.99.0.3"                      # a third address on the link, used by forged errors
CLIENT6, SERVER6, ROUTER6 = "fd00:99::1", "fd00:99::2", "fd00:99::3"
PREFIX_LEN6 = 64
# Per namespace, before any device exists (a new device takes the defaults): no DAD, no
# link-local address, no router solicitations.
IPV6_QUIET = ("net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.default.addr_gen_mode=1",
              "net.ipv6.conf.default.router_solicitations=0",
              "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.all.router_solicitations=0")
FAR, SERVER_FAR_SIDE = "10.98.0.1", "10.98.0.2"
FAR_DEV = "wire1"
PREFIX_LEN = 24
CLIENT_MAC, SERVER_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
SERVER_FAR_MAC, FAR_MAC = "02:00:00:00:00:03", "02:00:00:00:00:04"
CLONE_NEWNET = 0x40000000
OFFLOADS_OFF = ("tx", "off", "sg", "off", "tso", "off", "gso", "off")
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD

_libc = ctypes.CDLL(None, use_errno=True)


def namespace_names(scenario: str) -> tuple[str, str, str]:
    """(client, server, far) namespace names of a scenario (far: forwarding only)."""
    return f"{NS_PREFIX}{scenario}-c", f"{NS_PREFIX}{scenario}-s", f"{NS_PREFIX}{scenario}-f"


def _setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


@contextmanager
def inside(name: str) -> Iterator[None]:
    """Run the block in network namespace `name`, then come back."""
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(f"/run/netns/{name}")
        try:
            yield
        finally:
            if _libc.setns(here, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back failed")
    finally:
        os.close(here)


def _link(left_ns: str, left_dev: str, left: tuple[str, str], right_ns: str,
          right_dev: str, right: tuple[str, str], mtu: Optional[int]) -> None:
    """A veth pair between two namespaces: (address, MAC) per end, offloads off, neighbours
    permanent."""
    netns.run("ip", "-n", left_ns, "link", "add", left_dev, "address", left[1], "type", "veth",
              "peer", "name", right_dev, "address", right[1], "netns", right_ns)
    for name, dev, (addr, _), (peer, peer_mac) in ((left_ns, left_dev, left, right),
                                                  (right_ns, right_dev, right, left)):
        netns.run("ip", "-n", name, "addr", "add", f"{addr}/{PREFIX_LEN}", "dev", dev)
        if mtu:
            netns.run("ip", "-n", name, "link", "set", dev, "mtu", str(mtu))
        netns.run("ip", "netns", "exec", name, "ethtool", "-K", dev, *OFFLOADS_OFF)
        netns.run("ip", "-n", name, "link", "set", dev, "up")
        netns.run("ip", "-n", name, "neigh", "replace", peer, "lladdr", peer_mac,
                  "nud", "permanent", "dev", dev)


def create_topology(client_ns: str, server_ns: str, far_ns: Optional[str] = None,
                    mtu: Optional[int] = None, client_offload: bool = False,
                    ipv6: bool = False) -> None:
    """The namespaces and veth pairs (the far side only when far_ns is given); with
    client_offload the client's end keeps its checksum offload (CHECKSUM_PARTIAL packets);
    with ipv6 the client and server have their IPv6 addresses too."""
    for name in (client_ns, server_ns, far_ns):
        if name:
            netns.create_namespace(name)
            settings = (IPV6_QUIET if ipv6 else ("net.ipv6.conf.all.disable_ipv6=1",
                                                  "net.ipv6.conf.default.disable_ipv6=1"))
            netns.run("ip", "netns", "exec", name, "sysctl", "-qw", *settings)
    _link(server_ns, DEV, (SERVER, SERVER_MAC), client_ns, DEV, (CLIENT, CLIENT_MAC), mtu)
    if ipv6:
        for name, addr, (peer, peer_mac) in ((server_ns, SERVER6, (CLIENT6, CLIENT_MAC)),
                                             (client_ns, CLIENT6, (SERVER6, SERVER_MAC))):
            netns.run("ip", "-n", name, "-6", "addr", "add", f"{addr}/{PREFIX_LEN6}", "dev", DEV,
                      "nodad")
            netns.run("ip", "-n", name, "-6", "neigh", "replace", peer, "lladdr", peer_mac,
                      "nud", "permanent", "dev", DEV)
        netns.run("ip", "-n", server_ns, "-6", "neigh", "replace", ROUTER6, "lladdr", CLIENT_MAC,
                  "nud", "permanent", "dev", DEV)
    if client_offload:
        netns.run("ip", "netns", "exec", client_ns, "ethtool", "-K", DEV,
                  *(word if word != "off" else "on" for word in OFFLOADS_OFF))
    # The router address answers nothing; the server only needs to know where it lives.
    netns.run("ip", "-n", server_ns, "neigh", "replace", ROUTER, "lladdr", CLIENT_MAC,
              "nud", "permanent", "dev", DEV)
    if far_ns:
        _link(server_ns, FAR_DEV, (SERVER_FAR_SIDE, SERVER_FAR_MAC), far_ns, DEV,
              (FAR, FAR_MAC), mtu)
        netns.run("ip", "netns", "exec", server_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        netns.run("ip", "-n", client_ns, "route", "add", FAR, "via", SERVER)
        netns.run("ip", "-n", far_ns, "route", "add", CLIENT,
                  "via", SERVER_FAR_SIDE)


def delete_topology(*names: str) -> None:
    for name in names:
        netns.delete_namespace(name)      # deleting either end removes a veth pair


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


class Injector:
    """Puts forged IPv4 or IPv6 packets on the client's wire0 with AF_PACKET.

    Nothing of the client's stack touches them (a raw IP socket would rewrite the IP header
    checksum), so a bad IP checksum or a fragment arrives at the server as written.
    """

    def __init__(self, client_ns: str, gap: float = 0.02) -> None:
        with inside(client_ns):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            self.sock.bind((DEV, 0))
        self.header = _mac(SERVER_MAC) + _mac(CLIENT_MAC)
        self.gap = gap          # spacing, so every packet has its own timestamp

    def send(self, packet: bytes, dst_mac: Optional[str] = None) -> None:
        """Send to the server's MAC, or to `dst_mac` (another host's: the server's stack
        marks the frame PACKET_OTHERHOST; the broadcast MAC: PACKET_BROADCAST); the
        ethertype says the packet's IP version."""
        macs = self.header if dst_mac is None else _mac(dst_mac) + self.header[6:]
        ethertype = ETH_P_IPV6 if packet[0] >> 4 == 6 else ETH_P_IP
        self.sock.send(macs + ethertype.to_bytes(2, "big") + packet)
        time.sleep(self.gap)

    def close(self) -> None:
        self.sock.close()


def conntrack_count(name: str) -> int:
    """Entries in a namespace's table: 0 in the client and far namespaces shows conntrack
    never ran there."""
    with inside(name):
        with open(netns.CONNTRACK_COUNT) as count:
            return int(count.read())
