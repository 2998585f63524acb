"""The target extensions (-j NAME other than a chain or a standard verdict).

A target runs on a matched packet and answers ACCEPT, DROP or CONTINUE (the non-terminal
ones: LOG, MARK, CONNMARK, NOTRACK), leaving its side effects in the EvalContext.
"""
from __future__ import annotations

from typing import Callable, ClassVar, Optional

from ..helpers.registry import helper_named
from .errors import EINVAL_MESSAGE, EXIT_KERNEL, RulesError
from .logline import LOG_DEFAULT_LEVEL, LogFlags, log_line
from .matches import EvalContext
from .names import LOG_LEVELS
from .packet import IPPROTO_TCP, RulePacket
from .reject import REJECT_TYPES, TCP_RESET, reject_reply
from .tables import FORWARD, INPUT, OUTPUT
from .values import ALL_ONES, parse_mark, parse_u32, saved_string

ACCEPT = "ACCEPT"
DROP = "DROP"
CONTINUE = "CONTINUE"
LOG_PREFIX_MAX = 29                      # sizeof(prefix) - 1 in ipt_log_info
NO_SUCH_NAME = "No chain/target/match by that name."   # ENOENT, as iptables words it


class Target:
    NAME: ClassVar[str]
    OPTIONS: ClassVar[dict[str, tuple[str, int]]] = {}
    TABLES: ClassVar[Optional[frozenset[str]]] = None    # None: any table
    HOOKS: ClassVar[Optional[frozenset[str]]] = None     # None: any hook

    def parse(self, option: str, args: list[str], invert: bool) -> None:
        raise NotImplementedError

    def check(self, rule_proto: int, proto_inverted: bool) -> None:
        """The whole target, once all options are read (final_check + checkentry)."""

    def save(self) -> str:
        return ""

    def run(self, pkt: RulePacket, ctx: EvalContext) -> str:
        raise NotImplementedError

    @staticmethod
    def _no_invert(invert: bool) -> None:
        if invert:
            raise RulesError("unexpected `!' before a target option")


class RejectTarget(Target):
    NAME = "REJECT"
    OPTIONS = {"--reject-with": ("--reject-with", 1)}
    TABLES = frozenset({"filter"})
    HOOKS = frozenset({INPUT, FORWARD, OUTPUT})

    def __init__(self) -> None:
        self.kind = "icmp-port-unreachable"

    def parse(self, option: str, args: list[str], invert: bool) -> None:
        self._no_invert(invert)
        if args[0] not in REJECT_TYPES:
            raise RulesError(f"unknown reject type \"{args[0]}\"")
        self.kind = REJECT_TYPES[args[0]].name

    def check(self, rule_proto: int, proto_inverted: bool) -> None:
        if self.kind == TCP_RESET and (rule_proto != IPPROTO_TCP or proto_inverted):
            raise RulesError(EINVAL_MESSAGE, exit_code=EXIT_KERNEL,
                             detail="REJECT --reject-with tcp-reset needs -p tcp")

    def save(self) -> str:
        return f" --reject-with {self.kind}"

    def run(self, pkt: RulePacket, ctx: EvalContext) -> str:
        reply = reject_reply(self.kind, pkt.raw)
        if reply is not None:
            ctx.rejects.append(reply)
        return DROP


class LogTarget(Target):
    NAME = "LOG"
    OPTIONS = {"--log-prefix": ("--log-prefix", 1), "--log-level": ("--log-level", 1),
               "--log-tcp-sequence": ("--log-tcp-sequence", 0),
               "--log-tcp-options": ("--log-tcp-options", 0),
               "--log-ip-options": ("--log-ip-options", 0),
               "--log-uid": ("--log-uid", 0)}
    FLAG_OPTIONS = ("--log-tcp-sequence", "--log-tcp-options", "--log-ip-options", "--log-uid")

    def __init__(self) -> None:
        self.prefix = ""
        self.level = LOG_DEFAULT_LEVEL
        self.flags: set[str] = set()

    def parse(self, option: str, args: list[str], invert: bool) -> None:
        self._no_invert(invert)
        if option == "--log-prefix":
            if len(args[0]) > LOG_PREFIX_MAX:
                raise RulesError(f"Maximum prefix length {LOG_PREFIX_MAX} for --log-prefix")
            if "\n" in args[0]:
                raise RulesError("Newlines not allowed in --log-prefix")
            self.prefix = args[0]
        elif option == "--log-level":
            text = args[0]
            if text.isdigit() and int(text) <= 7:
                self.level = int(text)
            elif text in LOG_LEVELS:
                self.level = LOG_LEVELS[text]
            else:
                raise RulesError(f"log level \"{text}\" unknown")
        else:
            self.flags.add(option)

    def save(self) -> str:
        text = ""
        if self.prefix:
            text += " --log-prefix" + saved_string(self.prefix)
        if self.level != LOG_DEFAULT_LEVEL:
            text += f" --log-level {self.level}"
        for flag in self.FLAG_OPTIONS:
            if flag in self.flags:
                text += f" {flag}"
        return text

    def run(self, pkt: RulePacket, ctx: EvalContext) -> str:
        flags = LogFlags(tcp_sequence="--log-tcp-sequence" in self.flags,
                         tcp_options="--log-tcp-options" in self.flags,
                         ip_options="--log-ip-options" in self.flags,
                         uid="--log-uid" in self.flags)
        ctx.logs.append((self.level, log_line(self.prefix, pkt, flags, ctx.mark)))
        return CONTINUE


class NotrackTarget(Target):
    """NOTRACK, and CT --notrack: the packet gets no conntrack entry (the caller's job)."""
    NAME = "NOTRACK"
    TABLES = frozenset({"raw"})

    def run(self, pkt: RulePacket, ctx: EvalContext) -> str:
        ctx.notrack = True
        return CONTINUE


class CtTarget(NotrackTarget):
    """CT --notrack, or CT --helper NAME: the entry the packet makes gets that helper
    (the kernel's conntrack template; the linux profile attaches helpers no other way)."""
    NAME = "CT"
    OPTIONS = {"--notrack": ("--notrack", 0), "--helper": ("--helper", 1)}

    def __init__(self) -> None:
        self.notrack = False
        self.helper_name = ""
        self.helper = None

    def parse(self, option: str, args: list[str], invert: bool) -> None:
        self._no_invert(invert)
        if option == "--helper":
            self.helper_name = args[0]
        else:
            self.notrack = True

    def check(self, rule_proto: int, proto_inverted: bool) -> None:
        if not self.notrack and not self.helper_name:
            raise RulesError("CT: only --notrack and --helper are emulated")
        if self.helper_name:
            # xt_ct_set_helper(): the helper must exist for the rule's (uninverted) protocol.
            helper = helper_named(self.helper_name)
            if helper is None or proto_inverted or helper.proto != rule_proto:
                raise RulesError(NO_SUCH_NAME, exit_code=EXIT_KERNEL,
                                 detail=f"CT: no helper {self.helper_name!r} for this protocol")
            self.helper = helper

    def save(self) -> str:
        return (" --notrack" if self.notrack else "") + (
            f" --helper {self.helper_name}" if self.helper_name else "")

    def run(self, pkt: RulePacket, ctx: EvalContext) -> str:
        if self.notrack:
            ctx.notrack = True
        if self.helper is not None:
            ctx.helper = self.helper
        return CONTINUE


class MarkTarget(Target):
    """MARK: mark = (mark & ~mask) ^ value; every form is saved as --set-xmark."""
    NAME = "MARK"
    OPTIONS = {o: (o, 1) for o in ("--set-xmark", "--set-mark", "--and-mark", "--or-mark",
                                   "--xor-mark")}

    def __init__(self) -> None:
        self.value: Optional[int] = None
        self.mask = ALL_ONES

    def parse(self, option: str, args: list[str], invert: bool) -> None:
        self._no_invert(invert)
        if self.value is not None:
            raise RulesError(f"{self.NAME} target: Can't specify --set-xmark twice")
        if option in ("--set-xmark", "--set-mark"):
            value, mask = parse_mark(args[0], self.NAME)
            self.value, self.mask = value, (mask if option == "--set-xmark" else mask | value)
        else:
            bits = parse_u32(args[0], self.NAME)
            self.value, self.mask = {"--and-mark": (0, ~bits & ALL_ONES),
                                     "--or-mark": (bits, bits),
                                     "--xor-mark": (bits, 0)}[option]

    def check(self, rule_proto: int, proto_inverted: bool) -> None:
        if self.value is None:
            raise RulesError(f"{self.NAME} target: Parameter --set-xmark/--and-mark/--or-mark/"
                             "--xor-mark is required")

    def save(self) -> str:
        return f" --set-xmark 0x{self.value:x}/0x{self.mask:x}"

    def run(self, pkt: RulePacket, ctx: EvalContext) -> str:
        ctx.mark = (ctx.mark & ~self.mask & ALL_ONES) ^ (self.value or 0)
        return CONTINUE


class ConnmarkTarget(Target):
    NAME = "CONNMARK"
    OPTIONS = {"--set-xmark": ("--set-xmark", 1), "--set-mark": ("--set-mark", 1),
               "--save-mark": ("--save-mark", 0), "--restore-mark": ("--restore-mark", 0),
               "--nfmask": ("--nfmask", 1), "--ctmask": ("--ctmask", 1),
               "--mask": ("--mask", 1)}

    def __init__(self) -> None:
        self.mode: Optional[str] = None
        self.ctmark = 0
        self.ctmask = self.nfmask = ALL_ONES

    def parse(self, option: str, args: list[str], invert: bool) -> None:
        self._no_invert(invert)
        if option in ("--set-xmark", "--set-mark", "--save-mark", "--restore-mark"):
            if self.mode is not None:
                raise RulesError("CONNMARK target: Only one action may be given")
            self.mode = "set" if option.startswith("--set") else option[2:-5]
            if self.mode == "set":
                value, mask = parse_mark(args[0], self.NAME)
                self.ctmark = value
                self.ctmask = mask if option == "--set-xmark" else mask | value
        elif option == "--mask":
            self.nfmask = self.ctmask = parse_u32(args[0], self.NAME)
        elif option == "--nfmask":
            self.nfmask = parse_u32(args[0], self.NAME)
        else:
            self.ctmask = parse_u32(args[0], self.NAME)

    def check(self, rule_proto: int, proto_inverted: bool) -> None:
        if self.mode is None:
            raise RulesError("CONNMARK target: No operation specified")

    def save(self) -> str:
        if self.mode == "set":
            return f" --set-xmark 0x{self.ctmark:x}/0x{self.ctmask:x}"
        return f" --{self.mode}-mark --nfmask 0x{self.nfmask:x} --ctmask 0x{self.ctmask:x}"

    def run(self, pkt: RulePacket, ctx: EvalContext) -> str:
        if ctx.notrack or not pkt.has_entry():
            return CONTINUE
        if self.mode == "set":
            ctx.ctmark = (ctx.ctmark & ~self.ctmask & ALL_ONES) ^ self.ctmark
        elif self.mode == "save":
            ctx.ctmark = (ctx.ctmark & ~self.ctmask & ALL_ONES) ^ (ctx.mark & self.nfmask)
        else:
            ctx.mark = (ctx.mark & ~self.nfmask & ALL_ONES) ^ (ctx.ctmark & self.ctmask)
        return CONTINUE


TARGETS: dict[str, Callable[[], Target]] = {
    cls.NAME: cls for cls in (RejectTarget, LogTarget, NotrackTarget, CtTarget, MarkTarget,
                              ConnmarkTarget)}
