"""The tracking replay's rate by CPU time, against dpkt and optionally a base tree, in turns:
`python -m bench.cputime [--packets N] [--runs 3] [--tree BASE]`.

For an A/B of one change: each run replays the mix (its first N packets) once with this
checkout's engine, once with `--tree`'s (an export of the commit before, say) and lets dpkt
decode the same file, each in a fresh interpreter, one after the other.  Each side's rate is
packets over the CPU seconds (time.process_time()) of the process doing the work: the rate
it would have alone, which the load of other processes moves far less than the wall clock
(printed beside it, with the load average).  bench/main.py's tracking section reports the
same for the full capture; this is its quick form, with a base beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Dict, List, Optional

from .common import PYTHON, REPO, load_average, median, say
from .instructions import first_packets

# Each side in a fresh interpreter, timed inside it; the last line printed is its JSON.
REPLAY = ("import json, time\n"
          "from engine.replay import replay\n"
          "cpu, wall = time.process_time(), time.perf_counter()\n"
          "result = replay({path!r})\n"
          "print(json.dumps({{'packets': len(result.verdicts),\n"
          "                  'seconds': time.perf_counter() - wall,\n"
          "                  'cpu_seconds': time.process_time() - cpu}}))\n")
DPKT = "from bench.worker import task_dpkt; import json; print(json.dumps(task_dpkt({path!r})))"


def run_side(code: str, tree: str) -> Dict[str, float]:
    """Run `code` with `tree` first on the path; the JSON it prints last."""
    env = dict(os.environ, PYTHONPATH=tree + os.pathsep + REPO)
    done = subprocess.run([PYTHON, "-c", code], cwd=tree, env=env, capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cputime")
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tree", help="a checkout (or export) whose engine is the base")
    args = parser.parse_args(argv)
    if args.packets < 1 or args.runs < 1:
        parser.error("--packets and --runs: at least 1")
    path = first_packets(args.packets)
    sides = {"ours": REPO}
    if args.tree:
        sides["base"] = os.path.abspath(args.tree)
    cpu: Dict[str, List[float]] = {name: [] for name in list(sides) + ["dpkt"]}
    wall: Dict[str, List[float]] = {name: [] for name in cpu}
    for run in range(args.runs):
        line = []
        for name, tree in list(sides.items()) + [("dpkt", REPO)]:
            before = load_average()
            got = run_side((DPKT if name == "dpkt" else REPLAY).format(path=path), tree)
            cpu[name].append(args.packets / got["cpu_seconds"])
            wall[name].append(args.packets / got["seconds"])
            line.append(f"{name} {cpu[name][-1] / 1000:.1f} k/s CPU, "
                        f"{wall[name][-1] / 1000:.1f} k/s wall (load {before:.2f})")
        say(f"run {run + 1}: " + "; ".join(line))
    dpkt_cpu, dpkt_wall = median(cpu["dpkt"]), median(wall["dpkt"])
    for name in sides:
        say(f"{name}: by CPU time {median(cpu[name]) / 1000:.1f} k/s, "
            f"{median(cpu[name]) / dpkt_cpu:.2f}x dpkt (per run "
            + ", ".join(f"{a / b:.2f}" for a, b in zip(cpu[name], cpu["dpkt"]))
            + f"); wall {median(wall[name]) / 1000:.1f} k/s, "
            f"{median(wall[name]) / dpkt_wall:.2f}x dpkt (per run "
            + ", ".join(f"{a / b:.2f}" for a, b in zip(wall[name], wall["dpkt"])) + ")")
    if "base" in sides:
        say("ours / base by CPU time, per run: "
            + ", ".join(f"{a / b:.3f}" for a, b in zip(cpu["ours"], cpu["base"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
