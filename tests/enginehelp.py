"""Shared helpers for engine tests: an Engine on a fake clock fed with real datagram bytes."""
from __future__ import annotations

from engine.build import build_icmp, build_icmp_datagram, build_ipv4, build_udp_datagram
from engine.core import Engine
from engine.render import render_listing, render_stat
from engine.render_expect import render_expect
from engine.hooks import LOCAL_OUT

GiB = 1 << 30
T0 = 1_700_000_000.0        # the fake clock's start (any epoch second works)


def make_engine(profile: str = "linux", **kwargs) -> Engine:
    kwargs.setdefault("ram_bytes", 24 * GiB)
    kwargs.setdefault("ncpu", 2)
    return Engine(profile, **kwargs)


def udp(eng: Engine, t: float, src: str, dst: str, sport: int, dport: int, payload: bytes = b"x"):
    return eng.feed_datagram(t, build_udp_datagram(src, dst, sport, dport, payload), LOCAL_OUT)


def icmp(eng: Engine, t: float, src: str, dst: str, icmp_type: int, code: int = 0, **kw):
    return eng.feed_datagram(t, build_icmp_datagram(src, dst, icmp_type, code, **kw), LOCAL_OUT)


def icmp_error_about(eng: Engine, t: float, src: str, dst: str, quoted: bytes,
                     icmp_type: int = 3, code: int = 3):
    """An ICMP error from src to dst quoting the first 28 bytes of `quoted`."""
    datagram = build_ipv4(src, dst, 1, build_icmp(icmp_type, code, payload=quoted[:28]))
    return eng.feed_datagram(t, datagram, LOCAL_OUT)


# The engine knows no /proc paths (procfs_ct/tree.py binds them); tests name views by them.
VIEW_TEXT = {
    "net/nf_conntrack": lambda eng, now: render_listing(eng.tracker, now, True).decode(),
    "net/ip_conntrack": lambda eng, now: render_listing(eng.tracker, now, False).decode(),
    "net/stat/nf_conntrack": lambda eng, now: render_stat(eng.tracker, True, eng.ncpu),
    "net/stat/ip_conntrack": lambda eng, now: render_stat(eng.tracker, False, eng.ncpu),
    "net/nf_conntrack_expect": lambda eng, now: render_expect(eng.tracker, now, True),
    "net/ip_conntrack_expect": lambda eng, now: render_expect(eng.tracker, now, False),
}


def view_text(eng: Engine, view: str, now: float) -> str:
    """The text of one /proc view of the engine's table at `now`."""
    return VIEW_TEXT[view](eng, now)


def lines(eng: Engine, now: float, view: str = "net/nf_conntrack") -> list:
    return view_text(eng, view, now).splitlines()
