"""Capture files and link layers (engine/capture.py, engine/linklayer.py, engine/build.py).

tests/data/veth_*.pcap were written by tcpdump 4.99.3 / libpcap 1.10.3 in two
throw-away network namespaces joined by a veth pair (10.99.0.1 <-> 10.99.0.2,
MTU 1500): a raw-socket ICMP echo (id 0x1234), UDP 40002->7777 "hello" and
3000 bytes (fragmented) echoed back, UDP to closed port 9 (ICMP port
unreachable back), and a TCP 40001->8080 exchange; 22 IPv4 packets captured
at once with
    tcpdump -i veth0 -w veth_ethernet_usec.pcap ip
    tcpdump -i veth0 --time-stamp-precision=nano -w veth_ethernet_nsec.pcap ip
    tcpdump -i any -w veth_any_sll2.pcap ip            (LINUX_SLL2)
    tcpdump -i any -y LINUX_SLL -w veth_any_sll.pcap ip
Files written by PcapWriter are checked with `tcpdump -r` where tcpdump exists.
"""
from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

from engine.build import (build_ethernet, build_icmp_datagram, build_tcp_datagram,
                          build_udp_datagram, tcp_options)
from engine.capture import (CaptureError, CapturedFrame, PcapWriter, datagrams,
                            read_capture)
from engine.linklayer import (LINKTYPE_ETHERNET, LINKTYPE_IPV4, LINKTYPE_LINUX_SLL,
                              LINKTYPE_LINUX_SLL2, LINKTYPE_LOOP, LINKTYPE_NULL,
                              LINKTYPE_RAW, LINKTYPE_RAW_DLT12, strip_link)
from engine.hooks import LOCAL_OUT, PRE_ROUTING
from engine.packet import ACK, SYN

DATA = Path(__file__).parent / "data"
TCPDUMP = shutil.which("tcpdump")
needs_tcpdump = pytest.mark.skipif(TCPDUMP is None, reason="tcpdump not installed")

A, B = "10.0.0.1", "10.0.0.2"
SYN_DATAGRAM = build_tcp_datagram(A, B, 1234, 80, seq=1000, flags=SYN, window=29200,
                                  options=tcp_options(mss=1460, sack_perm=True, wscale=7))
SYN_SUMMARY = "IP 10.0.0.1.1234 > 10.0.0.2.80: Flags [S], seq 1000, win 29200"

IPV6_HEADER = bytes.fromhex("6000000000083a40") + b"\x00" * 15 + b"\x01" + b"\x00" * 15 + b"\x01"


ARPHRD_ETHER, ARPHRD_LOOPBACK = 1, 772


def sll(pkttype: int, protocol: int, payload: bytes, arphrd: int = ARPHRD_ETHER) -> bytes:
    return struct.pack("!HHH8sH", pkttype, arphrd, 6, b"\x00" * 8, protocol) + payload


def sll2(pkttype: int, protocol: int, payload: bytes, arphrd: int = ARPHRD_ETHER) -> bytes:
    return struct.pack("!HHIHBB8s", protocol, 0, 1, arphrd, pkttype, 6, b"\x00" * 8) + payload


# One frame per supported link type carrying SYN_DATAGRAM, and the hook hint expected.
FRAMES_BY_LINKTYPE = {
    "ethernet": (LINKTYPE_ETHERNET, build_ethernet(SYN_DATAGRAM), None),
    "ethernet_8021q": (LINKTYPE_ETHERNET, build_ethernet(SYN_DATAGRAM, vlans=[(0x8100, 42)]), None),
    "ethernet_qinq": (LINKTYPE_ETHERNET,
                      build_ethernet(SYN_DATAGRAM, vlans=[(0x88A8, 100), (0x8100, 42)]), None),
    "null_little_endian": (LINKTYPE_NULL, b"\x02\x00\x00\x00" + SYN_DATAGRAM, None),
    "null_big_endian": (LINKTYPE_NULL, b"\x00\x00\x00\x02" + SYN_DATAGRAM, None),
    "loop": (LINKTYPE_LOOP, b"\x00\x00\x00\x02" + SYN_DATAGRAM, None),
    "raw": (LINKTYPE_RAW, SYN_DATAGRAM, None),
    "raw_dlt12": (LINKTYPE_RAW_DLT12, SYN_DATAGRAM, None),
    "ipv4": (LINKTYPE_IPV4, SYN_DATAGRAM, None),
    "sll_outgoing": (LINKTYPE_LINUX_SLL, sll(4, 0x0800, SYN_DATAGRAM), LOCAL_OUT),
    "sll_host": (LINKTYPE_LINUX_SLL, sll(0, 0x0800, SYN_DATAGRAM), PRE_ROUTING),
    "sll2_outgoing": (LINKTYPE_LINUX_SLL2, sll2(4, 0x0800, SYN_DATAGRAM), LOCAL_OUT),
    "sll2_broadcast": (LINKTYPE_LINUX_SLL2, sll2(1, 0x0800, SYN_DATAGRAM), PRE_ROUTING),
    # Loopback traffic was made on this host: tracked in OUTPUT whichever copy was captured.
    "sll_loopback_host": (LINKTYPE_LINUX_SLL, sll(0, 0x0800, SYN_DATAGRAM, ARPHRD_LOOPBACK),
                          LOCAL_OUT),
    "sll2_loopback_host": (LINKTYPE_LINUX_SLL2, sll2(0, 0x0800, SYN_DATAGRAM, ARPHRD_LOOPBACK),
                           LOCAL_OUT),
}


def tcpdump(path: Path, *args: str) -> tuple[str, str]:
    done = subprocess.run([TCPDUMP, "-r", str(path), "-nn", *args], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


def only_the_reading_line(stderr: str) -> bool:
    """tcpdump -r prints 'reading from file X, link-type ...' and nothing else when happy.
    For LINUX_SLL2 it always adds 'Warning: interface names might be incorrect' (it
    maps the recorded ifindex to names on the reading host): not about the file."""
    lines = [line for line in stderr.splitlines()
             if line.strip() and line != "Warning: interface names might be incorrect"]
    return len(lines) == 1 and lines[0].startswith("reading from file")


def read_path(path: Path) -> list[CapturedFrame]:
    with open(path, "rb") as f:
        return list(read_capture(f))


# -- link layers -------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(FRAMES_BY_LINKTYPE))
def test_strip_link_finds_the_ipv4_datagram(name):
    linktype, frame, hook = FRAMES_BY_LINKTYPE[name]
    assert strip_link(linktype, frame) == (SYN_DATAGRAM, hook)


def test_strip_link_keeps_ethernet_padding_for_the_parser_to_cut():
    padded = build_ethernet(build_udp_datagram(A, B, 1, 2, b""), pad=True)
    datagram, _ = strip_link(LINKTYPE_ETHERNET, padded)
    assert len(padded) == 60 and len(datagram) == 46


@pytest.mark.parametrize("linktype,frame", [
    (LINKTYPE_ETHERNET, build_ethernet(b"\x00" * 28, ethertype=0x0806)),        # ARP
    (LINKTYPE_ETHERNET, build_ethernet(IPV6_HEADER, ethertype=0x86DD)),
    (LINKTYPE_ETHERNET, build_ethernet(SYN_DATAGRAM)[:13]),
    (LINKTYPE_ETHERNET, build_ethernet(b"", vlans=[(0x8100, 1)])[:16]),          # tag cut off
    (LINKTYPE_NULL, b"\x18\x00\x00\x00" + IPV6_HEADER),                           # AF_INET6 (BSD)
    (LINKTYPE_NULL, b"\x02\x00"),
    (LINKTYPE_LOOP, b"\x02\x00\x00\x00" + SYN_DATAGRAM),                          # LOOP is big-endian only
    (LINKTYPE_RAW, IPV6_HEADER),
    (LINKTYPE_RAW, b""),
    (LINKTYPE_LINUX_SLL, sll(0, 0x86DD, IPV6_HEADER)),
    (LINKTYPE_LINUX_SLL, sll(4, 0x0800, b"")[:15]),
    (LINKTYPE_LINUX_SLL2, sll2(4, 0x0806, b"\x00" * 28)),
    (147, SYN_DATAGRAM),                                                          # a user DLT
])
def test_strip_link_rejects_non_ipv4_and_short_frames(linktype, frame):
    assert strip_link(linktype, frame) == (None, None)


def test_sll_vlan_tag_in_payload_is_skipped():
    frame = sll(0, 0x8100, struct.pack("!HH", 7, 0x0800) + SYN_DATAGRAM)
    assert strip_link(LINKTYPE_LINUX_SLL, frame) == (SYN_DATAGRAM, PRE_ROUTING)


# -- the stored tcpdump captures ----------------------------------------------------

@pytest.mark.parametrize("name,linktype", [
    ("veth_ethernet_usec", LINKTYPE_ETHERNET), ("veth_ethernet_nsec", LINKTYPE_ETHERNET),
    ("veth_any_sll", LINKTYPE_LINUX_SLL), ("veth_any_sll2", LINKTYPE_LINUX_SLL2)])
def test_tcpdump_captures_read_on_every_link_type(name, linktype):
    """tcpdump -r: 22 packets, the first '1795800156.962321 ... ICMP echo request, id 4660'."""
    frames = read_path(DATA / f"{name}.pcap")
    assert len(frames) == 22
    assert {frame.linktype for frame in frames} == {linktype}
    assert abs(frames[0].ts - 1795800156.962321) < 1e-6
    ts, datagram, _hook = next(datagrams(frames[:1], PRE_ROUTING))
    assert datagram[9] == 1 and datagram[20] == 8 and datagram[24:26] == b"\x12\x34"


def test_all_four_captures_hold_the_same_datagrams():
    expected = None
    for name in ("veth_ethernet_usec", "veth_ethernet_nsec", "veth_any_sll", "veth_any_sll2"):
        found = [d for _ts, d, _hook in datagrams(read_path(DATA / f"{name}.pcap"), PRE_ROUTING)]
        expected = expected or found
        assert found == expected, name


def test_nanosecond_capture_keeps_the_sub_microsecond_part():
    """tcpdump --time-stamp-precision=nano: first packet at 1795800156.962321769."""
    usec = read_path(DATA / "veth_ethernet_usec.pcap")[0].ts
    nsec = read_path(DATA / "veth_ethernet_nsec.pcap")[0].ts
    assert abs((nsec - usec) - 769e-9) < 3e-7


@pytest.mark.parametrize("name", ["veth_any_sll", "veth_any_sll2"])
def test_cooked_captures_give_direction_as_hook(name):
    """tcpdump -r veth_any_sll2.pcap direction column; Out -> OUTPUT hook, In -> PREROUTING."""
    expected = "Out In Out Out Out Out Out In In In In In Out In Out Out In In Out Out In Out".split()
    hooks = [hook for _ts, _d, hook in datagrams(read_path(DATA / f"{name}.pcap"), PRE_ROUTING)]
    assert hooks == [LOCAL_OUT if d == "Out" else PRE_ROUTING for d in expected]


def test_ethernet_capture_uses_the_default_hook():
    hooks = {hook for _ts, _d, hook in
             datagrams(read_path(DATA / "veth_ethernet_usec.pcap"), LOCAL_OUT)}
    assert hooks == {LOCAL_OUT}


def test_datagrams_skips_frames_that_are_not_ipv4():
    frames = [CapturedFrame(1.0, LINKTYPE_ETHERNET, build_ethernet(b"\x00" * 28, ethertype=0x0806)),
              CapturedFrame(2.0, LINKTYPE_ETHERNET, build_ethernet(SYN_DATAGRAM)),
              CapturedFrame(3.0, LINKTYPE_RAW, IPV6_HEADER)]
    assert list(datagrams(frames, PRE_ROUTING)) == [(2.0, SYN_DATAGRAM, PRE_ROUTING)]


# -- pcap details ------------------------------------------------------------------

def pcap_bytes(order: str, records: list[tuple[int, int, bytes]], *, nanosecond: bool = False,
               linktype: int = LINKTYPE_RAW, version: int = 2) -> bytes:
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    out = struct.pack(order + "IHHiIII", magic, version, 4, 0, 0, 65535, linktype)
    for seconds, fraction, data in records:
        out += struct.pack(order + "IIII", seconds, fraction, len(data), len(data)) + data
    return out


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nanosecond", [False, True])
def test_pcap_both_byte_orders_and_resolutions(order, nanosecond):
    data = pcap_bytes(order, [(100, 250, SYN_DATAGRAM), (101, 0, b"\x45")], nanosecond=nanosecond)
    frames = list(read_capture(io.BytesIO(data)))
    unit = 1e9 if nanosecond else 1e6
    assert frames == [CapturedFrame(100 + 250 / unit, LINKTYPE_RAW, SYN_DATAGRAM),
                      CapturedFrame(101.0, LINKTYPE_RAW, b"\x45")]


def test_truncated_final_pcap_record_ends_iteration():
    data = pcap_bytes("<", [(1, 0, SYN_DATAGRAM), (2, 0, SYN_DATAGRAM)])
    for cut in (3, 10, 16 + 5):
        frames = list(read_capture(io.BytesIO(data[:-len(SYN_DATAGRAM) - 16 + cut])))
        assert [f.ts for f in frames] == [1.0], cut


def test_short_reads_from_a_pipe_give_the_same_frames():
    class Trickle(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def read(self, size: int = -1) -> bytes:
            return self._data.read(min(size, 3))

    data = (DATA / "veth_any_sll2.pcap").read_bytes()
    assert list(read_capture(Trickle(data))) == list(read_capture(io.BytesIO(data)))


@pytest.mark.parametrize("data,message", [
    (b"", "empty capture file"),
    (b"\xd4\xc3", "empty or truncated capture file"),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not a pcap or pcapng capture (starts with 0x47455420)"),
    (pcap_bytes("<", [])[:20], "truncated pcap file header"),
    (pcap_bytes("<", [], version=1), "unsupported pcap version 1"),
    (struct.pack("<I", 0x0A0D0D0A) + b"\x1c\x00", "truncated pcapng section header"),
    (struct.pack("<II", 0x0A0D0D0A, 28) + b"\x11\x22\x33\x44", "pcapng block 0: bad byte-order magic 0x11223344"),
])
def test_bad_file_headers_raise_one_line_capture_errors(data, message):
    with pytest.raises(CaptureError) as raised:
        read_capture(io.BytesIO(data))        # raised at once, before any next()
    assert str(raised.value) == message
    assert "\n" not in str(raised.value)


def test_absurd_record_length_raises():
    data = pcap_bytes("<", [(1, 0, SYN_DATAGRAM)]) + struct.pack("<IIII", 2, 0, 0x7FFFFFFF, 0x7FFFFFFF)
    frames = read_capture(io.BytesIO(data))
    assert next(frames).ts == 1.0
    with pytest.raises(CaptureError, match="pcap record 1: captured length 2147483647"):
        next(frames)


# -- pcapng --------------------------------------------------------------------------

def block(order: str, block_type: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    total = len(body) + 12
    return struct.pack(order + "II", block_type, total) + body + struct.pack(order + "I", total)


def option(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)


def shb(order: str) -> bytes:
    body = struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1)
    body += option(order, 4, b"procfs-ct test") + option(order, 0, b"")
    return block(order, 0x0A0D0D0A, body)


def idb(order: str, linktype: int, *, tsresol: int | None = None, tsoffset: int | None = None) -> bytes:
    body = struct.pack(order + "HHI", linktype, 0, 262144) + option(order, 2, b"veth0")
    if tsresol is not None:
        body += option(order, 9, bytes([tsresol]))
    if tsoffset is not None:
        body += option(order, 14, struct.pack(order + "q", tsoffset))
    return block(order, 1, body + option(order, 0, b""))


def epb(order: str, interface: int, units: int, data: bytes) -> bytes:
    body = struct.pack(order + "IIIII", interface, units >> 32, units & 0xFFFFFFFF, len(data), len(data))
    return block(order, 6, body + data + b"\x00" * (-len(data) % 4) + option(order, 0, b""))


def spb(order: str, data: bytes) -> bytes:
    return block(order, 3, struct.pack(order + "I", len(data)) + data)


ETH_FRAME = build_ethernet(SYN_DATAGRAM)
UDP_DATAGRAM = build_udp_datagram(A, B, 5353, 53, b"query")


def single_section_pcapng(order: str) -> bytes:
    return (shb(order)
            + idb(order, LINKTYPE_ETHERNET)                               # default: microseconds
            + block(order, 4, b"\x00\x00\x00\x00")                        # name resolution: skipped
            + idb(order, LINKTYPE_LINUX_SLL2, tsresol=9)                  # nanoseconds
            + block(order, 0x00000BAD, b"custom!")                        # unknown: skipped
            + epb(order, 0, 1_700_000_000_250_000, ETH_FRAME)
            + epb(order, 1, 1_700_000_001_123_456_789, sll2(4, 0x0800, UDP_DATAGRAM))
            + spb(order, ETH_FRAME))


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcapng_interfaces_resolutions_and_block_kinds(order):
    frames = list(read_capture(io.BytesIO(single_section_pcapng(order))))
    assert [(f.linktype, f.data) for f in frames] == [
        (LINKTYPE_ETHERNET, ETH_FRAME),
        (LINKTYPE_LINUX_SLL2, sll2(4, 0x0800, UDP_DATAGRAM)),
        (LINKTYPE_ETHERNET, ETH_FRAME)]                                  # SPB: interface 0
    assert frames[0].ts == pytest.approx(1_700_000_000.25, abs=1e-9)
    assert frames[1].ts == pytest.approx(1_700_000_001.123456789, abs=1e-6)
    assert frames[2].ts == frames[1].ts                                  # SPB has no time of its own
    assert [hook for _ts, _d, hook in datagrams(frames, PRE_ROUTING)] == [PRE_ROUTING, LOCAL_OUT, PRE_ROUTING]


def test_pcapng_sections_reset_byte_order_and_interfaces():
    """A second SHB starts a new section: big-endian, with its own IDB list, a
    power-of-two resolution (0x83 = 1/8 s) and if_tsoffset 1000 s."""
    data = (shb("<") + idb("<", LINKTYPE_ETHERNET) + epb("<", 0, 5_000_000, ETH_FRAME)
            + shb(">") + idb(">", LINKTYPE_RAW, tsresol=0x83, tsoffset=1000)
            + epb(">", 0, 12, SYN_DATAGRAM))
    frames = list(read_capture(io.BytesIO(data)))
    assert frames == [CapturedFrame(5.0, LINKTYPE_ETHERNET, ETH_FRAME),
                      CapturedFrame(1001.5, LINKTYPE_RAW, SYN_DATAGRAM)]


def test_pcapng_truncated_final_block_ends_iteration():
    data = single_section_pcapng("<")
    frames = list(read_capture(io.BytesIO(data[:-10])))
    assert len(frames) == 2


@pytest.mark.parametrize("tail,message", [
    (struct.pack("<II", 6, 30) + b"\x00" * 22, "pcapng block 2: bad block length 30"),
    (epb("<", 5, 0, b"x"), "pcapng block 2: unknown interface 5"),
    (block("<", 6, struct.pack("<IIIII", 0, 0, 0, 500, 500) + b"x" * 4), "pcapng block 2: captured length 500 beyond the block"),
    (block("<", 6, b"\x00" * 20)[:-4] + b"\x00\x00\x00\x00", "pcapng block 2: trailing length does not match"),
])
def test_damaged_pcapng_blocks_raise(tail, message):
    data = shb("<") + idb("<", LINKTYPE_ETHERNET) + tail
    with pytest.raises(CaptureError) as raised:
        list(read_capture(io.BytesIO(data)))
    assert str(raised.value) == message


def test_simple_packet_block_before_any_interface_raises():
    with pytest.raises(CaptureError, match="simple packet block before any interface"):
        list(read_capture(io.BytesIO(shb("<") + spb("<", ETH_FRAME))))


@needs_tcpdump
def test_tcpdump_agrees_with_the_pcapng_reader(tmp_path):
    """libpcap wants one link type per file: two Ethernet interfaces, us and ns."""
    path = tmp_path / "two_interfaces.pcapng"
    path.write_bytes(shb("<") + idb("<", LINKTYPE_ETHERNET) + block("<", 4, b"\x00" * 4)
                     + idb("<", LINKTYPE_ETHERNET, tsresol=9) + block("<", 0x00000BAD, b"custom!")
                     + epb("<", 0, 1_700_000_000_250_000, ETH_FRAME)
                     + epb("<", 1, 1_700_000_001_123_456_789, build_ethernet(UDP_DATAGRAM))
                     + spb("<", ETH_FRAME))
    frames = read_path(path)
    assert [round(f.ts, 6) for f in frames] == [1700000000.25, 1700000001.123457, 1700000001.123457]
    stdout, stderr = tcpdump(path, "-tt")
    assert only_the_reading_line(stderr), stderr
    lines = stdout.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("1700000000.250000 IP 10.0.0.1.1234 > 10.0.0.2.80: Flags [S]")
    assert lines[1].startswith("1700000001.123456 ") and "10.0.0.1.5353 > 10.0.0.2.53" in lines[1]


# -- writing --------------------------------------------------------------------------

def test_pcap_writer_rounds_timestamps_to_the_file_resolution():
    buffer = io.BytesIO()
    writer = PcapWriter(buffer, linktype=LINKTYPE_RAW)
    writer.write(1700000000.123456, SYN_DATAGRAM)
    writer.write(1.9999996, SYN_DATAGRAM)            # rounds up into the next second
    raw = buffer.getvalue()
    assert struct.unpack_from("<IIII", raw, 24) == (1700000000, 123456, len(SYN_DATAGRAM), len(SYN_DATAGRAM))
    assert struct.unpack_from("<II", raw, 24 + 16 + len(SYN_DATAGRAM)) == (2, 0)
    nano = io.BytesIO()
    PcapWriter(nano, linktype=LINKTYPE_RAW, nanosecond=True).write(1.5, b"\x45")
    assert struct.unpack_from("<I", nano.getvalue())[0] == 0xA1B23C4D
    assert struct.unpack_from("<II", nano.getvalue(), 24) == (1, 500_000_000)


def test_pcap_writer_cuts_at_snaplen_and_keeps_original_length():
    buffer = io.BytesIO()
    PcapWriter(buffer, snaplen=40).write(0.0, ETH_FRAME)
    assert struct.unpack_from("<II", buffer.getvalue(), 24 + 8) == (40, len(ETH_FRAME))
    assert list(read_capture(io.BytesIO(buffer.getvalue())))[0].data == ETH_FRAME[:40]


def test_pcap_writer_round_trips_through_the_reader():
    buffer = io.BytesIO()
    writer = PcapWriter(buffer, linktype=LINKTYPE_LINUX_SLL2, nanosecond=True)
    frames = [(10.0 + i / 4, sll2(i % 5, 0x0800, SYN_DATAGRAM)) for i in range(5)]
    for ts, data in frames:
        writer.write(ts, data)
    assert list(read_capture(io.BytesIO(buffer.getvalue()))) == \
        [CapturedFrame(ts, LINKTYPE_LINUX_SLL2, data) for ts, data in frames]


@needs_tcpdump
@pytest.mark.parametrize("name", sorted(FRAMES_BY_LINKTYPE))
def test_tcpdump_reads_pcap_writer_output_on_every_link_type(tmp_path, name):
    linktype, frame, _hook = FRAMES_BY_LINKTYPE[name]
    path = tmp_path / f"{name}.pcap"
    with open(path, "wb") as f:
        PcapWriter(f, linktype=linktype).write(1700000000.5, frame)
    stdout, stderr = tcpdump(path, "-tt")
    assert only_the_reading_line(stderr), stderr
    assert stdout.startswith("1700000000.500000 ")
    assert SYN_SUMMARY in stdout


@needs_tcpdump
@pytest.mark.parametrize("nanosecond", [False, True])
def test_tcpdump_verifies_builder_checksums(tmp_path, nanosecond):
    """tcpdump -vv checks IP, TCP, UDP and ICMP checksums and says so."""
    datagrams_to_write = [
        SYN_DATAGRAM,
        build_tcp_datagram(A, B, 1234, 80, seq=1001, ack=77, flags=ACK, payload=b"odd length!",
                           options=tcp_options(timestamps=(1, 2))),
        build_udp_datagram(A, B, 5353, 53, b"abc", ip_options=b"\x01\x01\x01\x00"),
        build_icmp_datagram(A, B, 8, 0, ident=0x1234, seq=1, payload=b"abcdefgh"),
        build_icmp_datagram(B, A, 3, 3, payload=build_udp_datagram(A, B, 5353, 53, b"abc")[:28]),
    ]
    path = tmp_path / "checksums.pcap"
    with open(path, "wb") as f:
        writer = PcapWriter(f, linktype=LINKTYPE_ETHERNET, nanosecond=nanosecond)
        for i, datagram in enumerate(datagrams_to_write):
            writer.write(1700000000 + i, build_ethernet(datagram, pad=True))
    stdout, stderr = tcpdump(path, "-vv")
    assert only_the_reading_line(stderr), stderr
    assert "bad cksum" not in stdout and "incorrect" not in stdout and "wrong" not in stdout
    assert stdout.count("(correct)") == 2          # the two TCP segments
    assert stdout.count("[udp sum ok]") == 1
    assert "ICMP echo request, id 4660, seq 1" in stdout
    assert "udp port 53 unreachable" in stdout
    # Deliberately broken checksums are reported, so the absences above mean something.
    broken = tmp_path / "broken.pcap"
    with open(broken, "wb") as f:
        writer = PcapWriter(f, linktype=LINKTYPE_RAW)
        writer.write(0.0, build_tcp_datagram(A, B, 1, 2, flags=SYN, checksum=0x1234))
        writer.write(0.0, build_icmp_datagram(A, B, 8, 0, ident=1, checksum=5))
        writer.write(0.0, build_udp_datagram(A, B, 1, 2, b"x", ip_checksum=7))
    stdout, _ = tcpdump(broken, "-vv")
    assert "incorrect" in stdout and "wrong icmp cksum" in stdout and "bad cksum" in stdout


# -- live: a capture taken now by this machine's tcpdump ---------------------------------

@pytest.mark.kernel
@needs_tcpdump
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2")
def test_live_tcpdump_capture_in_a_network_namespace(tmp_path):
    """tcpdump -i any (LINUX_SLL2) on the loopback of a fresh namespace sees our UDP
    datagram; the reader recovers it byte for byte with the right hook."""
    namespace = f"pctcap{os.getpid()}"
    path = tmp_path / "live.pcap"
    log = tmp_path / "tcpdump.err"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        subprocess.run(["ip", "-n", namespace, "link", "set", "lo", "up"], check=True)
        with open(log, "w") as err:
            dump = subprocess.Popen(["ip", "netns", "exec", namespace, TCPDUMP, "-Z", "root", "-U",
                                     "-i", "any", "-w", str(path), "udp port 7"], stderr=err)
        try:
            deadline = time.monotonic() + 10
            while "listening on" not in log.read_text():
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            sender = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                      "s.bind(('127.0.0.1', 40777)); s.sendto(b'procfs-ct', ('127.0.0.1', 7))")
            subprocess.run(["ip", "netns", "exec", namespace, "python3", "-c", sender], check=True)
            deadline = time.monotonic() + 10
            while not path.exists() or path.stat().st_size < 24 + 16 + 20 + 28 + 9:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            dump.terminate()
            dump.wait(timeout=10)
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=True)
    frames = read_path(path)
    assert frames and frames[0].linktype == LINKTYPE_LINUX_SLL2
    ts, datagram, hook = next(datagrams(frames, LOCAL_OUT))
    assert datagram[9] == 17 and datagram[20:24] == struct.pack("!HH", 40777, 7)
    assert datagram[28:37] == b"procfs-ct"
    # libpcap keeps only the incoming copy on loopback, but conntrack tracked the packet
    # in OUTPUT, where it was made: loopback frames are given the LOCAL_OUT hook.
    assert hook == LOCAL_OUT
    assert abs(ts - time.time()) < 60
