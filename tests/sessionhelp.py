"""TCP and UDP conversations with real payloads fed through an Engine on a fake clock, for
the helper tests (test_helpers.py, test_helpers_mount.py): each packet is a real datagram
built by engine/build.py and goes through the engine's whole per-packet path."""
from __future__ import annotations

from engine.build import build_tcp_datagram, build_udp_datagram
from engine.core import Engine
from engine.hooks import LOCAL_OUT
from engine.packet import ACK, FIN, PSH, SYN

CLIENT, SERVER = 0, 1


class TcpSession:
    """One TCP connection between two ends; send() keeps sequence numbers exact."""

    def __init__(self, eng: Engine, client: str, cport: int, server: str, sport: int,
                 isn: tuple = (1000, 5000), feed=None) -> None:
        """`feed(t, datagram)` tracks one datagram (default: the engine at LOCAL_OUT)."""
        self.eng = eng
        self.feed = feed or (lambda t, datagram: eng.feed_datagram(t, datagram, LOCAL_OUT))
        self.ends = ((client, cport), (server, sport))
        self.nxt = list(isn)
        self.results = []

    def segment(self, side: int, t: float, flags: int, payload: bytes = b"",
                seq: int = None):
        (src, sport), (dst, dport) = self.ends[side], self.ends[1 - side]
        if seq is None:
            seq = self.nxt[side]
            self.nxt[side] = (seq + len(payload) + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF
        ack = self.nxt[1 - side] if flags & ACK else 0
        datagram = build_tcp_datagram(src, dst, sport, dport, seq=seq, ack=ack, flags=flags,
                                      payload=payload)
        result = self.feed(t, datagram)
        self.results.append(result)
        return result

    def handshake(self, t: float) -> None:
        self.segment(CLIENT, t, SYN)
        self.segment(SERVER, t, SYN | ACK)
        self.segment(CLIENT, t, ACK)

    def send(self, side: int, t: float, payload: bytes):
        """`side` sends payload (PSH|ACK); the other end acknowledges it."""
        result = self.segment(side, t, PSH | ACK, payload)
        self.segment(1 - side, t, ACK)
        return result

    def close(self, t: float) -> None:
        self.segment(CLIENT, t, FIN | ACK)
        self.segment(SERVER, t, FIN | ACK)
        self.segment(CLIENT, t, ACK)


def ftp_login(session: "TcpSession", t: float) -> None:
    """Handshake, banner and login: after it both directions have a line behind them, so
    the helper reads the next command (the kernel never reads a direction's first line)."""
    session.handshake(t)
    session.send(SERVER, t, b"220 procfs-ct test FTP\r\n")
    session.send(CLIENT, t, b"USER anonymous\r\n")
    session.send(SERVER, t, b"331 Password please\r\n")
    session.send(CLIENT, t, b"PASS guest\r\n")
    session.send(SERVER, t, b"230 Logged in\r\n")


def udp(eng: Engine, t: float, src: str, dst: str, sport: int, dport: int, payload: bytes):
    return eng.feed_datagram(t, build_udp_datagram(src, dst, sport, dport, payload), LOCAL_OUT)
