"""Send UDP datagrams on lo as fast as asked: `python -m bench.blast RATE PACKETS PORTS [ADDRESSES]`.

sendmmsg(2) through ctypes sends a batch of datagrams per system call, so one Python
process can offer several hundred thousand packets per second (a sendto() loop manages
about 130,000).  RATE 0 means unpaced.  Datagram n goes 127.0.0.1:40000 -> address
127.0.0.1 + n % ADDRESSES (default 1; lo answers every 127.0.0.0/8 address), port
9000 + n % PORTS: lcm(PORTS, ADDRESSES) flows, each its own conntrack entry.  An nft rule
in the namespace drops them at input, so no ICMP port-unreachable answers add to the
traffic.  Prints {"sent", "seconds", "end"}.
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


class IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class MsgHdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(IoVec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", MsgHdr), ("msg_len", ctypes.c_uint)]


def blast(rate: float, packets: int, ports: int, addresses: int = 1) -> dict:
    libc = ctypes.CDLL(None, use_errno=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 40000))
    payload = ctypes.create_string_buffer(b"x" * 32, 32)
    iov = IoVec(ctypes.addressof(payload), 32)
    flows = math.lcm(ports, addresses)
    first = struct.unpack("!I", socket.inet_aton("127.0.0.1"))[0]
    # One sockaddr_in per flow, in batches of BATCH messages sent in turn: message i of
    # batch b goes to flow (b * BATCH + i) % flows.
    addrs = [ctypes.create_string_buffer(struct.pack("=HH4s8x", socket.AF_INET,
                                                     socket.htons(FIRST_PORT + n % ports),
                                                     struct.pack("!I", first + n % addresses)),
                                         16)
             for n in range(flows)]
    batches = []
    for b in range(-(-flows // BATCH)):
        msgs = (MMsgHdr * BATCH)()
        for i in range(BATCH):
            addr = addrs[(b * BATCH + i) % flows]
            msgs[i].msg_hdr.msg_name = ctypes.addressof(addr)
            msgs[i].msg_hdr.msg_namelen = 16
            msgs[i].msg_hdr.msg_iov = ctypes.pointer(iov)
            msgs[i].msg_hdr.msg_iovlen = 1
        batches.append(msgs)
    fd = sock.fileno()
    sent = 0
    start = time.monotonic()
    n = 0
    while sent < packets:
        msgs = batches[n % len(batches)]
        n += 1
        count = min(BATCH, packets - sent)
        done = libc.sendmmsg(fd, msgs, count, 0)
        if done < 0:
            err = ctypes.get_errno()
            if err in (11, 105):                 # EAGAIN / ENOBUFS: try again
                continue
            raise OSError(err, "sendmmsg")
        sent += done
        if rate > 0:
            due = start + sent / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    end = time.monotonic()
    return {"sent": sent, "seconds": end - start, "end": end}


if __name__ == "__main__":
    print(json.dumps(blast(float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                           *map(int, sys.argv[4:5]))))
