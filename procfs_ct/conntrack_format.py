"""conntrack-tools' text formats, made from /proc listing lines (no netlink, no I/O).

Observed against conntrack-tools 1.4.7 on kernel 6.18 in a network namespace (the
same entries read from /proc/net/nf_conntrack and from `conntrack -L`):

  /proc:          ipv4     2 tcp      6 119 TIME_WAIT src=.. [ASSURED] mark=0 zone=0 use=2
  conntrack -L:   tcp      6 119 TIME_WAIT src=.. [ASSURED] mark=0 use=1
  -o extended:    ipv4     2 tcp      6 119 TIME_WAIT src=.. [ASSURED] mark=0 use=1
  conntrack -E:       [NEW] tcp      6 120 SYN_SENT src=.. [UNREPLIED] src=..
                   [UPDATE] tcp      6 60 SYN_RECV src=.. src=..
                  [DESTROY] udp      17 src=.. [UNREPLIED] src=..

netlink omits the default zone and counts no reference of its own (the /proc
listing holds one while it prints, so use= is one less); events carry neither use=
nor a zero mark, and a destroy event no timeout once the timer has run out.  IPv6
addresses, which /proc prints in full (%pI6), come out of inet_ntop() compressed:

  /proc:          ipv6     10 udp      17 29 src=0000:0000:0000:0000:0000:0000:0000:0001 ..
  conntrack -L:   udp      17 29 src=::1 dst=::1 sport=47001 dport=7001 [UNREPLIED] ..

and `conntrack -L` without -f lists both families.
"""
from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

VERSION = "conntrack v1.4.7 (conntrack-tools)"
L3_FIELD = "{:<8} {} "                 # "ipv4     2 ": name in 8 columns, number
L3_NUMBERS = {"ipv4": 2, "ipv6": 10}
PROTOCOLS = {"tcp": 6, "udp": 17, "udplite": 136, "icmp": 1, "icmpv6": 58, "sctp": 132,
             "dccp": 33, "gre": 47}
FAMILIES = {"ipv4": "ipv4", "ipv6": "ipv6"}
# Protocols whose entries have ports, and so accept --sport/--dport (as conntrack registers them).
PORT_PROTOCOLS = frozenset({"tcp", "udp", "udplite", "sctp", "dccp"})
TCP_STATES = ("NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT",
              "LAST_ACK", "TIME_WAIT", "CLOSE", "LISTEN", "SYN_SENT2")
# --status names, and what /proc shows for each: a flag that is there, or one that is not.
STATUS_PRESENT = {"ASSURED": "ASSURED", "OFFLOAD": "OFFLOAD", "HW_OFFLOAD": "HW_OFFLOAD",
                  "EXPECTED": "EXPECTED", "FIXED_TIMEOUT": "FIXED_TIMEOUT"}
STATUS_ABSENT = {"SEEN_REPLY": "UNREPLIED"}
STATUS_NAMES = frozenset(STATUS_PRESENT) | frozenset(STATUS_ABSENT) | {"UNSET"}
EVENT_KINDS = ("NEW", "UPDATE", "DESTROY")
# conntrack -S: its field names and the /proc/net/stat column each comes from (modern and
# 2.6 headers; a column the file lacks reads 0).
CPU_STATS = (("found", "found"), ("invalid", "invalid"), ("insert", "insert"),
             ("insert_failed", "insert_failed"), ("drop", "drop"),
             ("early_drop", "early_drop"), ("error", "icmp_error"),
             ("search_restart", "search_restart"), ("clash_resolve", "clashres"),
             ("chaintoolong", "chainlength"))
EXPECT_STATS = (("expect_new", "expect_new"), ("expect_create", "expect_create"),
                ("expect_delete", "expect_delete"))

_ZERO_ZONE = re.compile(r" zone=0(?= |$)")
_USE = re.compile(r"(?<= )use=(\d+)(?= |$)")
_MARK_ZERO = re.compile(r" mark=0(?= |$)")
_USE_FIELD = re.compile(r" use=\d+(?= |$)")


@dataclass(frozen=True)
class Flow:
    """One entry of a /proc listing, as far as conntrack's filters and formats need it."""
    line: str                              # as read, without the newline
    l3: str                                # ipv4 / ipv6
    l4: str                                # tcp, udp, icmp, unknown, ...
    l4num: int
    seconds: int
    state: Optional[str]
    orig: Dict[str, str]                   # src, dst, sport, dport, type, code, id, ...
    reply: Dict[str, str]
    flags: FrozenSet[str]                  # UNREPLIED, ASSURED, OFFLOAD, ...
    fields: Dict[str, str] = field(default_factory=dict)   # mark, zone, use, ...
    modern: bool = True                    # an nf_conntrack line (l3 prefix, own reference)

    @property
    def key(self) -> Tuple[str, int, Tuple[Tuple[str, str], ...]]:
        """What identifies the connection across polls: protocol and original tuple."""
        return (self.l3, self.l4num, tuple(sorted(self.orig.items())))


def _strip_l3(line: str) -> str:
    match = re.match(r"^(ipv4|ipv6)\s+\d+ ", line)
    return line[match.end():] if match else line


def parse_line(line: str) -> Flow:
    """A line of /proc/net/nf_conntrack (or ip_conntrack); ValueError if it is not one."""
    line = line.rstrip("\n")
    tokens = line.split()
    modern = bool(tokens) and tokens[0] in L3_NUMBERS
    rest = tokens[2:] if modern else tokens
    if len(rest) < 3:
        raise ValueError(f"not a conntrack line: {line!r}")
    l3 = tokens[0] if modern else "ipv4"
    l4, l4num, seconds = rest[0], int(rest[1]), int(rest[2])
    i = 3
    state = None
    if i < len(rest) and "=" not in rest[i] and not rest[i].startswith("["):
        state = rest[i]
        i += 1
    orig: Dict[str, str] = {}
    reply: Dict[str, str] = {}
    flags = set()
    fields: Dict[str, str] = {}
    tuple_now: Optional[Dict[str, str]] = None
    for token in rest[i:]:
        if token.startswith("[") and token.endswith("]"):
            flags.add(token[1:-1])
            continue
        name, sep, value = token.partition("=")
        if not sep:
            continue
        if name == "src":
            tuple_now = orig if not orig else reply
        if name in ("mark", "zone", "use", "secctx", "delta-time", "zone-orig", "zone-reply",
                    "packets", "bytes") or tuple_now is None:
            fields.setdefault(name, value)
            continue
        tuple_now.setdefault(name, value)
    return Flow(line, l3, l4, l4num, seconds, state, orig, reply, frozenset(flags), fields, modern)


def parse_listing(text: str) -> List[Flow]:
    return [parse_line(line) for line in text.splitlines() if line.strip()]


def netlink_use(flow: Flow) -> int:
    use = int(flow.fields.get("use", "1"))
    return max(1, use - 1) if flow.modern else use


# An address as /proc prints an IPv6 one: eight groups of four hex digits.
_FULL_IPV6 = re.compile(r"\b(src|dst)=((?:[0-9a-f]{4}:){7}[0-9a-f]{4})\b")


def _compressed(match: "re.Match[str]") -> str:
    packed = bytes.fromhex(match.group(2).replace(":", ""))
    return f"{match.group(1)}={socket.inet_ntop(socket.AF_INET6, packed)}"


def list_line(flow: Flow, extended: bool = False) -> str:
    """The flow as `conntrack -L` prints it (with -o extended: the layer-3 prefix too)."""
    line = flow.line if flow.modern else L3_FIELD.format("ipv4", 2) + flow.line
    if flow.l3 == "ipv6":
        line = _FULL_IPV6.sub(_compressed, line)
    if "mark" not in flow.fields:                 # 2.6-format lines: netlink always has it
        line = _USE.sub(lambda m: "mark=0 " + m.group(0), line, count=1)
    line = _ZERO_ZONE.sub("", line)
    line = _USE.sub(f"use={netlink_use(flow)}", line, count=1)
    return line if extended else _strip_l3(line)


def event_line(kind: str, flow: Flow, extended: bool = False, expired: bool = True) -> str:
    """The flow as `conntrack -E` prints an event of `kind` (NEW, UPDATE, DESTROY)."""
    line = list_line(flow, extended=True)
    line = _USE_FIELD.sub("", _MARK_ZERO.sub("", line))
    if kind == "DESTROY" and expired:
        # No timeout in a destroy event once the timer ran out (kernel: skip_zero).
        line = re.sub(r"^(\S+\s+\d+ \S+\s+\d+) \d+ ", r"\1 ", line, count=1)
    if not extended:
        line = _strip_l3(line)
    return f"{'[' + kind + ']':>9} {line}"


def diff_events(before: Dict[tuple, Flow], after: Dict[tuple, Flow]) -> List[Tuple[str, Flow]]:
    """The events that lead from one listing to the next: entries that appeared (NEW),
    changed state or flags (UPDATE; a timer counting down is no event), or went (DESTROY)."""
    events: List[Tuple[str, Flow]] = []
    for key, flow in after.items():
        old = before.get(key)
        if old is None:
            events.append(("NEW", flow))
        elif (old.state, old.flags) != (flow.state, flow.flags):
            events.append(("UPDATE", flow))
    events.extend(("DESTROY", flow) for key, flow in before.items() if key not in after)
    return events


def by_key(flows: Iterable[Flow]) -> Dict[tuple, Flow]:
    return {flow.key: flow for flow in flows}


# -- statistics -------------------------------------------------------------------------------
def parse_stat(text: str) -> List[Dict[str, int]]:
    """/proc/net/stat/nf_conntrack: one dict per CPU row, column name -> value (hex)."""
    lines = text.splitlines()
    if not lines:
        return []
    header = lines[0].split()
    return [dict(zip(header, (int(v, 16) for v in row.split()))) for row in lines[1:] if row.strip()]


def stat_lines(rows: Sequence[Dict[str, int]], expect: bool = False) -> List[str]:
    """`conntrack -S` (or `-S expect`): one line per CPU, in conntrack's format."""
    names = EXPECT_STATS if expect else CPU_STATS
    return ["cpu=%-4u\t" % cpu + "".join(f"{name}={row.get(column, 0)} " for name, column in names)
            for cpu, row in enumerate(rows)]


# -- filters ----------------------------------------------------------------------------------
@dataclass
class Filter:
    """What -p, -s, -d, -r, -q, --sport, --dport, --state, -u, -m, -w and -f select."""
    family: Optional[str] = None
    protocol: Optional[int] = None
    orig: Dict[str, str] = field(default_factory=dict)
    reply: Dict[str, str] = field(default_factory=dict)
    state: Optional[str] = None
    status: FrozenSet[str] = frozenset()
    mark: Optional[Tuple[int, int]] = None          # value, mask
    zone: Optional[int] = None
    nat: bool = False                               # -n/-g/-j: entries with NAT (none here)

    def matches(self, flow: Flow) -> bool:
        if self.nat:
            return False
        if self.family is not None and flow.l3 != self.family:
            return False
        if self.protocol is not None and flow.l4num != self.protocol:
            return False
        for want, have in ((self.orig, flow.orig), (self.reply, flow.reply)):
            for name, value in want.items():
                if not _same(name, value, have.get(name)):
                    return False
        if self.state is not None and flow.state != self.state:
            return False
        for name in self.status:
            if name in STATUS_PRESENT and STATUS_PRESENT[name] not in flow.flags:
                return False
            if name in STATUS_ABSENT and STATUS_ABSENT[name] in flow.flags:
                return False
        if self.mark is not None:
            value, mask = self.mark
            if int(flow.fields.get("mark", "0")) & mask != value & mask:
                return False
        if self.zone is not None and int(flow.fields.get("zone", "0")) != self.zone:
            return False
        return True


def _same(name: str, want: str, have: Optional[str]) -> bool:
    if have is None:
        return False
    if name in ("src", "dst"):
        try:
            return ipaddress.ip_address(want) == ipaddress.ip_address(have)
        except ValueError:
            return False
    return want == have
