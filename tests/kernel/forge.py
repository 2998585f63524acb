"""Hand-built IPv4 and IPv6 packets for the kernel scenarios (stdlib only).

The forged scenarios need TCP segments with chosen flags, sequence numbers and windows,
ICMP errors quoting chosen flows, and IP fragments: things ordinary sockets will not send.
Everything is sent through a raw IP_HDRINCL socket, so it passes the OUTPUT hook (and
conntrack) exactly like locally generated traffic; `inject_on_lo` is the one exception
(an AF_PACKET frame that skips OUTPUT, for a lone fragment that must be visible on the wire).
"""
from __future__ import annotations

import socket
import struct
import time
from typing import Optional

FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
FLAG_LETTERS = {"F": FIN, "S": SYN, "R": RST, "P": PSH, "A": ACK, "U": URG}


def flags_from(letters: str) -> int:
    """'SA' -> SYN|ACK; '' -> no flags."""
    value = 0
    for letter in letters:
        value |= FLAG_LETTERS[letter]
    return value


def inet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _addr(a: str) -> bytes:
    """An address's bytes: IPv6 if it has a colon, else IPv4."""
    if ":" in a:
        return socket.inet_pton(socket.AF_INET6, a)
    return socket.inet_aton(a)


def ipv4(src: str, dst: str, proto: int, payload: bytes, *, ident: int = 0,
         more_fragments: bool = False, frag_offset: int = 0, ttl: int = 64) -> bytes:
    """An IPv4 header (no options) + payload. frag_offset is in bytes (multiple of 8)."""
    frag = (0x2000 if more_fragments else 0) | (frag_offset // 8)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, frag, ttl,
                         proto, 0, _addr(src), _addr(dst))
    header = header[:10] + struct.pack("!H", inet_checksum(header)) + header[12:]
    return header + payload


def ipv6(src: str, dst: str, next_header: int, payload: bytes, *, hop_limit: int = 64) -> bytes:
    """An IPv6 fixed header + payload (any extension headers are part of the payload)."""
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), next_header, hop_limit,
                       _addr(src), _addr(dst)) + payload


def ip_packet(src: str, dst: str, proto: int, payload: bytes) -> bytes:
    """ipv4() or ipv6(), as the addresses are."""
    return (ipv6 if ":" in src else ipv4)(src, dst, proto, payload)


def _pseudo(src: str, dst: str, proto: int, length: int) -> bytes:
    # (IPv6's pseudo header orders length and protocol otherwise, with the same sum)
    return _addr(src) + _addr(dst) + struct.pack("!BBH", 0, proto, length)


def icmpv6_message(src: str, dst: str, icmp_type: int, code: int, rest: bytes,
                   payload: bytes = b"") -> bytes:
    """ICMPv6 header (type, code, checksum over the pseudo header, 4 bytes `rest`) + payload."""
    body = struct.pack("!BBH", icmp_type, code, 0) + rest + payload
    csum = inet_checksum(_pseudo(src, dst, 58, len(body)) + body)
    return body[:2] + struct.pack("!H", csum) + body[4:]


def ipv6_fragments(packet: bytes, sizes: list[tuple[int, int]], ident: int) -> list[bytes]:
    """Fragments of a whole IPv6 packet (fixed header only): one per (offset, length) of
    its payload, each behind a fragment header; M is set on all but the one reaching the
    end.  Pieces may overlap or leave holes: the caller chooses."""
    src, dst = packet[8:24], packet[24:40]
    next_header, payload = packet[6], packet[40:]
    pieces = []
    for offset, length in sizes:
        more = offset + length < len(payload)
        header = struct.pack("!BBHI", next_header, 0, offset | more, ident)
        body = header + payload[offset:offset + length]
        pieces.append(struct.pack("!IHBB16s16s", 6 << 28, len(body), 44, 64, src, dst) + body)
    return pieces


def tcp_segment(src: str, dst: str, sport: int, dport: int, flags: int, seq: int, ack: int,
                window: int = 65535, payload: bytes = b"", options: bytes = b"") -> bytes:
    """The TCP header + payload (with a correct checksum), without the IP header."""
    if len(options) % 4:
        options += b"\0" * (4 - len(options) % 4)
    offset = (20 + len(options)) // 4
    header = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                         offset << 4, flags, window, 0, 0) + options
    segment = header + payload
    csum = inet_checksum(_pseudo(src, dst, 6, len(segment)) + segment)
    return segment[:16] + struct.pack("!H", csum) + segment[18:]


def udp_datagram(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """The UDP header + payload (with a correct checksum), without the IP header."""
    length = 8 + len(payload)
    datagram = struct.pack("!HHHH", sport, dport, length, 0) + payload
    csum = inet_checksum(_pseudo(src, dst, 17, length) + datagram) or 0xFFFF
    return datagram[:6] + struct.pack("!H", csum) + datagram[8:]


def icmp_message(icmp_type: int, code: int, rest: bytes, payload: bytes = b"") -> bytes:
    """ICMP header (type, code, checksum, 4 bytes `rest`) + payload."""
    body = struct.pack("!BBH", icmp_type, code, 0) + rest + payload
    return body[:2] + struct.pack("!H", inet_checksum(body)) + body[4:]


def icmp_echo(icmp_type: int, ident: int, sequence: int, payload: bytes = b"") -> bytes:
    return icmp_message(icmp_type, 0, struct.pack("!HH", ident, sequence), payload)


def icmp_error(icmp_type: int, code: int, quoted_ip_packet: bytes) -> bytes:
    """An ICMP error quoting the IP header and first 8 payload bytes of a datagram."""
    return icmp_message(icmp_type, code, b"\0\0\0\0", quoted_ip_packet[:28])


def split_fragments(packet: bytes, first_payload_len: int) -> list[bytes]:
    """Cut one whole IPv4 packet (20-byte header) into two fragments."""
    src = socket.inet_ntoa(packet[12:16])
    dst = socket.inet_ntoa(packet[16:20])
    proto = packet[9]
    ident = struct.unpack("!H", packet[4:6])[0]
    payload = packet[20:]
    assert first_payload_len % 8 == 0 and 0 < first_payload_len < len(payload)
    return [
        ipv4(src, dst, proto, payload[:first_payload_len], ident=ident, more_fragments=True),
        ipv4(src, dst, proto, payload[first_payload_len:], ident=ident,
             frag_offset=first_payload_len),
    ]


class RawSender:
    """Sends whole IPv4 or IPv6 packets through OUTPUT (IPPROTO_RAW implies IP_HDRINCL,
    and for AF_INET6 IPV6_HDRINCL); the IPv6 socket is opened at its first packet."""

    def __init__(self, gap: float = 0.02) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.sock6: Optional[socket.socket] = None
        self.gap = gap  # spacing, so every packet has its own timestamp and order is obvious

    def send(self, packet: bytes) -> None:
        if packet[0] >> 4 == 6:
            if self.sock6 is None:
                self.sock6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
            self.sock6.sendto(packet, (socket.inet_ntop(socket.AF_INET6, packet[24:40]), 0))
        else:
            self.sock.sendto(packet, (socket.inet_ntoa(packet[16:20]), 0))
        time.sleep(self.gap)

    def close(self) -> None:
        self.sock.close()
        if self.sock6 is not None:
            self.sock6.close()


def inject_on_lo(packet: bytes) -> None:
    """Put an IPv4 packet on lo with AF_PACKET: it skips OUTPUT and is seen by PREROUTING only."""
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind(("lo", 0))
        sock.send(b"\0" * 12 + b"\x08\x00" + packet)
    time.sleep(0.02)


MSS_1460 = b"\x02\x04\x05\xb4"


class ForgedTcp:
    """Both ends of one forged TCP connection; tracks each side's next sequence number.

    `c(...)` sends in the original direction (client -> server), `s(...)` in the reply
    direction. seq defaults to the side's next sequence number, ack (when the A flag is set)
    to the peer's; passing seq/ack explicitly does not move the tracked numbers unless
    `advance=True`.
    """

    def __init__(self, sender: RawSender, client: tuple[str, int], server: tuple[str, int],
                 client_isn: int = 1000, server_isn: int = 500000) -> None:
        self.sender = sender
        self.client, self.server = client, server
        self.next = {"c": client_isn, "s": server_isn}

    def _send(self, side: str, letters: str, seq: Optional[int], ack: Optional[int],
              data: bytes, window: int, options: bytes, advance: Optional[bool]) -> None:
        peer = "s" if side == "c" else "c"
        flags = flags_from(letters)
        auto_seq = seq is None
        seq = self.next[side] if seq is None else seq
        if ack is None:
            ack = self.next[peer] if flags & ACK else 0
        (src, sport), (dst, dport) = ((self.client, self.server) if side == "c"
                                      else (self.server, self.client))
        if flags & SYN and not options:
            options = MSS_1460
        segment = tcp_segment(src, dst, sport, dport, flags, seq, ack, window, data, options)
        self.sender.send(ip_packet(src, dst, 6, segment))
        if advance or (advance is None and auto_seq):
            self.next[side] = (seq + len(data) + (1 if flags & SYN else 0)
                               + (1 if flags & FIN else 0)) & 0xFFFFFFFF

    def c(self, letters: str, seq: Optional[int] = None, ack: Optional[int] = None,
          data: bytes = b"", window: int = 65535, options: bytes = b"",
          advance: Optional[bool] = None) -> None:
        self._send("c", letters, seq, ack, data, window, options, advance)

    def s(self, letters: str, seq: Optional[int] = None, ack: Optional[int] = None,
          data: bytes = b"", window: int = 65535, options: bytes = b"",
          advance: Optional[bool] = None) -> None:
        self._send("s", letters, seq, ack, data, window, options, advance)

    def handshake(self) -> None:
        self.c("S")
        self.s("SA")
        self.c("A")


# --- SCTP, UDP-Lite and enhanced GRE --------------------------------------------------------

def crc32c(data: bytes) -> int:
    """CRC32c (Castagnoli, reflected 0x82F63B78), bit by bit: SCTP's checksum (RFC 4960 B)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


# Chunk types (RFC 4960 3.2) and the T bit of ABORT / SHUTDOWN COMPLETE.
SCTP_DATA, SCTP_INIT, SCTP_INIT_ACK, SCTP_SACK = 0, 1, 2, 3
SCTP_HEARTBEAT, SCTP_HEARTBEAT_ACK, SCTP_ABORT, SCTP_SHUTDOWN = 4, 5, 6, 7
SCTP_SHUTDOWN_ACK, SCTP_ERROR, SCTP_COOKIE_ECHO, SCTP_COOKIE_ACK = 8, 9, 10, 11
SCTP_SHUTDOWN_COMPLETE = 14
SCTP_FLAG_T = 0x01


def sctp_chunk(chunk_type: int, value: bytes = b"", flags: int = 0) -> bytes:
    """One chunk: type, flags, length (without padding), value, padded to 4 bytes."""
    chunk = struct.pack("!BBH", chunk_type, flags, 4 + len(value)) + value
    return chunk + b"\0" * (-len(chunk) % 4)


def sctp_init(chunk_type: int, init_tag: int, tsn: int = 1) -> bytes:
    """INIT or INIT ACK: initiate tag, a_rwnd, 10 streams each way, initial TSN."""
    return sctp_chunk(chunk_type, struct.pack("!IIHHI", init_tag, 65536, 10, 10, tsn))


def sctp_data(tsn: int, payload: bytes) -> bytes:
    """A DATA chunk (B and E flags: one whole message) on stream 0."""
    return sctp_chunk(SCTP_DATA, struct.pack("!IHHI", tsn, 0, 0, 0) + payload, flags=0x03)


def sctp_heartbeat(chunk_type: int) -> bytes:
    """HEARTBEAT or HEARTBEAT ACK carrying one Heartbeat Info parameter."""
    return sctp_chunk(chunk_type, struct.pack("!HH", 1, 8) + b"info")


def sctp_packet(sport: int, dport: int, vtag: int, chunks: bytes) -> bytes:
    """The SCTP common header + chunks, with its CRC32c (stored little-endian, as
    the kernel's sctp_compute_cksum gives it)."""
    packet = struct.pack("!HHII", sport, dport, vtag, 0) + chunks
    return packet[:8] + struct.pack("<I", crc32c(packet)) + packet[12:]


def udplite_datagram(src: str, dst: str, sport: int, dport: int, payload: bytes,
                     coverage: int = 0, checksum: Optional[int] = None,
                     pseudo_proto: int = 136) -> bytes:
    """UDP-Lite header + payload: `coverage` in the length field (0 = all), checksum over
    the pseudo header (protocol `pseudo_proto`) and the covered bytes (RFC 3828), or
    `checksum` as given."""
    length = 8 + len(payload)
    datagram = struct.pack("!HHHH", sport, dport, coverage, 0) + payload
    if checksum is None:
        covered = datagram[:coverage or length]
        checksum = inet_checksum(_pseudo(src, dst, pseudo_proto, length) + covered) or 0xFFFF
    return datagram[:6] + struct.pack("!H", checksum) + datagram[8:]


GRE_PROTO_PPP = 0x880B


def gre_v1(call_id: int, payload: bytes = b"\xff\x03\x00\x21", protocol: int = GRE_PROTO_PPP
           ) -> bytes:
    """Enhanced GRE (PPTP, RFC 2637): K bit, version 1, payload length, call id."""
    return struct.pack("!HHHH", 0x2001, protocol, len(payload), call_id) + payload
