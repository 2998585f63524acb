"""One parser for a rule specification, shared by iptables-restore lines and the command line.

It follows iptables' own order of business: the generic options (-p -s -d -i -o -f -j -g -m
-c and `!`), then an option is offered to the target, then to the loaded matches, newest first, and last to the match that -p loads implicitly (tcp, udp, icmp). What
nobody takes is refused: an unknown option, match or target is never skipped.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from .errors import EINVAL_MESSAGE, EXIT_KERNEL, RulesError
from .matches import IMPLICIT_MATCHES, MATCHES, Match
from .tables import HOOKS_WITH_IN, HOOKS_WITH_OUT, STANDARD_TARGETS, TABLES
from .targets import TARGETS, Target
from .values import (address_text, parse_address_list, parse_protocol,
                     protocol_text)

IFNAMSIZ = 16
# Generic options: long and short spellings -> the short one, and how many arguments.
GENERIC = {"-p": 1, "--protocol": 1, "-s": 1, "--source": 1, "--src": 1, "-d": 1,
           "--destination": 1, "--dst": 1, "-i": 1, "--in-interface": 1, "-o": 1,
           "--out-interface": 1, "-f": 0, "--fragment": 0, "-j": 1, "--jump": 1, "-g": 1,
           "--goto": 1, "-m": 1, "--match": 1, "-c": 2, "--set-counters": 2}
CANONICAL = {"--protocol": "-p", "--source": "-s", "--src": "-s", "--destination": "-d",
             "--dst": "-d", "--in-interface": "-i", "--out-interface": "-o",
             "--fragment": "-f", "--jump": "-j", "--goto": "-g", "--match": "-m",
             "--set-counters": "-c"}


def split_restore_line(line: str) -> list[str]:
    """Words of an iptables-restore line: double quotes group, and inside them a backslash
    takes the next character literally (add_param_to_argv); single quotes are plain text."""
    words: list[str] = []
    buf: list[str] = []
    quoted = escaped = have = False
    for ch in line:
        if quoted:
            if escaped:
                buf.append(ch)
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
                words.append("".join(buf))
                buf, have = [], False
            else:
                buf.append(ch)
            continue
        if ch == '"':
            quoted = have = True
        elif ch in " \t\n\r":
            if have:
                words.append("".join(buf))
                buf, have = [], False
        else:
            buf.append(ch)
            have = True
    if quoted:
        raise RulesError("unterminated quoted string")
    if have:
        words.append("".join(buf))
    return words


def _iface_matches(name: str, pattern: str) -> bool:
    if pattern.endswith("+"):
        return name.startswith(pattern[:-1])
    return name == pattern


@dataclass
class Rule:
    """One rule of a chain: the IP part, its matches, its target and its counters."""
    src: int = 0
    src_mask: int = 0
    src_inv: bool = False
    dst: int = 0
    dst_mask: int = 0
    dst_inv: bool = False
    in_iface: str = ""
    in_inv: bool = False
    out_iface: str = ""
    out_inv: bool = False
    proto: int = 0
    proto_inv: bool = False
    fragment: Optional[bool] = None        # None: no -f; True: -f; False: ! -f
    matches: list[Match] = field(default_factory=list)
    target: str = ""                       # "", a standard verdict, a chain, or an extension
    target_ext: Optional[Target] = None
    goto: bool = False
    packets: int = 0
    bytes: int = 0

    checks: Optional[tuple] = field(default=None, repr=False, compare=False)

    def _compile(self) -> tuple:
        """The tests this rule needs, as a tuple of callables (pkt, ctx) -> bool: the IP
        part's only where it constrains something, then the matches in order."""
        tests: list = []
        if self.src_mask or self.src_inv:
            src, mask, inv = self.src, self.src_mask, self.src_inv
            tests.append(lambda p, c: ((p.src & mask) == src) != inv)
        if self.dst_mask or self.dst_inv:
            dst, dmask, dinv = self.dst, self.dst_mask, self.dst_inv
            tests.append(lambda p, c: ((p.dst & dmask) == dst) != dinv)
        if self.in_iface:
            pattern, iinv = self.in_iface, self.in_inv
            tests.append(lambda p, c: _iface_matches(p.in_iface, pattern) != iinv)
        if self.out_iface:
            opattern, oinv = self.out_iface, self.out_inv
            tests.append(lambda p, c: _iface_matches(p.out_iface, opattern) != oinv)
        if self.proto:
            proto, pinv = self.proto, self.proto_inv
            tests.append(lambda p, c: (p.proto == proto) != pinv)
        if self.fragment is not None:
            fragment = self.fragment
            tests.append(lambda p, c: p.fragment == fragment)
        tests.extend(match.matches for match in self.matches)
        return tuple(tests)

    def spec(self, counters: str = "") -> str:
        """The rule as iptables-save prints it after `-A CHAIN` (print_rule4's order);
        `counters` (iptables -S -v's " -c P B") goes where print_rule4 puts it, before the target."""
        out = []
        for letter, addr, mask, inv in (("s", self.src, self.src_mask, self.src_inv),
                                        ("d", self.dst, self.dst_mask, self.dst_inv)):
            if mask or inv or addr:
                out.append(f"{' !' if inv else ''} -{letter} {address_text(addr, mask)}")
        for letter, iface, inv in (("i", self.in_iface, self.in_inv),
                                   ("o", self.out_iface, self.out_inv)):
            if iface:
                out.append(f"{' !' if inv else ''} -{letter} {iface}")
        if self.proto:
            out.append(f"{' !' if self.proto_inv else ''} -p {protocol_text(self.proto)}")
        if self.fragment is not None:
            out.append(" -f" if self.fragment else " ! -f")
        for match in self.matches:
            out.append(f" -m {match.NAME}{match.save()}")
        out.append(counters)
        if self.target:
            out.append(f" -{'g' if self.goto else 'j'} {self.target}")
            if self.target_ext is not None:
                out.append(self.target_ext.save())
        return "".join(out)

    def fresh_copy(self) -> "Rule":
        """The same rule with its own per-rule state (limit buckets) and counters."""
        copy = Rule(**{k: v for k, v in self.__dict__.items()})
        copy.matches = [m.fresh() for m in self.matches]
        copy.checks = None
        return copy


@dataclass
class ParsedSpec:
    rules: list[Rule]                     # one per source x destination pair
    counters: Optional[tuple[int, int]]   # -c PKTS BYTES


class _SpecParser:
    def __init__(self, table: str, chain: str, words: list[str], is_builtin: bool,
                 chain_exists) -> None:
        self.table, self.chain, self.words = table, chain, words
        self.is_builtin = is_builtin
        self.chain_exists = chain_exists
        self.rule = Rule()
        self.sources: list[tuple[int, int]] = [(0, 0)]
        self.dests: list[tuple[int, int]] = [(0, 0)]
        self.counters: Optional[tuple[int, int]] = None
        self.seen: set[str] = set()

    def _args(self, i: int, count: int, option: str) -> list[str]:
        args = self.words[i + 1:i + 1 + count]
        if len(args) < count:
            if option == "--tcp-flags":
                raise RulesError("--tcp-flags requires two args.")
            raise RulesError(f"option \"{option}\" requires an argument")
        return args

    def parse(self) -> ParsedSpec:
        words, i, invert = self.words, 0, False
        while i < len(words):
            word = words[i]
            if word == "!":
                if invert:
                    raise RulesError("multiple consecutive ! not allowed")
                invert = True
                i += 1
                continue
            if word in GENERIC:
                option = CANONICAL.get(word, word)
                args = self._args(i, GENERIC[word], word)
                if args[:1] == ["!"]:
                    # the old intrapositioned `-s ! ADDR`: iptables 1.8 takes the `!` and
                    # then trips over the address
                    following = words[i + 2] if i + 2 < len(words) else ""
                    raise RulesError(f"Bad argument `{following}'")
                self._generic(option, args, invert)
                i += 1 + len(args)
            elif word.startswith("-") and len(word) > 1:
                i += 1 + self._extension_option(word, i, invert)
            else:
                raise RulesError(f"Bad argument `{word}'")
            invert = False
        if invert:
            raise RulesError("no command specified")   # a trailing "!"
        self._finish()
        rules = []
        for src, src_mask in self.sources:
            for dst, dst_mask in self.dests:
                rule = self.rule.fresh_copy() if rules else self.rule
                rule.src, rule.src_mask, rule.dst, rule.dst_mask = src, src_mask, dst, dst_mask
                rules.append(rule)
        return ParsedSpec(rules, self.counters)

    def _once(self, option: str) -> None:
        if option in self.seen:
            raise RulesError(f"multiple {option} flags not allowed")
        self.seen.add(option)

    def _generic(self, option: str, args: list[str], invert: bool) -> None:
        rule = self.rule
        if option == "-m":
            if invert:
                raise RulesError("unexpected ! flag before --match")
            self._load_match(args[0])
            return
        if option == "-c":
            if invert:
                raise RulesError("unexpected ! flag before --set-counters")
            if not (args[0].isdigit() and args[1].isdigit()):
                raise RulesError("-c packet counter not numeric")
            self.counters = (int(args[0]), int(args[1]))
            return
        self._once(option)
        if option == "-p":
            rule.proto, rule.proto_inv = parse_protocol(args[0]), invert
            if rule.proto == 0 and invert:
                raise RulesError("rule would never match protocol")
        elif option in ("-s", "-d"):
            addrs = parse_address_list(args[0])
            if invert and len(addrs) > 1:
                raise RulesError("! not allowed with multiple source or destination IP "
                                 "addresses")
            if option == "-s":
                self.sources, rule.src_inv = addrs, invert
            else:
                self.dests, rule.dst_inv = addrs, invert
        elif option in ("-i", "-o"):
            if len(args[0]) >= IFNAMSIZ:
                raise RulesError(f"interface name `{args[0]}' must be shorter than IFNAMSIZ "
                                 f"({IFNAMSIZ - 1})")
            hooks_ok = HOOKS_WITH_IN if option == "-i" else HOOKS_WITH_OUT
            if self.is_builtin and self.chain not in hooks_ok:
                raise RulesError(f"Can't use {option} with {self.chain}")
            if args[0] == "+" and not invert:
                return                      # "+" is every interface: no test at all
            if option == "-i":
                rule.in_iface, rule.in_inv = args[0], invert
            else:
                rule.out_iface, rule.out_inv = args[0], invert
        elif option == "-f":
            rule.fragment = not invert
        elif option in ("-j", "-g"):
            if "-j/-g" in self.seen:
                raise RulesError(f"multiple {option} flags not allowed")
            self.seen.add("-j/-g")
            if invert:
                raise RulesError(f"unexpected ! flag before {option}")
            self._set_target(args[0], goto=option == "-g")

    def _load_match(self, name: str) -> Match:
        if name not in MATCHES:
            raise RulesError(f"Couldn't load match `{name}':No such file or directory")
        match = MATCHES[name]()
        self.rule.matches.append(match)
        return match

    def _set_target(self, name: str, goto: bool) -> None:
        rule = self.rule
        rule.target, rule.goto = name, goto
        if name in STANDARD_TARGETS:
            if name == "QUEUE":
                raise RulesError("QUEUE is not emulated (no userspace queue)")
            if goto:
                raise RulesError(f"goto '{name}' is not a chain")
            return
        if self.chain_exists(name):
            return
        if goto or name not in TARGETS:
            raise RulesError(f"Couldn't load target `{name}':No such file or directory")
        ext = TARGETS[name]()
        if ext.TABLES is not None and self.table not in ext.TABLES:
            raise RulesError(EINVAL_MESSAGE, exit_code=EXIT_KERNEL,
                             detail=f"{name} is only valid in the {'/'.join(sorted(ext.TABLES))} table")
        rule.target_ext = ext

    def _extension_option(self, option: str, i: int, invert: bool) -> int:
        """Offer the option to the target, the matches, then -p's implicit match; its args."""
        rule = self.rule
        takers: list = []
        if rule.target_ext is not None:
            takers.append(rule.target_ext)
        # The newest match first: `-m conntrack --ctstatus X -m conntrack ! --ctstatus Y`
        # gives the second option to the second match (checked against iptables).
        takers.extend(reversed(rule.matches))
        for taker in takers:
            if option in taker.OPTIONS:
                nargs = taker.OPTIONS[option][1]
                taker.parse(option, self._args(i, nargs, option), invert)
                return nargs
        implicit = IMPLICIT_MATCHES.get(rule.proto)
        if implicit and not rule.proto_inv and option in MATCHES[implicit].OPTIONS \
                and not any(m.NAME == implicit for m in rule.matches):
            match = self._load_match(implicit)
            nargs = match.OPTIONS[option][1]
            match.parse(option, self._args(i, nargs, option), invert)
            return nargs
        if implicit and rule.proto_inv and option in MATCHES[implicit].OPTIONS:
            # iptables loads the match; the kernel then refuses it for a negated protocol.
            raise RulesError(EINVAL_MESSAGE, exit_code=EXIT_KERNEL,
                             detail=f"the {implicit} match needs -p {implicit} (not negated)")
        raise RulesError(f"unknown option \"{option}\"")

    def _finish(self) -> None:
        rule = self.rule
        for match in rule.matches:
            match.check(rule.proto, rule.proto_inv)
        if rule.target_ext is not None:
            ext = rule.target_ext
            if ext.HOOKS is not None and self.is_builtin and self.chain not in ext.HOOKS:
                raise RulesError(EINVAL_MESSAGE, exit_code=EXIT_KERNEL,
                                 detail=f"{ext.NAME} is not valid in {self.chain}")
            ext.check(rule.proto, rule.proto_inv)


def parse_rule_spec(table: str, chain: str, words: list[str], *, is_builtin: bool,
                    chain_exists: Callable[[str], bool]) -> ParsedSpec:
    """The rules one rule specification makes (several when -s/-d list several addresses)."""
    if table not in TABLES:
        raise RulesError(f"unknown table {table}")
    return _SpecParser(table, chain, words, is_builtin, chain_exists).parse()


__all__ = ["Rule", "ParsedSpec", "parse_rule_spec", "split_restore_line"]
