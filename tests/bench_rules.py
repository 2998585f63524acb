#!/usr/bin/env python3
"""Benchmarks of the rules engine (not a test; pytest does not collect it).

Default: packets per second through Ruleset.run_hook("INPUT", ...) with an empty filter
table and with a 50-rule one (the packet matches nothing until rule 50, so every rule is
tried).  --replay: packets per second of a whole replay (engine/replay.py: capture reading,
conntrack, the hooks) of a `procfs-ct generate` capture, without rules, with an empty
filter table and with 50 rules in OUTPUT (an Ethernet capture's packets are sent ones).

    .venv/bin/python tests/bench_rules.py [--packets N] [--runs R]
    .venv/bin/python tests/bench_rules.py --replay [--seconds S] [--runs R]

Rates are per second of this process's CPU time (time.process_time): on a machine shared
with other work, wall-clock rates of the same code varied threefold from run to run, CPU
time by a few per cent.
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.rules import RulePacket, Ruleset  # noqa: E402

EMPTY = "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"


def fifty_rules(chain: str = "INPUT", policy: str = "DROP") -> str:
    """A mixed ruleset of 50 rules in the shapes real firewalls use, none matching until the last."""
    iface = "-o" if chain == "OUTPUT" else "-i"
    rules = []
    for i in range(48):
        kind = i % 6
        rules.append([f"-A {chain} -s 192.168.{i}.0/24 -j DROP",
                      f"-A {chain} -p tcp --dport {1000 + i} -j ACCEPT",
                      f"-A {chain} -p udp -m multiport --dports {2000 + i},{3000 + i}:{3010 + i} -j ACCEPT",
                      f"-A {chain} {iface} eth{i} -j DROP",
                      f"-A {chain} -p icmp --icmp-type {i % 20} -m state --state NEW -j ACCEPT",
                      f"-A {chain} -m conntrack --ctstate INVALID -m mark --mark {i} -j DROP"][kind])
    rules.append(f"-A {chain} -m state --state RELATED -j ACCEPT")
    rules.append(f"-A {chain} -p tcp --dport 22 -m state --state NEW -j ACCEPT")
    return f"*filter\n:{chain} {policy} [0:0]\n" + "\n".join(rules) + "\nCOMMIT\n"


def packet() -> RulePacket:
    return RulePacket(src=0x0A630002, dst=0x0A630001, proto=6, length=60, sport=40000, dport=22,
                      tcp_flags=0x02, in_iface="va", ctstate="NEW", ctproto=6,
                      ct_orig=(0x0A630002, 0x0A630001, 40000, 22),
                      ct_reply=(0x0A630001, 0x0A630002, 22, 40000), raw=b"")


def rate(text: str, count: int) -> float:
    rs = Ruleset.load_restore(text)
    pkt = packet()
    run = rs.run_hook
    start = time.process_time()
    for i in range(count):
        run("INPUT", pkt, i * 1e-6)
    return count / (time.process_time() - start)


def synthetic_capture(seconds: float) -> tuple[bytes, int]:
    """`procfs-ct generate --seconds S` in memory: (pcap bytes, frame count)."""
    from procfs_ct.cmd_generate import DEFAULT_START, write_capture
    from procfs_ct.sources.synthetic import DEFAULT_RATE

    out = io.BytesIO()
    count = write_capture(out, seconds, 0, DEFAULT_RATE, DEFAULT_START)
    return out.getvalue(), count


def replay_rate(capture: bytes, count: int, rules: "str | None") -> float:
    from engine.replay import replay

    ruleset = None if rules is None else Ruleset.load_restore(rules)
    start = time.process_time()
    replay(io.BytesIO(capture), profile="linux", rules=ruleset)
    return count / (time.process_time() - start)


def bench_replay(seconds: float, runs: int) -> None:
    capture, count = synthetic_capture(seconds)
    # Policy ACCEPT: the capture's connections go on and fill the table as without rules.
    cases = (("no rules", None), ("empty filter table", "*filter\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"),
             ("50 rules in OUTPUT", fifty_rules("OUTPUT", "ACCEPT")))
    for name, rules in cases:
        rates = [replay_rate(capture, count, rules) for _ in range(runs)]
        print(f"replay, {name:20s} {statistics.median(rates) / 1000:8.1f} kpackets/s "
              f"(median of {runs} replays of {count} packets)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--replay", action="store_true",
                        help="time whole replays of a synthetic capture instead")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="length of the synthetic capture (--replay)")
    args = parser.parse_args()
    if args.replay:
        bench_replay(args.seconds, args.runs)
        return 0
    ruleset = fifty_rules()
    assert ruleset.count("-A INPUT") == 50
    for name, text in (("empty filter table", EMPTY), ("50 rules", ruleset)):
        rates = [rate(text, args.packets) for _ in range(args.runs)]
        print(f"{name:20s} {statistics.median(rates) / 1000:8.1f} kpackets/s "
              f"(median of {args.runs} runs of {args.packets} packets)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
