"""The match extensions (-m NAME and the implicit tcp/udp/icmp of -p), as data and small classes.

Each class declares the options it takes (name -> number of arguments, aliases mapped to the
name iptables prints), parses them, checks the whole match as the kernel's checkentry does,
prints itself as iptables-save does, and answers whether a packet matches.
"""
from __future__ import annotations

from typing import Callable, ClassVar, Optional

from .errors import EINVAL_MESSAGE, EXIT_KERNEL, RulesError
from .limit import DEFAULT_AVG, DEFAULT_BURST, TokenBucket, check_burst, parse_rate, rate_text
from .names import ICMP_TYPES
from .packet import (ACK, FIN, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, ORIGINAL, PSH, RST,
                     STATE_BITS, STATE_PRINT_ORDER, STATUS_BITS, SYN, URG, RulePacket)
from .values import (ALL_ONES, address_text, mark_text, parse_address, parse_mark,
                     parse_port_range, parse_protocol, port_range_text,
                     saved_string)

TCP_FLAG_NAMES = (("FIN", FIN), ("SYN", SYN), ("RST", RST), ("PSH", PSH), ("ACK", ACK),
                  ("URG", URG))
TCP_FLAG_WORDS = dict(TCP_FLAG_NAMES) | {"ALL": 0x3F, "NONE": 0}
SYN_MASK = FIN | SYN | RST | ACK         # --syn is --tcp-flags FIN,SYN,RST,ACK SYN
MULTIPORT_PROTOCOLS = frozenset({6, 17, 33, 132, 136})   # tcp udp dccp sctp udplite
MULTIPORT_MAX = 15


class EvalContext:
    """What a match or target may read or change while one packet runs through one hook."""
    __slots__ = ("hook", "now", "mark", "ctmark", "notrack", "helper", "logs", "rejects")

    def __init__(self, hook: str, now: float, mark: int, ctmark: int) -> None:
        self.hook = hook
        self.now = now
        self.mark = mark
        self.ctmark = ctmark
        self.notrack = False
        self.helper = None              # CT --helper: the helper the new entry gets
        self.logs: list = []
        self.rejects: list = []


class Match:
    NAME: ClassVar[str]
    OPTIONS: ClassVar[dict[str, tuple[str, int]]]   # option -> (canonical option, nargs)

    def parse(self, option: str, args: list[str], invert: bool) -> None:
        raise NotImplementedError

    def check(self, rule_proto: int, proto_inverted: bool) -> None:
        """The whole match, once all options are read (xtables final_check + checkentry)."""

    def save(self) -> str:
        raise NotImplementedError

    def matches(self, pkt: RulePacket, ctx: EvalContext) -> bool:
        raise NotImplementedError

    def fresh(self) -> "Match":
        """A copy with fresh per-rule state (a limit's bucket); stateless matches are shared."""
        return self

    def _once(self, seen: set, option: str) -> None:
        if option in seen:
            raise RulesError(f"{self.NAME}: option \"{option}\" can only be used once.")
        seen.add(option)


def _inv(invert: bool) -> str:
    return " !" if invert else ""


def _parse_flags(text: str) -> int:
    value = 0
    for word in text.split(","):
        if word.upper() not in TCP_FLAG_WORDS:
            raise RulesError(f"Unknown TCP flag `{word}'")
        value |= TCP_FLAG_WORDS[word.upper()]
    return value


def tcp_flags_text(flags: int) -> str:
    names = [name for name, bit in TCP_FLAG_NAMES if flags & bit]
    return ",".join(names) if names else "NONE"


class PortsMatch(Match):
    """tcp and udp: --sport/--dport ranges (and tcp's flags)."""
    PROTO: ClassVar[int]

    def __init__(self) -> None:
        self.sport = (0, 0xFFFF)
        self.dport = (0, 0xFFFF)
        self.sport_inv = self.dport_inv = False
        self.seen: set = set()

    def parse(self, option: str, args: list[str], invert: bool) -> None:
        canonical = self.OPTIONS[option][0]
        self._once(self.seen, canonical)
        if canonical == "--sport":
            self.sport, self.sport_inv = parse_port_range(args[0], self.NAME), invert
        elif canonical == "--dport":
            self.dport, self.dport_inv = parse_port_range(args[0], self.NAME), invert

    def check(self, rule_proto: int, proto_inverted: bool) -> None:
        if rule_proto != self.PROTO or proto_inverted:
            raise RulesError(EINVAL_MESSAGE, exit_code=EXIT_KERNEL,
                             detail=f"the {self.NAME} match needs -p {self.NAME}")

    def _save_ports(self) -> str:
        text = ""
        for name, (low, high), inv in (("--sport", self.sport, self.sport_inv),
                                       ("--dport", self.dport, self.dport_inv)):
            if (low, high) != (0, 0xFFFF) or inv:
                text += f"{_inv(inv)} {name} {port_range_text(low, high)}"
        return text

    def _ports_match(self, pkt: RulePacket) -> bool:
        return ((self.sport[0] <= pkt.sport <= self.sport[1]) != self.sport_inv
                and (self.dport[0] <= pkt.dport <= self.dport[1]) != self.dport_inv)


class TcpMatch(PortsMatch):
    NAME = "tcp"
    PROTO = IPPROTO_TCP
    OPTIONS = {"--sport": ("--sport", 1), "--source-port": ("--sport", 1),
               "--dport": ("--dport", 1), "--destination-port": ("--dport", 1),
               "--syn": ("--syn", 0), "--tcp-flags": ("--tcp-flags", 2),
               "--tcp-option": ("--tcp-option", 1)}

    def __init__(self) -> None:
        super().__init__()
        self.flag_mask = self.flag_cmp = 0
        self.flags_inv = False
        self.option: Optional[int] = None
        self.option_inv = False

    def parse(self, option: str, args: list[str], invert: bool) -> None:
        canonical = self.OPTIONS[option][0]
        if canonical in ("--syn", "--tcp-flags"):
            self._once(self.seen, "--tcp-flags")
            if canonical == "--syn":
                self.flag_mask, self.flag_cmp = SYN_MASK, SYN
            else:
                self.flag_mask, self.flag_cmp = _parse_flags(args[0]), _parse_flags(args[1])
            self.flags_inv = invert
        elif canonical == "--tcp-option":
            self._once(self.seen, canonical)
            if not args[0].isdigit() or not 1 <= int(args[0]) <= 255:
                raise RulesError(f"Unknown TCP option `{args[0]}'")
            self.option, self.option_inv = int(args[0]), invert
        else:
            super().parse(option, args, invert)

    def save(self) -> str:
        text = self._save_ports()
        if self.option is not None:
            text += f"{_inv(self.option_inv)} --tcp-option {self.option}"
        if self.flag_mask or self.flags_inv:
            text += (f"{_inv(self.flags_inv)} --tcp-flags {tcp_flags_text(self.flag_mask)} "
                     f"{tcp_flags_text(self.flag_cmp)}")
        return text

    def matches(self, pkt: RulePacket, ctx: EvalContext) -> bool:
        if pkt.fragment or not self._ports_match(pkt):
            return False
        if ((pkt.tcp_flags & self.flag_mask) == self.flag_cmp) == self.flags_inv:
            return False
        if self.option is not None:
            return (self.option in tcp_option_kinds(pkt.raw)) != self.option_inv
        return True


def tcp_option_kinds(datagram: bytes) -> set[int]:
    """The option kinds present in the TCP header of an IP datagram."""
    ihl = (datagram[0] & 15) * 4 if datagram else 0
    if len(datagram) < ihl + 20:
        return set()
    end = ihl + (datagram[ihl + 12] >> 4) * 4
    kinds, i = set(), ihl + 20
    while i < min(end, len(datagram)):
        kind = datagram[i]
        kinds.add(kind)
        if kind == 0:
            break
        i += 1 if kind == 1 else max(datagram[i + 1] if i + 1 < len(datagram) else 2, 2)
    return kinds


class UdpMatch(PortsMatch):
    NAME = "udp"
    PROTO = IPPROTO_UDP
    OPTIONS = {"--sport": ("--sport", 1), "--source-port": ("--sport", 1),
               "--dport": ("--dport", 1), "--destination-port": ("--dport", 1)}

    def save(self) -> str:
        return self._save_ports()

    def matches(self, pkt: RulePacket, ctx: EvalContext) -> bool:
        return not pkt.fragment and self._ports_match(pkt)


class IcmpMatch(Match):
    NAME = "icmp"
    OPTIONS = {"--icmp-type": ("--icmp-type", 1)}

    def __init__(self) -> None:
        self.type, self.code_min, self.code_max = ICMP_TYPES["any"]
        self.invert = False
        self.seen: set = set()

    def parse(self, option: str, args: list[str], invert: bool) -> None:
        self._once(self.seen, "--icmp-type")
        text = args[0]
        if text in ICMP_TYPES:
            self.type, self.code_min, self.code_max = ICMP_TYPES[text]
        else:
            type_text, sep, code_text = text.partition("/")
            if not type_text.isdigit() or int(type_text) > 255 or (
                    sep and (not code_text.isdigit() or int(code_text) > 255)):
                raise RulesError(f"Unknown ICMP type `{text}'")
            self.type = int(type_text)
            self.code_min, self.code_max = ((int(code_text),) * 2 if sep else (0, 0xFF))
        self.invert = invert

    def check(self, rule_proto: int, proto_inverted: bool) -> None:
        if rule_proto != IPPROTO_ICMP or proto_inverted:
            raise RulesError(EINVAL_MESSAGE, exit_code=EXIT_KERNEL,
                             detail=f"the {self.NAME} match needs -p {self.NAME}")

    def save(self) -> str:
        if self.type == 0xFF:
            return f"{_inv(self.invert)} --icmp-type any"
        code = "" if (self.code_min, self.code_max) == (0, 0xFF) else f"/{self.code_min}"
        return f"{_inv(self.invert)} --icmp-type {self.type}{code}"

    def matches(self, pkt: RulePacket, ctx: EvalContext) -> bool:
        if pkt.fragment:
            return False
        hit = self.type == 0xFF or (pkt.icmp_type == self.type
                                    and self.code_min <= pkt.icmp_code <= self.code_max)
        return hit != self.invert


def _parse_states(text: str) -> int:
    mask = 0
    for word in text.split(","):
        if word not in STATE_BITS:
            raise RulesError(f"Bad state \"{word}\"")
        mask |= STATE_BITS[word]
    return mask


def states_text(mask: int) -> str:
    return ",".join(name for name in STATE_PRINT_ORDER if mask & STATE_BITS[name])


class StateMatch(Match):
    NAME = "state"
    OPTIONS = {"--state": ("--state", 1)}

    def __init__(self) -> None:
        self.mask: Optional[int] = None
        self.invert = False

    def parse(self, option: str, args: list[str], invert: bool) -> None:
        self.mask, self.invert = _parse_states(args[0]), invert

    def check(self, rule_proto: int, proto_inverted: bool) -> None:
        if self.mask is None:
            raise RulesError("state: option \"--state\" must be specified")

    def save(self) -> str:
        return f"{_inv(self.invert)} --state {states_text(self.mask or 0)}"

    def matches(self, pkt: RulePacket, ctx: EvalContext) -> bool:
        return bool(_state_bit(pkt, ctx) & (self.mask or 0)) != self.invert


def _state_bit(pkt: RulePacket, ctx: EvalContext) -> int:
    # A NOTRACK earlier in the same (raw) pass has already made the packet untracked.
    return STATE_BITS["UNTRACKED"] if ctx.notrack else pkt.state_bit()


def _parse_statuses(text: str) -> int:
    mask = 0
    for word in text.split(","):
        if word.upper() == "NONE":
            continue
        if word.upper() not in STATUS_BITS:
            raise RulesError(f"Bad ctstatus \"{word}\"")
        mask |= STATUS_BITS[word.upper()]
    return mask


# --ctorigsrc .. --ctrepldstport: (option, which tuple, which field); print order.
_CT_ADDRESS_OPTIONS = (("--ctorigsrc", "orig", 0), ("--ctorigdst", "orig", 1),
                       ("--ctreplsrc", "reply", 0), ("--ctrepldst", "reply", 1))
_CT_PORT_OPTIONS = (("--ctorigsrcport", "orig", 2), ("--ctorigdstport", "orig", 3),
                    ("--ctreplsrcport", "reply", 2), ("--ctrepldstport", "reply", 3))


class ConntrackMatch(Match):
    NAME = "conntrack"
    OPTIONS = {name: (name, 1) for name in (
        "--ctstate", "--ctproto", "--ctstatus", "--ctdir",
        *(o for o, _, _ in _CT_ADDRESS_OPTIONS), *(o for o, _, _ in _CT_PORT_OPTIONS))}

    def __init__(self) -> None:
        self.values: dict[str, object] = {}
        self.inverted: set[str] = set()

    def parse(self, option: str, args: list[str], invert: bool) -> None:
        if option in self.values:
            raise RulesError(f"conntrack: option \"{option}\" can only be used once.")
        arg = args[0]
        if option == "--ctstate":
            value: object = _parse_states(arg)
        elif option == "--ctproto":
            value = parse_protocol(arg)
            if value == 0:
                raise RulesError("rule would never match protocol")
        elif option == "--ctstatus":
            value = _parse_statuses(arg)
        elif option == "--ctdir":
            if arg.upper() not in ("ORIGINAL", "REPLY"):
                raise RulesError(f"Bad ctdir value \"{arg}\"")
            if invert:
                raise RulesError("conntrack: unexpected `!' with --ctdir")
            value = arg.upper()
        elif option in dict((o, 0) for o, _, _ in _CT_PORT_OPTIONS):
            value = parse_port_range(arg)
        else:
            value = parse_address(arg, masked=False)
        self.values[option] = value
        if invert:
            self.inverted.add(option)

    def save(self) -> str:
        text = ""
        order = ("--ctstate", "--ctproto", *(o for o, _, _ in _CT_ADDRESS_OPTIONS),
                 *(o for o, _, _ in _CT_PORT_OPTIONS), "--ctstatus", "--ctdir")
        for option in order:
            if option not in self.values:
                continue
            value = self.values[option]
            if option == "--ctstate":
                shown = states_text(value)  # type: ignore[arg-type]
            elif option == "--ctstatus":
                shown = ",".join(n for n, b in STATUS_BITS.items() if value & b) or "NONE"  # type: ignore[operator]
            elif option in ("--ctproto", "--ctdir"):
                shown = str(value)
            elif isinstance(value, tuple) and option.endswith("port"):
                shown = port_range_text(*value)
            else:
                addr, mask = value  # type: ignore[misc]
                # conntrack prints a host address without /32 (xtables_ipmask_to_numeric)
                shown = address_text(addr, mask) if mask != ALL_ONES else address_text(addr, mask)[:-3]
            text += f"{_inv(option in self.inverted)} --{option[2:]} {shown}"
        return text

    def matches(self, pkt: RulePacket, ctx: EvalContext) -> bool:
        values, inverted = self.values, self.inverted
        if "--ctstate" in values:
            hit = bool(_state_bit(pkt, ctx) & values["--ctstate"])  # type: ignore[operator]
            if hit == ("--ctstate" in inverted):
                return False
        if ctx.notrack or not pkt.has_entry():
            return list(values) == ["--ctstate"]
        if "--ctdir" in values and (pkt.ctdir == ORIGINAL) != (values["--ctdir"] == "ORIGINAL"):
            return False
        if "--ctproto" in values and (pkt.ctproto == values["--ctproto"]) == ("--ctproto" in inverted):
            return False
        for option, which, field in _CT_ADDRESS_OPTIONS:
            if option in values:
                addr, mask = values[option]  # type: ignore[misc]
                tup = pkt.ct_orig if which == "orig" else pkt.ct_reply
                if ((tup[field] & mask) == (addr & mask) if tup else False) == (option in inverted):
                    return False
        for option, which, field in _CT_PORT_OPTIONS:
            if option in values:
                low, high = values[option]  # type: ignore[misc]
                tup = pkt.ct_orig if which == "orig" else pkt.ct_reply
                if (low <= tup[field] <= high if tup else False) == (option in inverted):
                    return False
        if "--ctstatus" in values:
            if bool(pkt.ctstatus & values["--ctstatus"]) == ("--ctstatus" in inverted):  # type: ignore[operator]
                return False
        return True


class MultiportMatch(Match):
    NAME = "multiport"
    OPTIONS = {"--sports": ("--sports", 1), "--source-ports": ("--sports", 1),
               "--dports": ("--dports", 1), "--destination-ports": ("--dports", 1),
               "--ports": ("--ports", 1)}

    def __init__(self) -> None:
        self.kind: Optional[str] = None
        self.ranges: list[tuple[int, int]] = []
        self.invert = False

    def parse(self, option: str, args: list[str], invert: bool) -> None:
        canonical = self.OPTIONS[option][0]
        if self.kind is not None:
            long_names = {"--sports": "--source-ports", "--dports": "--destination-ports",
                          "--ports": "--ports"}
            raise RulesError(f"multiport: option \"{long_names[self.kind]}\" cannot be used "
                             f"together with \"{long_names[canonical]}\".")
        ranges = [parse_port_range(part) for part in args[0].split(",")]
        # A range takes two of the kernel's 15 slots.
        if sum(1 if low == high else 2 for low, high in ranges) > MULTIPORT_MAX:
            raise RulesError("too many ports specified")
        self.kind, self.ranges, self.invert = canonical, ranges, invert

    def check(self, rule_proto: int, proto_inverted: bool) -> None:
        if self.kind is None:
            raise RulesError("multiport expects an option")
        if rule_proto not in MULTIPORT_PROTOCOLS or proto_inverted:
            raise RulesError("multiport needs `-p tcp', `-p udp', `-p udplite', "
                             "`-p sctp' or `-p dccp'")

    def save(self) -> str:
        ports = ",".join(port_range_text(low, high) for low, high in self.ranges)
        return f"{_inv(self.invert)} {self.kind} {ports}"

    def matches(self, pkt: RulePacket, ctx: EvalContext) -> bool:
        if pkt.fragment:
            return False
        ports = {"--sports": (pkt.sport,), "--dports": (pkt.dport,),
                 "--ports": (pkt.sport, pkt.dport)}[self.kind or "--ports"]
        hit = any(low <= port <= high for port in ports for low, high in self.ranges)
        return hit != self.invert


class LimitMatch(Match):
    NAME = "limit"
    OPTIONS = {"--limit": ("--limit", 1), "--limit-burst": ("--limit-burst", 1)}

    def __init__(self) -> None:
        self.avg, self.burst = DEFAULT_AVG, DEFAULT_BURST
        self.bucket: Optional[TokenBucket] = None

    def parse(self, option: str, args: list[str], invert: bool) -> None:
        if invert:
            raise RulesError("limit does not support invert")
        if option == "--limit":
            self.avg = parse_rate(args[0])
        else:
            if not args[0].isdigit() or int(args[0]) > 10000:
                raise RulesError(f"bad --limit-burst `{args[0]}'")
            self.burst = int(args[0])

    def check(self, rule_proto: int, proto_inverted: bool) -> None:
        check_burst(self.avg, self.burst)
        self.bucket = TokenBucket(self.avg, self.burst)

    def fresh(self) -> "LimitMatch":
        copy = LimitMatch()
        copy.avg, copy.burst = self.avg, self.burst
        copy.bucket = TokenBucket(self.avg, self.burst)
        return copy

    def save(self) -> str:
        text = f" --limit {rate_text(self.avg)}"
        if self.burst != DEFAULT_BURST:
            text += f" --limit-burst {self.burst}"
        return text

    def matches(self, pkt: RulePacket, ctx: EvalContext) -> bool:
        assert self.bucket is not None
        return self.bucket.allow(ctx.now)


class CommentMatch(Match):
    NAME = "comment"
    OPTIONS = {"--comment": ("--comment", 1)}
    MAX_LEN = 255                       # XT_MAX_COMMENT_LEN - 1

    def __init__(self) -> None:
        self.comment = ""

    def parse(self, option: str, args: list[str], invert: bool) -> None:
        if invert:
            raise RulesError("comment: unexpected `!'")
        if len(args[0]) > self.MAX_LEN:
            raise RulesError("comment: option \"--comment\" value is too long")
        self.comment = args[0]

    def save(self) -> str:
        return " --comment" + saved_string(self.comment)

    def matches(self, pkt: RulePacket, ctx: EvalContext) -> bool:
        return True


class MarkMatch(Match):
    """-m mark --mark V[/M]: (skb mark & M) == V."""
    NAME = "mark"
    OPTIONS = {"--mark": ("--mark", 1)}

    def __init__(self) -> None:
        self.value: Optional[int] = None
        self.mask = ALL_ONES
        self.invert = False

    def parse(self, option: str, args: list[str], invert: bool) -> None:
        self.value, self.mask = parse_mark(args[0])
        self.invert = invert

    def check(self, rule_proto: int, proto_inverted: bool) -> None:
        if self.value is None:
            raise RulesError(f"{self.NAME}: option \"--mark\" must be specified")

    def save(self) -> str:
        return f"{_inv(self.invert)} --mark {mark_text(self.value or 0, self.mask)}"

    def matches(self, pkt: RulePacket, ctx: EvalContext) -> bool:
        return ((ctx.mark & self.mask) == self.value) != self.invert


class ConnmarkMatch(MarkMatch):
    """-m connmark --mark V[/M]: the entry's mark; a packet without an entry never matches."""
    NAME = "connmark"

    def matches(self, pkt: RulePacket, ctx: EvalContext) -> bool:
        if ctx.notrack or not pkt.has_entry():
            return False
        return ((ctx.ctmark & self.mask) == self.value) != self.invert


MATCHES: dict[str, Callable[[], Match]] = {
    cls.NAME: cls for cls in (TcpMatch, UdpMatch, IcmpMatch, StateMatch, ConntrackMatch,
                              MultiportMatch, LimitMatch, CommentMatch, MarkMatch, ConnmarkMatch)}
# The match -p loads by itself when an option no loaded match knows is given.
IMPLICIT_MATCHES = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_ICMP: "icmp"}
