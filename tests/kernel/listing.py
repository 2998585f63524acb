"""Parse conntrack listing lines and compare two listings the way the differential suite does.

Handles both formats of spec §1: `/proc/net/nf_conntrack` (L3 prefix `ipv4     2`) and
`/proc/net/ip_conntrack` (no prefix). A line is split into its tokens:

    [l3 l3num] l4 l4num [seconds] [protocol info ...] src= dst= <proto part>
    [zone-orig=] [packets= bytes=] [UNREPLIED] src= dst= <proto part> [zone-reply=]
    [packets= bytes=] [ASSURED] mark= [secctx=] zone= [delta-time=] use=

"Protocol info" is what the tracker prints between the timer and the first tuple: the TCP
state name, or on 6.18 for GRE `timeout=30, stream_timeout=180` (observed).

Comparison (`compare_listings`): an unordered multiset match on everything except the
seconds, which may differ by `tolerance` (the kernel counts in jiffies and the snapshot time
is the middle of the read); then the exact text of each matched pair apart from the seconds.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Iterable, Optional

TUPLE_KEYS = {"src", "dst", "sport", "dport", "type", "code", "id", "srckey", "dstkey"}
L3_NAMES = {"ipv4", "ipv6"}
_SECONDS = re.compile(r"-?\d+")


@dataclass(frozen=True)
class ListingEntry:
    l3: Optional[str]                 # "ipv4" in nf_conntrack lines, None in ip_conntrack lines
    l3num: Optional[int]
    l4: str                           # tcp, udp, icmp, gre, unknown, ...
    l4num: int
    seconds: Optional[int]            # None when not printed (flow-offloaded entries)
    info: tuple                       # tokens between the timer and the first tuple
    original: tuple                   # ((key, value), ...) in print order
    reply: tuple
    counters: tuple                   # ((direction, key, value), ...) packets/bytes
    flags: tuple                      # ((position, "[UNREPLIED]"), ...): position = tuples seen before
    extras: tuple                     # ((key, value), ...): mark, zone, zone-orig, use, ...

    @property
    def state(self) -> Optional[str]:
        """TCP (and other stateful trackers') state name, if printed."""
        return self.info[0] if self.info and "=" not in self.info[0] else None

    @property
    def flag_names(self) -> frozenset:
        return frozenset(flag for _, flag in self.flags)

    def extra(self, key: str) -> Optional[str]:
        return dict(self.extras).get(key)

    def key(self) -> "ListingEntry":
        """Everything the comparison must match exactly."""
        return replace(self, seconds=None)


def _split_keeping_spaces(line: str) -> list[str]:
    return re.split(r"(\s+)", line.rstrip("\n"))


def parse_line(line: str) -> ListingEntry:
    tokens = line.split()
    if not tokens:
        raise ValueError("empty listing line")
    pos = 0
    l3 = l3num = None
    if tokens[0] in L3_NAMES:
        l3, l3num, pos = tokens[0], int(tokens[1]), 2
    l4, l4num = tokens[pos], int(tokens[pos + 1])
    pos += 2
    seconds = None
    if pos < len(tokens) and _SECONDS.fullmatch(tokens[pos]):
        seconds, pos = int(tokens[pos]), pos + 1
    info = []
    while pos < len(tokens) and not tokens[pos].startswith("src="):
        info.append(tokens[pos])
        pos += 1
    tuples: list[list] = []
    counters, flags, extras = [], [], []
    for token in tokens[pos:]:
        if token.startswith("[") and token.endswith("]"):
            flags.append((len(tuples), token))
            continue
        key, sep, value = token.partition("=")
        if not sep:
            raise ValueError(f"unexpected token {token!r} in {line!r}")
        if key == "src":
            if len(tuples) == 2:
                raise ValueError(f"more than two tuples in {line!r}")
            tuples.append([])
        if key in TUPLE_KEYS:
            if not tuples:
                raise ValueError(f"{token!r} before any src= in {line!r}")
            tuples[-1].append((key, value))
        elif key in ("packets", "bytes"):
            counters.append((len(tuples) - 1, key, int(value)))
        else:
            extras.append((key, value))
    if len(tuples) != 2:
        raise ValueError(f"expected two tuples in {line!r}")
    return ListingEntry(l3, l3num, l4, l4num, seconds, tuple(info), tuple(tuples[0]),
                        tuple(tuples[1]), tuple(counters), tuple(flags), tuple(extras))


def text_without_seconds(line: str) -> str:
    """The line's exact text with the seconds token replaced by `<s>` (spacing kept)."""
    parts = _split_keeping_spaces(line)
    words = [i for i, part in enumerate(parts) if part and not part.isspace()]
    index = 4 if parts[words[0]] in L3_NAMES else 2
    if index < len(words) and _SECONDS.fullmatch(parts[words[index]]):
        parts[words[index]] = "<s>"
    return "".join(parts)


def parse_listing(text_or_lines) -> list[ListingEntry]:
    lines = text_or_lines.splitlines() if isinstance(text_or_lines, str) else text_or_lines
    return [parse_line(line) for line in lines if line.strip()]


def compare_listings(kernel_lines: Iterable[str], engine_lines: Iterable[str],
                     tolerance: int = 1) -> list[str]:
    """Differences between two listings, one readable string each; [] means they agree."""
    groups: dict = defaultdict(lambda: ([], []))
    for side, lines in ((0, kernel_lines), (1, engine_lines)):
        for line in lines:
            if line.strip():
                groups[parse_line(line).key()][side].append(line)
    problems = []
    for key, (kernel, engine) in groups.items():
        by_seconds = lambda line: parse_line(line).seconds or 0  # noqa: E731
        kernel.sort(key=by_seconds)
        engine.sort(key=by_seconds)
        for k_line, e_line in zip(kernel, engine):
            k_secs, e_secs = by_seconds(k_line), by_seconds(e_line)
            if abs(k_secs - e_secs) > tolerance:
                problems.append(f"seconds left: kernel {k_secs}, engine {e_secs}: {k_line}")
            elif text_without_seconds(k_line) != text_without_seconds(e_line):
                problems.append(f"text differs:\n  kernel: {k_line!r}\n  engine: {e_line!r}")
        for line in kernel[len(engine):]:
            problems.append(f"missing from engine: {line}")
        for line in engine[len(kernel):]:
            problems.append(f"engine only:         {line}")
    return sorted(problems, key=lambda p: (not p.startswith("seconds"), p))
