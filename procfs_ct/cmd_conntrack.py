"""`procfs-ct conntrack ...`: conntrack-tools' read commands, answered from /proc files.

It never talks netlink: it reads net/nf_conntrack, net/nf_conntrack_expect,
net/stat/nf_conntrack and sys/net/netfilter/nf_conntrack_count under /proc (inside
`procfs-ct exec`, the emulation) or under $PROCFS_CT_ROOT (a procfs-ct mount point).
Messages, output formats and exit codes are conntrack-tools 1.4.7's (observed on this
machine, see conntrack_format.py); commands that would change the table are refused.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Set, TextIO, Tuple

from procfs_ct import conntrack_format as fmt

HELP = ("conntrack-tools' -L, -C, -S, -E (and `-L expect`) read from /proc files instead of "
        "netlink: `procfs-ct conntrack -L -p tcp --dport 22`. Write commands are refused.")
ROOT_ENV = "PROCFS_CT_ROOT"
DEFAULT_ROOT = "/proc"
LISTING = {"conntrack": "net/nf_conntrack", "expect": "net/nf_conntrack_expect"}
STAT_FILE = "net/stat/nf_conntrack"
COUNT_FILE = "sys/net/netfilter/nf_conntrack_count"
POLL_SECONDS = 0.2                     # -E: how often the listing is read and compared
PARAMETER_PROBLEM, OTHER_PROBLEM = 2, 1          # conntrack's exit codes
TRY_HELP = "Try `conntrack -h' or 'conntrack --help' for more information."

COMMANDS = {"-L": "dump", "--dump": "dump", "-C": "count", "--count": "count",
            "-S": "stats", "--stats": "stats", "-E": "event", "--event": "event",
            "-G": "get", "--get": "get", "-D": "delete", "--delete": "delete",
            "-I": "create", "--create": "create", "-U": "update", "--update": "update",
            "-F": "flush", "--flush": "flush", "-h": "help", "--help": "help",
            "-V": "version", "--version": "version"}
WRITE_COMMANDS = {"delete": "-D", "create": "-I", "update": "-U", "flush": "-F"}
TABLES = {"dump": ("conntrack", "expect", "dying", "unconfirmed"),
          "count": ("conntrack", "expect"), "stats": ("conntrack", "expect"),
          "event": ("conntrack", "expect")}
# (canonical name as conntrack's messages spell it, its spellings, takes an argument)
OPTION_TABLE = (
    ("--protonum", ("-p", "--protonum", "--proto"), True),
    ("--family", ("-f", "--family"), True),
    ("--orig-src", ("-s", "--src", "--orig-src"), True),
    ("--orig-dst", ("-d", "--dst", "--orig-dst"), True),
    ("--reply-src", ("-r", "--reply-src"), True),
    ("--reply-dst", ("-q", "--reply-dst"), True),
    ("--status", ("-u", "--status"), True),
    ("--mark", ("-m", "--mark"), True),
    ("--zone", ("-w", "--zone"), True),
    ("--orig-zone", ("--orig-zone",), True),
    ("--reply-zone", ("--reply-zone",), True),
    ("--output", ("-o", "--output"), True),
    ("--event-mask", ("-e", "--event-mask"), True),
    ("--timeout", ("-t", "--timeout"), True),
    ("--buffer-size", ("-b", "--buffer-size"), True),
    ("--secmark", ("-c", "--secmark"), True),
    ("--label", ("-l", "--label"), True),
    ("--zero", ("-z", "--zero"), False),
    ("--src-nat", ("-n", "--src-nat"), False),
    ("--dst-nat", ("-g", "--dst-nat"), False),
    ("--any-nat", ("-j", "--any-nat"), False),
)
OPTIONS: Dict[str, Tuple[str, bool]] = {
    spelling: (canonical, takes_arg)
    for canonical, spellings, takes_arg in OPTION_TABLE for spelling in spellings}
# options a protocol brings (conntrack registers them when -p names it)
PORT_OPTIONS = {"--sport": ("orig", "sport"), "--orig-port-src": ("orig", "sport"),
                "--dport": ("orig", "dport"), "--orig-port-dst": ("orig", "dport"),
                "--reply-port-src": ("reply", "sport"), "--reply-port-dst": ("reply", "dport")}
ICMP_OPTIONS = {"--icmp-type": "type", "--icmp-code": "code", "--icmp-id": "id"}
# which options each read command takes (others: "Illegal option `--x' with this command")
FILTER_OPTIONS = {"--protonum", "--family", "--orig-src", "--orig-dst", "--reply-src",
                  "--reply-dst", "--status", "--mark", "--zone", "--orig-zone", "--reply-zone",
                  "--src-nat", "--dst-nat", "--any-nat", "--label", "--secmark", "--output",
                  "--buffer-size"}
# --sport, --state, --icmp-type...: only ever given after -p, which -C and -S refuse
PROTOCOL_OPTIONS = set(PORT_OPTIONS) | {"--state"} | set(ICMP_OPTIONS)
ALLOWED = {"dump": FILTER_OPTIONS | PROTOCOL_OPTIONS | {"--zero"},
           "event": FILTER_OPTIONS | PROTOCOL_OPTIONS | {"--event-mask"},
           "count": set(), "stats": set()}     # 1.4.7: `-C -f ipv4` is an illegal option too
OUTPUT_SUPPORTED = {"extended"}
OUTPUT_NOTHING_TO_ADD = {"labels", "userspace", "ktimestamp"}    # no labels, no userspace ids
OUTPUT_KNOWN = {"xml", "extended", "timestamp", "id", "ktimestamp", "labels", "userspace"}
EVENT_MASK_NAMES = {"NEW": {"NEW"}, "UPDATE": {"UPDATE"}, "UPDATES": {"UPDATE"},
                    "DESTROY": {"DESTROY"}, "ALL": set(fmt.EVENT_KINDS)}


class ParameterProblem(Exception):
    """conntrack's PARAMETER_PROBLEM: the message, the hint, exit 2."""


class OtherProblem(Exception):
    """conntrack's OTHER_PROBLEM: the message, exit 1."""


@dataclass
class Request:
    command: Optional[str] = None
    table: str = "conntrack"
    filter: fmt.Filter = field(default_factory=fmt.Filter)
    protocol_name: Optional[str] = None
    extended: bool = False
    event_kinds: Set[str] = field(default_factory=lambda: set(fmt.EVENT_KINDS))
    options: List[str] = field(default_factory=list)      # canonical names given


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Nothing for argparse: conntrack's own option syntax is parsed by run_argv()."""


def run(args: argparse.Namespace) -> int:
    return run_argv([])


def run_argv(argv: Sequence[str], out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        request = parse_arguments(list(argv))
        return execute(request, out, err)
    except ParameterProblem as exc:
        err.write(f"{fmt.VERSION}: {exc}\n{TRY_HELP}\n")
        return PARAMETER_PROBLEM
    except OtherProblem as exc:
        err.write(f"{fmt.VERSION}: {exc}\n")
        return OTHER_PROBLEM


# -- arguments --------------------------------------------------------------------------------
def _split(argv: List[str]) -> List[Tuple[str, Optional[str]]]:
    """getopt_long's view: ("--opt", inline value or None), or ("", positional)."""
    items: List[Tuple[str, Optional[str]]] = []
    for arg in argv:
        if arg.startswith("--") and "=" in arg:
            name, value = arg.split("=", 1)
            items.append((name, value))
        elif arg.startswith("--") or (arg.startswith("-") and len(arg) == 2):
            items.append((arg, None))
        elif arg.startswith("-") and len(arg) > 2:
            items.append((arg[:2], arg[2:]))                # -ptcp
        else:
            items.append(("", arg))
    return items


def parse_arguments(argv: List[str]) -> Request:
    request = Request()
    items = _split(argv)
    i = 0
    while i < len(items):
        name, value = items[i]
        i += 1
        if name == "":
            if request.command in TABLES and request.table == "conntrack" and not request.options:
                if value not in TABLES[request.command]:
                    raise ParameterProblem(f"unknown type `{value}'")
                request.table = value
                continue
            raise ParameterProblem(f"unknown type `{value}'")
        if name in COMMANDS:
            if request.command is not None:
                raise ParameterProblem("Invalid commands combination")
            request.command = COMMANDS[name]
            continue
        if name in OPTIONS or name in PORT_OPTIONS or name == "--state" or name in ICMP_OPTIONS:
            takes_arg = OPTIONS[name][1] if name in OPTIONS else True
            if takes_arg and value is None:
                if i >= len(items) or items[i][0] != "":
                    raise ParameterProblem(f"option `{name}' requires an argument")
                value = items[i][1]
                i += 1
            _apply_option(request, name, value)
            continue
        raise ParameterProblem(f"unknown option `{name}'")
    return request


def _apply_option(request: Request, name: str, value: Optional[str]) -> None:
    flt = request.filter
    proto = request.protocol_name
    if name in PORT_OPTIONS:
        if proto not in fmt.PORT_PROTOCOLS:
            raise ParameterProblem(f"unknown option `{name}'")
        side, key = PORT_OPTIONS[name]
        getattr(flt, side)[key] = str(_number(value, 0xFFFF, wrap=True))
        request.options.append(name)
        return
    if name == "--state":
        if proto != "tcp":
            raise ParameterProblem(f"unknown option `{name}'")
        if value.upper() not in fmt.TCP_STATES:
            raise ParameterProblem(f"unknown TCP state `{value}'")
        flt.state = value.upper()
        request.options.append(name)
        return
    if name in ICMP_OPTIONS:
        if proto not in ("icmp", "icmpv6"):
            raise ParameterProblem(f"unknown option `{name}'")
        flt.orig[ICMP_OPTIONS[name]] = str(_number(value, 0xFFFF))
        request.options.append(name)
        return
    canonical = OPTIONS[name][0]
    request.options.append(canonical)
    if canonical == "--protonum":
        number = fmt.PROTOCOLS.get(value.lower()) if not value.isdigit() else int(value)
        if number is None or number > 255:
            raise ParameterProblem(f"`{value}' unsupported protocol")
        flt.protocol = number
        request.protocol_name = next((n for n, v in fmt.PROTOCOLS.items() if v == number), None)
    elif canonical == "--family":
        if value not in fmt.FAMILIES:
            raise ParameterProblem(f"`{value}' unsupported protocol")
        flt.family = fmt.FAMILIES[value]
    elif canonical in ("--orig-src", "--orig-dst", "--reply-src", "--reply-dst"):
        side = flt.orig if canonical.startswith("--orig") else flt.reply
        side["src" if canonical.endswith("src") else "dst"] = _address(value)
    elif canonical == "--status":
        names = value.split(",")
        for status in names:
            if status not in fmt.STATUS_NAMES:
                raise ParameterProblem(f"Bad parameter `{status}'")
        flt.status = frozenset(names) - {"UNSET"}
    elif canonical == "--mark":
        mark, _, mask = value.partition("/")
        flt.mark = (_number(mark, 0xFFFFFFFF), _number(mask, 0xFFFFFFFF) if mask else 0xFFFFFFFF)
    elif canonical == "--zone":
        flt.zone = _number(value, 0xFFFF)
    elif canonical in ("--src-nat", "--dst-nat", "--any-nat"):
        flt.nat = True                      # no NAT is emulated: nothing has it
    elif canonical == "--output":
        for kind in value.split(","):
            if kind not in OUTPUT_KNOWN:
                raise ParameterProblem(f"Bad parameter `{kind}'")
            if kind not in OUTPUT_SUPPORTED | OUTPUT_NOTHING_TO_ADD:
                raise OtherProblem(f"-o {kind}: not supported by procfs-ct conntrack "
                                   f"(it prints the default and extended formats)")
        request.extended = "extended" in value.split(",")
    elif canonical == "--event-mask":
        kinds: Set[str] = set()
        for kind in value.split(","):
            if kind not in EVENT_MASK_NAMES:
                raise ParameterProblem(f"Bad parameter `{kind}'")
            kinds |= EVENT_MASK_NAMES[kind]
        request.event_kinds = kinds


def _number(text: str, limit: int, wrap: bool = False) -> int:
    try:
        number = int(text, 0)
    except ValueError:
        # conntrack reads these with strtoul: garbage is 0, not an error (observed: --sport abc)
        return 0
    return number & limit if wrap else min(max(number, 0), limit)


def _address(text: str) -> str:
    """An address as conntrack accepts it: inet_aton forms for IPv4 ("1.2.3"), or IPv6."""
    try:
        return socket.inet_ntoa(socket.inet_aton(text))
    except OSError:
        pass
    try:
        return socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, text))
    except OSError:
        raise ParameterProblem(f"Invalid IP address `{text}'") from None


# -- commands ---------------------------------------------------------------------------------
def execute(request: Request, out: TextIO, err: TextIO) -> int:
    command = request.command
    if command is None or command == "help":
        out.write(USAGE)
        return 0
    if command == "version":
        out.write(fmt.VERSION + "\n")
        return 0
    if command in WRITE_COMMANDS:
        raise OtherProblem(f"Operation failed: Operation not permitted ({WRITE_COMMANDS[command]}: "
                           f"procfs-ct emulates conntrack from /proc files; its table cannot "
                           f"be changed from here)")
    if command == "get":
        raise OtherProblem("Operation failed: -G is not supported by procfs-ct conntrack "
                           "(use -L with filters)")
    for option in request.options:              # canonical names, as given
        if option not in ALLOWED[command]:
            raise ParameterProblem(f"Illegal option `{option}' with this command")
    if command == "dump":
        return _dump(request, out, err)
    if command == "count":
        return _count(request, out)
    if command == "stats":
        rows = fmt.parse_stat(_read(STAT_FILE))
        out.write("".join(line + "\n" for line in fmt.stat_lines(rows, request.table == "expect")))
        return 0
    return _events(request, out, err)


def root() -> str:
    return os.environ.get(ROOT_ENV) or DEFAULT_ROOT


def _read(rel: str) -> str:
    path = os.path.join(root(), rel)
    try:
        with open(path) as f:
            return f.read()
    except OSError as exc:
        raise OtherProblem(f"Operation failed: {path}: {exc.strerror}") from None


def _flows(table: str) -> List[fmt.Flow]:
    if table not in LISTING:
        return []                            # dying, unconfirmed: never listed by /proc
    return fmt.parse_listing(_read(LISTING[table]))


def _dump(request: Request, out: TextIO, err: TextIO) -> int:
    if request.table == "expect":
        lines = [line for line in _read(LISTING["expect"]).splitlines() if line.strip()]
        out.write("".join(line + "\n" for line in lines))
        out.flush()
        err.write(f"{fmt.VERSION}: {len(lines)} expectations have been shown.\n")
        return 0
    shown = 0
    for flow in _flows(request.table):
        if request.filter.matches(flow):
            out.write(fmt.list_line(flow, request.extended) + "\n")
            shown += 1
    out.flush()
    err.write(f"{fmt.VERSION}: {shown} flow entries have been shown.\n")
    return 0


def _count(request: Request, out: TextIO) -> int:
    if request.table == "expect":
        count = sum(1 for line in _read(LISTING["expect"]).splitlines() if line.strip())
    else:
        count = int(_read(COUNT_FILE).split()[0])
    out.write(f"{count}\n")
    return 0


def _events(request: Request, out: TextIO, err: TextIO) -> int:
    """Poll the listing and print what changed, until SIGINT or SIGTERM."""
    stop = {"now": False}

    def on_signal(sig: int, frame: object) -> None:
        stop["now"] = True
    previous_handlers = {sig: signal.signal(sig, on_signal)
                         for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    shown = 0
    try:
        before = fmt.by_key(f for f in _flows(request.table) if request.filter.matches(f))
        while not stop["now"]:
            time.sleep(POLL_SECONDS)
            if stop["now"]:
                break
            after = fmt.by_key(f for f in _flows(request.table) if request.filter.matches(f))
            for kind, flow in fmt.diff_events(before, after):
                if kind in request.event_kinds:
                    out.write(fmt.event_line(kind, flow, request.extended) + "\n")
                    shown += 1
            out.flush()
            before = after
    finally:
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
    what = "expectation events" if request.table == "expect" else "flow events"
    err.write(f"{fmt.VERSION}: {shown} {what} have been shown.\n")
    return 0


USAGE = """\
Command line interface for the connection tracking system. Version 1.4.7
(procfs-ct conntrack: reads /proc files, never netlink; the table cannot be changed)
Usage: conntrack [commands] [options]

Commands:
  -L [table] [options]\t\tList conntrack or expectation table
  -E [table] [options]\t\tShow events (by polling the listing)
  -C [table]\t\t\tShow counter
  -S\t\t\t\tShow statistics
  -D, -I, -U, -F\t\t\tRefused: the emulated table is read-only here

Tables: conntrack, expect, dying, unconfirmed

Options:
  -p, --protonum proto\t\tLayer 4 Protocol, eg. 'tcp'
  -f, --family proto\t\tLayer 3 Protocol, eg. 'ipv6'
  -s, --src, --orig-src ip\tSource address from original direction
  -d, --dst, --orig-dst ip\tDestination address from original direction
  -r, --reply-src ip\t\tSource addres from reply direction
  -q, --reply-dst ip\t\tDestination address from reply direction
  --sport, --dport port\t\tPorts (after -p tcp|udp|...)
  --state state\t\t\tTCP state (after -p tcp)
  -u, --status status\t\tStatus, eg. ASSURED
  -m, --mark mark[/mask]\t\tMark
  -w, --zone value\t\tZone
  -o, --output extended\t\tShow the layer 3 protocol too
  -e, --event-mask mask\t\tEvent mask, eg. NEW,DESTROY
"""
