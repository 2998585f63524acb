"""`procfs-ct iptables|iptables-save|iptables-restore [--mount MNT] ...`: iptables' commands
applied to a running mount's ruleset through MNT/net/procfs_ct_iptables (see
procfs_ct/iptables_channel.py).  The mount is --mount, else $PROCFS_CT_ROOT (what
`procfs-ct exec` sets), else /proc.  Output and exit status are iptables' own."""
from __future__ import annotations

import json
import os
import sys
from typing import List, Optional, Sequence, Tuple

from procfs_ct.cmd_conntrack import DEFAULT_ROOT, ROOT_ENV
from procfs_ct.iptables_channel import CHANNEL_PATH

HELP = "iptables' command line applied to a running mount's ruleset: `procfs-ct iptables -L -v -n`."


def add_arguments(parser) -> None:
    parser.add_argument("args", nargs="*", help="iptables' own arguments")


def _split_mount(argv: Sequence[str]) -> Tuple[Optional[str], List[str]]:
    argv = list(argv)
    if argv and argv[0] == "--mount":
        if len(argv) < 2:
            return None, []
        return argv[1], argv[2:]
    if argv and argv[0].startswith("--mount="):
        return argv[0].split("=", 1)[1], argv[1:]
    return os.environ.get(ROOT_ENV, DEFAULT_ROOT), argv


def ask(mount: str, request: dict) -> dict:
    """Write one request to the mount's channel and read its reply on the same descriptor."""
    fd = os.open(os.path.join(mount, CHANNEL_PATH), os.O_RDWR)
    try:
        os.write(fd, json.dumps(request).encode("utf-8"))
        chunks = []
        offset = 0
        while True:
            chunk = os.pread(fd, 65536, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
    finally:
        os.close(fd)
    return json.loads(b"".join(chunks).decode("utf-8"))


def _run(program: str, argv: Sequence[str], build) -> int:
    mount, rest = _split_mount(argv)
    if mount is None:
        print(f"procfs-ct {program}: --mount needs a directory", file=sys.stderr)
        return 2
    try:
        request = build(rest)
        reply = ask(mount, request)
    except ValueError as exc:
        print(f"procfs-ct {program}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"procfs-ct {program}: {mount}: no iptables channel ({exc.strerror})",
              file=sys.stderr)
        return 2
    sys.stdout.write(reply["stdout"])
    sys.stdout.flush()
    sys.stderr.write(reply["stderr"])
    return int(reply["exit"])


def run_argv(argv: Sequence[str]) -> int:
    return _run("iptables", argv, lambda rest: {"op": "command", "argv": rest})


def run(args) -> int:
    return run_argv(args.args)
