"""pcap and pcapng capture files: read frames, write pcap, reach IPv4 datagrams.

Works on a binary file object handed in (read sequentially, never seeked, so a
pipe works); opening files is the caller's business.

Formats: pcap (tcpdump.org "pcap savefile", draft-ietf-opsawg-pcap) in either
byte order with microsecond or nanosecond magic; pcapng (draft-ietf-opsawg-pcapng)
with any number of sections, per-interface link type, if_tsresol,
if_tsoffset and if_name, Enhanced, Simple and obsolete Packet Blocks; other blocks
skipped.  `read_named_capture` gives each frame with the name of the interface it was
captured on, when a pcapng file says it (what `-i`/`-o` rules match);
`read_capture_batches` gives the same frames a list at a time, one list per chunk read from
the file (what a pump hands on to another thread at once); `read_capture_columns` gives each
such batch as columns (a list of times, of link types, of frames, of names: what a replay
feeds its fast path from, with no tuple per frame).  Every reader is those columns, zipped in
C and flattened, so they cannot disagree.
A damaged header raises CaptureError; a file cut short inside its last record
just ends (tcpdump does the same).
"""
from __future__ import annotations

import itertools
import math
import struct
from typing import BinaryIO, Callable, Iterable, Iterator, List, NamedTuple, Optional, Tuple

from .build import internet_checksum, ipv4_checksum, l4_checksum  # noqa: F401  (re-exported)
from .interfaces import IFNAMSIZ
from .linklayer import strip_link

PCAP_MAGIC_USEC = 0xA1B2C3D4
PCAP_MAGIC_NSEC = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BYTE_ORDER_MAGIC = 0x1A2B3C4D

BLOCK_IDB = 0x00000001
BLOCK_PB = 0x00000002      # obsolete Packet Block
BLOCK_SPB = 0x00000003
BLOCK_EPB = 0x00000006

OPT_ENDOFOPT = 0
OPT_IF_NAME = 2
OPT_IF_TSRESOL = 9
OPT_IF_TSOFFSET = 14

# libpcap refuses records larger than this unless the file's snaplen is larger.
MAX_RECORD = 262144
DEFAULT_SNAPLEN = 262144
# Bytes asked for per read while cutting records out of a file: a chunk's frames are one
# batch.  64 KiB (~160 frames of the bench mix) read the 1,000,000-frame capture in 0.93-0.99
# s of CPU where 1 MiB took 1.13-1.33 (the best of 5 runs each, load 2.5-3.4): a batch that
# fits in the CPU's cache is cut and consumed before it is evicted.
READ_CHUNK = 1 << 16


class CaptureError(Exception):
    """The file is not a capture this reader understands, or its headers are damaged."""


class CapturedFrame(NamedTuple):
    ts: float          # seconds since the epoch
    linktype: int      # pcap LINKTYPE_* of the frame's interface
    data: bytes        # captured bytes (possibly cut at snaplen)


class FrameColumns(NamedTuple):
    """One batch of frames as columns: frame i is (times[i], linktypes[i], frames[i],
    names[i]).  Cutting a record appends its time and its bytes to two lists instead of
    making a tuple that the reader unpacks again; the columns are zipped in C for the
    readers that want tuples."""
    times: List[float]                # seconds since the epoch
    linktypes: List[int]              # pcap LINKTYPE_* of each frame's interface
    frames: List[bytes]               # captured bytes (possibly cut at snaplen)
    names: List[Optional[str]]        # the if_name of a pcapng interface, or None


def _read(fileobj: BinaryIO, size: int) -> bytes:
    """Up to size bytes; fewer only at end of file (loops over short reads of pipes)."""
    data = fileobj.read(size)
    if data is None:
        data = b""
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = fileobj.read(size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def read_capture(fileobj: BinaryIO) -> Iterator[CapturedFrame]:
    """Frames of a pcap or pcapng file, format sniffed from its first bytes.

    Raises CaptureError at once (not at the first next()) for a file that is
    empty, not a capture, or has a cut/garbled file header.
    """
    return _open(fileobj, named=False)


def read_named_capture(fileobj: BinaryIO) -> Iterator[tuple[CapturedFrame, Optional[str]]]:
    """(frame, the if_name of its pcapng interface or None) for each frame, as read_capture.
    A pcap file names no interface; nor does a pcapng interface without if_name, or one
    that is the `any` pseudo-device (its cooked frames carry their own interface index)."""
    return _open(fileobj, named=True)


FrameTuple = Tuple[float, int, bytes, Optional[str]]


def read_capture_batches(fileobj: BinaryIO) -> Iterator[List[FrameTuple]]:
    """(ts, linktype, data, interface name or None) per frame, a plain tuple, a list at a
    time: the whole records of each chunk read from the file (READ_CHUNK bytes, ~160
    frames of a typical mix; from a pipe, what had arrived), never an empty list.  One loop cuts a chunk's records, with no generator
    resumed per frame: what a pump thread sharing the GIL with the engine wants.

    Raises CaptureError at once for a bad file header, as read_capture.  A record damaged
    mid-file ends it: the frames before it come first, then CaptureError at the next next().
    """
    return _open_batches(fileobj, named=True, plain=True)


def read_capture_columns(fileobj: BinaryIO) -> Iterator[FrameColumns]:
    """read_capture_batches()'s batches as FrameColumns (never empty), for a reader that
    takes the frames column by column: a replay zips them for its fast path (zip reuses
    one tuple), and no tuple is made per frame while the records are cut.

    Raises CaptureError as read_capture_batches does (at once for a bad file header)."""
    magic = _read(fileobj, 4)
    if len(magic) < 4:
        raise CaptureError("empty or truncated capture file" if magic else "empty capture file")
    if int.from_bytes(magic, "big") == PCAPNG_SHB:
        return _read_pcapng(fileobj, magic)
    for order in ("<", ">"):
        value = struct.unpack(order + "I", magic)[0]
        if value in (PCAP_MAGIC_USEC, PCAP_MAGIC_NSEC):
            return _read_pcap(fileobj, order, value == PCAP_MAGIC_NSEC)
    raise CaptureError(f"not a pcap or pcapng capture (starts with 0x{magic.hex()})")


def _open(fileobj: BinaryIO, named: bool, plain: bool = False) -> Iterator:
    """The frames of _open_batches one at a time (the lists are flattened in C)."""
    return itertools.chain.from_iterable(_open_batches(fileobj, named, plain))


def _open_batches(fileobj: BinaryIO, named: bool, plain: bool) -> Iterator[list]:
    """Lists of frames: plain tuples, (CapturedFrame, name) pairs if named, else frames;
    each list made from one batch's columns in C (zip and map: no bytecode per frame)."""
    columns = read_capture_columns(fileobj)     # (raises here for a bad file header)
    if plain:
        return (list(zip(*batch)) for batch in columns)
    if named:
        return (list(zip(_captured_frames(batch), batch.names)) for batch in columns)
    return (list(_captured_frames(batch)) for batch in columns)


def _captured_frames(batch: FrameColumns) -> Iterator[CapturedFrame]:
    """The batch's frames as CapturedFrames, made in C: tuple.__new__(CapturedFrame, values)
    is what CapturedFrame(...) does, without its Python-level __new__."""
    return map(tuple.__new__, itertools.repeat(CapturedFrame),
               zip(batch.times, batch.linktypes, batch.frames))


def _more(fileobj: BinaryIO) -> Callable[[int], bytes]:
    """The file's read1 (what is available: a pipe from a live capture is not held up
    until a whole chunk has arrived), or read for files without one (raw streams)."""
    return getattr(fileobj, "read1", None) or fileobj.read


def _refill(read: Callable[[int], bytes], buf: bytes, wanted: int) -> Optional[bytes]:
    """buf and what follows it in the file, at least `wanted` bytes; None at the end of
    the file (a file that ends inside a record just ends: tcpdump does the same)."""
    while len(buf) < wanted:
        more = read(max(READ_CHUNK, wanted - len(buf)))
        if not more:
            return None
        buf += more
    return buf


# -- pcap ------------------------------------------------------------------------

def _read_pcap(fileobj: BinaryIO, order: str, nanosecond: bool) -> Iterator[FrameColumns]:
    header = _read(fileobj, 20)
    if len(header) < 20:
        raise CaptureError("truncated pcap file header")
    major, _minor, _zone, _sigfigs, snaplen, network = struct.unpack(order + "HHiIII", header)
    if major != 2:
        raise CaptureError(f"unsupported pcap version {major}")
    return _pcap_batches(fileobj, order, nanosecond, snaplen, network & 0xFFFF)


def _pcap_batches(fileobj: BinaryIO, order: str, nanosecond: bool, snaplen: int,
                  linktype: int) -> Iterator[FrameColumns]:
    """The records of a pcap file, a batch per chunk of up to READ_CHUNK bytes read.

    Reading one record at a time costs two read() calls per frame, about as much as
    tracking it; a chunk holds thousands of records that are cut out of it in place.
    """
    # The record header without its original length (never used): one int fewer made.
    record = struct.Struct(order + "III4x")
    unpack_from = record.unpack_from
    unit = 1e9 if nanosecond else 1e6
    limit = max(snaplen, MAX_RECORD)
    read = _more(fileobj)
    index = 0                           # the records of the chunks before this one
    # A time's whole seconds as a float, made once per second: `seconds + fraction / unit`
    # with a Python int of 1.7e9 (two digits) converts it through _PyLong_Frexp per frame;
    # float(seconds) is that same conversion, so the sum is the same to the bit.
    whole, whole_float = -1, -1.0
    # What to cut records from, in order: (bytes, where the next record starts).  The first
    # chunk alone, then for each chunk read: the record that straddled the end of the one
    # before (its part from there, joined to its rest from this chunk: one record's copy),
    # then the chunk itself after that rest -- not the chunk joined to the partial record
    # before it, a copy of the whole 64 KiB per chunk (~400 instructions a frame by
    # callgrind).  The records cut, the reads made and so the batches are the same.
    pieces: Optional[List[Tuple[bytes, int]]] = [(b"", 0)]
    while pieces is not None:
        times: List[float] = []
        frames: List[bytes] = []
        add_time = times.append
        add_frame = frames.append
        for buf, pos in pieces:
            size = len(buf)
            last_header = size - 16     # where the piece's last whole record header can start
            # Every whole record in the piece.
            while pos <= last_header:
                seconds, fraction, caplen = unpack_from(buf, pos)
                if caplen > limit:
                    if times:           # the frames before it are good
                        yield _pcap_columns(times, linktype, frames)
                    raise CaptureError(f"pcap record {index + len(times)}: captured length "
                                       f"{caplen} exceeds the maximum {limit}")
                start = pos + 16
                end = start + caplen
                if end > size:
                    break
                if seconds != whole:
                    whole, whole_float = seconds, float(seconds)
                add_time(whole_float + fraction / unit)
                add_frame(buf[start:end])
                pos = end
        index += len(times)
        if times:
            yield _pcap_columns(times, linktype, frames)
        # The partial record (of the last piece) and the next chunk.
        wanted = 16
        if pos <= last_header:
            wanted = 16 + unpack_from(buf, pos)[2]
        pieces = _pcap_pieces(read, buf[pos:], wanted, unpack_from)


def _pcap_pieces(read: Callable[[int], bytes], tail: bytes, wanted: int,
                 unpack_from: Callable[[bytes, int], Tuple[int, int, int]]
                 ) -> Optional[List[Tuple[bytes, int]]]:
    """The pieces _pcap_batches() cuts records from next: the partial record `tail` (of
    which `wanted` bytes are known to be needed) with its rest from the next chunk, then
    that chunk from the rest's end; or, when the chunk does not hold the rest, `tail` and
    the chunk joined as one piece, read on to `wanted` bytes as _refill() does.  None at
    the end of the file."""
    more = read(max(READ_CHUNK, wanted - len(tail)))
    if not more:
        return None
    if not tail:
        return [(more, 0)]
    rest = len(more) + 1                # (the record's rest: "more than the chunk holds")
    if len(tail) >= 16:
        rest = wanted - len(tail)       # the header was whole: `wanted` is the record
    elif len(tail) + len(more) >= 16:
        rest = 16 + unpack_from(tail + more[:16 - len(tail)], 0)[2] - len(tail)
    if rest > len(more):
        joined = _refill(read, tail + more, wanted)
        return None if joined is None else [(joined, 0)]
    return [(tail + more[:rest], 0), (more, rest)]


def _pcap_columns(times: List[float], linktype: int, frames: List[bytes]) -> FrameColumns:
    """A pcap batch: one link type for the file, no interface names."""
    count = len(times)
    return FrameColumns(times, [linktype] * count, frames, [None] * count)


# -- pcapng ----------------------------------------------------------------------

class _Interface(NamedTuple):
    linktype: int
    snaplen: int
    units_per_second: int
    offset: int          # if_tsoffset, seconds
    name: Optional[str]  # if_name, None without one (or for the `any` pseudo-device)


ANY_DEVICE = "any"       # libpcap's capture of every interface: names none of them
SHB_TYPE = PCAPNG_SHB.to_bytes(4, "big")    # the same bytes in either byte order


def _read_pcapng(fileobj: BinaryIO, shb_type: bytes) -> Iterator[FrameColumns]:
    order = _section_header(fileobj, shb_type + _read(fileobj, 4), 0)
    if order is None:
        raise CaptureError("truncated pcapng section header")
    return _pcapng_batches(fileobj, _Section(order))


def _section_header(fileobj: BinaryIO, head: bytes, index: int) -> Optional[str]:
    """Read the rest of a Section Header Block whose type and length fields are in
    head; the section's byte order, or None if the file ends inside the block."""
    if len(head) < 8:
        return None
    magic = _read(fileobj, 4)
    if len(magic) < 4:
        return None
    order = _byte_order(magic, index)
    total = _section_length(head, order, index)
    rest = _read(fileobj, total - 12)
    if len(rest) < total - 12:
        return None
    _check_section(rest, order, total, index)
    return order


def _byte_order(magic: bytes, index: int) -> str:
    """The struct byte order a Section Header Block's byte-order magic says."""
    if magic == b"\x4d\x3c\x2b\x1a":
        return "<"
    if magic == b"\x1a\x2b\x3c\x4d":
        return ">"
    raise CaptureError(f"pcapng block {index}: bad byte-order magic 0x{magic.hex()}")


def _section_length(head: bytes, order: str, index: int) -> int:
    """The total length of a Section Header Block from its first 8 bytes."""
    total = struct.unpack(order + "I", head[4:8])[0]
    if total < 28 or total % 4:
        raise CaptureError(f"pcapng block {index}: bad section header length {total}")
    return total


def _check_section(rest: bytes, order: str, total: int, index: int) -> None:
    """Check a Section Header Block's bytes after its byte-order magic."""
    major = struct.unpack(order + "H", rest[:2])[0]
    if major != 1:
        raise CaptureError(f"unsupported pcapng version {major}")
    if struct.unpack(order + "I", rest[-4:])[0] != total:
        raise CaptureError(f"pcapng block {index}: trailing length does not match")


def _interface(body: bytes, order: str) -> _Interface:
    if len(body) < 8:
        raise CaptureError("pcapng interface description block too short")
    linktype, _reserved, snaplen = struct.unpack_from(order + "HHI", body)
    units, offset, name = 1_000_000, 0, None
    pos = 8
    while pos + 4 <= len(body):
        code, length = struct.unpack_from(order + "HH", body, pos)
        value = body[pos + 4:pos + 4 + length]
        if code == OPT_ENDOFOPT:
            break
        if code == OPT_IF_TSRESOL and length == 1:
            exponent = value[0]
            # High bit set: a power of two; else a power of ten.
            units = 2 ** (exponent & 0x7F) if exponent & 0x80 else 10 ** exponent
        elif code == OPT_IF_TSOFFSET and length == 8:
            offset = struct.unpack(order + "q", value)[0]
        elif code == OPT_IF_NAME:
            # UTF-8, maybe NUL-terminated; a name the kernel could not have is no name.
            text = value.split(b"\0", 1)[0].decode("utf-8", "replace")
            if text and text != ANY_DEVICE and len(text) < IFNAMSIZ:
                name = text
        pos += 4 + length + (-length % 4)
    return _Interface(linktype, snaplen, units, offset, name)


def _timestamp(interface: _Interface, high: int, low: int) -> float:
    seconds, fraction = divmod(high << 32 | low, interface.units_per_second)
    return interface.offset + seconds + fraction / interface.units_per_second


class _Section:
    """Where a pcapng reader stands: the section's byte order and interfaces, the last
    frame's time (a Simple Packet Block's), the index of the next block (for messages)."""

    def __init__(self, order: str) -> None:
        self.order = order
        self.interfaces: list[_Interface] = []
        self.last_ts = 0.0
        self.index = 1


def _pcapng_batches(fileobj: BinaryIO, section: _Section) -> Iterator[FrameColumns]:
    """The frames of the blocks after the first section header, a batch per chunk read."""
    read = _more(fileobj)
    buf: Optional[bytes] = b""
    pos = 0
    while buf is not None:
        batch = FrameColumns([], [], [], [])
        try:
            pos, wanted = _cut_blocks(buf, pos, section, batch)
        except CaptureError:
            if batch.times:             # the frames before the damaged block are good
                yield batch
            raise
        if batch.times:
            yield batch
        buf = _refill(read, buf[pos:], wanted)
        pos = 0


def _cut_blocks(buf: bytes, pos: int, section: _Section,
                batch: FrameColumns) -> tuple[int, int]:
    """Append the frames of the whole blocks in buf from pos on to batch; (where the first
    block not wholly in buf starts, how many bytes from there it needs to be read on)."""
    size = len(buf)
    while True:
        if pos + 8 > size:
            return pos, 8
        if buf[pos:pos + 4] == SHB_TYPE:
            # A new section: its own byte order and interface list.
            if pos + 12 > size:
                return pos, 12
            order = _byte_order(buf[pos + 8:pos + 12], section.index)
            total = _section_length(buf[pos:pos + 8], order, section.index)
            if pos + total > size:
                return pos, total
            _check_section(buf[pos + 12:pos + total], order, total, section.index)
            section.order, section.interfaces = order, []
            section.index += 1
            pos += total
            continue
        block_type, total = struct.unpack_from(section.order + "II", buf, pos)
        if total < 12 or total % 4:
            raise CaptureError(f"pcapng block {section.index}: bad block length {total}")
        if pos + total > size:
            return pos, total
        frame, name = _pcapng_block(block_type, buf[pos + 8:pos + total], section)
        if frame is not None:
            batch.times.append(frame.ts)
            batch.linktypes.append(frame.linktype)
            batch.frames.append(frame.data)
            batch.names.append(name)
        section.index += 1
        pos += total


def _pcapng_block(block_type: int, body: bytes,
                  section: _Section) -> tuple[Optional[CapturedFrame], Optional[str]]:
    """One block after its type and length fields: (its frame or None, the name of the
    frame's interface); an Interface Description Block is added to the section's."""
    order, interfaces, index = section.order, section.interfaces, section.index
    if struct.unpack(order + "I", body[-4:])[0] != len(body) + 8:
        raise CaptureError(f"pcapng block {index}: trailing length does not match")
    body = body[:-4]
    if block_type == BLOCK_EPB or block_type == BLOCK_PB:
        frame, which = _packet_block(block_type, body, order, interfaces, index)
        section.last_ts = frame.ts
        return frame, interfaces[which].name
    if block_type == BLOCK_SPB:
        frame = _simple_packet_block(body, order, interfaces, index, section.last_ts)
        section.last_ts = frame.ts
        return frame, interfaces[0].name
    if block_type == BLOCK_IDB:
        interfaces.append(_interface(body, order))
    return None, None


def _packet_block(block_type: int, body: bytes, order: str,
                  interfaces: list[_Interface], index: int) -> tuple[CapturedFrame, int]:
    """The block's frame and the index of its interface."""
    if block_type == BLOCK_EPB:
        if len(body) < 20:
            raise CaptureError(f"pcapng block {index}: enhanced packet block too short")
        iface, high, low, caplen, _origlen = struct.unpack_from(order + "IIIII", body)
    else:
        if len(body) < 20:
            raise CaptureError(f"pcapng block {index}: packet block too short")
        iface, _drops, high, low, caplen, _origlen = struct.unpack_from(order + "HHIIII", body)
    if iface >= len(interfaces):
        raise CaptureError(f"pcapng block {index}: unknown interface {iface}")
    if caplen > len(body) - 20:
        raise CaptureError(f"pcapng block {index}: captured length {caplen} beyond the block")
    interface = interfaces[iface]
    return CapturedFrame(_timestamp(interface, high, low), interface.linktype,
                         body[20:20 + caplen]), iface


def _simple_packet_block(body: bytes, order: str, interfaces: list[_Interface],
                         index: int, last_ts: float) -> CapturedFrame:
    """An SPB belongs to interface 0 and has no timestamp: it gets the previous
    frame's time, so a replay clock never runs backwards."""
    if not interfaces:
        raise CaptureError(f"pcapng block {index}: simple packet block before any interface")
    if len(body) < 4:
        raise CaptureError(f"pcapng block {index}: simple packet block too short")
    origlen = struct.unpack_from(order + "I", body)[0]
    caplen = min(origlen, len(body) - 4)
    if interfaces[0].snaplen:
        caplen = min(caplen, interfaces[0].snaplen)
    return CapturedFrame(last_ts, interfaces[0].linktype, body[4:4 + caplen])


# -- writing ---------------------------------------------------------------------

class PcapWriter:
    """Writes a classic pcap file (little-endian) that tcpdump and Wireshark read."""

    def __init__(self, fileobj: BinaryIO, linktype: int = 1, nanosecond: bool = False,
                 snaplen: int = DEFAULT_SNAPLEN) -> None:
        self._fileobj = fileobj
        self._unit = 1_000_000_000 if nanosecond else 1_000_000
        self._record = struct.Struct("<IIII")
        magic = PCAP_MAGIC_NSEC if nanosecond else PCAP_MAGIC_USEC
        self.snaplen = snaplen
        fileobj.write(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))

    def write(self, ts: float, data: bytes, orig_len: Optional[int] = None) -> None:
        """One record at time ts (seconds); data longer than snaplen is cut."""
        seconds = math.floor(ts)
        fraction = round((ts - seconds) * self._unit)   # ts - floor(ts) is exact in binary
        if fraction >= self._unit:
            seconds, fraction = seconds + 1, fraction - self._unit
        captured = data[:self.snaplen]
        length = len(data) if orig_len is None else orig_len
        self._fileobj.write(self._record.pack(seconds, fraction, len(captured), length))
        self._fileobj.write(captured)


# -- from frames to datagrams ---------------------------------------------------

def datagrams(frames: Iterable[CapturedFrame],
              default_hook: int) -> Iterator[tuple[float, bytes, int]]:
    """(ts, IPv4 datagram, hook) for each IPv4 frame; other frames are skipped.

    The hook is the link layer's hint (Linux cooked captures know the direction)
    or default_hook.  Datagrams may still be fragments: defragment next.
    """
    for frame in frames:
        datagram, hook = strip_link(frame.linktype, frame.data)
        if datagram is None:
            continue
        yield frame.ts, datagram, default_hook if hook is None else hook
