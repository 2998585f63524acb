"""The iptables command line as functions over a Ruleset: -A -I -D -R -N -X -E -F -Z -P -L -S.

`apply_command(ruleset, argv)` changes the ruleset in place (all or nothing) and returns the
text iptables prints; errors are RulesError with iptables' message and exit code (1 for a
refusal, 2 for a bad argument, 3 for an unknown table), so an `iptables` adapter only has
to print `iptables: MESSAGE` or `iptables v1.8.9 (legacy): MESSAGE` and exit.
"""
from __future__ import annotations

from typing import Optional

from .errors import EINVAL_MESSAGE, EXIT_KERNEL, RulesError
from .listing import list_chains
from .ruleset import Chain, Ruleset, Table, validate_chain_name
from .tables import POLICIES

COMMANDS = {"-A": "-A", "--append": "-A", "-I": "-I", "--insert": "-I", "-D": "-D",
            "--delete": "-D", "-R": "-R", "--replace": "-R", "-N": "-N", "--new-chain": "-N",
            "-X": "-X", "--delete-chain": "-X", "-E": "-E", "--rename-chain": "-E",
            "-F": "-F", "--flush": "-F", "-Z": "-Z", "--zero": "-Z", "-P": "-P",
            "--policy": "-P", "-L": "-L", "--list": "-L", "-S": "-S", "--list-rules": "-S"}
FLAGS = {"-v": "verbose", "--verbose": "verbose", "-n": "numeric", "--numeric": "numeric",
         "-x": "exact", "--exact": "exact", "--line-numbers": "line_numbers"}
NO_SUCH = "No chain/target/match by that name."


def _kernel(message: str) -> RulesError:
    return RulesError(message, exit_code=EXIT_KERNEL)


class _Command:
    def __init__(self, argv: list[str]) -> None:
        self.table = "filter"
        self.command: Optional[str] = None
        self.args: list[str] = []
        self.flags: set[str] = set()
        self.spec: list[str] = []
        i = 0
        while i < len(argv):
            word = argv[i]
            if word in ("-t", "--table"):
                if i + 1 >= len(argv):
                    raise RulesError(f"option \"{word}\" requires an argument")
                self.table = argv[i + 1]
                i += 2
                continue
            if word in COMMANDS:
                if self.command is not None:
                    raise RulesError("Cannot use -%s with -%s" % (COMMANDS[word][1], self.command[1]))
                self.command = COMMANDS[word]
                i += 1
                i = self._command_args(argv, i, word)
                continue
            if word in FLAGS:
                self.flags.add(FLAGS[word])
            elif word in ("-w", "--wait"):
                if i + 1 < len(argv) and argv[i + 1].isdigit():
                    i += 1
            else:
                self.spec.append(word)
            i += 1
        if self.command is None:
            unknown = [w for w in self.spec if w.startswith("-")]
            raise RulesError(f"unknown option \"{unknown[0]}\"" if unknown else "no command specified")

    def _command_args(self, argv: list[str], i: int, word: str) -> int:
        """The chain (and rule number, policy, new name) that follow a command."""
        cmd = self.command
        optional_chain = cmd in ("-X", "-F", "-Z", "-L", "-S")
        if i < len(argv) and not argv[i].startswith("-") and argv[i] != "!":
            self.args.append(argv[i])
            i += 1
        elif not optional_chain:
            raise RulesError(f"option \"{word}\" requires an argument")
        if cmd in ("-E", "-P"):
            if i >= len(argv):
                raise RulesError(f"-{cmd[1]} requires old-chain-name and new-chain-name"
                                 if cmd == "-E" else "-P requires a chain and a policy")
            self.args.append(argv[i])
            i += 1
        elif cmd in ("-I", "-D", "-R", "-L", "-Z", "-S") and i < len(argv) and argv[i].isdigit() \
                and self.args:
            self.args.append(argv[i])
            i += 1
        return i


def _chain(table: Table, name: str) -> Chain:
    if name not in table.chains:
        raise _kernel(NO_SUCH)
    return table.chains[name]


def _rulenum(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise RulesError(f"Invalid rule number `{text}'")
    return int(text)


def apply_command(ruleset: Ruleset, argv: list[str]) -> str:
    """Run one iptables command line against `ruleset`; returns what iptables prints."""
    cmd = _Command(argv)
    table = ruleset.table(cmd.table)
    c, args = cmd.command, cmd.args
    if c not in ("-A", "-I", "-D", "-R") and cmd.spec:
        raise RulesError(f"Bad argument `{cmd.spec[0]}'")
    if c == "-A":
        rules = _parse_counted(ruleset, table, args[0], cmd.spec)
        _commit(table, lambda: table.chains[args[0]].rules.extend(rules))
    elif c == "-I":
        chain = _chain(table, args[0])
        pos = _rulenum(args[1]) if len(args) > 1 else 1
        if pos > len(chain.rules) + 1:
            raise _kernel("Index of insertion too big.")
        rules = _parse_counted(ruleset, table, args[0], cmd.spec)
        _commit(table, lambda: chain.rules.__setitem__(slice(pos - 1, pos - 1), rules))
    elif c == "-R":
        chain = _chain(table, args[0])
        if len(args) < 2:
            raise RulesError("-R requires a rule number")
        pos = _rulenum(args[1])
        if pos > len(chain.rules):
            raise _kernel("Index of replacement too big.")
        rules = _parse_counted(ruleset, table, args[0], cmd.spec)
        if len(rules) != 1:
            raise RulesError("Replacement rule does not specify a unique address")
        _commit(table, lambda: chain.rules.__setitem__(pos - 1, rules[0]))
    elif c == "-D":
        chain = _chain(table, args[0])
        if len(args) > 1:
            if cmd.spec:
                raise RulesError(f"Illegal option `{cmd.spec[0]}' with this command")
            pos = _rulenum(args[1])
            if pos > len(chain.rules):
                raise _kernel("Index of deletion too big.")
            del chain.rules[pos - 1]
        else:
            rules, _ = ruleset.parse_rules(table, args[0], cmd.spec)
            specs = [r.spec() for r in chain.rules]
            wanted = [r.spec() for r in rules]
            if any(w not in specs for w in wanted):
                raise _kernel("Bad rule (does a matching rule exist in that chain?).")
            for w in wanted:
                del chain.rules[[r.spec() for r in chain.rules].index(w)]
    elif c == "-N":
        validate_chain_name(args[0])
        if args[0] in table.chains:
            raise _kernel("Chain already exists.")
        table.chains[args[0]] = Chain(args[0])
    elif c == "-X":
        names = args[:1] or [ch.name for ch in table.user_chains()]
        for name in names:
            chain = _chain(table, name)
            if chain.builtin:
                raise _kernel(EINVAL_MESSAGE)
            if chain.rules:
                raise _kernel("Directory not empty.")
            if any(r.target == name and r.target_ext is None
                   for other in table.chains.values() if other.name not in names
                   for r in other.rules):
                raise _kernel("Too many links.")
        for name in names:
            del table.chains[name]
    elif c == "-E":
        old, new = args
        chain = _chain(table, old)
        if new in table.chains:
            raise _kernel("File exists.")
        validate_chain_name(new)
        if chain.builtin:
            raise _kernel(EINVAL_MESSAGE)
        chain.name = new
        table.chains = {(new if k == old else k): v for k, v in table.chains.items()}
        for ch in table.chains.values():
            for rule in ch.rules:
                if rule.target == old and rule.target_ext is None:
                    rule.target = new
    elif c == "-F":
        for chain in ([_chain(table, args[0])] if args else table.chains.values()):
            chain.rules = []
    elif c == "-Z":
        for chain in ([_chain(table, args[0])] if args else table.chains.values()):
            chain.packets = chain.bytes = 0
            for rule in chain.rules:
                rule.packets = rule.bytes = 0
    elif c == "-P":
        name, policy = args
        chain = table.chains.get(name)
        if chain is None or not chain.builtin:
            raise _kernel("Bad built-in chain name.")
        if policy not in POLICIES:
            raise _kernel("Bad policy name. Run `dmesg' for more information.")
        chain.policy = policy
    elif c == "-S":
        return _list_rules(table, args[0] if args else None, "verbose" in cmd.flags)
    elif c == "-L":
        chains = [_chain(table, args[0])] if args else table.ordered_chains()
        return list_chains(table, chains, cmd.flags)
    return ""


def _parse_counted(ruleset: Ruleset, table: Table, chain: str, spec: list[str]) -> list:
    """The rules of a specification, with the counters its `-c PKTS BYTES` gives them."""
    rules, counters = ruleset.parse_rules(table, chain, spec)
    if counters:
        for rule in rules:
            rule.packets, rule.bytes = counters
    return rules


def _commit(table: Table, change) -> None:
    """Apply a change, and undo it if the result has a loop (the kernel refuses those)."""
    saved = {name: list(chain.rules) for name, chain in table.chains.items()}
    change()
    try:
        table.check_loops()
    except RulesError:
        for name, rules in saved.items():
            table.chains[name].rules = rules
        raise


def _list_rules(table: Table, name: Optional[str], verbose: bool) -> str:
    chains = [_chain(table, name)] if name else table.ordered_chains()
    out = []
    for chain in chains:
        if chain.builtin:
            counts = f" -c {chain.packets} {chain.bytes}" if verbose else ""
            out.append(f"-P {chain.name} {chain.policy}{counts}")
        else:
            out.append(f"-N {chain.name}")
    for chain in chains:
        for rule in chain.rules:
            counts = f" -c {rule.packets} {rule.bytes}" if verbose else ""
            out.append(f"-A {chain.name}{rule.spec(counts)}")
    return "".join(line + "\n" for line in out)
