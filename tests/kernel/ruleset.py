"""The nftables side of a scenario: the ruleset, its counters, and per-packet state marks.

Every scenario namespace gets one `table ip pct` (IPv4 only, so nothing else is counted;
an IPv6 scenario gets `table ip6 pct` instead, the same chains with the family's keywords):

* `out` (output hook, filter priority 0, i.e. after conntrack at -200): one counter per
  `ct state` plus one for `ct direction reply` (spec §10 "Namespace 2"), then rules that
  write the packet's classification into the DSCP bits of its IP header, so the capture
  carries the kernel's verdict for every frame (the DSCP is not part of any tuple).
* `pre` (prerouting, priority -300, after defrag at -400, before conntrack at -200): drops
  packets that reach the loopback receive path without a conntrack entry, i.e. the ones that
  were INVALID at OUTPUT. Without it conntrack would classify them a second time at
  PREROUTING (packets that carry an entry skip that pass), which a replay of a capture taken
  at one hook cannot model. They stay in the capture: tcpdump on lo sees them first.
* `in` (input, priority 0): drops what must not reach the local stack: everything to or from
  127.0.0.2-127.0.0.9 (the forged peers), plus the scenario's own rules.
"""
from __future__ import annotations

import json
from typing import Iterable, Optional

STATES = ("new", "established", "related", "invalid", "untracked")
STATE_CODES = {name: code for code, name in enumerate(STATES, start=1)}
COUNTER_NAMES = STATES + ("reply",)


def dscp_for(state: str, reply: bool) -> int:
    return STATE_CODES[state] << 1 | int(reply)


def verdict_from_tos(tos: int) -> Optional[tuple[str, bool]]:
    """(state, reply) that the OUTPUT chain wrote into a packet's TOS byte; None if unmarked."""
    dscp = tos >> 2
    if dscp == 0:
        return None
    code, reply = dscp >> 1, bool(dscp & 1)
    if not 1 <= code <= len(STATES):
        raise ValueError(f"unexpected DSCP {dscp}")
    return STATES[code - 1], reply


# Per table family: the header keyword and the forged peers' range.
FAMILY_KEYWORD = {"ip": "ip", "ip6": "ip6"}
FORGED_PEERS = {"ip": "127.0.0.2-127.0.0.9", "ip6": "fd00::2-fd00::9"}


def build_ruleset(input_rules: Iterable[str] = (), helpers: Iterable[tuple] = (),
                  family: str = "ip") -> str:
    """nft -f input for one scenario namespace (family "ip" or "ip6").  `helpers`: (name,
    "tcp"/"udp", port) each gets an nft `ct helper` object attached to new connections to
    that port at OUTPUT (priority -100: after conntrack made the entry, before it is
    confirmed), as kernels without automatic helper assignment need."""
    ip = FAMILY_KEYWORD[family]
    counters = [f'        ct state {s} counter comment "{s}"' for s in STATES]
    counters.append('        ct direction reply counter comment "reply"')
    marks = []
    for state in ("new", "established", "related"):
        for direction, reply in (("original", False), ("reply", True)):
            marks.append(f"        ct state {state} ct direction {direction} "
                         f"{ip} dscp set {dscp_for(state, reply)}")
    marks.append(f"        ct state invalid {ip} dscp set {dscp_for('invalid', False)}")
    marks.append(f"        ct state untracked {ip} dscp set {dscp_for('untracked', False)}")
    drops = [f"        {ip} saddr {FORGED_PEERS[family]} drop",
             f"        {ip} daddr {FORGED_PEERS[family]} drop"]
    drops += [f"        {rule}" for rule in input_rules]
    objects, attach = [], []
    for name, proto, port in helpers:
        objects += [f"    ct helper {name}-{port} {{",
                    f'        type "{name}" protocol {proto};', "    }"]
        attach.append(f'        ct state new {proto} dport {port} ct helper set "{name}-{port}"')
    if attach:
        attach = ["    chain helpers {", "        type filter hook output priority -100; policy accept;",
                  *attach, "    }"]
    return "\n".join([
        f"table {family} pct {{",
        *objects,
        *attach,
        "    chain pre {",
        "        type filter hook prerouting priority -300; policy accept;",
        '        ct state invalid drop comment "no second conntrack pass"',
        "    }",
        "    chain out {",
        "        type filter hook output priority 0; policy accept;",
        *counters,
        *marks,
        "    }",
        "    chain in {",
        "        type filter hook input priority 0; policy accept;",
        *drops,
        "    }",
        "}",
        "",
    ])


def counters_from_json(nft_json: str) -> dict[str, int]:
    """Packet counts of the `out` chain's counter rules, by comment, from `nft -j list ruleset`."""
    counts: dict[str, int] = {}
    for item in json.loads(nft_json)["nftables"]:
        rule = item.get("rule")
        if not rule or rule.get("chain") != "out" or rule.get("comment") not in COUNTER_NAMES:
            continue
        for expr in rule["expr"]:
            if "counter" in expr:
                counts[rule["comment"]] = expr["counter"]["packets"]
    missing = set(COUNTER_NAMES) - set(counts)
    if missing:
        raise ValueError(f"counter rules missing from ruleset: {sorted(missing)}")
    return {name: counts[name] for name in COUNTER_NAMES}
