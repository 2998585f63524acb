"""`--source tap:IFACE[,IFACE...]`: live traffic from AF_PACKET sockets, observed only.

One packet socket per interface (SOCK_DGRAM, ETH_P_ALL, bound to that interface) sees
every frame the interface sends or receives, through a TPACKET_V3 ring the kernel writes
and we read in place.  Each frame is re-framed as a Linux cooked capture v2
(LINKTYPE_LINUX_SLL2) from the sockaddr_ll the kernel writes beside it: the sll_pkttype
tells the engine where the kernel met the packet (PACKET_OUTGOING was made on this host and
passed conntrack in OUTPUT, PACKET_OTHERHOST is dropped by ip_rcv unseen, anything else
arrived and passed it in PREROUTING); the interface index is what `-i`/`-o` rules match,
named by `interface_names()` (this network namespace's if_nameindex); the device type
and link address give LOG its `MAC=` header.

Why each choice:
  * SOCK_DGRAM: the kernel strips the link header, so any device type (Ethernet, lo,
    tun, ppp) yields the network-layer bytes; the SLL header we add supplies the rest
    from the sockaddr_ll the kernel writes beside each packet in the ring.
  * Loopback delivers every packet twice: once as PACKET_OUTGOING when it is sent, once
    as PACKET_HOST when lo hands it back to the stack.  Only the outgoing copy is kept
    (it is the OUTPUT-hook pass; the kernel skips the second, PREROUTING pass for packets
    already carrying an entry).  A socket filter (classic BPF on sll_pkttype) drops the
    incoming copy inside the kernel, so it costs no ring space and the kernel's drop
    counter counts only packets we would have kept; a userspace check stays as a backstop
    and counts any copy that slips through in `duplicates_skipped`.  The filter is the
    socket's own: it selects what this observer reads, never what the host forwards.
  * The filter and the ring are set up before the socket is bound to a protocol (socket
    opened with protocol 0), so no packet is queued unfiltered or outside the ring.
  * A TPACKET_V3 receive ring (PACKET_RX_RING, mmap'd): the kernel copies packets back to
    back into blocks of a shared ring and hands a block over when it is full or
    `RETIRE_BLOCK_MS` after its first packet, so reading costs no system call per packet
    (only a poll() when the ring is empty), and a whole block becomes one batch.  The ring
    holds far more small packets than the socket's receive queue could (each queued skb
    is charged its truesize, ~1 KiB and more even for a 29-byte datagram; in the ring such
    a packet takes 128 bytes), so a burst waits in the kernel while the engine catches up.
    The ring is not charged to the receive buffer, so SO_RCVBUF(FORCE) plays no part;
    `rcvbuf` sizes the ring instead.
  * The ring's frame header carries the kernel's receive time (tp_sec, tp_nsec), so a
    frame read late still has the time it was seen (the engine's timeouts count from it),
    and the packet's checksum status (tp_status), which SO_TIMESTAMPNS and PACKET_AUXDATA
    delivered as control messages with every recvmsg().
  * PACKET_STATISTICS (struct tpacket_stats_v3, read-and-reset in the kernel) is polled
    about once a second, at close, and at once when a block arrives flagged
    TP_STATUS_LOSING (packets were dropped because the ring was full); new drops are logged
    as a warning and summed in `stats.kernel_drops`.
  * tp_status says when a received packet's TCP/UDP/ICMP checksum is not final
    (TP_STATUS_CSUMNOTREADY, CHECKSUM_PARTIAL: GRO super-packets, traffic from a local
    veth peer) or was already verified by the device (TP_STATUS_CSUM_VALID).  The kernel's
    conntrack does not check such packets, the engine checks every packet it sees in
    PREROUTING, so the tap completes that checksum in its own copy (what the NIC would
    have put on the wire); `stats.checksums_completed`.  Packets whose checksum the kernel
    does verify are passed on byte for byte.

Frames are (ts, LINKTYPE_LINUX_SLL2, frame), the ts from the kernel.  Iterating yields them
one at a time; `batches()` hands over the same frames as lists (one per round of ring
blocks), which spares a consumer the per-frame hand-over; `take_ready()` hands them over as
Columns (a list of times and a list of frames, one link type), with no tuple per frame.
Either way the tap blocks while the interfaces are idle and yields nothing then (no
heartbeats); it wakes every `poll_interval` seconds to check its stop flag, so `close()`
from another thread ends it within that time.  `take_ready()` and `wait_ready()` are the
same reading split in two for a consumer that reads from its own loop (the mount's engine
thread, procfs_ct/driver.py): what is ready now, without waiting, and a wait of at most
`poll_interval`.  For these the rings are walked by a reader process
(procfs_ct/sources/tapreader.py), started at the first take_ready(), which hands each round
of frames over in shared memory as one marshal dump the engine thread loads in C: the
per-packet walk costs the engine thread's GIL nothing.  When the engine thread falls behind
by every shared slot, the reader holds the frames it reads in a list of its own, up to
SPILL_FRAMES (`stats.spilled`), before the rings fill.  Use one of the three ways, not
several.  Nothing is ever sent on these sockets.

Known limits: with several interfaces on a router, a forwarded packet is seen on each
(once in, once out) and tracked twice, while the kernel tracks it once in PREROUTING;
VLAN tags the NIC strips in hardware are not visible; non-IP frames are passed on and the
engine ignores them (IPv6 is tracked, in the linux profile); a packet longer than a ring block (256 KiB by default) is
cut to fit and counted in `stats.truncated`.  An interface that goes down is waited for
(a warning is logged) and read again once it is back up; one that is deleted stays silent.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import itertools
import logging
import mmap
import os
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

from engine.build import internet_checksum, l4_checksum
from .tapreader import ReaderProcess, RoundCounts
from engine.linklayer import (ARPHRD_LOOPBACK, ETH_P_IP, ETH_P_IPV6, LINKTYPE_LINUX_SLL2,
                              PACKET_OUTGOING, SLL2_HEADER)

log = logging.getLogger("procfs_ct.sources.tap")

Frame = tuple[float, int, bytes]


class Columns:
    """Frames as columns: frame i is (times[i], linktype, frames[i]).  What read_block()
    fills and take_ready() hands over.  A tuple per frame would be a GC-tracked object
    living until the engine thread feeds it -- one young collection of the cyclic
    collector per 700 frames, and the tuple built and unpacked again -- where a float and
    a bytes object in two lists are untracked (bench/RESULTS.md, tapread).  Indexing
    gives frame i as the tuple, for a reader that looks at one frame now and then."""

    __slots__ = ("times", "linktype", "frames")

    def __init__(self, linktype: int = LINKTYPE_LINUX_SLL2) -> None:
        self.times: list[float] = []
        self.linktype = linktype
        self.frames: list[bytes] = []

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> Frame:
        return self.times[index], self.linktype, self.frames[index]

    def window(self, start: int, end: int) -> Iterator[Frame]:
        """Frames start to end as (ts, linktype, frame), zipped in C (zip reuses its tuple
        while the consumer keeps none)."""
        return zip(self.times[start:end], itertools.repeat(self.linktype),
                   self.frames[start:end])

    def tuples(self) -> list[Frame]:
        """Every frame as a (ts, linktype, frame) tuple: iteration's and batches()' shape."""
        return list(self.window(0, len(self.frames)))

# Linux ABI constants the socket module does not export (include/uapi/...).
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
TPACKET_V3 = 2
TP_STATUS_KERNEL = 0               # block status: the kernel may fill it
TP_STATUS_USER = 1 << 0            # block status: handed to us
TP_STATUS_LOSING = 1 << 2          # packets were dropped since the last statistics read
TP_STATUS_CSUMNOTREADY = 1 << 3    # ip_summed == CHECKSUM_PARTIAL
TP_STATUS_CSUM_VALID = 1 << 7      # checksum verified already (CHECKSUM_UNNECESSARY)
SO_ATTACH_FILTER = 26
SIOCGIFFLAGS = 0x8913
IFF_LOOPBACK = 0x8

DEFAULT_RCVBUF = 64 << 20      # bytes of ring per interface: 256 blocks of BLOCK_SIZE
# The largest packet a block takes (a 64 KiB GSO packet fits 4 times; a BIG TCP one of
# 185,000 bytes fits).  Not larger: the kernel hands a block over RETIRE_BLOCK_MS after
# its first packet however little it holds, so at a low rate each block holds a few ms of
# traffic and the ring as many times that as it has blocks -- a reader held up for longer
# (another process on its CPU, the engine thread holding the GIL) loses packets however
# many bytes the ring has.  64 blocks of 1 MiB bridged 0.26 s at 50,000 packets/s (77,000
# dropped at load 4, bench/RESULTS.md tap65k); 256 of 256 KiB bridge 1 s at any rate
# (up to 2,000 small packets a block: 500,000 at 500,000 packets/s).
BLOCK_SIZE = 1 << 18
MIN_BLOCKS = 8                 # a small ring gets smaller blocks rather than fewer
FRAME_SIZE = 2048              # formal in V3 (packets are packed), but must divide a block
RETIRE_BLOCK_MS = 4            # ms: a partly filled block is handed over within 1-2 of these
POLL_INTERVAL = 0.2            # seconds between stop-flag checks while idle
STATS_INTERVAL = 1.0           # seconds between PACKET_STATISTICS reads
BLOCKS_PER_ROUND = 4           # blocks taken from one ring before looking at the others
# The pull side's safety valve (take_ready): while the engine thread is behind by every
# shared slot (on a loaded machine one thread gets one CPU share), the reader process
# (tapreader.py) keeps reading the rings into a list of its own, up to SPILL_FRAMES
# frames (the old pump queue's size), before it leaves them to fill.
SPILL_FRAMES = 1 << 20
KINDS_CACHED = 4096            # distinct sockaddr_ll remembered per interface (peers' MACs)

_U32 = struct.Struct("@I")
_TPACKET_REQ3 = struct.Struct("@7I")   # block_size, block_nr, frame_size, frame_nr,
                                       # retire_blk_tov, sizeof_priv, feature_req_word
_BLOCK_STATUS_AT = 8                   # tpacket_block_desc: version, offset_to_priv, then hdr.bh1
_BLOCK_HEAD = struct.Struct("@III")    # block_status, num_pkts, offset_to_first_pkt
_PACKET_HEAD = struct.Struct("@IIIIIIHH")  # tpacket3_hdr: next_offset, sec, nsec, snaplen,
                                           # len, status, mac, net
_SLL_AT = 48                           # TPACKET_ALIGN(sizeof(struct tpacket3_hdr))
_SOCKADDR_LL = struct.Struct("@HHiHBB8s")  # family, protocol (big-endian), ifindex, hatype,
                                           # pkttype, halen, addr
_SLL_END = _SLL_AT + _SOCKADDR_LL.size
# The frame header without tp_mac (SOCK_DGRAM: tp_net says the same) and the raw
# sockaddr_ll after it, in one unpack (one value fewer: 2.4 % of read_block's instructions).
_PACKET_AND_ADDRESS = struct.Struct(_PACKET_HEAD.format[:-2] + "2xH"
                                    f"{_SLL_AT - _PACKET_HEAD.size}x{_SOCKADDR_LL.size}s")
assert _PACKET_AND_ADDRESS.size == _SLL_END
_TPACKET_STATS_V3 = struct.Struct("@III")  # tp_packets, tp_drops, tp_freeze_q_cnt
_SOCK_FILTER = struct.Struct("@HBBI")   # code, jt, jf, k
# Packets whose checksum the kernel's conntrack does not check (partial or device-verified).
_CONNTRACK_SKIPS_CHECKSUM = TP_STATUS_CSUMNOTREADY | TP_STATUS_CSUM_VALID

# Classic BPF: accept only PACKET_OUTGOING (loopback's second, incoming copy is dropped).
_SKF_AD_PKTTYPE = (-0x1000 + 4) & 0xFFFFFFFF          # SKF_AD_OFF + SKF_AD_PKTTYPE
_OUTGOING_ONLY = (
    (0x28, 0, 0, _SKF_AD_PKTTYPE),     # ldh [pkttype]
    (0x15, 0, 1, PACKET_OUTGOING),     # jeq #4 ? next : skip one
    (0x06, 0, 0, 0xFFFFFFFF),          # ret #-1: whole packet
    (0x06, 0, 0, 0),                   # ret #0: not queued
)


@dataclass
class TapStats:
    """Counters a user can read (the mount logs them; tests compare them with nft)."""
    received: int = 0            # frames read from the rings
    kept: int = 0                # frames handed to the engine (iteration or batches())
    duplicates_skipped: int = 0  # loopback incoming copies dropped in userspace
    kernel_drops: int = 0        # frames the kernel could not queue (ring full)
    truncated: int = 0           # frames longer than a ring block holds (yielded cut)
    checksums_completed: int = 0  # received packets whose unfinished checksum was filled in
    spilled: int = 0             # frames the reader process held while every slot was full


def _usage_error(message: str) -> Exception:
    from procfs_ct.errors import UsageError
    return UsageError(message)


def parse_tap_spec(spec: str) -> list[str]:
    """'tap:eth0,eth1' -> ['eth0', 'eth1'] (duplicates removed, order kept)."""
    body = spec[4:] if spec.startswith("tap:") else spec
    names = [name.strip() for name in body.split(",") if name.strip()]
    if not names:
        raise _usage_error("tap: name an interface, e.g. tap:eth0")
    return list(dict.fromkeys(names))


def ring_geometry(size: int) -> tuple[int, int]:
    """(block size, block count) of a ring of about `size` bytes: BLOCK_SIZE blocks, or
    smaller ones (down to a page) so that even a small ring has MIN_BLOCKS of them -- the
    kernel fills one block while we read the others."""
    block = BLOCK_SIZE
    while block > mmap.PAGESIZE and block * MIN_BLOCKS > size:
        block //= 2
    return block, max(2, size // block)


def _interface_flags(sock: socket.socket, name: str) -> int:
    request = struct.pack("16sH14x", name.encode(), 0)
    return struct.unpack_from("16xH", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request))[0]


def _attach_filter(sock: socket.socket, program: Sequence[tuple[int, int, int, int]]) -> None:
    code = b"".join(_SOCK_FILTER.pack(*insn) for insn in program)
    buffer = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("@HP", len(program), ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def _map_ring(sock: socket.socket, block_size: int, block_nr: int) -> mmap.mmap:
    sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
    frames = block_size // FRAME_SIZE * block_nr
    request = _TPACKET_REQ3.pack(block_size, block_nr, FRAME_SIZE, frames, RETIRE_BLOCK_MS,
                                 0, 0)
    sock.setsockopt(SOL_PACKET, PACKET_RX_RING, request)
    return mmap.mmap(sock.fileno(), block_size * block_nr, mmap.MAP_SHARED,
                     mmap.PROT_READ | mmap.PROT_WRITE)


def _frame_kind(address: bytes) -> tuple[Optional[bytes], bool]:
    """From a packet's raw sockaddr_ll: (the SLL2 header to put in front of it, or None for
    a loopback incoming copy to skip; whether its checksum may need completing)."""
    _family, protocol, ifindex, hatype, pkttype, halen, hwaddr = _SOCKADDR_LL.unpack(address)
    protocol = socket.ntohs(protocol)
    if hatype == ARPHRD_LOOPBACK and pkttype != PACKET_OUTGOING:
        return None, False
    halen = min(halen, len(hwaddr))
    head = SLL2_HEADER.pack(protocol, 0, ifindex, hatype, pkttype, halen, hwaddr[:halen])
    return head, pkttype != PACKET_OUTGOING and protocol in (ETH_P_IP, ETH_P_IPV6)


def _log_down(name: str, error: int) -> None:
    log.warning("tap %s: %s; waiting for it to come back", name, os.strerror(error))


class _Interface:
    """One bound packet socket, its mapped ring and what we know about its interface."""

    def __init__(self, name: str, ring_bytes: int) -> None:
        self.name = name
        self.ring: Optional[mmap.mmap] = None
        if len(name.encode()) > 15:        # IFNAMSIZ - 1: the ioctl would truncate it
            raise _usage_error(f"tap:{name}: no such interface")
        try:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
        except PermissionError:
            raise _usage_error(f"tap:{name}: needs root (CAP_NET_RAW)") from None
        try:
            try:
                flags = _interface_flags(self.sock, name)
            except OSError as exc:
                if exc.errno in (errno.ENODEV, errno.ENXIO):
                    raise _usage_error(f"tap:{name}: no such interface") from None
                raise _usage_error(f"tap:{name}: {exc.strerror}") from None
            self.loopback = bool(flags & IFF_LOOPBACK)
            if self.loopback:
                _attach_filter(self.sock, _OUTGOING_ONLY)
            self.block_size, self.block_nr = ring_geometry(ring_bytes)
            try:
                self.ring = _map_ring(self.sock, self.block_size, self.block_nr)
            except OSError as exc:
                raise _usage_error(f"tap:{name}: cannot map a receive ring of "
                                   f"{self.block_nr} x {self.block_size} bytes: "
                                   f"{exc.strerror}") from None
            # Binding with ETH_P_ALL is what starts delivery: everything above is in place.
            try:
                self.sock.bind((name, ETH_P_ALL))
            except OSError as exc:
                if exc.errno in (errno.ENODEV, errno.ENXIO):
                    raise _usage_error(f"tap:{name}: no such interface") from None
                raise _usage_error(f"tap:{name}: {exc.strerror}") from None
            self.sock.setblocking(False)
        except BaseException:
            self.close()
            raise
        self.block = 0                  # the next block to read; the kernel fills in order
        # Raw sockaddr_ll -> _frame_kind(): on lo there is one, on Ethernet one per peer MAC.
        self.kinds: dict[bytes, tuple[Optional[bytes], bool]] = {}

    @property
    def closed(self) -> bool:
        return self.sock.fileno() < 0

    def close(self) -> None:
        # Unmap first: the kernel frees the ring with the last of the mapping and the socket.
        if self.ring is not None:
            self.ring.close()
        self.sock.close()

    @classmethod
    def adopt(cls, name: str, sock: socket.socket, block_size: int, block_nr: int,
              block: int, loopback: bool) -> "_Interface":
        """An interface another process opened, in the reader process (tapreader.py): its
        socket inherited, its ring mapped again, reading from block `block` on."""
        self = cls.__new__(cls)
        self.name, self.sock, self.loopback = name, sock, loopback
        self.block_size, self.block_nr, self.block = block_size, block_nr, block
        self.ring = mmap.mmap(sock.fileno(), block_size * block_nr, mmap.MAP_SHARED,
                              mmap.PROT_READ | mmap.PROT_WRITE)
        self.kinds = {}
        return self

    def take_blocks(self, batch: Columns, most: int) -> RoundCounts:
        """Append the frames of up to `most` ready blocks to `batch` (read_block), handing
        each block back to the kernel at once; what was counted."""
        counts = RoundCounts()
        ring = self.ring
        assert ring is not None
        while counts.blocks < most:
            offset = self.block * self.block_size
            status, count, first = _BLOCK_HEAD.unpack_from(ring, offset + _BLOCK_STATUS_AT)
            if not status & TP_STATUS_USER:
                break
            skipped, truncated, completed = read_block(ring, offset + first, count,
                                                       self.kinds, batch)
            _U32.pack_into(ring, offset + _BLOCK_STATUS_AT, TP_STATUS_KERNEL)
            self.block = (self.block + 1) % self.block_nr
            counts.blocks += 1
            counts.received += count
            counts.skipped += skipped
            counts.truncated += truncated
            counts.completed += completed
            counts.losing = counts.losing or bool(status & TP_STATUS_LOSING)
        return counts

    def clear_error(self, log_it: bool = True) -> int:
        """Read (and so clear) a pending socket error, and return it: the interface going
        down sets ENETDOWN, which would keep poll() returning at once; delivery resumes by
        itself when the interface comes back up.  (The reader process does not log: it
        tells the tap, which logs what it was told the same way.)"""
        error = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error and log_it:
            _log_down(self.name, error)
        return error

    def read_drops(self) -> tuple[int, int]:
        """(packets queued, packets dropped) since the last call; the kernel resets them."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _TPACKET_STATS_V3.size)
        packets, drops, _freezes = _TPACKET_STATS_V3.unpack(raw)
        return packets, drops


class Tap:
    """The frames of one or more interfaces, as an iterator that `close()` can stop;
    `batches()` hands over the same frames as lists.

    `rcvbuf` is the size in bytes of each interface's receive ring (see ring_geometry):
    the 64 MiB default holds about half a million small packets.  Opening checks the
    interfaces and privileges at once (UsageError with one line), so `procfs-ct mount`
    reports them before it daemonises.
    """

    def __init__(self, interfaces: Sequence[str], *, rcvbuf: int = DEFAULT_RCVBUF,
                 poll_interval: float = POLL_INTERVAL) -> None:
        self.stats = TapStats()
        self.poll_interval = poll_interval
        self._stop = threading.Event()
        self._lock = threading.Lock()       # held while the generator touches the rings
        self._interfaces: list[_Interface] = []
        self._reader: Optional[ReaderProcess] = None     # started by the first take_ready()
        try:
            for name in interfaces:
                self._interfaces.append(_Interface(name, rcvbuf))
        except BaseException:
            self._close_sockets()
            raise
        # One reader of the rings; iteration, batches() and take_ready() all draw from it.
        self._batches = self._generate()
        self._frames = self._flatten()
        self._next_stats = 0.0
        self._announced = False             # the "reading" log line was written
        self._poller = select.poll()
        self._by_fd = {iface.sock.fileno(): iface for iface in self._interfaces}
        for fd in self._by_fd:
            self._poller.register(fd, select.POLLIN)

    @property
    def interfaces(self) -> list[str]:
        return [iface.name for iface in self._interfaces]

    @property
    def closed(self) -> bool:
        """True once every socket is closed (after close() or the end of iteration)."""
        return all(iface.closed for iface in self._interfaces)

    def __iter__(self) -> "Tap":
        return self

    def __next__(self) -> Frame:
        return next(self._frames)

    def batches(self) -> Iterator[list[Frame]]:
        """The frames iteration yields, as non-empty lists (one per round of ring blocks);
        blocks while idle like iteration.  Use one way of reading (see the module doc)."""
        stats = self.stats
        for batch in self._batches:
            stats.kept += len(batch)
            yield batch

    # -- the pull side: the engine thread reads the rings itself (procfs_ct/driver.py) -------
    def take_ready(self) -> Optional[Columns]:
        """The frames the reader process has laid out (a round of each ring's blocks at
        most), without waiting, as Columns: empty if none, None once the tap is closed.
        Counts them kept.  The first call starts the reader (tapreader.py); from then on
        it alone reads the rings, so use this (with wait_ready) and nothing else."""
        batch = Columns()
        with self._lock:
            if self._stop.is_set() or self.closed:
                return None
            if self._reader is None:
                self._announce()
                self._reader = ReaderProcess(self._interfaces, BLOCKS_PER_ROUND)
            for counts in self._reader.take(batch.times, batch.frames, len(self._interfaces)):
                self._count(counts)
            self._log_downs(self._reader)
            self._read_kernel_stats_when_due()
        self.stats.kept += len(batch)
        return batch

    def wait_ready(self, timeout: float) -> None:
        """Sleep until the reader process has frames, for `timeout` seconds at most and no
        longer than the poll interval (close() waits for this lock)."""
        with self._lock:
            if not self._stop.is_set() and not self.closed:
                wait = min(timeout, self.poll_interval)
                if self._reader is None:
                    self._wait_for_blocks(wait)
                else:
                    self._reader.wait(wait)

    def close(self) -> None:
        """Stop the iterator (from any thread), the reader process, and close the sockets;
        idempotent."""
        self._stop.set()
        # The generator lets go of the lock between polls; if it is stuck elsewhere for
        # longer than a few polls the sockets are closed by its own finally clause.
        if self._lock.acquire(timeout=4 * self.poll_interval + 1):
            try:
                self._close_sockets()
            finally:
                self._lock.release()

    def __enter__(self) -> "Tap":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def interface_names(self) -> dict[int, str]:
        """{index: name} of this network namespace's interfaces as they are now
        (if_nameindex): what names the index in each frame's SLL2 header, for `-i`/`-o`.
        The mount reads it when a frame brings an index it has not named yet."""
        return dict(socket.if_nameindex())

    def poll_stats(self) -> TapStats:
        """Fold the kernel's drop counters into `stats` now and return it."""
        with self._lock:
            self._read_kernel_stats()
        return self.stats

    # -- internals -------------------------------------------------------------------------
    def _close_sockets(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if any(not iface.closed for iface in self._interfaces):
            self._read_kernel_stats()
            for iface in self._interfaces:
                iface.close()
            log.info("tap %s: closed: %s", ",".join(self.interfaces), self.stats)

    def _read_kernel_stats(self) -> None:
        for iface in self._interfaces:
            if iface.closed:
                continue
            _queued, dropped = iface.read_drops()
            if dropped:
                self.stats.kernel_drops += dropped
                log.warning("tap %s: kernel dropped %d frames (receive ring full); "
                            "%d dropped so far", iface.name, dropped, self.stats.kernel_drops)

    def _flatten(self) -> Iterator[Frame]:
        stats = self.stats
        for batch in self._batches:
            for frame in batch:
                stats.kept += 1        # per frame: a frame the consumer never took is not kept
                yield frame

    def _announce(self) -> None:
        # Logged at the first read, not when opened: `procfs-ct mount` opens the source
        # before it daemonises and sets up its log.
        if self._announced:
            return
        self._announced = True
        for iface in self._interfaces:
            log.info("tap %s: reading (ring of %d blocks of %d KiB%s)", iface.name,
                     iface.block_nr, iface.block_size >> 10,
                     ", loopback: outgoing copies only" if iface.loopback else "")

    def _wait_for_blocks(self, timeout: float) -> None:
        """poll() the sockets (the lock held): until the kernel hands a block over, or the
        retire timer does, or `timeout`; a pending error (interface down) is cleared."""
        for fd, events in self._poller.poll(max(1, int(timeout * 1000))):
            if events & select.POLLERR:
                self._by_fd[fd].clear_error()

    def _read_kernel_stats_when_due(self) -> None:
        now = time.monotonic()
        if now >= self._next_stats:
            self._read_kernel_stats()
            self._next_stats = now + STATS_INTERVAL

    def _generate(self) -> Iterator[list[Frame]]:
        try:
            while not self._stop.is_set():
                batch = Columns()
                with self._lock:
                    if self._stop.is_set() or self.closed:
                        return
                    self._announce()
                    blocks = 0
                    for iface in self._interfaces:
                        blocks += self._take_blocks(iface, batch)
                    if not blocks:
                        # Every ring is empty: sleep until the kernel hands a block over
                        # (or the retire timer does), but no longer than a stop-flag check.
                        self._wait_for_blocks(self.poll_interval)
                    self._read_kernel_stats_when_due()
                # Yield outside the lock: the frames are copies, the consumer may sit on them.
                if batch:
                    yield batch.tuples()
        finally:
            with self._lock:
                self._close_sockets()

    def _take_blocks(self, iface: _Interface, batch: Columns) -> int:
        """Copy the frames of up to BLOCKS_PER_ROUND ready blocks into `batch`, handing each
        block back to the kernel at once; the number of blocks taken."""
        counts = iface.take_blocks(batch, BLOCKS_PER_ROUND)
        self._count(counts)
        return counts.blocks

    def _count(self, counts: RoundCounts) -> None:
        stats = self.stats
        stats.received += counts.received
        stats.duplicates_skipped += counts.skipped
        stats.truncated += counts.truncated
        stats.checksums_completed += counts.completed
        stats.spilled += counts.spilled
        if counts.losing:
            self._next_stats = 0.0     # the ring overflowed: report the drops now

    def _log_downs(self, reader: ReaderProcess) -> None:
        while reader.downs:
            _log_down(*reader.downs.pop(0))


def read_block(ring: "mmap.mmap | bytes", at: int, count: int,
               kinds: dict[bytes, tuple[Optional[bytes], bool]],
               batch: Columns) -> tuple[int, int, int]:
    """Append to `batch` (a time and a frame each) the frames of the `count` packets laid
    out from offset `at` of `ring` (one TPACKET_V3 block's packets, tpacket3_hdr and
    sockaddr_ll each); `kinds` caches _frame_kind() by raw sockaddr_ll.  Returns (loopback
    incoming copies skipped, frames truncated, checksums completed)."""
    # The hot loop, per packet: one unpack (the frame header and the raw sockaddr_ll), the
    # SLL2 header from a cache keyed by that sockaddr_ll (looked up only when it differs
    # from the previous packet's), one slice to copy the packet out, one concatenation, a
    # time and a frame appended to the batch's two columns (no tuple: see Columns).
    # (Writing the SLL2 header into the ring in front of the packet and slicing once costs
    # more: 6.2 k against 5.8 k instructions per frame, bench/tapcost.py.)  The common
    # packet (kept whole, nothing to complete) takes one test; the second of its kernel
    # timestamp is converted to a float once per second, not per packet (a two-digit int:
    # 5,664 -> 5,444 instructions a frame with the one test, bench/tapcost.py decode).
    unpack = _PACKET_AND_ADDRESS.unpack_from
    add_time, add_frame = batch.times.append, batch.frames.append
    skipped = truncated = completed = 0
    last_address = None                    # most packets come from the previous one's
    head, may_complete = None, False       # sockaddr_ll: compared, not hashed
    plain = False                          # head, and no checksum to complete
    second, whole = -1, 0.0                # the last second seen, as a float
    for _ in range(count):
        step, sec, nsec, snaplen, length, status, net, address = unpack(ring, at)
        if address != last_address:
            kind = kinds.get(address)
            if kind is None:
                if len(kinds) >= KINDS_CACHED:
                    kinds.clear()
                kind = kinds[address] = _frame_kind(address)
            head, may_complete = kind
            plain = head is not None and not may_complete
            last_address = address
        if sec != second:
            second, whole = sec, float(sec)
        if plain and snaplen == length:
            start = at + net               # SOCK_DGRAM: tp_net == tp_mac
            add_time(whole + nsec * 1e-9)
            add_frame(head + ring[start:start + snaplen])
        elif head is None:
            skipped += 1
        else:
            start = at + net
            if snaplen < length:
                truncated += 1
            packet = ring[start:start + snaplen]
            if may_complete and status & _CONNTRACK_SKIPS_CHECKSUM:
                fixed = complete_l4_checksum(packet)
                if fixed is not packet:
                    completed += 1
                packet = fixed
            add_time(whole + nsec * 1e-9)
            add_frame(head + packet)
        at += step
    return skipped, truncated, completed


_CHECKSUM_AT = {6: 16, 17: 6, 1: 2}      # TCP, UDP, ICMP: offset of the checksum field
_CHECKSUM_AT_V6 = {6: 16, 17: 6, 58: 2}  # TCP, UDP, ICMPv6 (which sums a pseudo header too)
IPV6_HEADER_LEN = 40


def complete_l4_checksum(datagram: bytes) -> bytes:
    """The datagram with a correct TCP/UDP/ICMP(v6) checksum, or the same object if it had
    one already or cannot be fixed (fragment, truncated, other protocol or an IPv6
    extension header first, UDP over IPv4 without checksum)."""
    if len(datagram) >= IPV6_HEADER_LEN and datagram[0] >> 4 == 6:
        return _complete_ipv6(datagram)
    if len(datagram) < 20 or datagram[0] >> 4 != 4:
        return datagram
    ihl = (datagram[0] & 0x0F) * 4
    total = int.from_bytes(datagram[2:4], "big")
    proto = datagram[9]
    at = _CHECKSUM_AT.get(proto)
    fragmented = int.from_bytes(datagram[6:8], "big") & 0x3FFF
    if at is None or fragmented or total > len(datagram) or total < ihl + at + 2:
        return datagram
    segment = datagram[ihl:total]
    if proto == 17 and segment[6:8] == b"\0\0":
        return datagram                      # "no checksum" is legal for UDP
    zeroed = segment[:at] + b"\0\0" + segment[at + 2:]
    if proto == 1:
        checksum = internet_checksum(zeroed)
    else:
        src, dst = int.from_bytes(datagram[12:16], "big"), int.from_bytes(datagram[16:20], "big")
        checksum = l4_checksum(src, dst, proto, zeroed)
    return _with_checksum(datagram, ihl + at, proto, checksum)


def _complete_ipv6(datagram: bytes) -> bytes:
    total = IPV6_HEADER_LEN + int.from_bytes(datagram[4:6], "big")
    proto = datagram[6]
    at = _CHECKSUM_AT_V6.get(proto)
    if at is None or total > len(datagram) or total < IPV6_HEADER_LEN + at + 2:
        return datagram
    segment = datagram[IPV6_HEADER_LEN:total]
    zeroed = segment[:at] + b"\0\0" + segment[at + 2:]
    src, dst = int.from_bytes(datagram[8:24], "big"), int.from_bytes(datagram[24:40], "big")
    return _with_checksum(datagram, IPV6_HEADER_LEN + at, proto,
                          l4_checksum(src, dst, proto, zeroed))


def _with_checksum(datagram: bytes, field_at: int, proto: int, checksum: int) -> bytes:
    """The datagram with `checksum` at field_at (UDP sends a computed 0 as 0xFFFF); the same
    object when it is there already."""
    if proto == 17 and checksum == 0:
        checksum = 0xFFFF
    field = checksum.to_bytes(2, "big")
    if datagram[field_at:field_at + 2] == field:
        return datagram
    return datagram[:field_at] + field + datagram[field_at + 2:]


def open_tap(spec: str, rcvbuf: int = DEFAULT_RCVBUF) -> Tap:
    """The source behind `--source tap:IFACE[,IFACE...]`."""
    return Tap(parse_tap_spec(spec), rcvbuf=rcvbuf)


# -- the kernel's side of the ring, for tests and bench/tapcost.py ---------------------------
_BLOCK_DESC = struct.Struct("@IIIIIIQIIII")  # tpacket_block_desc: version, offset_to_priv,
                                             # then tpacket_hdr_v1: block_status, num_pkts,
                                             # offset_to_first_pkt, blk_len, seq_num,
                                             # ts_first_pkt (sec, nsec), ts_last_pkt
_V3_ALIGNMENT = 8                            # packets follow each other 8-byte aligned
_TPACKET_ALIGNMENT = 16
# Where tpacket_rcv puts a SOCK_DGRAM packet: TPACKET_ALIGN(tp_hdrlen) + 16 (no reserve).
DGRAM_NET_OFFSET = ((_SLL_END + _TPACKET_ALIGNMENT - 1) & -_TPACKET_ALIGNMENT) + 16


@dataclass
class RingPacket:
    """One packet as the kernel hands it over in a TPACKET_V3 ring (SOCK_DGRAM socket)."""
    sec: int
    nsec: int
    packet: bytes                 # the network-layer bytes kept (tp_snaplen of them)
    ifindex: int = 1
    hatype: int = ARPHRD_LOOPBACK
    pkttype: int = PACKET_OUTGOING
    protocol: int = ETH_P_IP
    address: bytes = b"\0" * 6    # the link address (sll_addr), sll_halen bytes of it
    status: int = 0               # tp_status flags (TP_STATUS_CSUMNOTREADY...)
    length: Optional[int] = None  # tp_len, the length on the wire (default: all kept)


def kernel_block(packets: Sequence[RingPacket], block_size: int) -> bytes:
    """A block handed to user space (TP_STATUS_USER) holding `packets`, laid out as
    tpacket_rcv() and prb_fill_curr_block() write one: the inverse of read_block()."""
    first = _BLOCK_DESC.size
    body = bytearray()
    for n, item in enumerate(packets):
        size = DGRAM_NET_OFFSET + len(item.packet)
        step = (size + _V3_ALIGNMENT - 1) & -_V3_ALIGNMENT
        last = n == len(packets) - 1
        length = len(item.packet) if item.length is None else item.length
        body += _PACKET_HEAD.pack(0 if last else step, item.sec, item.nsec, len(item.packet),
                                  length, item.status, DGRAM_NET_OFFSET, DGRAM_NET_OFFSET)
        body += bytes(_SLL_AT - _PACKET_HEAD.size)
        body += _SOCKADDR_LL.pack(socket.AF_PACKET, socket.htons(item.protocol), item.ifindex,
                                  item.hatype, item.pkttype, len(item.address), item.address)
        body += bytes(DGRAM_NET_OFFSET - _SLL_END) + item.packet
        if not last:
            body += bytes(step - size)
    if first + len(body) > block_size:
        raise ValueError(f"{len(packets)} packets take {first + len(body)} bytes, "
                         f"more than a block of {block_size}")
    head_ts = (packets[0].sec, packets[0].nsec, packets[-1].sec, packets[-1].nsec) \
        if packets else (0, 0, 0, 0)
    desc = _BLOCK_DESC.pack(0, first, TP_STATUS_USER, len(packets), first,
                            first + len(body), 1, *head_ts)
    return desc + bytes(body) + bytes(block_size - first - len(body))
