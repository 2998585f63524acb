"""`procfs-ct iptables-save [--mount MNT] [-c] [-t TABLE]`: the running mount's ruleset."""
from __future__ import annotations

from typing import Sequence

from procfs_ct.cmd_iptables import _run

HELP = "iptables-save of a running mount's ruleset: `procfs-ct iptables-save -c`."


def add_arguments(parser) -> None:
    parser.add_argument("args", nargs="*")


def _request(rest: Sequence[str]) -> dict:
    counters, table, rest = False, None, list(rest)
    while rest:
        arg = rest.pop(0)
        if arg in ("-c", "--counters"):
            counters = True
        elif arg in ("-t", "--table") and rest:
            table = rest.pop(0)
        else:
            raise ValueError(f"unknown argument {arg!r}")
    return {"op": "save", "counters": counters, "table": table}


def run_argv(argv: Sequence[str]) -> int:
    return _run("iptables-save", argv, _request)


def run(args) -> int:
    return run_argv(args.args)
