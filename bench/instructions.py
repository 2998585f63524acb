"""Instructions per packet, ours and dpkt's, counted by callgrind: `python -m bench.instructions`.

Wall-clock rates on the shared machine move 2x with the load; instruction counts do not.
Each side runs twice under `valgrind --tool=callgrind` on the first N packets of the
1,000,000-packet mix and on its first packet alone; the difference over N-1 packets leaves
out the interpreter's start and the imports.  The task runs once beforehand so that both
counted runs find the modules compiled.  Instruction counts do not see cache misses (the
1,000,000-packet replay grows a table dpkt does not have): the ratio is an upper bound of
the wall-clock one.

    python -m bench.instructions [--packets 20000] [--tree PATH] [--no-dpkt]

`--tree` counts another checkout's engine (a base to compare with) with this interpreter.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from typing import Optional

from . import captures
from .common import PYTHON, REPO, cache_path

# What each side runs: ours the replay the tracking figure times, dpkt its decode to L4.
TASKS = {
    "ours": "from engine.replay import replay; replay({path!r})",
    "dpkt": "from bench.worker import task_dpkt; task_dpkt({path!r})",
}
COLLECTED = re.compile(r"Collected : (\d+)")


def first_packets(packets: int) -> str:
    """A pcap of the mix's first `packets` frames (made once, in the cache)."""
    path = cache_path(f"mixed-first-{packets}.pcap")
    if not os.path.exists(path):
        captures.cut_capture(captures.mixed_capture(), path + ".tmp", packets)
        os.replace(path + ".tmp", path)
    return path


def count(code: str, tree: str) -> int:
    """Instructions callgrind counts for `python -c code` with `tree` on the path."""
    env = dict(os.environ, PYTHONPATH=tree + os.pathsep + REPO)
    subprocess.run([PYTHON, "-c", code], cwd=tree, env=env, check=True,
                   stdout=subprocess.DEVNULL)            # compiles what the counted runs import
    done = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                           PYTHON, "-c", code], cwd=tree, env=env, capture_output=True,
                          text=True, check=True)
    found = COLLECTED.search(done.stderr)
    if found is None:
        raise RuntimeError(f"callgrind printed no count:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def per_packet(side: str, packets: int, tree: str) -> float:
    """Instructions per packet of one side, start-up left out."""
    many = count(TASKS[side].format(path=first_packets(packets)), tree)
    one = count(TASKS[side].format(path=first_packets(1)), tree)
    return (many - one) / (packets - 1)


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions")
    parser.add_argument("--packets", type=int, default=20_000)
    parser.add_argument("--tree", default=REPO, help="checkout whose engine is counted")
    parser.add_argument("--no-dpkt", action="store_true", help="count ours only")
    args = parser.parse_args(argv)
    if args.packets < 2:
        parser.error("--packets: at least 2")
    ours = per_packet("ours", args.packets, os.path.abspath(args.tree))
    print(f"ours: {ours / 1000:.1f} k instructions per packet ({args.tree})")
    if not args.no_dpkt:
        dpkt = per_packet("dpkt", args.packets, REPO)
        print(f"dpkt: {dpkt / 1000:.1f} k instructions per packet")
        print(f"dpkt's / ours: {dpkt / ours:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
