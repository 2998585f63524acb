"""Send UDP datagrams on lo as fast as asked:
`python -m bench.blast RATE PACKETS PORTS [ADDRESSES [SOURCES]]`.

sendmmsg(2) through ctypes sends a batch of datagrams per system call, so one Python
process can offer several hundred thousand packets per second (a sendto() loop manages
about 130,000).  RATE 0 means unpaced.  The destinations: datagram n of a pass goes to
address 127.0.0.1 + n % ADDRESSES (default 1; lo answers every 127.0.0.0/8 address), port
9000 + n % PORTS -- lcm(PORTS, ADDRESSES) of them.  The sources: SOURCES sockets (default
1), bound to 127.0.0.1:40000 and up; pass p over the destinations goes out of socket
p % SOURCES.  SOURCES x lcm(PORTS, ADDRESSES) flows, each its own conntrack entry, each
sent once per round of them all.  An nft rule in the namespace drops them at input, so no
ICMP port-unreachable answers add to the traffic.  Prints {"sent", "seconds", "end"}.

Why sources: every datagram to a new destination address costs the kernel more than one to
a new port of the same address (bench/RESULTS.md, the tap65k section: 4.0-4.2 against
3.1-3.7 us of kernel CPU per datagram for 65,536 flows), so many flows between few
addresses -- a busy server's clients and services -- are cheaper to offer than one flow
per address, and leave more of the machine to the tap being measured.
"""
from __future__ import annotations

import ctypes
import json
import math
import socket
import struct
import sys
import time

BATCH = 256
FIRST_PORT = 9000
FIRST_SOURCE_PORT = 40000


class IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class MsgHdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(IoVec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", MsgHdr), ("msg_len", ctypes.c_uint)]


def destination_batches(ports: int, addresses: int, iov: IoVec) -> list[tuple[object, int]]:
    """One pass over the lcm(ports, addresses) destinations as (mmsghdr array, count)
    batches of at most BATCH; the sockaddr_in buffers hang on the arrays (kept alive)."""
    destinations = math.lcm(ports, addresses)
    first = struct.unpack("!I", socket.inet_aton("127.0.0.1"))[0]
    batches = []
    for start in range(0, destinations, BATCH):
        count = min(BATCH, destinations - start)
        msgs = (MMsgHdr * count)()
        msgs.addresses = []                     # type: ignore[attr-defined]
        for i in range(count):
            n = start + i
            addr = ctypes.create_string_buffer(
                struct.pack("=HH4s8x", socket.AF_INET, socket.htons(FIRST_PORT + n % ports),
                            struct.pack("!I", first + n % addresses)), 16)
            msgs.addresses.append(addr)         # type: ignore[attr-defined]
            msgs[i].msg_hdr.msg_name = ctypes.addressof(addr)
            msgs[i].msg_hdr.msg_namelen = 16
            msgs[i].msg_hdr.msg_iov = ctypes.pointer(iov)
            msgs[i].msg_hdr.msg_iovlen = 1
        batches.append((msgs, count))
    return batches


def blast(rate: float, packets: int, ports: int, addresses: int = 1,
          sources: int = 1) -> dict:
    libc = ctypes.CDLL(None, use_errno=True)
    socks = []
    for s in range(sources):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", FIRST_SOURCE_PORT + s))
        socks.append(sock)
    payload = ctypes.create_string_buffer(b"x" * 32, 32)
    iov = IoVec(ctypes.addressof(payload), 32)
    one_pass = destination_batches(ports, addresses, iov)
    # Every pass over the destinations, one source socket each: (fd, msgs, count).
    rounds = [(sock.fileno(), msgs, count) for sock in socks for msgs, count in one_pass]
    sent = 0
    start = time.monotonic()
    n = 0
    sendmmsg = libc.sendmmsg
    while sent < packets:
        fd, msgs, count = rounds[n % len(rounds)]
        n += 1
        count = min(count, packets - sent)
        done = sendmmsg(fd, msgs, count, 0)
        if done < 0:
            err = ctypes.get_errno()
            if err in (11, 105):                 # EAGAIN / ENOBUFS: try again
                n -= 1
                continue
            raise OSError(err, "sendmmsg")
        sent += done
        if rate > 0:
            due = start + sent / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    end = time.monotonic()
    for sock in socks:
        sock.close()
    return {"sent": sent, "seconds": end - start, "end": end}


if __name__ == "__main__":
    print(json.dumps(blast(float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                           *map(int, sys.argv[4:6]))))
