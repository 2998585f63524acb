"""The batched capture reader (engine.capture.read_capture_batches): a list of frames per
chunk read from the file, what the mount's pcap pump hands to the engine thread at once.

Checked against what was written, not against the per-record readers (which are the same
batches flattened): every frame, in order, with its time, link type and interface name, for
pcap and pcapng, with records straddling chunk boundaries (READ_CHUNK made small), a file cut
short, a record damaged mid-file.  (A pipe that hands over 3 bytes per read: test_capture.py,
whose readers are these batches flattened.)
"""
from __future__ import annotations

import io
import struct

import pytest

from engine import capture
from engine.build import build_ethernet, build_udp_datagram
from engine.capture import CaptureError, CapturedFrame, PcapWriter, read_capture_batches
from engine.linklayer import LINKTYPE_ETHERNET, LINKTYPE_RAW
from pcapnghelp import write_pcapng

# Frames of many sizes (60..1100 bytes), so that chunk boundaries fall inside records,
# inside record headers and between records.
SIZES = [60 + (n * 97) % 1041 for n in range(600)]
SMALL_CHUNK = 4096          # ~10 records per chunk: 60 batches or so for 600 frames


def frames(count: int = len(SIZES)) -> list[CapturedFrame]:
    out = []
    for n in range(count):
        payload = bytes([n % 251]) * (SIZES[n] - 42)
        datagram = build_udp_datagram("10.0.0.1", "10.0.0.2", 1024 + n, 53, payload)
        out.append(CapturedFrame(1_700_000_000 + n * 0.001, LINKTYPE_ETHERNET,
                                 build_ethernet(datagram)))
    return out


def pcap_file(written: list[CapturedFrame], nanosecond: bool = False) -> bytes:
    out = io.BytesIO()
    writer = PcapWriter(out, linktype=LINKTYPE_ETHERNET, nanosecond=nanosecond)
    for frame in written:
        writer.write(frame.ts, frame.data)
    return out.getvalue()


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(capture, "READ_CHUNK", SMALL_CHUNK)


def batches_of(data: bytes) -> list[list]:
    return list(read_capture_batches(io.BytesIO(data)))


def flat(batches: list[list]) -> list:
    return [frame for batch in batches for frame in batch]


def test_pcap_batches_hold_every_frame_in_order(small_chunks):
    written = frames()
    batches = batches_of(pcap_file(written))
    assert len(batches) > 20                     # many chunks, so many boundaries crossed
    assert all(isinstance(batch, list) and batch for batch in batches)
    assert flat(batches) == [(f.ts, f.linktype, f.data, None) for f in written]


def test_pcap_batches_nanosecond_times(small_chunks):
    written = frames(50)
    got = flat(batches_of(pcap_file(written, nanosecond=True)))
    assert [ts for ts, _, _, _ in got] == pytest.approx([f.ts for f in written], abs=1e-9)


def test_a_batch_is_a_chunk_of_the_file():
    """The default chunk (READ_CHUNK bytes) holds ~100 frames of ~600 bytes: the 600 frames
    come in a handful of lists, not one per frame and not one for the whole file."""
    batches = batches_of(pcap_file(frames()))
    total = sum(16 + size for size in SIZES)
    assert len(batches) == pytest.approx(total / capture.READ_CHUNK, abs=2)


def test_pcap_cut_short_ends_after_the_last_whole_record(small_chunks):
    written = frames(40)
    data = pcap_file(written)
    for cut in (1, 10, 16, 16 + 5):         # inside the last record's header or data
        got = flat(batches_of(data[:-(16 + len(written[-1].data)) + cut]))
        assert got == [(f.ts, f.linktype, f.data, None) for f in written[:-1]], cut


def test_pcap_damaged_mid_file_gives_the_frames_before_it_then_raises(small_chunks):
    written = frames(40)
    data = bytearray(pcap_file(written))
    at = 24 + sum(16 + len(f.data) for f in written[:25])       # record 25's header
    struct.pack_into("<I", data, at + 8, 0x7FFFFFFF)
    reader = read_capture_batches(io.BytesIO(bytes(data)))
    got = []
    with pytest.raises(CaptureError, match="pcap record 25: captured length 2147483647"):
        for batch in reader:
            assert batch
            got.extend(batch)
    assert got == [(f.ts, f.linktype, f.data, None) for f in written[:25]]


def record_ends(written: list[CapturedFrame]) -> list[int]:
    """Each record's end, as an offset in its pcap file (the file header is 24 bytes)."""
    ends, at = [], 24
    for frame in written:
        at += 16 + len(frame.data)
        ends.append(at)
    return ends


def test_a_pcap_batch_is_the_records_that_end_in_its_chunk(small_chunks):
    """Batch k holds the records whose last byte came with the k-th chunk read (each read
    READ_CHUNK bytes, all records shorter): a record straddling a chunk's end is in the
    batch of the chunk that completes it, and none is held back or taken early."""
    written = frames()
    ends = record_ends(written)
    expected: list[list[int]] = []
    for index, end in enumerate(ends):
        chunk = (end - 24 - 1) // SMALL_CHUNK       # the chunk holding its last byte
        while len(expected) <= chunk:
            expected.append([])
        expected[chunk].append(index)
    expected = [indexes for indexes in expected if indexes]
    straddling = sum(1 for end, size in zip(ends, SIZES)
                     if (end - 24 - 1) // SMALL_CHUNK != (end - 24 - 16 - size) // SMALL_CHUNK)
    assert straddling > 40              # records and headers cut by chunk ends, many times
    got = batches_of(pcap_file(written))
    assert [[frame[2] for frame in batch] for batch in got] == [
        [written[index].data for index in indexes] for indexes in expected]


def test_pcap_records_longer_than_a_chunk(small_chunks):
    """Records of one to three chunks' length: the chunk read does not complete the record
    that straddles into it, so it is read on to the record's end (one read of the rest)."""
    written = [CapturedFrame(1_700_000_000 + n, LINKTYPE_ETHERNET,
                             bytes([n]) * (100 + n * SMALL_CHUNK // 3)) for n in range(10)]
    got = batches_of(pcap_file(written))
    assert flat(got) == [(f.ts, f.linktype, f.data, None) for f in written]
    assert [len(batch) for batch in got] != [1] * len(written)      # some share a chunk


@pytest.mark.parametrize("into_header", [0, 6, 15])
def test_pcap_damaged_record_straddling_a_chunk_end(small_chunks, into_header):
    """A record whose header straddles a chunk's end (cut after `into_header` bytes of
    it) with a captured length too large: the frames before it, then CaptureError."""
    written = frames(40)
    ends = record_ends(written)
    index = next(n for n, end in enumerate(ends) if end - 24 >= SMALL_CHUNK) + 1
    # Shift the file so that record `index`'s header starts `into_header` bytes before
    # the end of a chunk: a first record longer or shorter by the difference.
    start = ends[index - 1] - 24
    shift = (SMALL_CHUNK - into_header) - start % SMALL_CHUNK
    first = written[0]
    written[0] = CapturedFrame(first.ts, first.linktype,
                               first.data + bytes(shift % SMALL_CHUNK))
    data = bytearray(pcap_file(written))
    at = record_ends(written)[index - 1]
    assert (at - 24) % SMALL_CHUNK == (SMALL_CHUNK - into_header) % SMALL_CHUNK
    struct.pack_into("<I", data, at + 8, 0x7FFFFFFF)
    got = []
    with pytest.raises(CaptureError, match=f"pcap record {index}: captured length 2147483647"):
        for batch in read_capture_batches(io.BytesIO(bytes(data))):
            got.extend(batch)
    assert got == [(f.ts, f.linktype, f.data, None) for f in written[:index]]


def test_a_bad_header_raises_at_once():
    with pytest.raises(CaptureError, match="not a pcap or pcapng capture"):
        read_capture_batches(io.BytesIO(b"GET / HTTP/1.1\r\n\r\n"))


# -- pcapng -----------------------------------------------------------------------

def test_pcapng_batches_name_each_frame_by_its_interface(tmp_path, small_chunks):
    written = frames()
    names = ["lo", "eth0", "any"]                # `any` names no interface
    path = tmp_path / "named.pcapng"
    write_pcapng(path, written, lambda frame: written.index(frame) % 3, names)
    batches = batches_of(path.read_bytes())
    assert len(batches) > 20
    assert all(batch for batch in batches)
    want = [(f.ts, f.linktype, f.data, ["lo", "eth0", None][n % 3])
            for n, f in enumerate(written)]
    got = flat(batches)
    assert [(linktype, data, name) for _, linktype, data, name in got] == \
        [(linktype, data, name) for _, linktype, data, name in want]
    assert [ts for ts, _, _, _ in got] == pytest.approx([ts for ts, _, _, _ in want], abs=1e-6)


def block(block_type: int, body: bytes, order: str = "<") -> bytes:
    body += b"\0" * (-len(body) % 4)
    return struct.pack(order + "II", block_type, len(body) + 12) + body + \
        struct.pack(order + "I", len(body) + 12)


def section(order: str) -> bytes:
    return block(0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1), order)


def interface(order: str, name: bytes) -> bytes:
    option = struct.pack(order + "HH", 2, len(name)) + name + b"\0" * (-len(name) % 4)
    return block(1, struct.pack(order + "HHI", LINKTYPE_RAW, 0, 0) + option + b"\0" * 4, order)


def packet(order: str, micros: int, data: bytes) -> bytes:
    return block(6, struct.pack(order + "IIIII", 0, micros >> 32, micros & 0xFFFFFFFF,
                                len(data), len(data)) + data, order)


def test_pcapng_sections_in_the_middle_of_a_chunk(small_chunks):
    """A second section (big-endian, its own interfaces) read from the same chunk as
    the first section's last packets, and the blocks around it straddling chunks."""
    little = [packet("<", 1_000_000 + n, b"\x45" + bytes(n % 700)) for n in range(40)]
    big = [packet(">", 2_000_000 + n, b"\x45" + bytes(n % 500)) for n in range(40)]
    data = (section("<") + interface("<", b"va") + b"".join(little)
            + section(">") + interface(">", b"vb") + b"".join(big))
    got = flat(batches_of(data))
    assert [name for _, _, _, name in got] == ["va"] * 40 + ["vb"] * 40
    assert [round(ts * 1e6) for ts, _, _, _ in got] == \
        [1_000_000 + n for n in range(40)] + [2_000_000 + n for n in range(40)]
    assert [len(data) for _, _, data, _ in got] == \
        [1 + n % 700 for n in range(40)] + [1 + n % 500 for n in range(40)]


def test_pcapng_damaged_block_mid_file_gives_the_blocks_before_it(small_chunks):
    good = [packet("<", 1_000_000 + n, b"\x45" + bytes(300)) for n in range(30)]
    bad = packet("<", 5, b"\x45")[:-4] + struct.pack("<I", 12)   # trailer disagrees
    data = section("<") + interface("<", b"va") + b"".join(good) + bad + good[0]
    got = []
    with pytest.raises(CaptureError, match="pcapng block 32: trailing length does not match"):
        for batch in read_capture_batches(io.BytesIO(data)):
            got.extend(batch)
    assert len(got) == 30


def test_pcapng_cut_short_ends_after_the_last_whole_block(small_chunks):
    good = [packet("<", 1_000_000 + n, b"\x45" + bytes(300)) for n in range(30)]
    data = section("<") + interface("<", b"va") + b"".join(good)
    for cut in (1, 7, 8, 100):
        assert len(flat(batches_of(data[:-cut]))) == 29, cut


@pytest.mark.parametrize("nanosecond", [False, True])
def test_pcap_times_are_seconds_plus_fraction_to_the_bit_in_any_order(nanosecond):
    """The reader makes each record's whole seconds a float once per second met; a time is
    still exactly `seconds + fraction / unit` when the seconds go back and forth (a capture
    merged out of order) and when only the fraction changes."""
    unit = 10 ** 9 if nanosecond else 10 ** 6
    records = [(1_700_000_000, 1), (1_700_000_000, unit - 1), (1_700_000_005, 7),
               (1_700_000_000, 123_456), (4_000_000_000, 999), (0, 5), (0, 6),
               (1_700_000_005, 7)]
    frame = build_ethernet(build_udp_datagram("10.0.0.1", "10.0.0.2", 1024, 53, b"x"))
    magic = capture.PCAP_MAGIC_NSEC if nanosecond else capture.PCAP_MAGIC_USEC
    data = struct.pack("<IHHiIII", magic, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET) + b"".join(
        struct.pack("<IIII", seconds, fraction, len(frame), len(frame)) + frame
        for seconds, fraction in records)
    got = [ts for ts, _, _, _ in flat(batches_of(data))]
    assert got == [seconds + fraction / float(unit) for seconds, fraction in records]
    assert [ts.hex() for ts in got] == [(seconds + fraction / float(unit)).hex()
                                        for seconds, fraction in records]
