"""Where a big listing's `cat` goes in the daemon: its FUSE requests and their parts.

    .venv/bin/python -m bench.trace.listtrace [--entries N] [--shape S] [--cats N] [--fork N]

Mounts a table shape (bench/shapes.py) under bench/trace/traced_mount.py and the /dev/fuse
shim (fusetrace.c), cats net/ip_conntrack and net/nf_conntrack in turns, and prints per cat:
the requests (READ count), the time in Python callbacks (the READs wait there for the
chunks they need: rendered by the read-ahead thread, by forked children or by themselves),
from a request's arrival to its callback (the GIL), from the callback's end to the reply
written (the bindings' copy and the write to /dev/fuse), between one reply and the next
READ (the kernel and cat), and the collections that overlapped it.  --fork sets
PROCFS_CT_FORK_RENDER for the daemon (0: in process; unset: the daemon's own choice).
"""
from __future__ import annotations

import argparse
import collections
import os
import subprocess
import time

from bench import captures, shapes, system
from bench.common import PYTHON, cache_path
from bench.trace.knobtrace import build_shim, load_trace

FILES = ("ip_conntrack", "nf_conntrack")
GAP = 0.7       # seconds between cats: more than SNAPSHOT_TTL, so each cat renders


def summary(name: str, start: int, end: int, fuse: dict, gcs: list) -> str:
    """One cat's line: its requests and where their time went (ms)."""
    mine = [r for r in fuse.values() if start <= r["read"] <= end]
    served = [r for r in mine if "enter" in r]
    python = sum(r["leave"] - r["enter"] for r in served) / 1e6
    gil = sum(r["enter"] - r["read"] for r in served) / 1e6
    reply = sum(r.get("reply", r["leave"]) - r["leave"] for r in served) / 1e6
    reads = sorted((r["read"], r.get("reply", r["read"])) for r in mine if r["op"] == "READ")
    between = sum(b[0] - a[1] for a, b in zip(reads, reads[1:])) / 1e6
    pauses = [(g[1] - g[0]) / 1e6 for g in gcs if start <= g[0] <= end]
    ops = collections.Counter(r["op"] for r in mine)
    return (f"{name}: wall {(end - start) / 1e6:.0f} ms, requests {dict(ops)}, python "
            f"{python:.0f} ms, gil {gil:.0f} ms, reply {reply:.0f} ms, between reads "
            f"{between:.0f} ms, collections {len(pauses)} ({sum(pauses):.1f} ms)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=65536)
    parser.add_argument("--shape", choices=shapes.SHAPES, default="server")
    parser.add_argument("--cats", type=int, default=3, help="cats of each file")
    parser.add_argument("--fork", default=None, help="PROCFS_CT_FORK_RENDER for the daemon")
    args = parser.parse_args()
    capture = captures.shape_capture(args.shape, args.entries)
    prefix = cache_path(f"listtrace-{os.getpid()}")
    env = {"LD_PRELOAD": build_shim()}
    if args.fork is not None:
        env["PROCFS_CT_FORK_RENDER"] = args.fork
    cats = []
    with system.Mount(f"pcap:{capture}@0", max_entries=args.entries, expect=args.entries,
                      knobs=shapes.LONG_TIMEOUTS, env=env,
                      launcher=[PYTHON, "-m", "bench.trace.traced_mount", prefix]) as mount:
        print(f"load average {os.getloadavg()[0]:.2f} before")
        for name in FILES * args.cats:
            time.sleep(GAP)
            start = time.monotonic_ns()
            subprocess.run(["cat", mount.path("net/" + name)], stdout=subprocess.DEVNULL,
                           check=True)
            cats.append((name, start, time.monotonic_ns()))
        print(f"load average {os.getloadavg()[0]:.2f} after")
    fuse, gcs, _ = load_trace(prefix)
    for name, start, end in cats:
        print(summary(name, start, end, fuse, gcs))
    for suffix in (".py", ".fuse"):
        os.remove(prefix + suffix)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
