"""A transmit ring (PACKET_TX_RING, TPACKET_V2) on one interface holding prebuilt frames:
how bench/blast.py's packet sender hands its frames to the kernel.

Why a ring rather than sendmmsg(2) on the same AF_PACKET socket: sendmmsg runs the socket
send path once per message -- the message header, the address and the frame copied from
user memory (copy_msghdr_from_user, _copy_from_iter, _copy_from_user: ~15 % of the sender's
CPU under perf) and a fresh skb filled from the copy.  The ring is memory the kernel and we
share: every frame is written into it once, before the first send; a send() then hands over
every frame whose status word says TP_STATUS_SEND_REQUEST, and the kernel builds each skb
on the ring's pages, with no system call or copy from user memory per frame (bench/RESULTS.md,
pktsend: 1.8 against 2.7 us of kernel CPU a datagram).  A blocking send() returns once the
kernel has released every frame it took (TP_STATUS_AVAILABLE again), so the same frames are
simply marked again for the next round.

The ring's frames: FRAME_SIZE bytes each, BLOCK_SIZE / FRAME_SIZE to a block, so their count
is a multiple of that; the ring holds the frames given in order, repeated until that count
is reached and the count is also a whole number of repetitions (lcm), so walking the ring
in order sends the frames in their order, each once a repetition.
"""
from __future__ import annotations

import ctypes
import math
import mmap
import socket
import struct
from typing import Sequence

SOL_PACKET = 263                 # linux/socket.h; the socket module lacks the packet options
PACKET_VERSION = 10              # linux/if_packet.h
PACKET_TX_RING = 13
TPACKET_V2 = 1
TP_STATUS_SEND_REQUEST = 1
ETH_P_IP = 0x0800
BLOCK_SIZE = 4096                # a page: a block must be a whole number of pages
FRAME_SIZE = 128                 # a tpacket2_hdr (32 bytes) and up to 96 bytes of frame
DATA_OFFSET = 32                 # TPACKET_ALIGN(sizeof(struct tpacket2_hdr)): where a frame's bytes go
MAX_SLOTS = 1 << 20              # 128 MiB of ring at most
_TP_LENGTHS = struct.Struct("=II")   # tp_len, tp_snaplen, after the status word
_LIBC = ctypes.CDLL(None, use_errno=True)


def ipv4_address(interface: str) -> bytes:
    """The sockaddr_ll a send names: the interface and IPv4, the skbs' protocol (which a tap
    reports) set outright -- the kernel would otherwise parse it back out of the Ethernet
    header."""
    return struct.pack("=HHiHBB8s", socket.AF_PACKET, socket.htons(ETH_P_IP),
                       socket.if_nametoindex(interface), 0, 0, 0, b"")


class TxRing:
    """An AF_PACKET socket on `interface` (protocol 0: it receives nothing) with a transmit
    ring holding `frames` (each a whole link-layer frame, all of one length); `slots` of
    them, `slots` a multiple of len(frames)."""

    def __init__(self, interface: str, frames: Sequence[bytes]) -> None:
        per_block = BLOCK_SIZE // FRAME_SIZE
        self.slots = math.lcm(len(frames), per_block)
        if self.slots > MAX_SLOTS:
            raise ValueError(f"{len(frames)} frames take a ring of {self.slots} slots "
                             f"(more than {MAX_SLOTS})")
        if max(map(len, frames)) > FRAME_SIZE - DATA_OFFSET:
            raise ValueError(f"a frame longer than {FRAME_SIZE - DATA_OFFSET} bytes")
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
        blocks = self.slots // per_block
        self.sock.setsockopt(SOL_PACKET, PACKET_TX_RING,
                             struct.pack("=IIII", BLOCK_SIZE, blocks, FRAME_SIZE, self.slots))
        self.sock.bind((interface, 0))
        self.ring = mmap.mmap(self.sock.fileno(), BLOCK_SIZE * blocks)
        for slot in range(self.slots):
            frame = frames[slot % len(frames)]
            at = slot * FRAME_SIZE
            _TP_LENGTHS.pack_into(self.ring, at + 4, len(frame), len(frame))
            self.ring[at + DATA_OFFSET:at + DATA_OFFSET + len(frame)] = frame
        # Every slot's status word, and as many TP_STATUS_SEND_REQUEST words to copy in.
        self._status = memoryview(self.ring).cast("I")[::FRAME_SIZE // 4]
        self._requests = memoryview(struct.pack("=I", TP_STATUS_SEND_REQUEST)
                                    * self.slots).cast("I")
        address = ipv4_address(interface)
        self._address = ctypes.create_string_buffer(address, len(address))

    def transmit(self, first: int, count: int) -> int:
        """Send slots first .. first + count - 1 (the kernel's place in the ring must be
        `first`: send the ring in order); `count`, or -1 with errno set."""
        self._status[first:first + count] = self._requests[:count]
        done = _LIBC.sendto(self.sock.fileno(), None, 0, 0, self._address,
                            len(self._address))
        return count if done >= 0 else -1

    def close(self) -> None:
        self._status.release()
        self._requests.release()
        self.ring.close()
        self.sock.close()
