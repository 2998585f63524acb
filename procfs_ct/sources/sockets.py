"""`--source sockets[:SECONDS]`: the host's own TCP/UDP sockets mirrored as conntrack entries.

No root needed: psutil.net_connections() lists the sockets (/proc/net/tcp, udp on Linux).
The engine consumes packets, so every poll (default each second) turns what changed into
the few packets that drive the tracker to the closest state, built with valid checksums and
framed as Linux cooked captures (SLL) whose packet type gives the hook: sent from a local
address -> PACKET_OUTGOING (OUTPUT), from elsewhere -> PACKET_HOST (PREROUTING).

Which side is the original direction: the connecting side.  For TCP that is known for
SYN_SENT (us) and SYN_RECV (them); otherwise the side whose port is not a listening port of
this host is taken as the client.  UDP: a connected socket is taken as the client; between
two local connected sockets, the one with the higher port.

Packets per socket state (L = the local socket, R = its peer; the kernel's conntrack state
reached is in brackets):

    LISTEN, CLOSE, unconnected UDP   nothing
    SYN_SENT                         L: SYN                              [SYN_SENT]
    SYN_RECV                         R: SYN, L: SYN/ACK                  [SYN_RECV]
    ESTABLISHED                      a picked-up ACK from the client, one back, one more
                                     (the handshake, if it was seen)     [ESTABLISHED, ASSURED]
    FIN_WAIT1 / FIN_WAIT2            ESTABLISHED + L: FIN (/ R: ACK)     [FIN_WAIT / CLOSE_WAIT]
    CLOSE_WAIT / LAST_ACK            ESTABLISHED + R: FIN, L: ACK (/ L: FIN)
    CLOSING                          ESTABLISHED + L: FIN, R: FIN
    TIME_WAIT                        ESTABLISHED + L: FIN, R: ACK, R: FIN, L: ACK   [TIME_WAIT]
    connected UDP                    one datagram each way               [replied, 30 s]

A connection is emitted when first seen and again only when its state moves on (the packets
between the two states).  When a TCP connection's sockets disappear, its close is completed:
the missing FIN exchange if a FIN was already seen (-> TIME_WAIT), else an RST (-> CLOSE).
Both ends of a connection between two local sockets map to one entry.

What cannot be known this way, so the mirror only approximates the kernel's table:
  * true timeouts: an entry's timer starts at the poll that saw the socket, not at the last
    packet, and an idle socket is never refreshed (a quiet UDP socket's entry expires after
    30 s while the socket lives on; a busy one is not kept alive either);
  * packets and bytes: nothing about traffic volume or retransmissions, so acct counters
    and window-tracking outcomes (INVALID packets) are not real;
  * flows without a local socket: forwarded/NATed traffic, other namespaces, raw sockets,
    ICMP (ping), and connections shorter than one poll interval;
  * RELATED entries and expectations (helpers), UNTRACKED, marks and zones;
  * who connected to whom when neither side is a listening port (guessed as above), and
    whether a vanished connection closed gracefully or was reset.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from engine.build import build_tcp_datagram, build_udp_datagram
from engine.linklayer import (ARPHRD_ETHER, ETH_P_IP, LINKTYPE_LINUX_SLL, PACKET_HOST,
                              PACKET_OUTGOING)
from engine.packet import ACK, FIN, RST, SYN

log = logging.getLogger("procfs_ct.sources.sockets")

Frame = tuple[float, int, bytes]
POLL_INTERVAL = 1.0
WINDOW = 65535

# The peer a step comes from, relative to the local socket (L) or the flow (O/R below).
LOCAL, REMOTE = "L", "R"
ORIG, REPLY = 0, 1

FIN_ACK = FIN | ACK
# TCP socket state -> steps after ESTABLISHED, as (sender, flags); sender L or R.
CLOSING_STEPS: dict[str, tuple[tuple[str, int], ...]] = {
    "ESTABLISHED": (),
    "FIN_WAIT1": ((LOCAL, FIN_ACK),),
    "FIN_WAIT2": ((LOCAL, FIN_ACK), (REMOTE, ACK)),
    "TIME_WAIT": ((LOCAL, FIN_ACK), (REMOTE, ACK), (REMOTE, FIN_ACK), (LOCAL, ACK)),
    "CLOSE_WAIT": ((REMOTE, FIN_ACK), (LOCAL, ACK)),
    "LAST_ACK": ((REMOTE, FIN_ACK), (LOCAL, ACK), (LOCAL, FIN_ACK)),
    "CLOSING": ((LOCAL, FIN_ACK), (REMOTE, FIN_ACK)),
}
# Steps in flow terms: (ORIG or REPLY, flags).
HANDSHAKE = ((ORIG, SYN), (REPLY, SYN | ACK), (ORIG, ACK))
# A picked-up connection needs a third packet: the first reply only sets SEEN_REPLY, the
# next accepted packet in ESTABLISHED sets ASSURED (nf_conntrack_proto_tcp.c).
PICKUP = ((ORIG, ACK), (REPLY, ACK), (ORIG, ACK))

Endpoint = tuple[str, int]
Step = tuple[int, int]


def _usage_error(message: str) -> Exception:
    from procfs_ct.errors import UsageError
    return UsageError(message)


def _ipv4(address: str) -> Optional[str]:
    """The IPv4 address of a socket address, IPv4-mapped IPv6 included; None otherwise."""
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if parsed.version == 6:
        parsed = parsed.ipv4_mapped
    return None if parsed is None else str(parsed)


@dataclass(frozen=True)
class Sock:
    """One psutil connection reduced to what the mirror uses."""
    proto: int                  # 6 or 17
    local: Endpoint
    remote: Optional[Endpoint]
    status: str                 # psutil's CONN_* string


def reduce_connections(connections: Iterable[Any]) -> list[Sock]:
    """psutil sconn tuples -> IPv4 Socks (IPv4-mapped IPv6 included, the rest dropped)."""
    socks = []
    for conn in connections:
        if conn.type not in (socket.SOCK_STREAM, socket.SOCK_DGRAM) or not conn.laddr:
            continue
        local_ip = _ipv4(conn.laddr[0])
        if local_ip is None:
            continue
        remote = None
        if conn.raddr:
            remote_ip = _ipv4(conn.raddr[0])
            if remote_ip is None:
                continue
            remote = (remote_ip, conn.raddr[1])
        proto = 6 if conn.type == socket.SOCK_STREAM else 17
        socks.append(Sock(proto, (local_ip, conn.laddr[1]), remote, conn.status))
    return socks


@dataclass
class Flow:
    """One mirrored connection: its orientation, the steps emitted, sequence numbers."""
    proto: int
    orig: Endpoint               # the client
    reply: Endpoint              # the server
    steps: list[Step] = field(default_factory=list)
    next_seq: list[int] = field(default_factory=lambda: [0, 0])

    def __post_init__(self) -> None:
        # Fixed initial sequence numbers per flow: the same sockets give the same packets.
        key = f"{self.orig}{self.reply}{self.proto}".encode()
        self.next_seq = [zlib.crc32(key) & 0x7FFFFFFF, zlib.crc32(key[::-1]) & 0x7FFFFFFF]

    def endpoint(self, side: int) -> Endpoint:
        return self.orig if side == ORIG else self.reply

    def fin_seen(self) -> bool:
        return any(flags & FIN for _, flags in self.steps)


class SocketMirror:
    """Polls the host's sockets; each poll returns the frames for what changed since the last.

    `connections` and `local_addresses` are injectable for tests (defaults: psutil).
    """

    def __init__(self, poll_interval: float = POLL_INTERVAL, *,
                 connections: Optional[Callable[[], Iterable[Any]]] = None,
                 local_addresses: Optional[Callable[[], Iterable[str]]] = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.poll_interval = poll_interval
        self._connections = connections or _psutil_connections
        self._local_addresses = local_addresses or _psutil_local_addresses
        self._clock = clock
        self._flows: dict[tuple, Flow] = {}
        self._stop = threading.Event()
        self.polls = 0
        self.frames_emitted = 0
        self._frames = self.frames()

    # -- the iterator ----------------------------------------------------------------------
    def __iter__(self) -> "SocketMirror":
        return self

    def __next__(self) -> Frame:
        return next(self._frames)

    def frames(self) -> Iterator[Frame]:
        """Poll, yield that poll's frames, wait poll_interval (checking the stop flag)."""
        log.info("sockets: mirroring this host's TCP/UDP sockets every %g s", self.poll_interval)
        while not self._stop.is_set():
            try:
                batch = self.poll(self._clock())
            except Exception:            # a failed poll (psutil race) skips one interval
                log.exception("listing sockets failed; retrying in %.1f s", self.poll_interval)
                batch = []
            yield from batch
            self._stop.wait(self.poll_interval)

    def close(self) -> None:
        self._stop.set()

    # -- one poll --------------------------------------------------------------------------
    def poll(self, now: float) -> list[Frame]:
        socks = reduce_connections(self._connections())
        local_ips = set(self._local_addresses())
        listening = {(s.proto, s.local[1]) for s in socks if s.status == "LISTEN"}
        wanted: dict[tuple, tuple[Flow, list[Step]]] = {}
        for sock in socks:
            if sock.remote is None or sock.status in ("LISTEN", "CLOSE"):
                continue
            flow = self._flow_for(sock, listening, local_ips)
            target = self._target_steps(flow, sock)
            if target is None:
                continue
            key = self._key(flow)
            # Two local ends of one connection: the one further along wins.
            if key not in wanted or len(target) > len(wanted[key][1]):
                wanted[key] = (flow, target)
        frames: list[Frame] = []
        for key, (flow, target) in wanted.items():
            if target[:len(flow.steps)] == flow.steps:
                frames += self._emit(flow, target[len(flow.steps):], now, local_ips)
            else:
                log.debug("socket %s: %s does not follow what was mirrored; left as is",
                          key, target)
        for key in [k for k in self._flows if k not in wanted]:
            frames += self._finish(self._flows.pop(key), now, local_ips)
        self.polls += 1
        self.frames_emitted += len(frames)
        return frames

    @staticmethod
    def _key(flow: Flow) -> tuple:
        return (flow.proto, flow.orig, flow.reply)

    def _flow_for(self, sock: Sock, listening: set, local_ips: set) -> Flow:
        assert sock.remote is not None
        local_is_client = self._local_is_client(sock, listening, local_ips)
        orig, reply = (sock.local, sock.remote) if local_is_client else (sock.remote, sock.local)
        key = (sock.proto, orig, reply)
        flow = self._flows.get(key)
        if flow is None:
            flow = Flow(sock.proto, orig, reply)
            self._flows[key] = flow
        return flow

    def _local_is_client(self, sock: Sock, listening: set, local_ips: set) -> bool:
        assert sock.remote is not None
        if sock.status == "SYN_SENT":
            return True
        if sock.status == "SYN_RECV":
            return False
        local_listens = (sock.proto, sock.local[1]) in listening
        remote_is_ours = sock.remote[0] in local_ips or sock.remote[0].startswith("127.")
        remote_listens = remote_is_ours and (sock.proto, sock.remote[1]) in listening
        if local_listens != remote_listens:
            return remote_listens
        if sock.proto == 17 and not remote_is_ours:
            return True                  # a connected UDP socket is nearly always a client
        return sock.local[1] > sock.remote[1]    # the ephemeral (higher) port connected

    def _target_steps(self, flow: Flow, sock: Sock) -> Optional[list[Step]]:
        """Every step, from the start, that leads to this socket's state."""
        if flow.proto == 17:
            return [(ORIG, 0), (REPLY, 0)]
        local_side = ORIG if sock.local == flow.orig else REPLY
        if sock.status == "SYN_SENT":
            return [HANDSHAKE[0]]
        if sock.status == "SYN_RECV":
            return list(HANDSHAKE[:2])
        closing = CLOSING_STEPS.get(sock.status)
        if closing is None:
            return None                  # NONE or a state psutil may add later
        # Picked up, unless the handshake was already being mirrored.
        opening = list(HANDSHAKE) if flow.steps[:1] == [HANDSHAKE[0]] else list(PICKUP)
        return opening + [(local_side if who == LOCAL else 1 - local_side, flags)
                          for who, flags in closing]

    def _finish(self, flow: Flow, now: float, local_ips: set) -> list[Frame]:
        """The connection's sockets are gone: complete its close as best we can tell."""
        if flow.proto != 6 or not flow.steps:
            return []
        last_side, last_flags = flow.steps[-1]
        if not flow.fin_seen():
            if flow.steps == [HANDSHAKE[0]]:
                return []                # a SYN never answered: let it time out
            return self._emit(flow, [(ORIG, RST | ACK)], now, local_ips)
        fins = {side for side, flags in flow.steps if flags & FIN}
        rest: list[Step] = []
        for side in (ORIG, REPLY):
            if side not in fins:
                rest.append((side, FIN_ACK))
        if rest or last_flags & FIN:
            rest.append((1 - (rest[-1][0] if rest else last_side), ACK))
        return self._emit(flow, rest, now, local_ips)

    def _emit(self, flow: Flow, steps: Sequence[Step], now: float,
              local_ips: set) -> list[Frame]:
        frames = []
        for side, flags in steps:
            src, dst = flow.endpoint(side), flow.endpoint(1 - side)
            if flow.proto == 17:
                datagram = build_udp_datagram(src[0], dst[0], src[1], dst[1], b"")
            else:
                seq = flow.next_seq[side]
                ack = flow.next_seq[1 - side] if flags & ACK else 0
                datagram = build_tcp_datagram(src[0], dst[0], src[1], dst[1], seq=seq, ack=ack,
                                              flags=flags, window=WINDOW)
                if flags & (SYN | FIN):
                    flow.next_seq[side] = (seq + 1) & 0xFFFFFFFF
            outgoing = src[0] in local_ips or src[0].startswith("127.")
            frames.append((now, LINKTYPE_LINUX_SLL, _sll(datagram, outgoing)))
            flow.steps.append((side, flags))
        return frames


def _sll(datagram: bytes, outgoing: bool) -> bytes:
    pkttype = PACKET_OUTGOING if outgoing else PACKET_HOST
    return (pkttype.to_bytes(2, "big") + ARPHRD_ETHER.to_bytes(2, "big") + (6).to_bytes(2, "big")
            + bytes(8) + ETH_P_IP.to_bytes(2, "big") + datagram)


def _psutil_connections() -> list:
    import psutil
    return psutil.net_connections(kind="inet")


def _psutil_local_addresses() -> set[str]:
    import psutil
    addresses = set()
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family == socket.AF_INET:
                addresses.add(entry.address)
    return addresses


def parse_sockets_spec(spec: str) -> float:
    """'sockets' -> the default poll interval; 'sockets:0.5' -> 0.5 seconds."""
    _, colon, arg = spec.partition(":")
    if not colon:
        return POLL_INTERVAL
    try:
        interval = float(arg)
    except ValueError:
        interval = float("nan")
    if not interval > 0 or interval == float("inf"):
        raise _usage_error(f"{spec}: the poll interval must be a positive number of seconds")
    return interval


def open_sockets(spec: str = "sockets") -> SocketMirror:
    """The source behind `--source sockets[:SECONDS]`; fails now if sockets cannot be listed."""
    mirror = SocketMirror(parse_sockets_spec(spec))
    try:
        _psutil_connections()
    except Exception as exc:           # psutil.AccessDenied on systems that need root
        raise _usage_error(f"{spec}: cannot list this host's sockets: {exc}") from None
    return mirror
