"""Where a knob write's time goes while the mount tracks 50,000 packets/s.

    .venv/bin/python -m bench.trace.knobtrace [--writes N] [--gap SECONDS]

Mounts the bench's mix capture at 50,000 packets/s with bench/trace/traced_mount.py and
the /dev/fuse shim (fusetrace.c, compiled with cc into the bench cache), makes N
open/write/close of nf_conntrack_udp_timeout from this process, timing each system call,
unmounts, and splits every FUSE request of every write into:
  wake    from the system call's start (or the previous reply) until libfuse's thread
          has the request (the scheduler waking it);
  gil     from there until the Python callback starts (libfuse, ctypes, the GIL);
  python  the callback itself;
  reply   from its end until libfuse has written the reply;
  back    from the last reply until the system call returns (the scheduler waking us).
It prints the medians and p99 of each, the requests a write costs, and for the writes
slower than --slow ms what overlapped them (collections, engine feeding holds).
"""
from __future__ import annotations

import argparse
import collections
import os
import subprocess
import time
from typing import Dict, List, Tuple

from bench import captures, system
from bench.common import PYTHON, cache_path

KNOB = "sys/net/netfilter/nf_conntrack_udp_timeout"
OPCODES = {1: "LOOKUP", 3: "GETATTR", 4: "SETATTR", 14: "OPEN", 16: "WRITE", 18: "RELEASE",
           22: "GETXATTR", 25: "FLUSH", 34: "ACCESS", 2: "FORGET", 42: "BATCH_FORGET",
           15: "READ"}
HERE = os.path.dirname(os.path.abspath(__file__))


def build_shim() -> str:
    out = cache_path("fusetrace.so")
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", out,
                    os.path.join(HERE, "fusetrace.c"), "-ldl"], check=True)
    return out


ECHO_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC     # what `echo N > knob` opens with


def write_knob(path: str, writes: int, gap: float,
               flags: int = ECHO_FLAGS) -> List[Tuple[int, int, int, int]]:
    """(start, after open, after write, after close) per write, monotonic ns."""
    value = int(open(path).read())
    times = []
    for n in range(writes):
        data = f"{value + 1 + n % 2}\n".encode()
        t0 = time.monotonic_ns()
        fd = os.open(path, flags)
        t1 = time.monotonic_ns()
        os.write(fd, data)
        t2 = time.monotonic_ns()
        os.close(fd)
        times.append((t0, t1, time.monotonic_ns(), t2))
        time.sleep(gap)
    return [(t0, t1, t2, t3) for t0, t1, t3, t2 in times]


def load_trace(prefix: str):
    fuse: Dict[int, dict] = {}
    with open(prefix + ".fuse") as f:
        for line in f:
            ns, tid, kind, op, unique = map(int, line.split())
            request = fuse.setdefault(unique, {}) if kind == 0 else fuse.get(unique)
            if kind == 0:
                fuse[unique] = {"read": ns, "tid": tid, "op": OPCODES.get(op, str(op))}
            elif request is not None and "reply" not in request:
                request["reply"] = ns
    callbacks, gcs, feeds = collections.defaultdict(list), [], []
    with open(prefix + ".py") as f:
        for line in f:
            kind, *rest = line.split()
            if kind == "cb":
                callbacks[int(rest[0])].append((int(rest[2]), int(rest[3]), rest[1]))
            elif kind == "gc":
                gcs.append((int(rest[1]), int(rest[2]), int(rest[0])))
            elif kind == "feed":
                feeds.append((int(rest[0]), int(rest[1]), int(rest[2])))
    # A callback belongs to the last request its thread read before it began.
    by_tid = collections.defaultdict(list)
    for unique, request in fuse.items():
        by_tid[request["tid"]].append((request["read"], unique))
    for tid, reads in by_tid.items():
        reads.sort()
        for enter, leave, name in sorted(callbacks.get(tid, ())):
            owner = None
            for read, unique in reads:
                if read > enter:
                    break
                owner = unique
            if owner is not None and "enter" not in fuse[owner]:
                fuse[owner].update(enter=enter, leave=leave, callback=name)
    return fuse, gcs, feeds


def pct(values: List[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def overlapping(spans, start: int, end: int):
    return [s for s in spans if s[0] < end and s[1] > start]


def analyse(writes, fuse, gcs, feeds, slow_ms: float) -> None:
    parts = collections.defaultdict(list)
    per_write_ops = collections.Counter()
    totals, slow = [], []
    requests = sorted((r["read"], u) for u, r in fuse.items())
    for t0, t1, t2, t3 in writes:
        total = (t3 - t0) / 1e6
        totals.append(total)
        mine = [fuse[u] for read, u in requests if t0 <= read <= t3]
        per_write_ops[" ".join(r["op"] for r in mine)] += 1
        calls = [(t0, t1), (t1, t2), (t2, t3)]
        breakdown = collections.Counter()
        for start, end in calls:
            queued = start
            inside = [r for r in mine if start <= r["read"] <= end]
            for r in inside:
                pieces = {"wake": r["read"] - queued}
                if "enter" in r:
                    pieces["gil"] = r["enter"] - r["read"]
                    pieces["python"] = r["leave"] - r["enter"]
                    pieces["reply"] = r.get("reply", r["leave"]) - r["leave"]
                else:
                    pieces["libfuse"] = r.get("reply", r["read"]) - r["read"]
                for name, ns in pieces.items():
                    parts[name].append(ns / 1e6)
                    breakdown[name] += ns / 1e6
                queued = r.get("reply", queued)
            if inside:
                parts["back"].append((end - queued) / 1e6)
                breakdown["back"] += (end - queued) / 1e6
        if total > slow_ms:
            gc_hit = [(g[2], (g[1] - g[0]) / 1e6) for g in overlapping(gcs, t0, t3)]
            feed_hit = [(f[1] - f[0]) / 1e6 for f in overlapping(feeds, t0, t3)]
            slow.append((total, dict(breakdown), gc_hit, feed_hit))
    print(f"{len(totals)} writes: median {pct(totals, 0.5):.3f} ms, p99 {pct(totals, 0.99):.3f} ms,"
          f" max {max(totals):.3f} ms")
    print("requests per write:", dict(per_write_ops.most_common(5)))
    print(f"engine: {sum(f[2] for f in feeds)} frames fed in {len(feeds)} holds")
    for name, values in parts.items():
        print(f"  {name:8s} n={len(values):4d} median {pct(values, 0.5):.3f} ms  p99 "
              f"{pct(values, 0.99):.3f} ms  max {max(values):.3f} ms  sum {sum(values):.1f} ms")
    holds = [(f[1] - f[0]) / 1e6 for f in feeds]
    print(f"engine feeding holds: {len(holds)}, median {pct(holds, 0.5):.3f} ms, p99 "
          f"{pct(holds, 0.99):.3f} ms, max {max(holds, default=0):.3f} ms")
    for gen in (0, 1, 2):
        pauses = [(g[1] - g[0]) / 1e6 for g in gcs if g[2] == gen]
        if pauses:
            print(f"gc gen {gen}: {len(pauses)} collections, median {pct(pauses, 0.5):.3f} ms, "
                  f"max {max(pauses):.3f} ms, sum {sum(pauses):.1f} ms")
    print(f"writes slower than {slow_ms} ms: {len(slow)}")
    for total, breakdown, gc_hit, feed_hit in sorted(slow, reverse=True)[:25]:
        parts_text = " ".join(f"{k}={v:.2f}" for k, v in sorted(breakdown.items(), key=lambda kv: -kv[1]))
        print(f"  {total:7.2f} ms: {parts_text}; gc {gc_hit}; feed holds "
              f"{len(feed_hit)} (longest {max(feed_hit, default=0):.2f} ms)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--gap", type=float, default=0.01)
    parser.add_argument("--slow", type=float, default=5.0, help="ms: list writes slower")
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--nice", type=int, default=None,
                        help="run the daemon at this nice value (a diagnostic: how much of the "
                             "tail is the machine's other work)")
    parser.add_argument("--switch-interval", type=float, default=None,
                        help="the daemon's GIL switch interval in seconds (default: the mount's)")
    parser.add_argument("--fuse-nice", type=int, default=None,
                        help="nice value of the daemon's FUSE threads alone (a diagnostic)")
    parser.add_argument("--fuse-fifo", type=int, default=None,
                        help="SCHED_FIFO priority of the daemon's FUSE threads alone (a diagnostic)")
    parser.add_argument("--idle", action="store_true",
                        help="mount with no traffic (source none): what a write costs alone")
    parser.add_argument("--wronly", action="store_true",
                        help="open with O_WRONLY alone (default: O_WRONLY|O_CREAT|O_TRUNC, as echo)")
    args = parser.parse_args()
    shim = build_shim()
    if args.idle:
        source, expect = "none", 0
    else:
        speed = 50000 / captures.GENERATE_RATE
        source, expect = f"pcap:{captures.mixed_capture(args.packets)}@{speed:g}", 1000
    prefix = cache_path(f"knobtrace-{os.getpid()}")
    launcher = [PYTHON, "-m", "bench.trace.traced_mount", prefix]
    if args.nice is not None:
        launcher = ["nice", "-n", str(args.nice)] + launcher
    env = {"LD_PRELOAD": shim}
    if args.switch_interval is not None:
        env["KNOBTRACE_SWITCH_INTERVAL"] = str(args.switch_interval)
    if args.fuse_nice is not None:
        env["KNOBTRACE_FUSE_NICE"] = str(args.fuse_nice)
    if args.fuse_fifo is not None:
        env["KNOBTRACE_FUSE_FIFO"] = str(args.fuse_fifo)
    with system.Mount(source, expect=expect, launcher=launcher,
                      env=env) as mount:
        print(f"load average {os.getloadavg()[0]:.2f} before")
        writes = write_knob(mount.path(KNOB), args.writes, args.gap,
                            os.O_WRONLY if args.wronly else ECHO_FLAGS)
        print(f"load average {os.getloadavg()[0]:.2f} after; table {mount.count()} entries")
    try:
        analyse(writes, *load_trace(prefix), args.slow)
    finally:
        for suffix in (".py", ".fuse"):     # the traces stay only as long as this run
            os.remove(prefix + suffix)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
