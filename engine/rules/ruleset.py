"""Tables of chains of rules; loading iptables-restore text; the walk a packet takes; saving.

The walk is ipt_do_table's: rules are tried in order; a matched rule counts the packet
(one packet, IP total length bytes) before its target runs, jumps included. `-j CHAIN`
pushes the place after the rule and continues in CHAIN; `-g CHAIN` does not push, so the
end of CHAIN (or a RETURN in it) goes back to whoever called the chain that did the goto.
Falling off the end of a user chain, or RETURN in it, pops; with nothing to pop (the end or
a RETURN of the built-in chain itself, or of a chain reached from it by goto), the built-in
chain's policy applies and its counter counts the packet.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Iterator, Optional

from .errors import (ELOOP_MESSAGE, EXIT_KERNEL, EXIT_PARAMETER, EXIT_TABLE, IPTABLES_VERSION,
                     KERNEL_CHECKS, RulesError)
from .matches import EvalContext
from .packet import RulePacket
from .rulespec import Rule, parse_rule_spec, split_restore_line
from .tables import (ACCEPT, DROP, MAX_CHAIN_NAME, NOT_EMULATED, POLICIES, RETURN,
                     STANDARD_TARGETS, TABLES, tables_at)
from .targets import CONTINUE, TARGETS



@dataclass
class Chain:
    name: str
    policy: Optional[str] = None          # None for a user chain
    packets: int = 0                      # the policy's counters (built-in chains)
    bytes: int = 0
    rules: list[Rule] = field(default_factory=list)

    @property
    def builtin(self) -> bool:
        return self.policy is not None


class Table:
    def __init__(self, name: str) -> None:
        self.name = name
        self.chains: dict[str, Chain] = {
            chain: Chain(chain, ACCEPT) for chain in TABLES[name][1]}

    def builtin_names(self) -> tuple[str, ...]:
        return TABLES[self.name][1]

    def user_chains(self) -> list[Chain]:
        """User chains in the order libiptc keeps them: sorted by name."""
        return sorted((c for c in self.chains.values() if not c.builtin), key=lambda c: c.name)

    def ordered_chains(self) -> list[Chain]:
        return [self.chains[n] for n in self.builtin_names()] + self.user_chains()

    def flush(self) -> None:
        """What iptables-restore does to a table it is given: rules and user chains go,
        built-in policies and their counters stay until a `:CHAIN` line sets them."""
        for name in list(self.chains):
            if self.chains[name].builtin:
                self.chains[name].rules = []
            else:
                del self.chains[name]

    def references(self, name: str) -> int:
        return sum(1 for c in self.chains.values() for r in c.rules
                   if r.target == name and r.target_ext is None and r.target not in STANDARD_TARGETS)

    def check_loops(self) -> None:
        """The kernel refuses a ruleset whose chains, walked from the built-in ones, loop."""
        def visit(name: str, path: tuple[str, ...]) -> None:
            for rule in self.chains[name].rules:
                target = rule.target
                if target in self.chains and not self.chains[target].builtin:
                    if target in path:
                        raise RulesError(ELOOP_MESSAGE,
                                         exit_code=EXIT_KERNEL,
                                         detail=" -> ".join(path + (target,)))
                    visit(target, path + (target,))
        for name in self.builtin_names():
            visit(name, (name,))


def validate_chain_name(name: str) -> None:
    if len(name) > MAX_CHAIN_NAME:
        raise RulesError(f"chain name `{name}' too long (must be under {MAX_CHAIN_NAME + 1} chars)")
    if not name or name.startswith("-") or name.startswith("!") or any(c.isspace() for c in name):
        raise RulesError(f"Invalid chain name `{name}'")
    if name in STANDARD_TARGETS or name in TARGETS:
        raise RulesError("chain name may not clash with target name")


@dataclass
class HookVerdict:
    """What the hook decided for a packet, and what its rules did on the way."""
    verdict: str                           # ACCEPT or DROP
    mark: int
    ctmark: int
    notrack: bool = False                  # NOTRACK/CT --notrack: make no conntrack entry
    logs: list[tuple[int, str]] = field(default_factory=list)   # (syslog level, line)
    rejects: list[bytes] = field(default_factory=list)          # datagrams to send back
    helper: object = None                  # CT --helper: engine/helpers/registry.Helper


class Ruleset:
    """The emulated x_tables state: raw, mangle and filter, each once someone touched it."""

    def __init__(self) -> None:
        self.tables: dict[str, Table] = {}
        self._creation: list[str] = []

    # -- tables ------------------------------------------------------------------------
    def table(self, name: str, create: bool = True) -> Table:
        if name in NOT_EMULATED:
            raise RulesError(NOT_EMULATED[name], exit_code=EXIT_TABLE)
        if name not in TABLES:
            raise RulesError(f"can't initialize iptables table `{name}': Table does not exist "
                             f"(do you need to insmod?)", exit_code=EXIT_TABLE)
        if name not in self.tables:
            table = Table(name)
            if not create:
                return table
            self.tables[name] = table
            self._creation.append(name)
        return self.tables[name]

    def copy(self) -> "Ruleset":
        new = copy.deepcopy(self)
        for _, _, rule in new.iter_rules():
            rule.checks = None          # compiled tests refer to the original's matches
        return new

    # -- loading -----------------------------------------------------------------------
    @classmethod
    def load_restore(cls, text: str, *, counters: bool = False) -> "Ruleset":
        """A ruleset from iptables-restore input (counters honoured as with `-c`)."""
        return cls().restore(text, counters=counters)

    def restore(self, text: str, *, counters: bool = False, noflush: bool = False) -> "Ruleset":
        """A new ruleset: this one with `text` applied as iptables-restore applies it.
        Atomic: on any error RulesError is raised and this ruleset is left as it was."""
        new = self.copy()
        _Restorer(new, counters, noflush).run(text)
        return new

    # -- the walk ----------------------------------------------------------------------
    def run_hook(self, hook: str, packet: RulePacket, now: float, *,
                 after: Optional[int] = None, before: Optional[int] = None) -> HookVerdict:
        """Run the packet through every table at `hook` whose priority lies strictly
        between `after` and `before` (default: all), in priority order; stop at a DROP."""
        ctx = EvalContext(hook, now, packet.mark, packet.ctmark)
        verdict = ACCEPT
        for priority, name in tables_at(hook):
            if (after is not None and priority <= after) or (before is not None and priority >= before):
                continue
            table = self.tables.get(name)
            if table is None:
                continue
            verdict = self._walk(table, hook, packet, ctx)
            if verdict == DROP:
                break
        return HookVerdict(verdict, ctx.mark, ctx.ctmark, ctx.notrack, ctx.logs, ctx.rejects,
                           ctx.helper)

    @staticmethod
    def _walk(table: Table, hook: str, packet: RulePacket, ctx: EvalContext) -> str:
        base = table.chains[hook]
        chains = table.chains
        chain, index = base, 0
        stack: list[tuple[Chain, int]] = []
        length = packet.length
        while True:
            rules = chain.rules
            if index >= len(rules):
                target = RETURN                      # the chain's end is an implicit RETURN
            else:
                rule = rules[index]
                index += 1
                checks = rule.checks
                if checks is None:
                    checks = rule.checks = rule._compile()
                matched = True
                for check in checks:            # the hot loop: one call per test
                    if not check(packet, ctx):
                        matched = False
                        break
                if not matched:
                    continue
                rule.packets += 1
                rule.bytes += length
                target = rule.target
                if rule.target_ext is not None:
                    result = rule.target_ext.run(packet, ctx)
                    if result == CONTINUE:
                        continue
                    return result
                if not target:
                    continue
            if target == ACCEPT or target == DROP:
                return target
            if target == RETURN:
                if stack:
                    chain, index = stack.pop()
                    continue
                base.packets += 1                    # underflow: the policy decides
                base.bytes += length
                return base.policy or ACCEPT
            if not rule.goto:
                stack.append((chain, index))
            chain, index = chains[target], 0

    # -- saving ------------------------------------------------------------------------
    def save_order(self) -> list[str]:
        """The order iptables-save lists tables: /proc/net/ip_tables_names, newest first."""
        return list(reversed(self._creation))

    def save(self, counters: bool = True, *, table: Optional[str] = None,
             stamp: Optional[str] = None) -> str:
        """iptables-save [-c] [-t TABLE] output. With `stamp` (a ctime string) the
        `# Generated by` / `# Completed on` lines are printed too, as the real tool does."""
        names = [table] if table else self.save_order()
        out: list[str] = []
        for name in names:
            tab = self.table(name, create=False) if table else self.tables[name]
            if stamp:
                out.append(f"# Generated by iptables-save {IPTABLES_VERSION} on {stamp}")
            out.append(f"*{name}")
            for chain in tab.ordered_chains():
                policy = chain.policy or "-"
                pkts, byts = (chain.packets, chain.bytes) if chain.builtin else (0, 0)
                out.append(f":{chain.name} {policy} [{pkts}:{byts}]")
            for chain in tab.ordered_chains():
                for rule in chain.rules:
                    prefix = f"[{rule.packets}:{rule.bytes}] " if counters else ""
                    out.append(f"{prefix}-A {chain.name}{rule.spec()}")
            out.append("COMMIT")
            if stamp:
                out.append(f"# Completed on {stamp}")
        return "".join(line + "\n" for line in out)

    # -- shared by the restorer and the command line ------------------------------------
    def parse_rules(self, table: Table, chain: str, words: list[str]) -> tuple[list[Rule], Optional[tuple[int, int]]]:
        if chain not in table.chains:
            raise RulesError("No chain/target/match by that name.", exit_code=EXIT_KERNEL)
        spec = parse_rule_spec(table.name, chain, words,
                               is_builtin=table.chains[chain].builtin,
                               chain_exists=lambda n: n in table.chains and not table.chains[n].builtin)
        return spec.rules, spec.counters

    def iter_rules(self) -> Iterator[tuple[str, str, Rule]]:
        for tname, table in self.tables.items():
            for chain in table.chains.values():
                for rule in chain.rules:
                    yield tname, chain.name, rule


class _Restorer:
    """iptables-restore's line loop over a copy of the ruleset."""

    def __init__(self, ruleset: Ruleset, counters: bool, noflush: bool) -> None:
        self.rs, self.counters, self.noflush = ruleset, counters, noflush
        self.table: Optional[Table] = None
        self.lineno = 0

    def run(self, text: str) -> None:
        """Parse errors stop at their line; what the kernel would refuse (EINVAL, a loop)
        iptables-restore learns at COMMIT, so it is reported at the COMMIT line, as iptables
        does, with the rule's own line in the detail."""
        lineno = 0
        refused: Optional[tuple[int, RulesError]] = None
        for lineno, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            self.lineno = lineno
            try:
                self._line(stripped)
            except RulesError as err:
                if err.message in KERNEL_CHECKS and stripped != "COMMIT":
                    refused = refused or (lineno, err)
                    continue
                raise RulesError(err.message, lineno, err.exit_code, err.detail) from None
            if stripped == "COMMIT" and refused:
                at, err = refused
                raise RulesError(err.message, lineno, err.exit_code,
                                 f"line {at}: {err.detail}" if err.detail else f"line {at}")
        if self.table is not None:
            raise RulesError("COMMIT expected", lineno + 1, EXIT_KERNEL)

    def _line(self, line: str) -> None:
        if line.startswith("*"):
            if self.table is not None:
                raise RulesError("COMMIT expected", exit_code=EXIT_KERNEL)
            name = line[1:].strip()
            try:
                self.table = self.rs.table(name)
            except RulesError as err:
                message = err.message if name in NOT_EMULATED else \
                    f"iptables-restore: unable to initialize table '{name}'"
                raise RulesError(message, exit_code=EXIT_PARAMETER) from None
            if not self.noflush:
                self.table.flush()
            return
        if self.table is None:
            raise RulesError("no table specified (a line before `*table')")
        table = self.table
        if line == "COMMIT":
            table.check_loops()
            self.table = None
            return
        if line.startswith(":"):
            self._chain_line(table, line[1:])
            return
        words = split_restore_line(line)
        counters = None
        if words and words[0].startswith("[") and words[0].endswith("]"):
            counters = _parse_counter_pair(words.pop(0))
        if len(words) >= 2 and words[0] in ("-A", "--append"):
            rules, dash_c = self.rs.parse_rules(table, words[1], words[2:])
            # a `[p:b]` prefix counts only with --counters; `-c P B` always (as iptables)
            counters = dash_c or (counters if self.counters else None)
            for rule in rules:
                if counters:
                    rule.packets, rule.bytes = counters
                table.chains[words[1]].rules.append(rule)
            return
        from .commands import apply_command   # -I/-D/-N/... inside a restore file
        apply_command(self.rs, ["-t", table.name, *words])

    def _chain_line(self, table: Table, rest: str) -> None:
        parts = rest.split()
        if len(parts) < 2:
            raise RulesError(f"bad chain line `:{rest}'")
        name, policy = parts[0], parts[1]
        pair = _parse_counter_pair(parts[2]) if len(parts) > 2 else (0, 0)
        if policy == "-":
            if name in table.chains and table.chains[name].builtin:
                raise RulesError(f"Can't set policy `-' on `{name}' line {self.lineno}: "
                                 "Bad built-in chain name", exit_code=EXIT_KERNEL)
            validate_chain_name(name)
            if name in table.chains:
                if not self.noflush:
                    raise RulesError("Chain already exists.", exit_code=EXIT_KERNEL)
                return
            table.chains[name] = Chain(name)
            return
        if name not in table.chains or not table.chains[name].builtin:
            raise RulesError(f"Can't set policy `{policy}' on `{name}' line {self.lineno}: "
                             "Bad built-in chain name", exit_code=EXIT_KERNEL)
        if policy not in POLICIES:
            raise RulesError(f"Can't set policy `{policy}' on `{name}' line {self.lineno}: "
                             "Bad policy name", exit_code=EXIT_KERNEL)
        chain = table.chains[name]
        chain.policy = policy
        chain.packets, chain.bytes = pair if self.counters else (0, 0)


def _parse_counter_pair(text: str) -> tuple[int, int]:
    inner = text.strip("[]")
    pkts, sep, byts = inner.partition(":")
    if not (text.startswith("[") and text.endswith("]") and sep and pkts.isdigit()
            and byts.isdigit()):
        raise RulesError(f"Bad counters `{text}'")
    return int(pkts), int(byts)
