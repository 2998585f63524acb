"""`procfs-ct shell [--mount MNT | mount options]`: an interactive shell that sees the emulation at /proc."""
from __future__ import annotations

import argparse
import os

from procfs_ct import cmd_exec

HELP = ("An interactive shell ($SHELL, else /bin/sh) in a private mount namespace whose /proc "
        "shows the emulated files, as `procfs-ct exec` runs a command.")
DEFAULT_SHELL = "/bin/sh"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cmd_exec.add_mount_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return cmd_exec.run_inside(args, [os.environ.get("SHELL") or DEFAULT_SHELL])
