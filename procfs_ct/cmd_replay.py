"""`procfs-ct replay CAPTURE`: a capture through the engine on its own clock."""
from __future__ import annotations

import argparse
import ipaddress
import os
import sys
import time
from typing import List, Optional, Set, Tuple

from engine.profile import PROFILES

HELP = ("Feed a pcap/pcapng capture through the engine on the capture's own clock and print "
        "the table as it stands at --at (default: the last packet's time).")
EPILOG = ("--ctstate prints one line per capture frame instead: "
          '"<n> <NEW|ESTABLISHED|RELATED|INVALID|UNTRACKED>[ reply]"; with --rules each line '
          "ends in the packet's final verdict, ACCEPT or DROP. "
          "n counts capture frames from 1. A frame conntrack made no verdict for is "
          '"<n> NOTSEEN" (no verdict column): not IPv4, a cooked frame for another '
          "host's MAC or an IP header the kernel's ip_rcv drops (header checksum, total "
          "length, header length, version), a fragment held "
          "for reassembly (the datagram's verdict is on the frame that completes it), the "
          "outgoing copy of a forwarded datagram, the captured copy of a REJECT reply the "
          "rules already sent. "
          "--rules FILE (iptables-restore input: raw, mangle, filter) puts the chains in "
          "front of the state machine; --format iptables-save then prints the ruleset "
          "with its counters after the capture, as iptables-save -c does.")

TABLE_FORMATS = ("ip_conntrack", "nf_conntrack", "stat", "expect")
RULES_FORMAT = "iptables-save"
PROC_PREFIX = "/proc/"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("capture", metavar="CAPTURE", help="pcap or pcapng file")
    parser.add_argument("--profile", choices=PROFILES, default="tutorial",
                        help="tutorial (2.4/2.6 ip_conntrack, default) or linux (nf_conntrack)")
    parser.add_argument("--format", choices=TABLE_FORMATS + (RULES_FORMAT,),
                        default=None, help="listing format (default: ip_conntrack for the "
                        "tutorial profile, nf_conntrack for linux); iptables-save (with "
                        "--rules): the ruleset and its counters")
    parser.add_argument("--at", type=float, metavar="EPOCH_SECONDS", default=None,
                        help="show the table at this time (default: the last packet's)")
    parser.add_argument("--ctstate", action="store_true",
                        help="print each packet's conntrack state instead of the table")
    parser.add_argument("--max", type=int, default=None, metavar="N",
                        help="table size limit (default: from RAM, as the kernel computes it)")
    parser.add_argument("--rules", metavar="FILE", default=None,
                        help="iptables-restore file evaluated at the hooks for every packet")
    parser.add_argument("--local", metavar="ADDR[/PREFIX][,...]", action="append", default=[],
                        help="this host's addresses (with a prefix length: its link's "
                        "broadcast address is received too): packets to others are "
                        "forwarded (FORWARD); a packet from one of them arriving is a "
                        "martian; default: every received packet is for this host")
    parser.add_argument("--no-forward", action="store_false", dest="forward",
                        help="with --local: this host does not forward (ip_forward=0), a "
                        "received packet for another address is dropped after PREROUTING")
    parser.add_argument("--iface", metavar="INDEX=NAME[,...]", action="append", default=[],
                        help="name a cooked capture's interface index for -i/-o "
                        "(repeatable; loopback devices are lo without it)")
    parser.add_argument("--set", metavar="KNOB=VALUE", action="append", default=[],
                        dest="knob_sets", help="write VALUE to a knob before the first packet, "
                        "as `echo VALUE > FILE` would (knob name, file name or path, or "
                        "sysctl name; repeatable)")


def knob_named(text: str) -> str:
    """The knob behind a name: its own (tcp_timeout_established), a file's
    (nf_conntrack_max), a path under /proc or the mount (sys/net/netfilter/...), or a sysctl
    name (net.netfilter.nf_conntrack_max); ValueError if none."""
    from engine.knobs import KNOBS_BY_NAME, KNOBS_BY_PATH

    if text in KNOBS_BY_NAME:
        return text
    path = text[len(PROC_PREFIX):] if text.startswith(PROC_PREFIX) else text.lstrip("/")
    if "/" not in path and "." in path:
        path = "sys/" + path.replace(".", "/")
    if path in KNOBS_BY_PATH:
        return KNOBS_BY_PATH[path].name
    for known, knob in KNOBS_BY_PATH.items():
        if "/" not in path and known.rsplit("/", 1)[1] == path:
            return knob.name
    raise ValueError(f"no knob is called {text!r}")


def _knob_writes(specs: List[str]) -> List[Tuple[str, bytes]]:
    from .errors import UsageError

    writes = []
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep:
            raise UsageError(f"--set {spec}: expected KNOB=VALUE")
        try:
            writes.append((knob_named(name), (value + "\n").encode()))
        except ValueError as exc:
            raise UsageError(f"--set {spec}: {exc}") from None
    return writes


def parse_local(specs: List[str]) -> Tuple[Optional[Set[int]], Set[int]]:
    """(the host's addresses or None, its links' broadcast addresses) from --local."""
    from .errors import UsageError

    if not specs:
        return None, set()
    addresses, broadcasts = set(), set()
    for spec in specs:
        for item in spec.split(","):
            version = "IPv6" if ":" in item else "IPv4"
            try:
                interface = (ipaddress.IPv6Interface if version == "IPv6"
                             else ipaddress.IPv4Interface)(item.strip())
            except ValueError:
                raise UsageError(f"--local: {item!r} is not an {version} address") from None
            addresses.add(int(interface.ip))
            # /31, /32: no broadcast; IPv6 has none at all
            if version == "IPv4" and "/" in item and interface.network.prefixlen < 31:
                broadcasts.add(int(interface.network.broadcast_address))
    return addresses, broadcasts


def run(args: argparse.Namespace) -> int:
    from engine.capture import CaptureError
    from engine.interfaces import parse_iface_names
    from engine.knobs import KnobWriteError
    from engine.replay import ctstate_word, replay
    from .errors import UsageError
    from .rulesfile import load_rules_file

    if not os.path.isfile(args.capture):
        raise UsageError(f"{args.capture}: no such file")
    if args.format == RULES_FORMAT and args.rules is None:
        raise UsageError("--format iptables-save needs --rules FILE")
    try:
        iface_names = parse_iface_names(args.iface)
    except ValueError as exc:
        raise UsageError(f"--iface: {exc}") from None
    writes = _knob_writes(args.knob_sets)
    local, broadcasts = parse_local(args.local)
    if not args.forward and local is None:
        raise UsageError("--no-forward needs --local ADDR (the host's own addresses)")
    rules = None if args.rules is None else load_rules_file(args.rules)
    try:
        result = replay(args.capture, profile=args.profile, at=args.at, max_entries=args.max,
                        rules=rules, local_addresses=local, broadcast_addresses=broadcasts,
                        forwarding=args.forward, iface_names=iface_names, knob_writes=writes)
    except KnobWriteError as exc:
        # replay() names the knob by its own name; say it as the user wrote it.
        text = str(exc)
        for (name, data), spec in zip(writes, args.knob_sets):
            own = f"{name}={data.decode(errors='replace').strip()}: "
            if text.startswith(own):
                text = f"{spec}: {text[len(own):]}"
                break
        raise UsageError(f"--set {text} ({os.strerror(exc.errno)})") from None
    except CaptureError as exc:
        raise UsageError(f"{args.capture}: {exc}") from None
    except OSError as exc:
        raise UsageError(f"{args.capture}: {exc.strerror}") from None
    out = sys.stdout
    if args.ctstate:
        for n, (verdict, dropped) in enumerate(zip(result.verdicts, result.dropped), 1):
            if verdict is None or rules is None:
                out.write(f"{n} {ctstate_word(verdict)}\n")
            else:
                out.write(f"{n} {verdict} {'DROP' if dropped else 'ACCEPT'}\n")
        return 0
    if args.format == RULES_FORMAT:
        # Stamped with the replay's own clock (iptables-save stamps its own time of day).
        out.write(rules.save(counters=True, stamp=time.ctime(result.at)))
        return 0
    fmt = args.format or ("nf_conntrack" if args.profile == "linux" else "ip_conntrack")
    out.write(result.text(fmt))
    return 0
