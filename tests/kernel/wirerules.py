"""The server namespace's nftables table, and the kernel's verdict for every captured frame.

The loopback suite reads each frame's verdict from DSCP bits its OUTPUT chain wrote before
tcpdump saw the packet. A packet that arrives from the wire is copied to tcpdump *before*
PREROUTING, so that trick cannot work for it. Here every packet that passes conntrack is
logged instead: chains at priority 0 of prerouting and output (after conntrack at -200) hold
one `log group 5` rule per ct state and direction, whose prefix is the verdict's text
("NEW", "ESTABLISHED reply", ...); `tcpdump -i nflog:5` in the same namespace stores the
records. Each NFLOG record names its hook and carries the packet, so it is matched to the
captured frames of the same direction in order (incoming frames <-> PREROUTING records,
outgoing frames <-> OUTPUT records):

* an incoming packet is logged byte for byte as it was captured; a frame with no record of
  its own (ip_rcv dropped it before PREROUTING, or a lone fragment is still held) gets None;
* an outgoing packet is logged before the device completes its checksum and before it is
  fragmented, so it is compared with the L4 checksum left out, and a fragment train with
  the one record of its whole datagram (by addresses, protocol and IP id).

Each state also has a counter per hook; the records must add up to them.

Chains: `quiet` (output, priority -300, before conntrack) drops what the server's own stack
would answer to forged flows, so those answers never meet conntrack nor the capture; `in`
(input, priority 0) takes a scenario's input rules. Nothing may be dropped between
PREROUTING and INPUT's confirm for a flow that should leave an entry: an unconfirmed entry
never reaches the table.
"""
from __future__ import annotations

import json
import struct
from collections import Counter
from typing import Iterable, Optional

import cooked
from ruleset import STATES

NFLOG_GROUP = 5
HOOK_CHAINS = {"prerouting": ("pre", cooked.NF_INET_PRE_ROUTING),
               "output": ("out", cooked.NF_INET_LOCAL_OUT)}
COUNTER_NAMES = STATES + ("reply",)
VERDICT_RULES = [("new", "original", "NEW"), ("new", "reply", "NEW reply"),
                 ("established", "original", "ESTABLISHED"),
                 ("established", "reply", "ESTABLISHED reply"),
                 ("related", "original", "RELATED"), ("related", "reply", "RELATED reply")]
# TCP, UDP, ICMP, SCTP (the first half of its CRC32c), UDP-Lite, ICMPv6
L4_CHECKSUM_OFFSET = {6: 16, 17: 6, 1: 2, 132: 8, 136: 6, 58: 2}


def _hook_chain(chain: str, hook: str) -> list[str]:
    lines = [f"    chain {chain} {{",
             f"        type filter hook {hook} priority 0; policy accept;"]
    lines += [f'        ct state {s} counter comment "{chain} {s}"' for s in STATES]
    lines.append(f'        ct direction reply counter comment "{chain} reply"')
    lines += [f'        ct state {state} ct direction {direction} '
              f'log prefix "{text}" group {NFLOG_GROUP}' for state, direction, text in VERDICT_RULES]
    lines += [f'        ct state {s} log prefix "{s.upper()}" group {NFLOG_GROUP}'
              for s in ("invalid", "untracked")]
    lines.append("    }")
    return lines


def build_ruleset(quiet_rules: Iterable[str] = (), input_rules: Iterable[str] = (),
                  family: str = "ip") -> str:
    """nft -f input for the server namespace (an IPv6 scenario's table is `ip6`)."""
    lines = [f"table {family} pctw {{",
             "    chain quiet {",
             "        type filter hook output priority -300; policy accept;",
             *[f"        {rule}" for rule in quiet_rules],
             "    }"]
    for hook, (chain, _) in HOOK_CHAINS.items():
        lines += _hook_chain(chain, hook)
    lines += ["    chain in {",
              "        type filter hook input priority 0; policy accept;",
              *[f"        {rule}" for rule in input_rules],
              "    }",
              "}", ""]
    return "\n".join(lines)


def build_client_ruleset(output_rules: Iterable[str], family: str = "ip") -> str:
    """nft -f input for the client namespace: output rules that use no `ct` expression, so
    conntrack stays out of that namespace."""
    if any("ct " in rule for rule in output_rules):
        raise ValueError("a client rule would load conntrack in the client namespace")
    return "\n".join([f"table {family} pctw_client {{",
                      "    chain out {",
                      "        type filter hook output priority 0; policy accept;",
                      *[f"        {rule}" for rule in output_rules],
                      "    }",
                      "}", ""])


def counters_from_json(nft_json: str) -> dict[str, dict[str, int]]:
    """{"prerouting": {state: packets, ..., "reply": n}, "output": {...}} from `nft -j`."""
    found: dict[str, int] = {}
    for item in json.loads(nft_json)["nftables"]:
        rule = item.get("rule")
        if rule and rule.get("comment"):
            for expr in rule["expr"]:
                if "counter" in expr:
                    found[rule["comment"]] = expr["counter"]["packets"]
    counts = {}
    for hook, (chain, _) in HOOK_CHAINS.items():
        missing = [n for n in COUNTER_NAMES if f"{chain} {n}" not in found]
        if missing:
            raise ValueError(f"counter rules missing from chain {chain}: {missing}")
        counts[hook] = {n: found[f"{chain} {n}"] for n in COUNTER_NAMES}
    return counts


def counts_of(states: Iterable[Optional[str]]) -> dict[str, int]:
    """What the counters of one hook show for these verdict texts (None: not counted)."""
    counts = dict.fromkeys(COUNTER_NAMES, 0)
    for state in states:
        if state is not None:
            name, _, reply = state.partition(" ")
            counts[name.lower()] += 1
            counts["reply"] += bool(reply)
    return counts


def _without_l4_checksum(packet: bytes) -> bytes:
    start, proto = cooked.l4_start(packet)
    offset = L4_CHECKSUM_OFFSET.get(proto)
    if offset is None or len(packet) < start + offset + 2:
        return packet
    at = start + offset
    return packet[:at] + b"\0\0" + packet[at + 2:]


def _matches_ipv6_fragments(logged: bytes, packets: list[bytes]) -> bool:
    """IPv6 fragments (an atomic one too) and the record of their datagram: logged whole,
    without the fragment header and its identification, so compared by addresses, protocol
    and the transport header the offset-0 piece carries.  A lone fragment nf_defrag_ipv6 let
    through as it was (its length no multiple of 8) was logged byte for byte."""
    if len(packets) == 1 and cooked.is_ipv6(logged) and cooked.fragment_key(logged):
        return logged == packets[0][:cooked.ip_length(packets[0])]
    first = next((p for p in packets if not struct.unpack("!H", p[42:44])[0] & 0xFFF8), None)
    if first is None or not cooked.is_ipv6(logged) or logged[6] == cooked.IPV6_FRAGMENT:
        return False
    return (logged[8:40] == first[8:40] and logged[6] == first[40]
            and logged[40:48] == first[48:56])


def _matches(record: cooked.LogRecord, packets: list[bytes], outgoing: bool) -> bool:
    logged = record.packet
    if cooked.is_ipv6(packets[0]) and packets[0][6] == cooked.IPV6_FRAGMENT:
        return _matches_ipv6_fragments(logged, packets)
    if len(packets) > 1 or cooked.fragment_key(packets[0]):
        # the whole datagram was logged (after reassembly / before fragmentation)
        first = packets[0]
        return (cooked.fragment_key(logged) is None and logged[12:20] == first[12:20]
                and logged[9] == first[9] and logged[4:6] == first[4:6])
    captured = packets[0][:cooked.ip_length(packets[0])]
    if outgoing:
        return _without_l4_checksum(logged) == _without_l4_checksum(captured)
    return logged == captured


def frame_states(frames: list[cooked.CookedFrame],
                 records: list[cooked.LogRecord]) -> list[Optional[str]]:
    """The kernel's verdict text per captured frame (every frame of a fragment train gets
    its datagram's verdict); raises if a record matches no frame."""
    packets = [frame.ip() for frame in frames]
    outgoing = [frame.outgoing for frame in frames]
    states: list[Optional[str]] = [None] * len(frames)
    for hook_outgoing, hook in ((False, cooked.NF_INET_PRE_ROUTING),
                                (True, cooked.NF_INET_LOCAL_OUT)):
        queue = [r for r in records if r.hook == hook]
        used = 0
        for group in cooked.datagram_groups(packets, outgoing):
            if outgoing[group[0]] != hook_outgoing or packets[group[0]] is None:
                continue
            if used < len(queue) and _matches(queue[used], [packets[i] for i in group],
                                              hook_outgoing):
                for index in group:
                    states[index] = queue[used].prefix
                used += 1
        if used != len(queue):
            raise ValueError(f"hook {hook}: {len(queue) - used} logged packets match no "
                             f"captured frame (first: {queue[used]})")
    other = Counter(r.hook for r in records if r.hook not in (cooked.NF_INET_PRE_ROUTING,
                                                              cooked.NF_INET_LOCAL_OUT))
    if other:
        raise ValueError(f"records from unexpected hooks: {dict(other)}")
    return states
