"""Send UDP datagrams on lo as fast as asked:
`python -m bench.blast [--sender socket|packet|packet-sendmmsg] RATE PACKETS PORTS [ADDRESSES [SOURCES]]`.

sendmmsg(2) through ctypes sends a batch of datagrams per system call, so one Python
process can offer several hundred thousand packets per second (a sendto() loop manages
about 130,000).  RATE 0 means unpaced.  The destinations: datagram n of a pass goes to
address 127.0.0.1 + n % ADDRESSES (default 1; lo answers every 127.0.0.0/8 address), port
9000 + n % PORTS -- lcm(PORTS, ADDRESSES) of them.  The sources: SOURCES source ports
(default 1), 127.0.0.1:40000 and up; pass p over the destinations goes out of source
p % SOURCES.  SOURCES x lcm(PORTS, ADDRESSES) flows, each its own conntrack entry, each
sent once per round of them all.  An nft rule in the namespace drops them at input, so no
ICMP port-unreachable answers add to the traffic.  Prints {"sent", "seconds", "end"}.

Three senders make the same traffic (tests/test_bench_blast.py compares their bytes on lo):
  * socket (the default): UDP sockets, one per source port, each datagram through the
    kernel's UDP path -- a route lookup per unconnected destination, __ip_select_ident's
    per-destination counter, an skb built from user data: 3.8-4.6 us of kernel CPU a
    datagram at 65,536 addresses (bench/RESULTS.md, pktsend), about one CPU at 190 k/s.
  * packet: the datagrams as prebuilt frames in an AF_PACKET transmit ring on lo
    (bench/udpframes.py builds them, bench/packetring.py holds them), as a traffic
    generator does (netsniff-ng's trafgen): one send() a batch, the kernel builds each skb
    on the ring's pages and hands it to lo's transmit, where the tap sees it once, as
    PACKET_OUTGOING, like the socket sender's; ~1.8 us of kernel CPU a datagram.  The IPv4
    header is the one Linux writes for a UDP socket (TTL 64, DF, no options) but for its
    id (see udpframes.py); both checksums are complete and valid.  What it skips is the
    sender's own cost, not anything the tap or the engine does: the frames the tap reads
    are the same flows.  (lo then hands each frame back to the stack, which drops it at
    once as addressed to another host -- udpframes.py's LINK_HEADER -- where the socket
    sender's go on to the nft drop at input; neither copy is seen by the outgoing-only tap.)
  * packet-sendmmsg: the same frames through sendmmsg(2) on an AF_PACKET socket, one
    message each (~2.6 us a datagram): how the packet sender was first built, kept to
    measure the ring against.

Why sources: every datagram to a new destination address costs the socket sender's kernel
more than one to a new port of the same address (bench/RESULTS.md, the tap65k section:
4.0-4.2 against 3.1-3.7 us of kernel CPU per datagram for 65,536 flows), so many flows
between few addresses -- a busy server's clients and services -- are cheaper to offer than
one flow per address, and leave more of the machine to the tap being measured.
"""
from __future__ import annotations

import argparse
import ctypes
import functools
import json
import math
import socket
import struct
import time
from typing import Callable, Sequence

from .packetring import TxRing, ipv4_address
from .udpframes import FIRST_SOURCE_PORT, LINK_HEADER, PAYLOAD, destination, one_round

BATCH = 256
_LIBC = ctypes.CDLL(None, use_errno=True)


class IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class MsgHdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(IoVec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", MsgHdr), ("msg_len", ctypes.c_uint)]


# One batch of a round: (transmit, size).  transmit(count) hands the batch's first `count`
# datagrams to the kernel and says how many it took (-1 and errno on failure).
Batch = tuple[Callable[[int], int], int]


def _mmsg_batches(fd: int, count: int, message: Callable[[int, MsgHdr], None],
                  keep: list) -> list[Batch]:
    """`count` messages in sendmmsg(2) batches of at most BATCH, message(n, hdr) filling
    message n; `keep` holds the ctypes buffers the headers point to (alive as long as the
    batches)."""
    batches = []
    for start in range(0, count, BATCH):
        size = min(BATCH, count - start)
        msgs = (MMsgHdr * size)()
        for i in range(size):
            message(start + i, msgs[i].msg_hdr)
        keep.append(msgs)
        batches.append((functools.partial(_sendmmsg, fd, msgs), size))
    return batches


def _sendmmsg(fd: int, msgs: object, count: int) -> int:
    return _LIBC.sendmmsg(fd, msgs, count, 0)


def destination_batches(fd: int, ports: int, addresses: int, iov: IoVec,
                        keep: list) -> list[Batch]:
    """One pass over the lcm(ports, addresses) destinations from socket `fd`, each message
    the payload `iov` to its own sockaddr_in."""
    def message(n: int, hdr: MsgHdr) -> None:
        address, port = destination(n, ports, addresses)
        addr = ctypes.create_string_buffer(
            struct.pack("=HH4s8x", socket.AF_INET, socket.htons(port), address.packed), 16)
        keep.append(addr)
        hdr.msg_name, hdr.msg_namelen = ctypes.addressof(addr), 16
        hdr.msg_iov, hdr.msg_iovlen = ctypes.pointer(iov), 1
    return _mmsg_batches(fd, math.lcm(ports, addresses), message, keep)


def socket_sender(ports: int, addresses: int, sources: int) -> tuple[list, list[Batch]]:
    """UDP sockets bound to 127.0.0.1:40000 and up: (the sockets, one round of batches --
    every pass over the destinations, one source socket each)."""
    socks, keep = [], []
    for s in range(sources):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", FIRST_SOURCE_PORT + s))
        socks.append(sock)
    payload = ctypes.create_string_buffer(PAYLOAD, len(PAYLOAD))
    iov = IoVec(ctypes.addressof(payload), len(PAYLOAD))
    keep += [payload, iov]
    batches = [batch for sock in socks
               for batch in destination_batches(sock.fileno(), ports, addresses, iov, keep)]
    return socks + [keep], batches


def _frames(ports: int, addresses: int, sources: int) -> list[bytes]:
    """A round of the packet senders' frames: lo's link header and each flow's datagram."""
    return [LINK_HEADER + datagram for datagram in one_round(ports, addresses, sources)]


def packet_sender(ports: int, addresses: int, sources: int) -> tuple[list, list[Batch]]:
    """The frames of a round in a transmit ring on lo (bench/packetring.py): (the ring,
    the ring's batches in order -- a whole number of rounds in the socket sender's order).
    (PACKET_QDISC_BYPASS would skip lo's transmit queue, and with it the taps: the tap
    then sees none of the frames -- tried with the sendmmsg sender, tests/test_bench_blast.py.)"""
    ring = TxRing("lo", _frames(ports, addresses, sources))
    return [ring], [(functools.partial(ring.transmit, first), min(BATCH, ring.slots - first))
                    for first in range(0, ring.slots, BATCH)]


def packet_sendmmsg_sender(ports: int, addresses: int, sources: int
                           ) -> tuple[list, list[Batch]]:
    """The same frames from one buffer through sendmmsg(2) on an AF_PACKET socket on lo, as
    first built (kept to measure the ring against): (the socket and buffers, one round of
    batches in the socket sender's order).  Bound with protocol 0, the socket receives
    nothing; each message names lo and IPv4 (one sockaddr_ll shared by all)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.bind(("lo", 0))
    frames = _frames(ports, addresses, sources)
    size = len(frames[0])
    buffer = ctypes.create_string_buffer(b"".join(frames), size * len(frames))
    lo = ipv4_address("lo")
    name = ctypes.create_string_buffer(lo, len(lo))
    iovs = (IoVec * len(frames))()
    base = ctypes.addressof(buffer)

    def message(n: int, hdr: MsgHdr) -> None:
        iovs[n].iov_base, iovs[n].iov_len = base + n * size, size
        hdr.msg_name, hdr.msg_namelen = ctypes.addressof(name), len(lo)
        hdr.msg_iov, hdr.msg_iovlen = ctypes.pointer(iovs[n]), 1
    keep = [buffer, name, iovs]
    return [sock, keep], _mmsg_batches(sock.fileno(), len(frames), message, keep)


SENDERS = {"socket": socket_sender, "packet": packet_sender,
           "packet-sendmmsg": packet_sendmmsg_sender}


def send(rounds: Sequence[Batch], rate: float, packets: int) -> dict:
    """`packets` datagrams from the batches in turn, paced to `rate` a second (0: unpaced)."""
    sent = n = 0
    start = time.monotonic()
    while sent < packets:
        transmit, size = rounds[n % len(rounds)]
        n += 1
        done = transmit(min(size, packets - sent))
        if done < 0:
            err = ctypes.get_errno()
            if err in (11, 105):                 # EAGAIN / ENOBUFS: try again
                n -= 1
                continue
            raise OSError(err, "send")
        sent += done
        if rate > 0:
            delay = start + sent / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    end = time.monotonic()
    return {"sent": sent, "seconds": end - start, "end": end}


def blast(rate: float, packets: int, ports: int, addresses: int = 1, sources: int = 1,
          sender: str = "socket") -> dict:
    held, rounds = SENDERS[sender](ports, addresses, sources)
    try:
        return send(rounds, rate, packets)
    finally:
        for thing in held:
            if isinstance(thing, (socket.socket, TxRing)):
                thing.close()


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.blast", description=__doc__.split("\n")[0])
    parser.add_argument("--sender", choices=sorted(SENDERS), default="socket")
    parser.add_argument("rate", type=float)
    parser.add_argument("packets", type=int)
    parser.add_argument("ports", type=int)
    parser.add_argument("addresses", type=int, nargs="?", default=1)
    parser.add_argument("sources", type=int, nargs="?", default=1)
    args = parser.parse_args(argv)
    return blast(args.rate, args.packets, args.ports, args.addresses, args.sources, args.sender)


if __name__ == "__main__":
    print(json.dumps(main()))
