"""The SCTP part of an IPv4 datagram -> Packet.sctp, read as nf_conntrack_proto_sctp.c reads it.

The common header (ports, verification tag, CRC32c) and the chunk list: each chunk's type,
flags and, for INIT and INIT ACK, the initiate tag the tracker records.  The chunk walk is
the kernel's for_each_sctp_chunk (stops when fewer than 4 bytes are left; lengths padded to
4) with do_basic_checks()'s verdict on the list.  The CRC32c is computed only for packets
met at PREROUTING, the only place the kernel verifies it.
"""
from __future__ import annotations

import struct

from .crc32c import crc32c
from .packet import Packet, SctpInfo
from .sctp_tables import ALONE_ONLY, FIRST_ONLY, INIT, INIT_ACK

COMMON_HEADER = struct.Struct("!HHI")     # source port, destination port, verification tag
COMMON_HEADER_LEN = 12                    # ... and the checksum
_CHUNK = struct.Struct("!BBH")            # type, flags, length
_U32 = struct.Struct("!I")
_CRC = struct.Struct("<I")                # sctp_compute_cksum()'s byte order on the wire
CHUNK_HEADER_LEN = _CHUNK.size
INIT_HEADER_LEN = 16                      # initiate tag, a_rwnd, streams out/in, initial TSN


def parse_sctp(packet: Packet, datagram: bytes, start: int, end: int, verify: bool) -> None:
    """Fill packet's ports and `sctp` from datagram[start:end], or set its l4_error."""
    length = end - start
    if length < COMMON_HEADER_LEN:
        if length >= 4:
            packet.sport, packet.dport = struct.unpack_from("!HH", datagram, start)
        packet.l4_error = "truncated sctp header"
        return
    packet.sport, packet.dport, vtag = COMMON_HEADER.unpack_from(datagram, start)
    chunks, chunks_ok = chunk_list(datagram, start + COMMON_HEADER_LEN, end)
    info = SctpInfo(vtag, chunks, chunks_ok)
    if verify:
        body = datagram[start:start + 8] + b"\0\0\0\0" + datagram[start + 12:end]
        info.checksum_ok = packet.l4_checksum_ok = (
            _CRC.unpack_from(datagram, start + 8)[0] == crc32c(body))
    packet.sctp = info


def chunk_list(data: bytes, pos: int, end: int) -> tuple:
    """((type, flags, initiate tag or None) per chunk, do_basic_checks() passed)."""
    chunks = []
    alone_seen = False
    while end - pos >= CHUNK_HEADER_LEN:
        chunk_type, flags, length = _CHUNK.unpack_from(data, pos)
        alone_seen = alone_seen or chunk_type in ALONE_ONLY
        if length == 0 or (chunks and (chunk_type in FIRST_ONLY or alone_seen)):
            return tuple(chunks), False
        tag = None
        # The kernel reads the whole INIT header or nothing (skb_header_pointer()).
        if chunk_type in (INIT, INIT_ACK) and end - pos >= CHUNK_HEADER_LEN + INIT_HEADER_LEN:
            tag = _U32.unpack_from(data, pos + CHUNK_HEADER_LEN)[0]
        chunks.append((chunk_type, flags, tag))
        pos += (length + 3) & ~3
    return tuple(chunks), bool(chunks)
