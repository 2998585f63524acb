"""Frames conntrack never sees: `procfs-ct replay --ctstate` gives every frame a line, NOTSEEN
for those the kernel drops before any conntrack hook (ip_rcv) or holds (defragmentation), and
no stat column counts them."""
from __future__ import annotations

import struct
import subprocess
from pathlib import Path

from conftest import child_env, procfs_ct_command
from engine.build import build_ipv4, build_udp, build_udp_datagram
from engine.capture import PcapWriter
from engine.linklayer import ARPHRD_ETHER, ETH_P_IP, LINKTYPE_LINUX_SLL2, PACKET_HOST
from engine.packet import IPPROTO_UDP
from engine.replay import NOT_SEEN, replay

CLIENT, SERVER = "10.99.0.1", "10.99.0.2"
ETH_P_ARP = 0x0806


def received(payload: bytes, protocol: int = ETH_P_IP) -> bytes:
    """A cooked (LINUX_SLL2) frame this host received: it meets ip_rcv, then PREROUTING."""
    return struct.pack("!HHIHBB8s", protocol, 0, 2, ARPHRD_ETHER, PACKET_HOST, 6,
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
    cooked = {i: f if i == 0 else received(f) for i, (f, _) in enumerate(frames)}
    everything = write_capture(tmp_path / "all.pcap", cooked)
    # What conntrack sees of it: the good datagram and the fragment train, at the same times.
    seen = write_capture(tmp_path / "seen.pcap", {i: cooked[i] for i in (5, 7, 8)})
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
