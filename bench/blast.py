"""Send UDP datagrams on lo as fast as asked: `python -m bench.blast RATE PACKETS PORTS`.

sendmmsg(2) through ctypes sends a batch of datagrams per system call, so one Python
process can offer several hundred thousand packets per second (a sendto() loop manages
about 130,000).  RATE 0 means unpaced.  Datagrams go 127.0.0.1:40000 -> 127.0.0.1:9000+i
(i cycling over PORTS ports); an nft rule in the namespace drops them at input, so no
ICMP port-unreachable answers add to the traffic.  Prints {"sent", "seconds", "end"}.
"""
from __future__ import annotations

import ctypes
import json
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


def blast(rate: float, packets: int, ports: int) -> dict:
    libc = ctypes.CDLL(None, use_errno=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 40000))
    payload = ctypes.create_string_buffer(b"x" * 32, 32)
    iov = IoVec(ctypes.addressof(payload), 32)
    # One sockaddr_in per destination port; message i of a batch uses port i % ports.
    addrs = [ctypes.create_string_buffer(struct.pack("=HH4s8x", socket.AF_INET,
                                                     socket.htons(FIRST_PORT + p),
                                                     socket.inet_aton("127.0.0.1")), 16)
             for p in range(ports)]
    batches = []
    for b in range(max(1, ports // BATCH) if ports >= BATCH else 1):
        msgs = (MMsgHdr * BATCH)()
        for i in range(BATCH):
            addr = addrs[(b * BATCH + i) % ports]
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
    print(json.dumps(blast(float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))))
