#!/usr/bin/env python3
"""The cost of `procfs-ct exec`'s /proc view: commands timed outside and inside it.

    bench/passthrough.py [--runs 50]

Runs each command RUNS times on the host's /proc, then the same inside
`procfs-ct exec --source none` (one exec for all runs, so its start-up is not counted),
and prints the medians and their ratio.  Not a test: no thresholds.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = {"ps -e": ["ps", "-e"], "cat /proc/meminfo": ["cat", "/proc/meminfo"],
            "cat /proc/net/nf_conntrack": ["cat", "/proc/net/nf_conntrack"],
            "sysctl net.netfilter.nf_conntrack_max": ["sysctl", "net.netfilter.nf_conntrack_max"]}


def medians(runs: int) -> dict:
    """{command: median seconds} for this process's /proc."""
    result = {}
    for name, argv in COMMANDS.items():
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times.append(time.perf_counter() - start)
        result[name] = statistics.median(times)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        print(json.dumps(medians(args.runs)))
        return 0
    outside = medians(args.runs)
    done = subprocess.run([sys.executable, "-c", "import sys; from procfs_ct.cli import main; "
                           "sys.exit(main())", "exec", "--source", "none", "--",
                           sys.executable, os.path.abspath(__file__), "--inside",
                           "--runs", str(args.runs)],
                          cwd=REPO, capture_output=True, text=True, check=True)
    inside = json.loads(done.stdout)
    print(f"| command ({args.runs} runs, median) | host /proc | inside exec | ratio |")
    print("|---|---|---|---|")
    for name in COMMANDS:
        print(f"| `{name}` | {outside[name] * 1e3:.2f} ms | {inside[name] * 1e3:.2f} ms "
              f"| {inside[name] / outside[name]:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
