"""The expectation listings: net/nf_conntrack_expect and the 2.6 net/ip_conntrack_expect.

nf_conntrack_expect.c exp_seq_show():
    "%ld " countdown, "l3proto = %u proto=%u ", the expected tuple (wildcards print as 0),
    the flags (PERMANENT,INACTIVE,USERSPACE), then the master's helper name (a space
    before it only when there are flags), newline.
ip_conntrack_standalone.c (2.6) exp_seq_show():
    "%ld proto=%u " and the tuple, whose last token keeps its trailing space, newline.
"""
from __future__ import annotations

from typing import List

from .expect import FLAG_NAMES, Expectation
from .tracker import Tracker


def _tuple_text(tracker: Tracker, exp: Expectation) -> str:
    l3 = exp.l3
    src = 0 if exp.src is None else exp.src
    sport = 0 if exp.sport is None else exp.sport
    l4 = tracker.tracker_of(exp.proto)
    return (f"src={l3.addr_text(src)} dst={l3.addr_text(exp.dst)} "
            f"{l4.tuple_text(sport, exp.dport)}")


def expect_line(tracker: Tracker, exp: Expectation, now: float, modern: bool) -> str:
    head = str(exp.seconds_left(now)) + " "
    if not modern:
        return f"{head}proto={exp.proto} {_tuple_text(tracker, exp)}\n"
    flags = ",".join(name for bit, name in FLAG_NAMES if exp.flags & bit)
    helper = f"{' ' if exp.flags else ''}{exp.helper.name}" if exp.helper is not None else ""
    return (f"{head}l3proto = {exp.l3.FAMILY} proto={exp.proto} {_tuple_text(tracker, exp)}"
            f"{flags}{helper}\n")


def render_expect(tracker: Tracker, now: float, modern: bool) -> str:
    """Every live expectation, newest first; those whose time is up by `now` left out."""
    lines: List[str] = [expect_line(tracker, exp, now, modern)
                        for exp in tracker.expects if exp.expires > now]
    return "".join(lines)
