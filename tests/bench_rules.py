#!/usr/bin/env python3
"""Micro-benchmark of the rules engine (not a test; pytest does not collect it):
packets per second through Ruleset.run_hook("INPUT", ...) with an empty filter table and
with a 50-rule one (the packet matches nothing until rule 50, so every rule is tried).

    .venv/bin/python tests/bench_rules.py [--packets N] [--runs R]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.rules import RulePacket, Ruleset  # noqa: E402

EMPTY = "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"


def fifty_rules() -> str:
    """A mixed ruleset of 50 rules in the shapes real firewalls use, none matching until the last."""
    rules = []
    for i in range(48):
        kind = i % 6
        rules.append([f"-A INPUT -s 192.168.{i}.0/24 -j DROP",
                      f"-A INPUT -p tcp --dport {1000 + i} -j ACCEPT",
                      f"-A INPUT -p udp -m multiport --dports {2000 + i},{3000 + i}:{3010 + i} -j ACCEPT",
                      f"-A INPUT -i eth{i} -j DROP",
                      f"-A INPUT -p icmp --icmp-type {i % 20} -m state --state NEW -j ACCEPT",
                      f"-A INPUT -m conntrack --ctstate INVALID -m mark --mark {i} -j DROP"][kind])
    rules.append("-A INPUT -m state --state RELATED -j ACCEPT")
    rules.append("-A INPUT -p tcp --dport 22 -m state --state NEW -j ACCEPT")
    return "*filter\n:INPUT DROP [0:0]\n" + "\n".join(rules) + "\nCOMMIT\n"


def packet() -> RulePacket:
    return RulePacket(src=0x0A630002, dst=0x0A630001, proto=6, length=60, sport=40000, dport=22,
                      tcp_flags=0x02, in_iface="va", ctstate="NEW", ctproto=6,
                      ct_orig=(0x0A630002, 0x0A630001, 40000, 22),
                      ct_reply=(0x0A630001, 0x0A630002, 22, 40000), raw=b"")


def rate(text: str, count: int) -> float:
    rs = Ruleset.load_restore(text)
    pkt = packet()
    run = rs.run_hook
    start = time.perf_counter()
    for i in range(count):
        run("INPUT", pkt, i * 1e-6)
    return count / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    ruleset = fifty_rules()
    assert ruleset.count("-A INPUT") == 50
    for name, text in (("empty filter table", EMPTY), ("50 rules", ruleset)):
        rates = [rate(text, args.packets) for _ in range(args.runs)]
        print(f"{name:20s} {statistics.median(rates) / 1000:8.1f} kpackets/s "
              f"(median of {args.runs} runs of {args.packets} packets)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
