"""Frames conntrack never sees: `procfs-ct replay --ctstate` gives every frame a line, NOTSEEN
for those the kernel drops before any conntrack hook (ip_rcv) or holds (defragmentation), and
no stat column counts them."""
from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from conftest import child_env, procfs_ct_command
from engine.build import build_ipv4, build_udp, build_udp_datagram, ip_to_int
from engine.hooks import LOCAL_OUT, PRE_ROUTING
from engine.routing import Host, martian, options_refused, routing_drops
from enginehelp import make_engine, view_text
from engine.capture import PcapWriter
from engine.linklayer import (ARPHRD_ETHER, ETH_P_IP, LINKTYPE_LINUX_SLL2, PACKET_HOST,
                              PACKET_OTHERHOST)
from engine.packet import IPPROTO_UDP
from engine.replay import NOT_SEEN, replay

CLIENT, SERVER = "10.99.0.1", "10.99.0.2"
ETH_P_ARP = 0x0806


def received(payload: bytes, protocol: int = ETH_P_IP, pkttype: int = PACKET_HOST) -> bytes:
    """A cooked (LINUX_SLL2) frame this host received: it meets ip_rcv, then PREROUTING."""
    return struct.pack("!HHIHBB8s", protocol, 0, 2, ARPHRD_ETHER, pkttype, 6,
                       b"\x02\0\0\0\0\x01\0\0") + payload


def write_capture(path: Path, frames: dict) -> Path:
    """frames: {frame index: cooked frame}, written at times 1000 + index/100."""
    with open(path, "wb") as fileobj:
        writer = PcapWriter(fileobj, linktype=LINKTYPE_LINUX_SLL2)
        for i, frame in frames.items():
            writer.write(1000.0 + i * 0.01, frame)
    return path


def with_header_byte(datagram: bytes, offset: int, value: int) -> bytes:
    """The datagram with one header byte replaced, its header checksum made right again."""
    header = bytearray(datagram[:20])
    header[offset] = value
    header[10:12] = b"\0\0"
    from engine.build import ipv4_checksum
    header[10:12] = ipv4_checksum(bytes(header)).to_bytes(2, "big")
    return bytes(header) + datagram[20:]


def fragments(sport: int, ident: int) -> tuple:
    """(first, second) fragment of a 40-byte-payload UDP datagram, each with a good header."""
    segment = build_udp(CLIENT, SERVER, sport, 7000, b"F" * 32)
    first = build_ipv4(CLIENT, SERVER, IPPROTO_UDP, segment[:24], ident=ident, mf=True)
    second = build_ipv4(CLIENT, SERVER, IPPROTO_UDP, segment[24:], ident=ident,
                        frag_offset=24)
    return first, second


def bad_header_checksum(datagram: bytes) -> bytes:
    return datagram[:10] + bytes([datagram[10] ^ 0x5A]) + datagram[11:]


def unseen_and_seen(tmp_path: Path) -> tuple:
    """A capture of frames ip_rcv drops or defrag holds among ones conntrack sees, and the
    same capture without the dropped ones; with the expected --ctstate lines."""
    good = build_udp_datagram(CLIENT, SERVER, 43001, 7000, b"good")
    first, second = fragments(43002, 0x1234)
    arp = received(b"\0" * 28, ETH_P_ARP)
    frames = [
        (arp, NOT_SEEN),
        (received(build_udp_datagram(CLIENT, SERVER, 43010, 7000, b"x"),
                  pkttype=PACKET_OTHERHOST), NOT_SEEN),            # for another host's MAC
        (bad_header_checksum(build_udp_datagram(CLIENT, SERVER, 43003, 7000, b"x")), NOT_SEEN),
        (with_header_byte(build_udp_datagram(CLIENT, SERVER, 43004, 7000, b"x"), 3, 200),
         NOT_SEEN),                                                  # total length > frame
        (with_header_byte(build_udp_datagram(CLIENT, SERVER, 43005, 7000, b"x"), 0, 0x44),
         NOT_SEEN),                                                  # IHL 4
        (with_header_byte(build_udp_datagram(CLIENT, SERVER, 43006, 7000, b"x"), 0, 0x65),
         NOT_SEEN),                                                  # version 6
        (good, "NEW"),
        (bad_header_checksum(first), NOT_SEEN),     # dropped: never reaches reassembly
        (second, NOT_SEEN),                         # held, waiting for its first fragment
        (first, "NEW"),                             # completes the datagram
    ]
    cooked = {i: f if i < 2 else received(f) for i, (f, _) in enumerate(frames)}
    everything = write_capture(tmp_path / "all.pcap", cooked)
    # What conntrack sees of it: the good datagram and the fragment train, at the same times.
    seen = write_capture(tmp_path / "seen.pcap", {i: cooked[i] for i in (6, 8, 9)})
    return everything, seen, [word for _, word in frames]


def run_replay(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(procfs_ct_command() + ["replay", *args], capture_output=True,
                          text=True, env=child_env(), timeout=120)


def test_every_frame_gets_a_ctstate_line(tmp_path):
    capture, _, words = unseen_and_seen(tmp_path)
    done = run_replay(str(capture), "--profile", "linux", "--ctstate")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{n} {word}" for n, word in enumerate(words, 1)]


def test_unseen_frames_move_no_stat_column(tmp_path):
    capture, seen, _ = unseen_and_seen(tmp_path)
    everything = replay(str(capture), profile="linux")
    only_seen = replay(str(seen), profile="linux")
    assert everything.text("stat") == only_seen.text("stat")
    assert everything.text("nf_conntrack") == only_seen.text("nf_conntrack")
    assert len(everything.text("nf_conntrack").splitlines()) == 2


def test_replay_help_names_the_word():
    done = subprocess.run(procfs_ct_command() + ["replay", "--help"], capture_output=True,
                          text=True, env=child_env(), timeout=60)
    assert NOT_SEEN in done.stdout


# --- routing drops after PREROUTING (engine/routing.py) ------------------------------------

@pytest.mark.parametrize("src, dst, dropped", [
    ("127.0.0.1", SERVER, True), ("0.0.0.0", SERVER, True), ("255.255.255.255", SERVER, True),
    ("224.0.0.5", SERVER, True), (CLIENT, "127.0.0.1", True), (CLIENT, "0.0.0.1", True),
    # the limited broadcast is delivered before the zero-source rule is reached (DHCP)
    ("0.0.0.0", "255.255.255.255", False), ("0.0.0.0", "0.0.0.0", False),
    (CLIENT, "255.255.255.255", False), ("10.99.0.255", SERVER, False),
    ("192.0.2.7", SERVER, False), (CLIENT, SERVER, False)])
def test_martian_addresses(src, dst, dropped):
    assert (martian(ip_to_int(src), ip_to_int(dst)) is not None) == dropped


def test_own_address_as_source_is_martian_when_the_host_is_known():
    assert martian(ip_to_int(SERVER), ip_to_int(SERVER)) is None
    assert martian(ip_to_int(SERVER), ip_to_int(SERVER), {ip_to_int(SERVER)}) is not None


@pytest.mark.parametrize("options, refused", [
    (bytes((0x94, 4, 0, 0)), False),          # router alert
    (bytes((1, 1, 1, 0)), False),             # NOPs, end of list
    (bytes((0x07, 7, 4, 0, 0, 0, 0, 0)), False),   # record route with room for one address
    (bytes((0x07, 12, 4, 0)), True),          # length past the header
    (bytes((0x44, 1, 0, 0)), True),           # length below 2
    (bytes((0x44, 4, 4, 0)), True),           # timestamp pointer below 5
    (bytes((0x83, 7, 4, 0, 0, 0, 0, 0)), True),    # loose source route: not accepted
    (bytes((1, 0x07)), True),                 # an option cut off before its length
])
def test_ip_options(options, refused):
    assert (options_refused(options) is not None) == refused


def arriving(src: str, dst: str, sport: int, options: bytes = b"") -> bytes:
    return build_ipv4(src, dst, IPPROTO_UDP, build_udp(src, dst, sport, 7000, b"x"),
                      options=options)


@pytest.mark.parametrize("datagram", [arriving("127.0.0.1", SERVER, 1),
                                      arriving(CLIENT, "0.0.0.1", 2),
                                      arriving(CLIENT, SERVER, 3, bytes((0x44, 1, 0, 0)))])
def test_routing_drop_leaves_no_entry_and_no_stat(datagram):
    eng = make_engine("linux")
    before = view_text(eng, "net/stat/nf_conntrack", 10.0)
    result = eng.feed_datagram(10.0, datagram, PRE_ROUTING)
    assert str(result) == "NEW" and result.dropped      # conntrack saw it, routing dropped it
    assert eng.count == 0
    assert view_text(eng, "net/stat/nf_conntrack", 10.0) == before
    # The same datagram sent by this host (OUTPUT) is not routed as received: tracked.
    assert not eng.feed_datagram(11.0, datagram, LOCAL_OUT).dropped
    assert eng.count == 1


def test_routing_drop_is_a_drop_under_rules(tmp_path):
    capture = write_capture(tmp_path / "martian.pcap",
                            {0: received(arriving("127.0.0.1", SERVER, 1)),
                             1: received(arriving(CLIENT, SERVER, 2))})
    rules = tmp_path / "accept.rules"
    rules.write_text("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n"
                     ":OUTPUT ACCEPT [0:0]\nCOMMIT\n")
    done = run_replay(str(capture), "--profile", "linux", "--rules", str(rules), "--ctstate")
    assert done.stdout.splitlines() == ["1 NEW DROP", "2 NEW ACCEPT"], done.stderr


def test_a_host_that_does_not_forward_drops_what_is_not_its_own():
    server, link_broadcast = ip_to_int(SERVER), ip_to_int("10.99.0.255")
    host = Host({server}, {link_broadcast}, forwarding=False)
    client = ip_to_int(CLIENT)
    for dst, dropped in (("10.5.5.5", True), ("10.99.0.7", True), (SERVER, False),
                         ("10.99.0.255", False), ("255.255.255.255", False)):
        assert (routing_drops(client, ip_to_int(dst), host=host) is not None) == dropped, dst
    # A forwarding host sends others' packets on; so does a host the engine knows nothing of.
    assert routing_drops(client, ip_to_int("10.5.5.5"), host=host._replace(forwarding=True)) is None
    assert routing_drops(client, ip_to_int("10.5.5.5")) is None
    # The link's broadcast is no martian as a source (rp_filter off), the host's own is.
    assert routing_drops(link_broadcast, server, host=host) is None
    assert routing_drops(server, server, host=host) is not None


def test_replay_no_forward_with_a_prefixed_local_address(tmp_path):
    capture = write_capture(tmp_path / "dests.pcap", {
        i: received(arriving(CLIENT, dst, 44000 + i))
        for i, dst in enumerate(("10.5.5.5", "10.99.0.255", SERVER))})
    lines = run_replay(str(capture), "--profile", "linux", "--local", f"{SERVER}/24",
                       "--no-forward").stdout.splitlines()
    assert sorted(field for line in lines for field in line.split()
                  if field.startswith("dst=10.99.0.2")) == ["dst=10.99.0.2", "dst=10.99.0.255"]
    assert not any("10.5.5.5" in line for line in lines)
    forwarding = run_replay(str(capture), "--profile", "linux", "--local", f"{SERVER}/24")
    assert len(forwarding.stdout.splitlines()) == 3


@pytest.mark.parametrize("args, message", [
    (["--no-forward"], "procfs-ct replay: --no-forward needs --local ADDR"),
    (["--local", "10.99.0.2/33"], "procfs-ct replay: --local: '10.99.0.2/33' is not an IPv4"),
])
def test_bad_host_arguments_are_one_line(tmp_path, args, message):
    capture = write_capture(tmp_path / "one.pcap", {0: received(arriving(CLIENT, SERVER, 1))})
    done = run_replay(str(capture), *args)
    assert done.returncode == 2
    assert done.stderr.startswith(message) and len(done.stderr.splitlines()) == 1, done.stderr
