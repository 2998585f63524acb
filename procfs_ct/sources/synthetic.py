"""Synthetic traffic: a seeded, realistic mix of conversations as raw Ethernet frames.

Every conversation (a web client, a DNS lookup, an RTP call, a SYN scan...) is a
small generator that yields (time, frame) in time order; a priority queue merges
all running conversations into one non-decreasing stream, and a Poisson arrival
process per kind starts new ones.  Everything is drawn from one random.Random, so
the same seed and start give the same frames, byte for byte.

The frames are real: Ethernet II, IPv4 with valid header checksums (and IPv6 for a
documented share, see MIX), TCP/UDP/ICMP/ICMPv6 with valid checksums, sequence and acknowledgement numbers that a window tracker
accepts, real DNS/HTTP/syslog/RTP payloads.  They exercise the same parser as a
capture does.  All addresses are private (clients 10.0.0.0/24, servers
192.168.1.0/24, scanners and odd senders 172.16.0.0/24; over IPv6, unique local
fd00:10::/64 clients and fd00:192:168:1::/64 servers); the frames are only ever
bytes handed to the engine or written to a file.

A burst of every kind at the start fills a fresh table with a few hundred entries
of every state within a couple of seconds, so a new mount has something to show.
"""
from __future__ import annotations

import heapq
import ipaddress
import itertools
import random
import struct
import time
from typing import Callable, Iterator, Optional

from engine.build import (build_ethernet, build_icmp, build_icmpv6, build_ipv4, build_ipv6,
                          build_sctp, build_sctp_chunk, build_sctp_data, build_sctp_init,
                          build_sctp_sack, build_tcp, build_udp, tcp_options)
from engine.linklayer import ETH_P_IPV6
from engine.packet import (ACK, FIN, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP,
                           IPPROTO_UDP, PSH, RST, SYN, URG)
from engine.sctp_tables import (COOKIE_ACK as SCTP_COOKIE_ACK, COOKIE_ECHO as SCTP_COOKIE_ECHO,
                                HEARTBEAT as SCTP_HEARTBEAT, HEARTBEAT_ACK as SCTP_HEARTBEAT_ACK,
                                INIT as SCTP_INIT, INIT_ACK as SCTP_INIT_ACK,
                                SHUTDOWN as SCTP_SHUTDOWN, SHUTDOWN_ACK as SCTP_SHUTDOWN_ACK,
                                SHUTDOWN_COMPLETE as SCTP_SHUTDOWN_COMPLETE)

DEFAULT_RATE = 200.0          # packets per second in the steady state
MS = 1_000                    # the time line is in integer microseconds
SECOND = 1_000_000

Timeline = Iterator[tuple[int, bytes]]      # (microseconds since start, Ethernet frame)

# -- hosts --------------------------------------------------------------------


def _net(prefix: str, first: int, last: int) -> tuple[int, ...]:
    base = int.from_bytes(bytes(int(p) for p in prefix.split(".")), "big")
    return tuple(base + host for host in range(first, last + 1))


def _net6(prefix: str, first: int, last: int) -> tuple[int, ...]:
    base = int(ipaddress.IPv6Address(prefix))
    return tuple(base + host for host in range(first, last + 1))


IPV4_MAX = 0xFFFFFFFF                  # addresses above are IPv6 (World.frame decides by it)
CLIENTS = _net("10.0.0.0", 2, 250)
WEB_SERVERS = _net("192.168.1.0", 10, 59)
DB_SERVERS = _net("192.168.1.0", 60, 99)       # ssh, databases, mail: long-lived sessions
MEDIA_SERVERS = _net("192.168.1.0", 100, 119)  # RTP and VPN endpoints
ALL_SERVERS = _net("192.168.1.0", 10, 119)
RESOLVERS = _net("192.168.1.0", 2, 3)
LOGHOST = _net("192.168.1.0", 5, 5)[0]
TUNNEL_ENDS = _net("192.168.1.0", 6, 9)        # GRE concentrators
SCANNERS = _net("172.16.0.0", 13, 20)
CLIENTS6 = _net6("fd00:10::", 2, 250)
SERVERS6 = _net6("fd00:192:168:1::", 10, 59)
RESOLVERS6 = _net6("fd00:192:168:1::", 2, 3)
SOLICITED_NODE = int(ipaddress.IPv6Address("ff02::1:ff00:0"))   # + the target's low 24 bits
IPV6_HEADER_GROWTH = 20               # an IPv6 header is 20 bytes longer: a smaller MSS
ND_HOP_LIMIT = 255                     # RFC 4861: neighbour discovery never leaves the link
TUNNEL_INNER = _net("172.31.0.0", 1, 254)

EPHEMERAL_FIRST, EPHEMERAL_LAST = 32768, 60999   # Linux ip_local_port_range

LONG_LIVED_PORTS = (22, 22, 22, 5432, 3306, 6379, 993, 5671)
CLOSED_TCP_PORTS = (21, 23, 25, 110, 135, 139, 445, 1433, 3389, 5900, 8443, 9200)
SCAN_PORTS = (21, 22, 23, 25, 53, 80, 110, 111, 135, 139, 143, 443, 445, 993, 995, 1723,
              3306, 3389, 5900, 8080, 8443, 1025, 199, 587, 8888, 554, 113, 256, 179, 1720)
DOMAINS = ("example.com", "example.net", "example.org", "corp.internal", "lab.test")
LABELS = ("www", "api", "mail", "cdn", "static", "git", "wiki", "auth", "ntp", "db",
          "files", "chat", "img", "login", "status", "search", "metrics", "ldap")
PATHS = ("/", "/index.html", "/api/v1/items", "/static/app.js", "/static/style.css",
         "/images/logo.png", "/login", "/favicon.ico", "/search?q=conntrack", "/health")
PROGRAMS = ("sshd", "cron", "kernel", "systemd", "postfix/smtpd", "nginx", "dhclient", "sudo")
MESSAGES = ("Accepted publickey for deploy from 10.0.0.7 port 51234 ssh2",
            "pam_unix(cron:session): session opened for user root",
            "nf_conntrack: table full, dropping packet",
            "Started Daily apt download activities.",
            "connect from unknown[10.0.0.99]",
            "upstream timed out (110: Connection timed out) while reading response header",
            "DHCPACK of 10.0.0.42 from 10.0.0.1",
            "deploy : TTY=pts/0 ; PWD=/srv ; USER=root ; COMMAND=/bin/systemctl reload nginx")

# Payload filler: fixed pseudo-random bytes, sliced; content does not depend on the seed.
_FILLER = random.Random(0x5EED).randbytes(1 << 16)
# Maps any byte to a printable TXT-record character.
_TXT_ALPHABET = bytes(b"abcdefghijklmnopqrstuvwxyz0123456789=+/"[i % 39] for i in range(256))
# What Linux ping puts after its 16-byte timestamp: 0x10, 0x11, ... (56 bytes in all).
_PING_PATTERN = bytes(range(0x10, 0x10 + 40))


def _filler(rng: random.Random, size: int) -> bytes:
    out = b""
    while len(out) < size:
        start = rng.randrange(len(_FILLER) - 1)
        out += _FILLER[start:start + size - len(out)]
    return out


def _mac(address: int) -> bytes:
    """A locally administered MAC derived from the address (its low 32 bits): stable per host."""
    return b"\x02\x00" + (address & IPV4_MAX).to_bytes(4, "big")


# -- the world every conversation shares ----------------------------------------


class World:
    """The random source and the few shared resources conversations draw from."""

    def __init__(self, rng: random.Random, start: float) -> None:
        self.rng = rng
        self.start = start
        self._next_port: dict[int, int] = {}
        self.busy_ports: set[tuple[int, int]] = set()   # held by long-running conversations

    def pick(self, hosts: tuple[int, ...]) -> int:
        return hosts[self.rng.randrange(len(hosts))]

    def ephemeral_port(self, host: int) -> int:
        """The host's next local port, sequential from a random start (wrapping), skipping
        ports long-running conversations still hold, so no two live flows share a tuple."""
        port = self._next_port.get(host)
        if port is None:
            port = self.rng.randint(EPHEMERAL_FIRST, EPHEMERAL_LAST)
        while True:
            port = port + 1 if port < EPHEMERAL_LAST else EPHEMERAL_FIRST
            if (host, port) not in self.busy_ports:
                break
        self._next_port[host] = port
        return port

    def rtt(self) -> int:
        """Round-trip time of a new conversation (µs): mostly LAN, some far away."""
        if self.rng.random() < 0.7:
            return self.rng.randint(150, 2 * MS)
        return self.rng.randint(8 * MS, 90 * MS)

    def wall_clock(self, t: int) -> float:
        return self.start + t / SECOND

    @staticmethod
    def frame(src: int, dst: int, proto: int, l4: bytes, *, ident: int, df: bool = True,
              ttl: int = 64, tos: int = 0, mf: bool = False, frag_offset: int = 0) -> bytes:
        """An Ethernet frame of one datagram: IPv6 when the addresses are (ident, df, mf and
        frag_offset are IPv4's; ttl is the hop limit, tos the traffic class)."""
        if src > IPV4_MAX:
            datagram = build_ipv6(src, dst, proto, l4, hop_limit=ttl, traffic_class=tos)
            return build_ethernet(datagram, src_mac=_mac(src), dst_mac=_mac(dst),
                                  ethertype=ETH_P_IPV6)
        datagram = build_ipv4(src, dst, proto, l4, ident=ident & 0xFFFF, ttl=ttl, tos=tos,
                              df=df, mf=mf, frag_offset=frag_offset)
        return build_ethernet(datagram, src_mac=_mac(src), dst_mac=_mac(dst), pad=True)


# -- TCP bookkeeping ------------------------------------------------------------

CLIENT, SERVER = 0, 1


class TcpFlow:
    """Both ends of one TCP connection as a capture point sees them.

    Packets are produced in time order and each one acknowledges everything the
    other side sent before it, so sequence and acknowledgement numbers are exactly
    what a window tracker expects.  Modern ends negotiate window scaling, SACK and
    timestamps as Linux does; a minority of old stacks use none of them.
    """
    MSS = 1460

    def __init__(self, world: World, client: int, cport: int, server: int, sport: int,
                 rtt: int) -> None:
        rng = world.rng
        self.world = world
        self.rtt = rtt
        self.addr = ((client, cport), (server, sport))
        self.nxt = [rng.getrandbits(32), rng.getrandbits(32)]
        self.ipid = [rng.getrandbits(16), rng.getrandbits(16)]
        self.modern = rng.random() < 0.9
        if self.modern:
            self.wscale = (7, rng.choice((7, 8, 9)))
            self.window = (rng.randint(502, 2048), rng.randint(509, 1024))  # scaled fields
            self.tsval = [rng.getrandbits(32), rng.getrandbits(32)]
            self.ts_seen = [0, 0]
            self.payload_mss = self.MSS - 12                                # timestamps eat 12
        else:
            self.wscale = (0, 0)
            self.window = (rng.choice((64240, 65535, 29200)), rng.choice((65535, 16384, 32768)))
            self.tsval = None
            self.payload_mss = self.MSS
        if client > IPV4_MAX:
            self.payload_mss -= IPV6_HEADER_GROWTH

    def receive_window(self, side: int) -> int:
        """Bytes `side` lets its peer have in flight."""
        return self.window[side] << self.wscale[side]

    def segment(self, side: int, t: int, flags: int, payload: bytes = b"", *,
                seq: Optional[int] = None, ack: Optional[int] = None,
                window: Optional[int] = None, options: Optional[bytes] = None) -> tuple[int, bytes]:
        """One segment from `side` at time t; advances that side's sequence number unless
        an explicit seq is given (a stray or probe segment)."""
        (src, sport), (dst, dport) = self.addr[side], self.addr[1 - side]
        if seq is None:
            seq = self.nxt[side]
            self.nxt[side] = (seq + len(payload) + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF
        if ack is None:
            ack = self.nxt[1 - side] if flags & ACK else 0
        if options is None:
            options = self._timestamp_option(side, t)
        l4 = build_tcp(src, dst, sport, dport, seq=seq, ack=ack, flags=flags,
                       window=self.window[side] if window is None else window,
                       payload=payload, options=options)
        self.ipid[side] += 1
        return t, World.frame(src, dst, IPPROTO_TCP, l4, ident=self.ipid[side])

    def _timestamp_option(self, side: int, t: int) -> bytes:
        if self.tsval is None:
            return b""
        tsval = (self.tsval[side] + t // MS) & 0xFFFFFFFF     # a 1 kHz timestamp clock
        self.ts_seen[1 - side] = tsval
        return b"\x01\x01\x08\x0a" + struct.pack("!II", tsval, self.ts_seen[side])

    def _syn_options(self, side: int, t: int) -> bytes:
        if self.tsval is None:
            return tcp_options(mss=self.MSS)
        tsval = (self.tsval[side] + t // MS) & 0xFFFFFFFF
        self.ts_seen[1 - side] = tsval
        return tcp_options(mss=self.MSS, sack_perm=True, timestamps=(tsval, self.ts_seen[side]),
                           wscale=self.wscale[side])

    def syn_window(self, side: int) -> int:
        return (64240, 65160)[side] if self.modern else self.window[side]

    def handshake(self, t: int) -> Iterator[tuple[int, bytes]]:
        """SYN, SYN/ACK, ACK; now and then a SYN retransmitted after 1 s.  Returns the time."""
        rng = self.world.rng
        isn = self.nxt[CLIENT]
        yield self.segment(CLIENT, t, SYN, options=self._syn_options(CLIENT, t),
                           window=self.syn_window(CLIENT))
        if rng.random() < 0.02:
            t += SECOND
            yield self.segment(CLIENT, t, SYN, seq=isn, options=self._syn_options(CLIENT, t),
                               window=self.syn_window(CLIENT))
        t += self.rtt
        yield self.segment(SERVER, t, SYN | ACK, options=self._syn_options(SERVER, t),
                           window=self.syn_window(SERVER))
        t += rng.randint(20, 120)
        yield self.segment(CLIENT, t, ACK)
        return t

    def send_data(self, side: int, t: int, data: bytes) -> Iterator[tuple[int, bytes]]:
        """`side` sends data in slow-start flights; the receiver ACKs every second segment
        (the caller ACKs the last, or the peer's answer does).  Returns the time."""
        rng = self.world.rng
        mss = self.payload_mss
        chunks = [data[i:i + mss] for i in range(0, len(data), mss)] or [b""]
        in_window = max(1, self.receive_window(1 - side) // mss)
        cwnd, sent = 10, 0
        gap = rng.randint(15, 125)                    # wire time of one full segment
        while sent < len(chunks):
            flight = chunks[sent:sent + min(cwnd, in_window)]
            for index, chunk in enumerate(flight):
                last = sent + index + 1 == len(chunks)
                yield self.segment(side, t, ACK | (PSH if last else 0), chunk)
                if index % 2 == 1 and not last:
                    yield self.segment(1 - side, t + gap // 3, ACK)
                t += gap
            sent += len(flight)
            if sent < len(chunks):
                t += self.rtt                         # the next flight waits for the ACKs
                cwnd *= 2
        return t

    def pure_ack(self, side: int, t: int) -> tuple[int, bytes]:
        return self.segment(side, t, ACK)

    def close(self, closer: int, t: int) -> Iterator[tuple[int, bytes]]:
        """FIN teardown started by `closer`: FIN/ACK, ACK (often folded into the other
        side's FIN), FIN/ACK, last ACK.  The closer's entry ends in TIME_WAIT."""
        rng = self.world.rng
        other = 1 - closer
        yield self.segment(closer, t, FIN | ACK)
        t += self.rtt // 2 + rng.randint(10, 200)
        if rng.random() < 0.5:
            yield self.segment(other, t, ACK)
            t += rng.randint(50, 20 * MS)
        yield self.segment(other, t, FIN | ACK)
        t += self.rtt // 2 + rng.randint(10, 200)
        yield self.segment(closer, t, ACK)
        return t


# -- the conversations ------------------------------------------------------------
# Each takes the shared World and a start time (µs) and yields (time, frame) in order.


def http_exchange(rng: random.Random, host: str, port: int) -> tuple[bytes, bytes]:
    path = rng.choice(PATHS)
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\n"
               "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
               "Accept: */*\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\n\r\n").encode()
    body_len = min(int(rng.lognormvariate(8.0, 1.4)), 400_000)
    head = (f"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {body_len}\r\nConnection: keep-alive\r\n\r\n").encode()
    if port == 443:   # what a capture shows of TLS: application-data records
        request = b"\x17\x03\x03" + struct.pack("!H", len(request) + 17) + _filler(rng, len(request) + 17)
        head = b"\x17\x03\x03" + struct.pack("!H", min(len(head) + body_len, 16401))
    return request, head + _filler(rng, body_len)


def web_client(world: World, t: int) -> Timeline:
    """A browser fetching 1-4 objects over one connection, then a FIN teardown from
    either side: NEW, ESTABLISHED, ASSURED, FIN_WAIT ... TIME_WAIT."""
    rng = world.rng
    client, server = world.pick(CLIENTS), world.pick(WEB_SERVERS)
    port = rng.choice((80, 443, 443, 8080))
    flow = TcpFlow(world, client, world.ephemeral_port(client), server, port, world.rtt())
    t = yield from flow.handshake(t)
    host = f"{rng.choice(LABELS)}.{rng.choice(DOMAINS)}"
    for _ in range(rng.choice((1, 1, 1, 2, 3, 4))):
        request, response = http_exchange(rng, host, port)
        t += rng.randint(100, 900)
        t = yield from flow.send_data(CLIENT, t, request)
        think = rng.randint(200, 80 * MS)
        if think > 40 * MS:                       # server's delayed ACK fires first
            yield flow.pure_ack(SERVER, t + 40 * MS)
        t += flow.rtt // 2 + think
        t = yield from flow.send_data(SERVER, t, response)
        t += rng.randint(30, 40 * MS)
        yield flow.pure_ack(CLIENT, t)
        t += rng.randint(1 * MS, 1500 * MS)       # the user reads the page
    if rng.random() < 0.5:
        # The browser keeps the idle connection until it or the server's keep-alive
        # timer (nginx: 75 s) gives up, so ESTABLISHED web entries linger a while.
        t += rng.randint(5, 75) * SECOND
        t = yield from flow.close(rng.choice((CLIENT, SERVER)), t)
    else:
        t = yield from flow.close(rng.choice((CLIENT, CLIENT, CLIENT, SERVER)), t)


def _resp(*words: str) -> bytes:
    """A Redis (RESP) command."""
    return f"*{len(words)}\r\n".encode() + b"".join(
        f"${len(word)}\r\n{word}\r\n".encode() for word in words)


def _tls_record(rng: random.Random, size: int) -> bytes:
    return b"\x17\x03\x03" + struct.pack("!H", size) + _filler(rng, size)


def session_opening(rng: random.Random, port: int) -> list[tuple[int, bytes]]:
    """(side, data) steps that open a long-lived session on `port`."""
    if port == 22:
        return [(SERVER, b"SSH-2.0-OpenSSH_9.6p1 Debian-4\r\n"),
                (CLIENT, b"SSH-2.0-OpenSSH_9.2p1\r\n" + _filler(rng, 1400)),
                (SERVER, _filler(rng, rng.randint(900, 1600)))]
    if port == 6379:
        return [(CLIENT, _resp("AUTH", "s3cret")), (SERVER, b"+OK\r\n")]
    if port in (993, 5671):
        return [(CLIENT, _tls_record(rng, 512)), (SERVER, _tls_record(rng, rng.randint(2000, 4000))),
                (CLIENT, _tls_record(rng, 80))]
    return [(CLIENT, _filler(rng, rng.randint(8, 100))), (SERVER, _filler(rng, rng.randint(300, 800)))]


def session_exchange(rng: random.Random, port: int) -> tuple[bytes, bytes]:
    """One (request, response) of an idle-most-of-the-time session on `port`."""
    if port == 6379:
        value = _filler(rng, rng.randint(10, 900)).hex()[:rng.randint(10, 900)]
        return (_resp("GET", f"session:{rng.getrandbits(32):08x}"),
                f"${len(value)}\r\n{value}\r\n".encode())
    if port in (993, 5671):
        return _tls_record(rng, rng.randint(30, 200)), _tls_record(rng, rng.randint(30, 1200))
    return _filler(rng, rng.choice((36, 52, 68, 100))), _filler(rng, rng.randint(36, 1200))


def long_lived_session(world: World, t: int) -> Timeline:
    """An ssh/database/IMAP session that stays ESTABLISHED for minutes: an opening
    exchange, then occasional small request/response pairs and keepalive probes."""
    rng = world.rng
    client, server = world.pick(CLIENTS), world.pick(DB_SERVERS)
    cport, port = world.ephemeral_port(client), rng.choice(LONG_LIVED_PORTS)
    world.busy_ports.add((client, cport))
    flow = TcpFlow(world, client, cport, server, port, world.rtt())
    t = yield from flow.handshake(t)
    side = CLIENT
    for sender, data in session_opening(rng, port):
        t += flow.rtt if sender != side else rng.randint(100, 2 * MS)
        t = yield from flow.send_data(sender, t, data)
        side = sender
    t += rng.randint(30, 40 * MS)
    yield flow.pure_ack(1 - side, t)
    end = t + rng.randint(5 * 60, 40 * 60) * SECOND
    while t < end:
        idle = int(rng.expovariate(1 / 25) * SECOND) + MS
        t += idle
        if idle > 60 * SECOND or rng.random() < 0.1:
            # TCP keepalive: one byte behind snd_nxt, no data; the peer answers with an ACK.
            yield flow.segment(CLIENT, t, ACK, seq=(flow.nxt[CLIENT] - 1) & 0xFFFFFFFF)
            t += flow.rtt
            yield flow.pure_ack(SERVER, t)
            continue
        request, response = session_exchange(rng, port)
        t = yield from flow.send_data(CLIENT, t, request)
        t += flow.rtt // 2 + rng.randint(50, 5 * MS)
        t = yield from flow.send_data(SERVER, t, response)
        t += rng.randint(30, 40 * MS)
        yield flow.pure_ack(CLIENT, t)
    t = yield from flow.close(rng.choice((CLIENT, SERVER)), t)
    world.busy_ports.discard((client, cport))


def dns_query(rng: random.Random, ident: int, name: str, qtype: int, edns: int = 0) -> bytes:
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.split("."))
    question += b"\x00" + struct.pack("!HH", qtype, 1)
    additional = b"\x00\x00\x29" + struct.pack("!HIH", edns, 0, 0) if edns else b""
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 1 if edns else 0) + question + additional


def dns_response(rng: random.Random, query: bytes, answers: int, *, txt_bytes: int = 0) -> bytes:
    """A reply to `query`: A/AAAA records (or NXDOMAIN when answers == 0), or TXT
    records adding up to about txt_bytes (a large, fragmenting answer)."""
    ident = struct.unpack_from("!H", query)[0]
    end = query.index(b"\x00", 12) + 5
    question = query[12:end]
    qtype = struct.unpack_from("!H", question, len(question) - 4)[0]
    records = []
    if txt_bytes:
        while sum(map(len, records)) < txt_bytes:
            text = _filler(rng, 250).translate(_TXT_ALPHABET)
            records.append(b"\xc0\x0c" + struct.pack("!HHIH", 16, 1, 300, 251) + b"\xfa" + text)
    else:
        for _ in range(answers):
            if qtype == 28:
                rdata = bytes.fromhex("20010db8") + rng.randbytes(12)
            else:
                rdata = bytes((192, 0, 2, rng.randint(1, 254)))
            records.append(b"\xc0\x0c" + struct.pack("!HHIH", qtype if qtype in (1, 28) else 1, 1,
                                                    rng.randint(30, 86400), len(rdata)) + rdata)
    flags = 0x8180 if records else 0x8183
    return struct.pack("!HHHHHH", ident, flags, 1, len(records), 0, 0) + question + b"".join(records)


def udp_frame(world: World, t: int, src: int, sport: int, dst: int, dport: int, payload: bytes,
              *, df: bool = True) -> tuple[int, bytes]:
    l4 = build_udp(src, dst, sport, dport, payload)
    return t, World.frame(src, dst, IPPROTO_UDP, l4, ident=world.rng.getrandbits(16), df=df)


def dns_lookup(world: World, t: int) -> Timeline:
    """A stub resolver asking A and often AAAA from one socket; the resolver answers
    within milliseconds, or (rarely) never and the query is repeated after a second."""
    rng = world.rng
    client, resolver = world.pick(CLIENTS), world.pick(RESOLVERS)
    port = world.ephemeral_port(client)
    name = f"{rng.choice(LABELS)}.{rng.choice(DOMAINS)}"
    qtypes = (1, 28) if rng.random() < 0.6 else (rng.choice((1, 1, 15, 12)),)
    lost = rng.random() < 0.04
    for attempt in range(2 if lost else 1):
        queries = [dns_query(rng, rng.getrandbits(16), name, qtype) for qtype in qtypes]
        for query in queries:
            yield udp_frame(world, t, client, port, resolver, 53, query)
            t += rng.randint(5, 60)
        if lost and attempt == 0:
            t += SECOND
            continue
        t += rng.randint(150, 30 * MS)
        answers = 0 if rng.random() < 0.08 else rng.randint(1, 3)
        for query in queries:
            yield udp_frame(world, t, resolver, 53, client, port, dns_response(rng, query, answers))
            t += rng.randint(5, 200)


def syslog_sender(world: World, t: int) -> Timeline:
    """One-way UDP: a host sending a few syslog lines to the log host; never answered,
    so the entry stays [UNREPLIED]."""
    rng = world.rng
    sender = world.pick(CLIENTS + ALL_SERVERS)
    sport = 514 if rng.random() < 0.3 else world.ephemeral_port(sender)
    hostname = f"host{sender & 0xFF}"
    for _ in range(rng.randint(1, 6)):
        stamp = time.strftime("%b %d %H:%M:%S", time.gmtime(world.wall_clock(t)))
        program = rng.choice(PROGRAMS)
        line = f"<{rng.choice((13, 14, 30, 38, 86, 134))}>{stamp} {hostname} {program}" \
               f"[{rng.randint(200, 40000)}]: {rng.choice(MESSAGES)}"
        yield udp_frame(world, t, sender, sport, LOGHOST, 514, line.encode())
        t += rng.randint(20 * MS, 5 * SECOND)


def rtp_call(world: World, t: int) -> Timeline:
    """An RTP audio stream both ways: 20 ms G.711 packets for a few seconds (the reply
    direction starts a tick or two later).  Modern: ASSURED after 2 s."""
    rng = world.rng
    phone, media = world.pick(CLIENTS), world.pick(MEDIA_SERVERS)
    ends = ((phone, rng.randrange(10000, 20000, 2)), (media, rng.randrange(16384, 32767, 2)))
    ssrc = [rng.getrandbits(32), rng.getrandbits(32)]
    rtp_seq = [rng.getrandbits(16), rng.getrandbits(16)]
    stamp = [rng.getrandbits(32), rng.getrandbits(32)]
    payload_type = rng.choice((0, 8))
    offset = rng.randint(3 * MS, 17 * MS)
    ticks = rng.randint(3, 12) * 50
    for tick in range(ticks):
        base = t + tick * 20 * MS
        for side, at in ((0, base + rng.randint(0, 2 * MS)), (1, base + offset + rng.randint(0, 2 * MS))):
            if side == 1 and tick < 2:
                continue
            header = struct.pack("!BBHII", 0x80, payload_type | (0x80 if tick == 0 else 0),
                                 rtp_seq[side] & 0xFFFF, stamp[side] & 0xFFFFFFFF, ssrc[side])
            rtp_seq[side] += 1
            stamp[side] += 160
            (src, sport), (dst, dport) = ends[side], ends[1 - side]
            yield udp_frame(world, at, src, sport, dst, dport, header + _filler(rng, 160))


def vpn_tunnel(world: World, t: int) -> Timeline:
    """A WireGuard-like UDP tunnel: handshake, then bursts of data both ways for a few
    seconds to half a minute.  Modern: ASSURED once traffic continues past 2 s."""
    rng = world.rng
    client, server = world.pick(CLIENTS), world.pick(MEDIA_SERVERS)
    cport = world.ephemeral_port(client)
    rtt = world.rtt()
    yield udp_frame(world, t, client, cport, server, 51820, b"\x01\x00\x00\x00" + _filler(rng, 144))
    t += rtt
    yield udp_frame(world, t, server, 51820, client, cport, b"\x02\x00\x00\x00" + _filler(rng, 88))
    end = t + rng.randint(3, 30) * SECOND
    while t < end:
        t += int(rng.expovariate(4) * SECOND) + 100
        for _ in range(rng.randint(1, 4)):
            yield udp_frame(world, t, client, cport, server, 51820,
                            b"\x04\x00\x00\x00" + _filler(rng, rng.randint(32, 1400)))
            t += rng.randint(50, 500)
        t += rtt
        yield udp_frame(world, t, server, 51820, client, cport,
                        b"\x04\x00\x00\x00" + _filler(rng, rng.randint(32, 1400)))


def udp_stream(world: World, t: int) -> Timeline:
    if world.rng.random() < 0.35:
        return rtp_call(world, t)
    return vpn_tunnel(world, t)


def ping(world: World, t: int) -> Timeline:
    """ping -c N: echo requests a second apart, each answered after the round trip;
    now and then the target is down and nothing comes back."""
    rng = world.rng
    src, dst = world.pick(CLIENTS), world.pick(ALL_SERVERS + CLIENTS)
    if src == dst:
        dst = world.pick(ALL_SERVERS)
    ident, rtt, down = rng.getrandbits(16), world.rtt(), rng.random() < 0.04
    for seq in range(1, rng.randint(1, 5) + 1):
        wall = world.wall_clock(t)
        payload = struct.pack("<QQ", int(wall), int(wall % 1 * SECOND)) + _PING_PATTERN
        request = build_icmp(8, 0, ident, seq, payload)
        yield t, World.frame(src, dst, IPPROTO_ICMP, request, ident=rng.getrandbits(16))
        if not down:
            reply = build_icmp(0, 0, ident, seq, payload)
            yield t + rtt, World.frame(dst, src, IPPROTO_ICMP, reply, ident=rng.getrandbits(16),
                                       df=False)
        t += SECOND


def refused_connection(world: World, t: int) -> Timeline:
    """connect() to a closed port: SYN answered by RST/ACK; sometimes tried again."""
    rng = world.rng
    client, server = world.pick(CLIENTS), world.pick(ALL_SERVERS)
    port = rng.choice(CLOSED_TCP_PORTS)
    for _ in range(2 if rng.random() < 0.3 else 1):
        flow = TcpFlow(world, client, world.ephemeral_port(client), server, port, world.rtt())
        yield flow.segment(CLIENT, t, SYN, options=flow._syn_options(CLIENT, t),
                           window=flow.syn_window(CLIENT))
        t += flow.rtt
        yield flow.segment(SERVER, t, RST | ACK, seq=0, window=0, options=b"")
        t += SECOND


def _snmp_get(rng: random.Random) -> bytes:
    """SNMPv2c get-request, community "public", for sysDescr.0 (BER)."""
    varbinds = bytes.fromhex("300e300c06082b060102010101000500")
    pdu = b"\x02\x04" + rng.randbytes(4) + b"\x02\x01\x00\x02\x01\x00" + varbinds
    message = b"\x02\x01\x01\x04\x06public\xa0" + bytes([len(pdu)]) + pdu
    return b"\x30" + bytes([len(message)]) + message


# A service nobody runs on the target, and what a client sends it.
CLOSED_UDP_SERVICES: dict[int, Callable[[random.Random], bytes]] = {
    69: lambda rng: b"\x00\x01" + rng.choice((b"pxelinux.0", b"boot/grub.cfg")) + b"\x00octet\x00",
    123: lambda rng: b"\x23" + bytes(39) + rng.randbytes(8),                  # NTPv4 client
    137: lambda rng: rng.randbytes(2) + bytes.fromhex("0010000100000000000020") +
    b"CKAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\x00\x00\x21\x00\x01",                 # NBSTAT *
    161: _snmp_get,
    1900: lambda rng: (b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n"
                       b"MAN: \"ssdp:discover\"\r\nMX: 1\r\nST: ssdp:all\r\n\r\n"),
    5353: lambda rng: dns_query(rng, 0, f"{rng.choice(LABELS)}.local", 1),
    11211: lambda rng: rng.randbytes(2) + b"\x00\x00\x00\x01\x00\x00stats\r\n",  # memcached
    33434: lambda rng: bytes(range(0x40, 0x60)),                               # traceroute
}


def udp_closed_port(world: World, t: int) -> Timeline:
    """A datagram to a port nobody listens on, answered by ICMP port unreachable that
    quotes it (RELATED); the client retries a couple of times."""
    rng = world.rng
    client, server = world.pick(CLIENTS), world.pick(ALL_SERVERS)
    sport, dport = world.ephemeral_port(client), rng.choice(tuple(CLOSED_UDP_SERVICES))
    payload = CLOSED_UDP_SERVICES[dport](rng)
    if dport == 33434:
        dport += rng.randrange(90)
    rtt = world.rtt()
    for _ in range(rng.randint(1, 3)):
        l4 = build_udp(client, server, sport, dport, payload)
        ident = rng.getrandbits(16)
        yield t, World.frame(client, server, IPPROTO_UDP, l4, ident=ident)
        # The error quotes the offending datagram as far as 576 bytes allow (RFC 1812).
        quoted = build_ipv4(client, server, IPPROTO_UDP, l4, ident=ident, df=True)[:576 - 28]
        error = build_icmp(3, 3, 0, 0, quoted)
        yield t + rtt, World.frame(server, client, IPPROTO_ICMP, error,
                                   ident=rng.getrandbits(16), df=False, tos=0xC0)
        t += SECOND


def syn_scan(world: World, t: int) -> Timeline:
    """nmap -sS against a firewalled host: SYNs to many ports from one source port,
    none answered (all stay [UNREPLIED] SYN_SENT); some probes retransmitted."""
    rng = world.rng
    scanner, target = world.pick(SCANNERS), world.pick(ALL_SERVERS)
    sport = rng.randint(33000, 65000)
    ports = list(SCAN_PORTS) + [rng.randint(1, 65535) for _ in range(rng.randint(10, 70))]
    rng.shuffle(ports)
    ports = list(dict.fromkeys(ports))
    rounds = [ports, [p for p in ports if rng.random() < 0.5]] if rng.random() < 0.3 else [ports]
    isn = {port: rng.getrandbits(32) for port in ports}    # a retransmission repeats its SYN
    ident = rng.getrandbits(16)
    for probes in rounds:
        for port in probes:
            l4 = build_tcp(scanner, target, sport, port, seq=isn[port], flags=SYN,
                           window=1024, options=tcp_options(mss=1460))
            ident += 1
            yield t, World.frame(scanner, target, IPPROTO_TCP, l4, ident=ident, df=False,
                                 ttl=rng.choice((37, 41, 44, 52, 59)))
            t += rng.randint(40, 900)
        t += SECOND


def _tcp_probe(world: World, t: int, flags: int) -> tuple[int, bytes]:
    rng = world.rng
    src, dst = world.pick(SCANNERS), world.pick(ALL_SERVERS)
    l4 = build_tcp(src, dst, rng.randint(33000, 65000), rng.choice(SCAN_PORTS),
                   seq=rng.getrandbits(32), flags=flags, window=1024)
    return t, World.frame(src, dst, IPPROTO_TCP, l4, ident=rng.getrandbits(16), df=False)


def odd_packet(world: World, t: int) -> Timeline:
    """The odd packet conntrack calls INVALID: impossible TCP flag combinations (NULL,
    FIN, Xmas, SYN+FIN, SYN+RST scans), a TCP header cut short, a UDP length field
    larger than the datagram, an echo reply nobody asked for, a segment far outside
    the window of a live connection."""
    rng = world.rng
    variant = rng.choice(("flags", "flags", "short_tcp", "udp_length", "lone_echo_reply",
                          "out_of_window", "out_of_window"))
    if variant == "flags":
        yield _tcp_probe(world, t, rng.choice((0, FIN, FIN | PSH | URG, SYN | FIN, SYN | RST,
                                               FIN | RST)))
    elif variant == "short_tcp":
        src, dst = world.pick(SCANNERS), world.pick(ALL_SERVERS)
        l4 = build_tcp(src, dst, rng.randint(1024, 65000), 80, seq=rng.getrandbits(32), flags=SYN)
        yield t, World.frame(src, dst, IPPROTO_TCP, l4[:rng.choice((8, 12, 16))],
                             ident=rng.getrandbits(16), df=False)
    elif variant == "udp_length":
        src, dst = world.pick(CLIENTS), world.pick(ALL_SERVERS)
        payload = _filler(rng, rng.randint(4, 64))
        l4 = build_udp(src, dst, world.ephemeral_port(src), rng.choice((53, 161, 5060)), payload,
                       length=8 + len(payload) + rng.randint(16, 200))
        yield t, World.frame(src, dst, IPPROTO_UDP, l4, ident=rng.getrandbits(16))
    elif variant == "lone_echo_reply":
        src, dst = world.pick(ALL_SERVERS), world.pick(CLIENTS)
        reply = build_icmp(0, 0, rng.getrandbits(16), rng.randint(1, 50), _filler(rng, 56))
        yield t, World.frame(src, dst, IPPROTO_ICMP, reply, ident=rng.getrandbits(16), df=False)
    else:
        # A short connection that sees a blind-injected segment whose seq lies far
        # beyond anything the receiver offered (modern and pom: "SEQ over upper bound"),
        # then closes normally.  (A segment far *behind* the window would only be
        # ignored as an old retransmission by a modern kernel, not made INVALID.)
        client, server = world.pick(CLIENTS), world.pick(WEB_SERVERS)
        flow = TcpFlow(world, client, world.ephemeral_port(client), server, 80, world.rtt())
        t = yield from flow.handshake(t)
        request, response = http_exchange(rng, "status.example.com", 80)
        t = yield from flow.send_data(CLIENT, t + 200, request)
        t += flow.rtt
        t = yield from flow.send_data(SERVER, t, response[:rng.randint(200, 1400)])
        t += rng.randint(100, 5 * MS)
        beyond = (flow.nxt[SERVER] + rng.randint(10_000_000, 1_000_000_000)) & 0xFFFFFFFF
        yield flow.segment(SERVER, t, ACK | PSH, _filler(rng, 512), seq=beyond)
        t += rng.randint(5 * MS, 200 * MS)
        yield flow.pure_ack(CLIENT, t)
        t += rng.randint(1 * MS, 500 * MS)
        t = yield from flow.close(CLIENT, t)


def fragments(world: World, t: int, src: int, dst: int, l4: bytes, *,
              mtu_payload: int = 1480) -> Iterator[tuple[int, bytes]]:
    """One UDP datagram cut into valid IPv4 fragments (same id, MF on all but the last,
    offsets in 8-byte units), in order or, as old Linux sent them, last first."""
    rng = world.rng
    ident = rng.getrandbits(16)
    pieces = [(offset, l4[offset:offset + mtu_payload]) for offset in range(0, len(l4), mtu_payload)]
    if rng.random() < 0.2:
        pieces.reverse()
    for offset, piece in pieces:
        more = offset + len(piece) < len(l4)
        yield t, World.frame(src, dst, IPPROTO_UDP, piece, ident=ident, df=False, mf=more,
                             frag_offset=offset)
        t += rng.randint(10, 130)


def fragmented_udp(world: World, t: int) -> Timeline:
    """Datagrams larger than the MTU, sent as fragments: a DNS answer with big TXT
    records (EDNS0, 4096-byte buffer), or a large syslog message (one-way)."""
    rng = world.rng
    client = world.pick(CLIENTS)
    port = world.ephemeral_port(client)
    if rng.random() < 0.65:
        resolver = world.pick(RESOLVERS)
        query = dns_query(rng, rng.getrandbits(16), f"_dmarc.{rng.choice(DOMAINS)}", 16, edns=4096)
        yield udp_frame(world, t, client, port, resolver, 53, query)
        t += rng.randint(500, 40 * MS)
        answer = dns_response(rng, query, 0, txt_bytes=rng.randint(1600, 3900))
        l4 = build_udp(resolver, client, 53, port, answer)
        yield from fragments(world, t, resolver, client, l4)
    else:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(world.wall_clock(t)))
        text = (f"<134>1 {stamp} host{client & 0xFF} app 4242 trace - "
                + "stack frame " * rng.randint(130, 500))
        l4 = build_udp(client, LOGHOST, port, 514, text.encode())
        yield from fragments(world, t, client, LOGHOST, l4)


def generic_tunnel(world: World, t: int) -> Timeline:
    """A protocol conntrack only knows generically: GRE (47) carrying pings between
    tunnel addresses, or experimental protocol 253, between two hosts."""
    rng = world.rng
    near, far = world.pick(CLIENTS), world.pick(TUNNEL_ENDS)
    rtt = world.rtt()
    if rng.random() < 0.8:
        inner_a, inner_b = world.pick(TUNNEL_INNER), world.pick(TUNNEL_INNER)
        ident = rng.getrandbits(16)
        for seq in range(1, rng.randint(2, 8) + 1):
            for src, dst, isrc, idst, icmp_type in ((near, far, inner_a, inner_b, 8),
                                                    (far, near, inner_b, inner_a, 0)):
                inner = build_ipv4(isrc, idst, IPPROTO_ICMP,
                                   build_icmp(icmp_type, 0, ident, seq, _PING_PATTERN[:32]),
                                   ident=rng.getrandbits(16))
                yield t, World.frame(src, dst, 47, b"\x00\x00\x08\x00" + inner,
                                     ident=rng.getrandbits(16), df=False)
                t += rtt
            t += rng.randint(100 * MS, 2 * SECOND)
    else:
        answered = rng.random() < 0.7
        for _ in range(rng.randint(1, 5)):
            yield t, World.frame(near, far, 253, _filler(rng, rng.randint(16, 200)),
                                 ident=rng.getrandbits(16), df=False)
            if answered:
                yield t + rtt, World.frame(far, near, 253, _filler(rng, rng.randint(16, 200)),
                                           ident=rng.getrandbits(16), df=False)
            t += rng.randint(50 * MS, 3 * SECOND)


def ipv6_conversation(world: World, t: int) -> Timeline:
    """Dual-stack hosts talking IPv6: an HTTPS fetch over TCP (NEW ... TIME_WAIT), an AAAA
    lookup over UDP, ping6 (echo request and reply), or neighbour discovery (a solicitation
    to the solicited-node group and its advertisement, which conntrack leaves UNTRACKED)."""
    rng = world.rng
    variant = rng.choice(("web", "web", "dns", "dns", "ping", "nd"))
    client = world.pick(CLIENTS6)
    if variant == "web":
        server = world.pick(SERVERS6)
        flow = TcpFlow(world, client, world.ephemeral_port(client), server, 443, world.rtt())
        t = yield from flow.handshake(t)
        request, response = http_exchange(rng, f"{rng.choice(LABELS)}.{rng.choice(DOMAINS)}", 443)
        t = yield from flow.send_data(CLIENT, t + rng.randint(100, 900), request)
        t += flow.rtt
        t = yield from flow.send_data(SERVER, t, response[:rng.randint(200, 20_000)])
        t += rng.randint(30, 40 * MS)
        yield flow.pure_ack(CLIENT, t)
        t = yield from flow.close(rng.choice((CLIENT, SERVER)), t + rng.randint(MS, 500 * MS))
    elif variant == "dns":
        resolver, port = world.pick(RESOLVERS6), world.ephemeral_port(client)
        query = dns_query(rng, rng.getrandbits(16), f"{rng.choice(LABELS)}.{rng.choice(DOMAINS)}", 28)
        yield udp_frame(world, t, client, port, resolver, 53, query)
        t += rng.randint(150, 30 * MS)
        yield udp_frame(world, t, resolver, 53, client, port,
                        dns_response(rng, query, rng.randint(1, 3)))
    elif variant == "ping":
        server, ident, rtt = world.pick(SERVERS6), rng.getrandbits(16), world.rtt()
        for seq in range(1, rng.randint(1, 4) + 1):
            wall = world.wall_clock(t)
            payload = struct.pack("<QQ", int(wall), int(wall % 1 * SECOND)) + _PING_PATTERN
            yield t, World.frame(client, server, IPPROTO_ICMPV6,
                                 build_icmpv6(client, server, 128, 0, ident, seq, payload), ident=0)
            yield t + rtt, World.frame(server, client, IPPROTO_ICMPV6,
                                       build_icmpv6(server, client, 129, 0, ident, seq, payload),
                                       ident=0)
            t += SECOND
    else:
        neighbour = world.pick(CLIENTS6)
        group = SOLICITED_NODE | (neighbour & 0xFFFFFF)
        target = neighbour.to_bytes(16, "big")
        yield t, World.frame(client, group, IPPROTO_ICMPV6,
                             build_icmpv6(client, group, 135, 0, 0, 0, target), ident=0,
                             ttl=ND_HOP_LIMIT)
        # Solicited, override (0x6000 in the first half of the flags word).
        yield t + rng.randint(50, 2 * MS), World.frame(
            neighbour, client, IPPROTO_ICMPV6,
            build_icmpv6(neighbour, client, 136, 0, 0x6000, 0, target), ident=0, ttl=ND_HOP_LIMIT)


FTP_FILES = ("pub/release.tar.gz", "pub/README", "incoming/report.pdf", "mirror/ls-lR.gz",
             "pub/firmware.bin")
FTP_PASSIVE_PORTS = (40000, 50000)     # the server's PASV range (vsftpd pasv_min/max_port)


def _ftp_numbers(address: int, port: int) -> str:
    """h1,h2,h3,h4,p1,p2 of PORT and the 227 reply."""
    return ",".join(str(b) for b in address.to_bytes(4, "big")) + f",{port >> 8},{port & 0xFF}"


def ftp_session(world: World, t: int) -> Timeline:
    """An FTP client: login on port 21, then 1-3 downloads, each announced on the control
    connection by PASV (the 227 reply names the server's data port) or PORT (the client's),
    then the data connection -- the one a conntrack helper expects, RELATED until answered.
    Now and then the server cannot open an active data connection ("425"): nothing
    comes, and the expectation waits.  The first line of each direction is the banner /
    USER, which the kernel's helper never reads, as in every real session."""
    rng = world.rng
    client, server = world.pick(CLIENTS), world.pick(WEB_SERVERS)
    cport = world.ephemeral_port(client)
    world.busy_ports.add((client, cport))
    control = TcpFlow(world, client, cport, server, 21, world.rtt())
    t = yield from control.handshake(t)

    def say(side: int, text: str, after: int) -> Iterator[tuple[int, bytes]]:
        nonlocal t
        t += after
        yield control.segment(side, t, ACK | PSH, text.encode())
        t += control.rtt // 2 + rng.randint(20, 400)
        yield control.pure_ack(1 - side, t)

    yield from say(SERVER, "220 (vsFTPd 3.0.3)\r\n", rng.randint(200, 2 * MS))
    yield from say(CLIENT, "USER anonymous\r\n", rng.randint(5 * MS, 800 * MS))
    yield from say(SERVER, "331 Please specify the password.\r\n", control.rtt // 2)
    yield from say(CLIENT, "PASS guest@\r\n", rng.randint(5 * MS, 800 * MS))
    yield from say(SERVER, "230 Login successful.\r\n", control.rtt // 2)
    yield from say(CLIENT, "TYPE I\r\n", rng.randint(1 * MS, 50 * MS))
    yield from say(SERVER, "200 Switching to Binary mode.\r\n", control.rtt // 2)
    for _ in range(rng.choice((1, 1, 2, 3))):
        if rng.random() < 0.7:
            port = rng.randint(*FTP_PASSIVE_PORTS)
            yield from say(CLIENT, "PASV\r\n", rng.randint(1 * MS, 50 * MS))
            yield from say(SERVER, f"227 Entering Passive Mode ({_ftp_numbers(server, port)}).\r\n",
                           control.rtt // 2)
            data = TcpFlow(world, client, world.ephemeral_port(client), server, port, control.rtt)
            receiver, reachable = CLIENT, True
        else:
            port = world.ephemeral_port(client)
            yield from say(CLIENT, f"PORT {_ftp_numbers(client, port)}\r\n", rng.randint(1 * MS, 50 * MS))
            yield from say(SERVER, "200 PORT command successful. Consider using PASV.\r\n",
                           control.rtt // 2)
            data = TcpFlow(world, server, 20, client, port, control.rtt)
            receiver, reachable = SERVER, rng.random() < 0.75
        yield from say(CLIENT, f"RETR {rng.choice(FTP_FILES)}\r\n", rng.randint(1 * MS, 20 * MS))
        if not reachable:
            yield from say(SERVER, "425 Failed to establish connection.\r\n", 3 * SECOND)
            continue
        yield from say(SERVER, "150 Opening BINARY mode data connection.\r\n", control.rtt // 2)
        t = yield from data.handshake(t + rng.randint(100, 2 * MS))
        size = min(int(rng.lognormvariate(9.0, 1.3)), 300_000)
        t = yield from data.send_data(1 - receiver, t + rng.randint(100, 900), _filler(rng, size))
        t += rng.randint(30, 40 * MS)
        yield data.pure_ack(receiver, t)
        t = yield from data.close(1 - receiver, t + rng.randint(100, 2 * MS))
        yield from say(SERVER, "226 Transfer complete.\r\n", rng.randint(100, 2 * MS))
    yield from say(CLIENT, "QUIT\r\n", rng.randint(50 * MS, 5 * SECOND))
    t += control.rtt // 2
    yield control.segment(SERVER, t, ACK | PSH, b"221 Goodbye.\r\n")
    t = yield from control.close(SERVER, t + rng.randint(50, 500))
    world.busy_ports.discard((client, cport))


# SCTP signalling services (Diameter, M3UA, S1AP, NGAP, X2AP) and the chunk parameter that
# carries an INIT ACK's state cookie.
SCTP_SERVICES = (3868, 3868, 2905, 36412, 38412, 36422)
SCTP_STATE_COOKIE = 7


def sctp_association(world: World, t: int) -> Timeline:
    """An SCTP association (RFC 4960): INIT, INIT ACK with a state cookie, COOKIE ECHO,
    COOKIE ACK (ESTABLISHED, ASSURED), DATA answered by SACK both ways, now and then a
    HEARTBEAT; most end with SHUTDOWN, SHUTDOWN ACK, SHUTDOWN COMPLETE (CLOSED), the others
    stay up.  Each packet carries the peer's initiate tag and a correct CRC32c."""
    rng = world.rng
    client, server = world.pick(CLIENTS), world.pick(MEDIA_SERVERS)
    ports = (world.ephemeral_port(client), rng.choice(SCTP_SERVICES))
    addresses = (client, server)
    tags = (rng.getrandbits(32) | 1, rng.getrandbits(32) | 1)   # the initiate tags, non-zero
    tsn = [rng.getrandbits(32), rng.getrandbits(32)]            # each side's next TSN
    rtt = world.rtt()

    def packet(side: int, at: int, chunks: bytes, vtag: Optional[int] = None) -> tuple[int, bytes]:
        """From `side`, tagged with the peer's initiate tag (INIT: 0)."""
        l4 = build_sctp(ports[side], ports[1 - side], tags[1 - side] if vtag is None else vtag,
                        chunks)
        return at, World.frame(addresses[side], addresses[1 - side], IPPROTO_SCTP, l4,
                               ident=rng.getrandbits(16))

    cookie = _filler(rng, rng.randint(24, 64))
    cookie_param = struct.pack("!HH", SCTP_STATE_COOKIE, 4 + len(cookie)) + cookie
    yield packet(CLIENT, t, build_sctp_init(SCTP_INIT, tags[CLIENT], tsn[CLIENT]), vtag=0)
    t += rtt
    yield packet(SERVER, t, build_sctp_init(SCTP_INIT_ACK, tags[SERVER], tsn[SERVER],
                                            parameters=cookie_param))
    t += rng.randint(20, 200)
    yield packet(CLIENT, t, build_sctp_chunk(SCTP_COOKIE_ECHO, cookie))
    t += rtt
    yield packet(SERVER, t, build_sctp_chunk(SCTP_COOKIE_ACK))
    for _ in range(rng.randint(2, 12)):
        t += rng.randint(5 * MS, 2 * SECOND)
        side = CLIENT if rng.random() < 0.6 else SERVER
        if rng.random() < 0.1:
            info = struct.pack("!HH", 1, 12) + rng.randbytes(8)     # Heartbeat Info
            yield packet(side, t, build_sctp_chunk(SCTP_HEARTBEAT, info))
            t += rtt
            yield packet(1 - side, t, build_sctp_chunk(SCTP_HEARTBEAT_ACK, info))
            continue
        yield packet(side, t, build_sctp_data(tsn[side], _filler(rng, rng.randint(20, 400)),
                                              ppid=46))
        t += rtt
        yield packet(1 - side, t, build_sctp_sack(tsn[side]))
        tsn[side] = (tsn[side] + 1) & 0xFFFFFFFF
    if rng.random() < 0.6:
        t += rng.randint(50 * MS, 2 * SECOND)
        last_received = struct.pack("!I", (tsn[SERVER] - 1) & 0xFFFFFFFF)
        yield packet(CLIENT, t, build_sctp_chunk(SCTP_SHUTDOWN, last_received))
        t += rtt
        yield packet(SERVER, t, build_sctp_chunk(SCTP_SHUTDOWN_ACK))
        t += rng.randint(20, 200)
        yield packet(CLIENT, t, build_sctp_chunk(SCTP_SHUTDOWN_COMPLETE))


# -- the mix ------------------------------------------------------------------------

Scenario = Callable[[World, int], Timeline]

# kind: (conversation, share of steady-state packets, mean packets per conversation
#        (measured over many seeds), conversations launched in the start-up burst).
# The shares sum to 1, so the source sends the rate it is asked for. IPv6 is kind "ipv6"
# (about 4 % of the steady-state packets); everything else is IPv4.
MIX: dict[str, tuple[Scenario, float, float, int]] = {
    "web":         (web_client,         0.28,   28.0, 300),
    "long_lived":  (long_lived_session, 0.06,  170.0, 150),
    "dns":         (dns_lookup,         0.12,    3.3, 300),
    "syslog":      (syslog_sender,      0.03,    3.5, 200),
    "udp_stream":  (udp_stream,         0.16,  310.0,  60),
    "ping":        (ping,               0.05,    5.8, 200),
    "refused":     (refused_connection, 0.03,    2.6, 200),
    "udp_closed":  (udp_closed_port,    0.03,    4.0, 200),
    "syn_scan":    (syn_scan,           0.04,   80.0,   8),
    "invalid":     (odd_packet,         0.03,    3.7, 150),
    "fragments":   (fragmented_udp,     0.05,    3.3, 150),
    "generic":     (generic_tunnel,     0.04,    8.0, 150),
    "sctp":        (sctp_association,   0.02,   20.0,  60),
    "ftp":         (ftp_session,        0.02,   99.0,  40),
    "ipv6":        (ipv6_conversation,  0.04,    6.2, 100),
}
BURST_SECONDS = 2.0


class SyntheticTraffic:
    """Seeded, deterministic synthetic traffic: same seed + start -> same frames, same bytes."""

    def __init__(self, seed: int = 0, rate: float = DEFAULT_RATE, start: float = 0.0) -> None:
        if not rate > 0:
            raise ValueError("rate must be a positive number of packets per second")
        self.seed = seed
        self.rate = float(rate)
        self.start = float(start)

    def frames(self) -> Iterator[tuple[float, bytes]]:
        """(ts, Ethernet frame), endless, ts non-decreasing, starting at `start`."""
        rng = random.Random(self.seed)
        world = World(rng, self.start)
        start_us = round(self.start * SECOND)
        order = itertools.count()
        # Heap items: (time µs, tie-breaker, frame or None, conversation or (kind, steady)).
        pending: list = []
        scale = min(1.0, self.rate / DEFAULT_RATE)
        for kind, (_, share, mean_packets, burst) in MIX.items():
            for _ in range(round(burst * scale)):
                heapq.heappush(pending, (rng.randint(0, int(BURST_SECONDS * SECOND)), next(order),
                                         None, (kind, False)))
            heapq.heappush(pending, (self._gap(rng, kind), next(order), None, (kind, True)))
        while True:
            t, _, frame, what = heapq.heappop(pending)
            if frame is not None:
                # Whole seconds plus microseconds, computed as a pcap reader computes
                # them, so a generated capture replays with bit-identical times.
                seconds, micros = divmod(start_us + t, SECOND)
                yield seconds + micros / SECOND, frame
                upcoming = next(what, None)
            else:
                kind, steady = what
                if steady:
                    heapq.heappush(pending, (t + self._gap(rng, kind), next(order), None, what))
                what = MIX[kind][0](world, t)
                upcoming = next(what, None)
            if upcoming is not None:
                heapq.heappush(pending, (upcoming[0], next(order), upcoming[1], what))

    def _gap(self, rng: random.Random, kind: str) -> int:
        """Microseconds to the next steady-state launch of `kind` (Poisson arrivals)."""
        _, share, mean_packets, _ = MIX[kind]
        per_second = self.rate * share / mean_packets
        return max(1, int(rng.expovariate(per_second) * SECOND))
