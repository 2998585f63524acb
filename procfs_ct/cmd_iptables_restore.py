"""`procfs-ct iptables-restore [--mount MNT] [-n|--noflush] [-c] [FILE]`: load rules into a
running mount, atomically (a refused file changes nothing)."""
from __future__ import annotations

import sys
from typing import Sequence

from procfs_ct.cmd_iptables import _run

HELP = "iptables-restore into a running mount: `procfs-ct iptables-restore -n < rules`."


def add_arguments(parser) -> None:
    parser.add_argument("args", nargs="*")


def _request(rest: Sequence[str]) -> dict:
    counters = noflush = False
    path = None
    for arg in rest:
        if arg in ("-c", "--counters"):
            counters = True
        elif arg in ("-n", "--noflush"):
            noflush = True
        elif arg.startswith("-") or path is not None:
            raise ValueError(f"unknown argument {arg!r}")
        else:
            path = arg
    try:
        text = sys.stdin.read() if path is None else open(path, encoding="utf-8").read()
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror}") from None
    return {"op": "restore", "text": text, "noflush": noflush, "counters": counters}


def run_argv(argv: Sequence[str]) -> int:
    return _run("iptables-restore", argv, _request)


def run(args) -> int:
    return run_argv(args.args)
