"""`--source tap:IFACE[,IFACE...]`: live traffic from AF_PACKET sockets, observed only.

One packet socket per interface (SOCK_DGRAM, ETH_P_ALL, bound to that interface) sees
every frame the interface sends or receives.  Each frame is re-framed as a Linux cooked
capture (LINKTYPE_LINUX_SLL) carrying the socket's sll_pkttype, because that is what
tells the engine where the kernel met the packet: PACKET_OUTGOING was made on this host
and passed conntrack in OUTPUT, anything else arrived and passed it in PREROUTING.

Why each choice:
  * SOCK_DGRAM: the kernel strips the link header, so any device type (Ethernet, lo,
    tun, ppp) yields the network-layer bytes; the SLL header we add supplies the rest.
  * Loopback delivers every packet twice: once as PACKET_OUTGOING when it is sent, once
    as PACKET_HOST when lo hands it back to the stack.  Only the outgoing copy is kept
    (it is the OUTPUT-hook pass; the kernel skips the second, PREROUTING pass for packets
    already carrying an entry).  A socket filter (classic BPF on sll_pkttype) drops the
    incoming copy inside the kernel, so it costs no buffer space and the kernel's drop
    counter counts only packets we would have kept; a userspace check stays as a backstop
    and counts any copy that slips through in `duplicates_skipped`.  The filter is the
    socket's own: it selects what this observer reads, never what the host forwards.
  * The filter is attached before the socket is bound to a protocol (socket opened with
    protocol 0), so no packet is queued unfiltered in between.
  * SO_RCVBUFFORCE (root) raises the receive buffer past net.core.rmem_max: a burst waits
    in the kernel while the engine catches up.  Without CAP_NET_ADMIN, SO_RCVBUF is
    capped by rmem_max.
  * SO_TIMESTAMPNS: each frame carries the kernel's receive time, so a frame read late
    still has the time it was seen (the engine's timeouts count from it).
  * PACKET_STATISTICS (read-and-reset in the kernel) is polled about once a second and
    at close; new drops are logged as a warning and summed in `stats.kernel_drops`.
  * PACKET_AUXDATA says when a received packet's TCP/UDP/ICMP checksum is not final
    (CHECKSUM_PARTIAL: GRO super-packets, traffic from a local veth peer) or was already
    verified by the device.  The kernel's conntrack does not check such packets, the engine
    checks every packet it sees in PREROUTING, so the tap completes that checksum in its
    own copy (what the NIC would have put on the wire); `stats.checksums_completed`.
    Packets whose checksum the kernel does verify are passed on byte for byte.

Frames are (ts, LINKTYPE_LINUX_SLL, frame), the ts from the kernel.  The iterator blocks
while the interfaces are idle and yields nothing then (no heartbeats); it wakes every
`poll_interval` seconds to check its stop flag, so `close()` from another thread ends it
within that time.  Nothing is ever sent on these sockets.

Known limits: with several interfaces on a router, a forwarded packet is seen on each
(once in, once out) and tracked twice, while the kernel tracks it once in PREROUTING;
VLAN tags the NIC strips in hardware are not visible; IPv6 and non-IP frames are passed
on and the engine ignores them.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

from engine.build import internet_checksum, l4_checksum
from engine.linklayer import LINKTYPE_LINUX_SLL, PACKET_OUTGOING

log = logging.getLogger("procfs_ct.sources.tap")

Frame = tuple[float, int, bytes]

# Linux ABI constants the socket module does not export (include/uapi/...).
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_STATISTICS = 6
TP_STATUS_CSUMNOTREADY = 1 << 3    # ip_summed == CHECKSUM_PARTIAL
TP_STATUS_CSUM_VALID = 1 << 7      # checksum verified already (CHECKSUM_UNNECESSARY)
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
SO_TIMESTAMPNS = 35            # SO_TIMESTAMPNS_OLD on x86/arm; SCM_ same value
SIOCGIFFLAGS = 0x8913
IFF_LOOPBACK = 0x8
ARPHRD_LOOPBACK = 772

DEFAULT_RCVBUF = 64 << 20      # bytes asked for; the kernel doubles it for overhead
SNAPLEN = 256 << 10            # covers 64 KiB GSO/GRO super-packets with room to spare
POLL_INTERVAL = 0.2            # seconds between stop-flag checks while idle
STATS_INTERVAL = 1.0           # seconds between PACKET_STATISTICS reads
BATCH = 256                    # frames read from one socket before looking at the others

_TIMESPEC = struct.Struct("@ll")
_AUXDATA = struct.Struct("@IIIHHHH")   # tp_status, tp_len, tp_snaplen, tp_mac, tp_net, vlan
_SLL_HEAD = struct.Struct("!HHH8sH")    # pkttype, arphrd, addr_len, addr, protocol
_TPACKET_STATS = struct.Struct("@II")  # tp_packets, tp_drops
_SOCK_FILTER = struct.Struct("@HBBI")   # code, jt, jf, k

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
    received: int = 0            # frames read from the sockets
    kept: int = 0                # frames yielded to the engine
    duplicates_skipped: int = 0  # loopback incoming copies dropped in userspace
    kernel_drops: int = 0        # frames the kernel could not queue (buffer full)
    truncated: int = 0           # frames longer than SNAPLEN (yielded cut)
    checksums_completed: int = 0  # received packets whose unfinished checksum was filled in


def _usage_error(message: str) -> Exception:
    from procfs_ct.cli import UsageError
    return UsageError(message)


def parse_tap_spec(spec: str) -> list[str]:
    """'tap:eth0,eth1' -> ['eth0', 'eth1'] (duplicates removed, order kept)."""
    body = spec[4:] if spec.startswith("tap:") else spec
    names = [name.strip() for name in body.split(",") if name.strip()]
    if not names:
        raise _usage_error("tap: name an interface, e.g. tap:eth0")
    return list(dict.fromkeys(names))


def _interface_flags(sock: socket.socket, name: str) -> int:
    request = struct.pack("16sH14x", name.encode(), 0)
    return struct.unpack_from("16xH", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request))[0]


def _attach_filter(sock: socket.socket, program: Sequence[tuple[int, int, int, int]]) -> None:
    code = b"".join(_SOCK_FILTER.pack(*insn) for insn in program)
    buffer = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("@HP", len(program), ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def _set_rcvbuf(sock: socket.socket, size: int) -> int:
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except PermissionError:          # no CAP_NET_ADMIN: capped by net.core.rmem_max
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


class _Interface:
    """One bound packet socket and what we know about its interface."""

    def __init__(self, name: str, rcvbuf: int) -> None:
        self.name = name
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
            self.rcvbuf = _set_rcvbuf(self.sock, rcvbuf)
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self.sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            # Binding with ETH_P_ALL is what starts delivery: everything above is in place.
            try:
                self.sock.bind((name, ETH_P_ALL))
            except OSError as exc:
                if exc.errno in (errno.ENODEV, errno.ENXIO):
                    raise _usage_error(f"tap:{name}: no such interface") from None
                raise _usage_error(f"tap:{name}: {exc.strerror}") from None
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise

    def read_drops(self) -> tuple[int, int]:
        """(packets queued, packets dropped) since the last call; the kernel resets them."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _TPACKET_STATS.size)
        return _TPACKET_STATS.unpack(raw)


class Tap:
    """The frames of one or more interfaces, as an iterator that `close()` can stop.

    Opening checks the interfaces and privileges at once (UsageError with one line),
    so `procfs-ct mount` reports them before it daemonises.
    """

    def __init__(self, interfaces: Sequence[str], *, rcvbuf: int = DEFAULT_RCVBUF,
                 poll_interval: float = POLL_INTERVAL) -> None:
        self.stats = TapStats()
        self.poll_interval = poll_interval
        self._stop = threading.Event()
        self._lock = threading.Lock()       # held while the generator touches the sockets
        self._interfaces: list[_Interface] = []
        try:
            for name in interfaces:
                self._interfaces.append(_Interface(name, rcvbuf))
        except BaseException:
            self._close_sockets()
            raise
        self._frames = self._generate()
        self._next_stats = 0.0

    @property
    def interfaces(self) -> list[str]:
        return [iface.name for iface in self._interfaces]

    @property
    def closed(self) -> bool:
        """True once every socket is closed (after close() or the end of iteration)."""
        return all(iface.sock.fileno() < 0 for iface in self._interfaces)

    def __iter__(self) -> "Tap":
        return self

    def __next__(self) -> Frame:
        return next(self._frames)

    def close(self) -> None:
        """Stop the iterator (from any thread) and close the sockets; idempotent."""
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

    def poll_stats(self) -> TapStats:
        """Fold the kernel's drop counters into `stats` now and return it."""
        with self._lock:
            self._read_kernel_stats()
        return self.stats

    # -- internals -------------------------------------------------------------------------
    def _close_sockets(self) -> None:
        if any(iface.sock.fileno() >= 0 for iface in self._interfaces):
            self._read_kernel_stats()
            for iface in self._interfaces:
                iface.sock.close()
            log.info("tap %s: closed: %s", ",".join(self.interfaces), self.stats)

    def _read_kernel_stats(self) -> None:
        for iface in self._interfaces:
            if iface.sock.fileno() < 0:
                continue
            _queued, dropped = iface.read_drops()
            if dropped:
                self.stats.kernel_drops += dropped
                log.warning("tap %s: kernel dropped %d frames (receive buffer full); "
                            "%d dropped so far", iface.name, dropped, self.stats.kernel_drops)

    def _generate(self) -> Iterator[Frame]:
        # Logged at the first next(), not when opened: `procfs-ct mount` opens the source
        # before it daemonises and sets up its log.
        for iface in self._interfaces:
            log.info("tap %s: reading (receive buffer %d bytes%s)", iface.name, iface.rcvbuf,
                     ", loopback: outgoing copies only" if iface.loopback else "")
        by_fd = {iface.sock.fileno(): iface for iface in self._interfaces}
        buffer = bytearray(SNAPLEN)
        ancillary = socket.CMSG_SPACE(_TIMESPEC.size) + socket.CMSG_SPACE(_AUXDATA.size)
        try:
            while not self._stop.is_set():
                batch: list[Frame] = []
                with self._lock:
                    if self._stop.is_set():
                        return
                    ready, _, _ = select.select(list(by_fd), [], [], self.poll_interval)
                    for fd in ready:
                        self._drain(by_fd[fd], buffer, ancillary, batch)
                    now = time.monotonic()
                    if now >= self._next_stats:
                        self._read_kernel_stats()
                        self._next_stats = now + STATS_INTERVAL
                # Yield outside the lock: the consumer may sit on a frame for a while.
                for frame in batch:
                    self.stats.kept += 1
                    yield frame
        finally:
            with self._lock:
                self._close_sockets()

    def _drain(self, iface: _Interface, buffer: bytearray, ancillary: int,
               batch: list[Frame]) -> None:
        sock = iface.sock
        for _ in range(BATCH):
            try:
                size, ancdata, msg_flags, address = sock.recvmsg_into([buffer], ancillary,
                                                                      socket.MSG_TRUNC)
            except (BlockingIOError, InterruptedError):
                return
            self.stats.received += 1
            _ifname, protocol, pkttype, hatype, hwaddr = address
            if hatype == ARPHRD_LOOPBACK and pkttype != PACKET_OUTGOING:
                self.stats.duplicates_skipped += 1
                continue
            if size > len(buffer):        # MSG_TRUNC makes size the real length
                self.stats.truncated += 1
                size = len(buffer)
            ts, status = _ancillary(ancdata)
            packet = bytes(buffer[:size])
            if (pkttype != PACKET_OUTGOING and protocol == ETH_P_IP
                    and status & (TP_STATUS_CSUMNOTREADY | TP_STATUS_CSUM_VALID)):
                completed = complete_l4_checksum(packet)
                if completed is not packet:
                    self.stats.checksums_completed += 1
                    packet = completed
            head = _SLL_HEAD.pack(pkttype, hatype, len(hwaddr), hwaddr[:8], protocol)
            batch.append((ts, LINKTYPE_LINUX_SLL, head + packet))


def _ancillary(ancdata: list) -> tuple[float, int]:
    """(kernel receive time, tp_status) from a packet's control messages."""
    ts, status = None, 0
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            ts = seconds + nanoseconds * 1e-9
        elif level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= _AUXDATA.size:
            status = _AUXDATA.unpack_from(data)[0]
    # No stamp should not happen; the read time is the next best thing.
    return (time.time() if ts is None else ts), status


ETH_P_IP = 0x0800
_CHECKSUM_AT = {6: 16, 17: 6, 1: 2}      # TCP, UDP, ICMP: offset of the checksum field


def complete_l4_checksum(datagram: bytes) -> bytes:
    """The datagram with a correct TCP/UDP/ICMP checksum, or the same object if it had one
    already or cannot be fixed (fragment, truncated, other protocol, UDP without checksum)."""
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
        if proto == 17 and checksum == 0:
            checksum = 0xFFFF
    field = checksum.to_bytes(2, "big")
    if segment[at:at + 2] == field:
        return datagram
    return datagram[:ihl + at] + field + datagram[ihl + at + 2:]


def open_tap(spec: str, rcvbuf: int = DEFAULT_RCVBUF) -> Tap:
    """The source behind `--source tap:IFACE[,IFACE...]`."""
    return Tap(parse_tap_spec(spec), rcvbuf=rcvbuf)
