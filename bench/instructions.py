"""Instructions per packet, ours and dpkt's, counted by callgrind: `python -m bench.instructions`.

Wall-clock rates on the shared machine move 2x with the load; instruction counts do not.
Each side runs twice under `valgrind --tool=callgrind` on the first N packets of the
1,000,000-packet mix and on its first packet alone; the difference over N-1 packets leaves
out the interpreter's start and the imports.  The task runs once beforehand so that both
counted runs find the modules compiled.  Instruction counts do not see cache misses (the
1,000,000-packet replay grows a table dpkt does not have): the ratio is an upper bound of
the wall-clock one.

    python -m bench.instructions [--packets 20000] [--tree PATH] [--no-dpkt] [--cache] [--loop]

`--tree` counts another checkout's engine (a base to compare with) with this interpreter.
`--cache` runs cachegrind instead, with its cache and branch predictor simulation (this
host's L1 and last-level caches as valgrind reads them; no L2, no TLB): instructions,
first-level data misses, last-level misses and mispredicted branches per packet -- what the
CPU time has beyond the instruction count, as far as a simulation can tell.
`--loop` counts the replay's loop and the capture's reading alone (engine/replay.py,
engine/capture.py), the fast path answering every frame with a constant.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from typing import Callable, Dict, List, Optional

from . import captures
from .common import PYTHON, REPO, cache_path

# What each side runs: ours the replay the tracking figure times, dpkt its decode to L4.
TASKS = {
    "ours": "from engine.replay import replay; replay({path!r})",
    "dpkt": "from bench.worker import task_dpkt; task_dpkt({path!r})",
    # The replay's own loop and the capture's reading alone (--loop): the fast path answers
    # every frame with a constant, so nothing is tracked.
    "loop": ("from engine.core import Engine; from engine.replay import replay\n"
             "Engine.fast_path = lambda self, first=1: (lambda now, linktype, frame: 1)\n"
             "replay({path!r})"),
}
COLLECTED = re.compile(r"Collected : (\d+)")
# cachegrind's summary lines, by the name printed for them.
CACHE_EVENTS = {"instructions": "I   refs", "D1 misses": "D1  misses",
                "LL misses": "LL misses", "mispredicts": "Mispredicts"}
CALLGRIND = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
CACHEGRIND = ["valgrind", "--tool=cachegrind", "--cache-sim=yes", "--branch-sim=yes",
              "--cachegrind-out-file=/dev/null"]


def first_packets(packets: int) -> str:
    """A pcap of the mix's first `packets` frames (made once, in the cache)."""
    path = cache_path(f"mixed-first-{packets}.pcap")
    if not os.path.exists(path):
        captures.cut_capture(captures.mixed_capture(), path + ".tmp", packets)
        os.replace(path + ".tmp", path)
    return path


def valgrind(tool: List[str], code: str, tree: str) -> str:
    """What valgrind `tool` prints (its stderr) for `python -c code` with `tree` on the path."""
    env = dict(os.environ, PYTHONPATH=tree + os.pathsep + REPO)
    subprocess.run([PYTHON, "-c", code], cwd=tree, env=env, check=True,
                   stdout=subprocess.DEVNULL)            # compiles what the counted runs import
    return subprocess.run(tool + [PYTHON, "-c", code], cwd=tree, env=env, capture_output=True,
                          text=True, check=True).stderr


def count(code: str, tree: str) -> Dict[str, int]:
    """Instructions callgrind counts for `python -c code` with `tree` on the path."""
    printed = valgrind(CALLGRIND, code, tree)
    found = COLLECTED.search(printed)
    if found is None:
        raise RuntimeError(f"callgrind printed no count:\n{printed[-2000:]}")
    return {"instructions": int(found.group(1))}


def cache_count(code: str, tree: str) -> Dict[str, int]:
    """cachegrind's totals (CACHE_EVENTS) for `python -c code` with `tree` on the path."""
    printed = valgrind(CACHEGRIND, code, tree)
    counts = {}
    for name, label in CACHE_EVENTS.items():
        found = re.search(re.escape(label) + r":\s+([\d,]+)", printed)
        if found is None:
            raise RuntimeError(f"cachegrind printed no {label}:\n{printed[-2000:]}")
        counts[name] = int(found.group(1).replace(",", ""))
    return counts


def per_packet(side: str, packets: int, tree: str,
               counter: Callable[[str, str], Dict[str, int]] = count) -> Dict[str, float]:
    """Each count per packet of one side, start-up left out."""
    many = counter(TASKS[side].format(path=first_packets(packets)), tree)
    one = counter(TASKS[side].format(path=first_packets(1)), tree)
    return {name: (many[name] - one[name]) / (packets - 1) for name in many}


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions")
    parser.add_argument("--packets", type=int, default=20_000)
    parser.add_argument("--tree", default=REPO, help="checkout whose engine is counted")
    parser.add_argument("--no-dpkt", action="store_true", help="count ours only")
    parser.add_argument("--cache", action="store_true",
                        help="cachegrind: cache misses and mispredicted branches too")
    parser.add_argument("--loop", action="store_true",
                        help="the replay's loop and reading alone (no tracking)")
    args = parser.parse_args(argv)
    if args.packets < 2:
        parser.error("--packets: at least 2")
    counter = cache_count if args.cache else count
    side = "loop" if args.loop else "ours"
    ours = per_packet(side, args.packets, os.path.abspath(args.tree), counter)
    say_counts(f"{side} ({args.tree})", ours)
    if not args.no_dpkt:
        dpkt = per_packet("dpkt", args.packets, REPO, counter)
        say_counts("dpkt", dpkt)
        print("dpkt's / ours: " + ", ".join(f"{name} {dpkt[name] / ours[name]:.2f}"
                                             for name in ours if ours[name]))
    return 0


def say_counts(side: str, counts: Dict[str, float]) -> None:
    """One side's counts per packet, on one line."""
    print(f"{side}: " + ", ".join(
        f"{value / 1000:.1f} k {name}" if value >= 1000 else f"{value:.1f} {name}"
        for name, value in counts.items()) + " per packet")


if __name__ == "__main__":
    sys.exit(main())
