"""The `procfs-ct` command: mount, replay, generate, exec, shell, conntrack.

Each subcommand lives in its own module (cmd_*.py) and contributes its arguments;
this file only dispatches and turns usage errors into one clear line.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from procfs_ct.errors import UsageError

SUBCOMMANDS = {
    "mount": "procfs_ct.cmd_mount",
    "replay": "procfs_ct.cmd_replay",
    "generate": "procfs_ct.cmd_generate",
    "exec": "procfs_ct.cmd_exec",
    "shell": "procfs_ct.cmd_shell",
    "conntrack": "procfs_ct.cmd_conntrack",
    "iptables": "procfs_ct.cmd_iptables",
    "iptables-save": "procfs_ct.cmd_iptables_save",
    "iptables-restore": "procfs_ct.cmd_iptables_restore",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="procfs-ct", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_arguments(sub.add_parser(name, help=module.HELP, description=module.HELP,
                                            formatter_class=argparse.RawDescriptionHelpFormatter,
                                            epilog=getattr(module, "EPILOG", None)))
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        module = importlib.import_module(SUBCOMMANDS[argv[0]])
        if hasattr(module, "run_argv"):     # a command with its own option syntax (conntrack's)
            try:
                return int(module.run_argv(argv[1:]) or 0)
            except KeyboardInterrupt:
                return 130
            except BrokenPipeError:
                return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    module = importlib.import_module(SUBCOMMANDS[args.command])
    try:
        return int(module.run(args) or 0)
    except UsageError as exc:
        print(f"procfs-ct {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    # Run as `python -m procfs_ct.cli`: use the importable module's main so that
    # UsageError is the same class the subcommands raise.
    from procfs_ct.cli import main as package_main
    sys.exit(package_main())
