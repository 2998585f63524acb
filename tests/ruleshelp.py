"""Helpers for the rules-engine tests: packets from datagram bytes, and the replay of the
kernel's recorded packets (tests/data/rules/<name>/records.json) through a Ruleset.

A record is one packet as the kernel's hooks saw it, taken by the NFLOG recorder at
priority -180 of PREROUTING or OUTPUT (after raw and conntrack, before mangle and filter):
its datagram, interfaces, mark and conntrack classification. `replay_records` sends each
through the hooks the kernel sent it through: PREROUTING then INPUT for arriving packets
(everything in the scenarios is addressed to the host), OUTPUT then POSTROUTING for local
ones, raw before the classification and mangle/filter after it, stopping at a DROP.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from engine.build import build_ipv4, build_tcp
from engine.rules import CONNTRACK_PRIORITY, RulePacket, Ruleset
from engine.rules.packet import INVALID, ORIGINAL, REPLY, UNTRACKED

DATA = Path(__file__).resolve().parent / "data" / "rules"
ICMP_ERRORS = (3, 4, 5, 11, 12)


def ip(text: str) -> int:
    a, b, c, d = (int(p) for p in text.split("."))
    return a << 24 | b << 16 | c << 8 | d


def ipv4_header(src: str, dst: str, proto: int, payload: bytes, *, tos: int = 0,
                ident: int = 1, ttl: int = 64) -> bytes:
    """An IPv4 datagram with DF set, as Linux sends them."""
    return build_ipv4(src, dst, proto, payload, tos=tos, ident=ident, ttl=ttl, df=True)


def tcp_bytes(src: str, dst: str, sport: int, dport: int, flags: int, seq: int = 1000,
              ack: int = 0, window: int = 512, payload: bytes = b"", options: bytes = b"") -> bytes:
    return build_tcp(src, dst, sport, dport, seq=seq, ack=ack, flags=flags, window=window,
                     payload=payload, options=options)


def packet_from_datagram(datagram: bytes, **fields) -> RulePacket:
    """A RulePacket with the header fields read from the datagram; `fields` add the rest."""
    ihl = (datagram[0] & 15) * 4
    total, frag = struct.unpack_from("!H", datagram, 2)[0], struct.unpack_from("!H", datagram, 6)[0]
    proto = datagram[9]
    src, dst = struct.unpack_from("!II", datagram, 12)
    pkt = RulePacket(src=src, dst=dst, proto=proto, length=total, raw=datagram,
                     fragment=bool(frag & 0x1FFF))
    l4 = datagram[ihl:]
    if not pkt.fragment:
        if proto in (6, 17) and len(l4) >= 4:
            pkt.sport, pkt.dport = struct.unpack_from("!HH", l4)
        if proto == 6 and len(l4) >= 14:
            pkt.tcp_flags = l4[13]
        if proto == 1 and len(l4) >= 2:
            pkt.icmp_type, pkt.icmp_code = l4[0], l4[1]
    for name, value in fields.items():
        setattr(pkt, name, value)
    return pkt


def _flow_of(datagram: bytes) -> tuple[int, int, int, int, int]:
    """(proto, src, dst, sport, dport) of a datagram; for an ICMP error, of the one it quotes."""
    ihl = (datagram[0] & 15) * 4
    proto = datagram[9]
    if proto == 1 and datagram[ihl] in ICMP_ERRORS and len(datagram) >= ihl + 8 + 20:
        return _flow_of(datagram[ihl + 8:])
    src, dst = struct.unpack_from("!II", datagram, 12)
    sport = dport = 0
    if proto in (6, 17):
        sport, dport = struct.unpack_from("!HH", datagram, ihl)
    return proto, src, dst, sport, dport


@dataclass
class Classification:
    state: str
    direction: str = ORIGINAL
    status: int = 0


def classification(prefix: str) -> Classification:
    if prefix == "untracked":
        return Classification(UNTRACKED)
    if prefix == "invalid":
        return Classification(INVALID)
    state, direction, status = prefix.split()
    return Classification(state.upper(), REPLY if direction == "r" else ORIGINAL, int(status))


@dataclass
class ReplayResult:
    verdicts: list[str] = field(default_factory=list)
    notrack: list[Optional[bool]] = field(default_factory=list)  # None: came with an entry
    rejects: list[tuple[int, bytes]] = field(default_factory=list)    # (record index, reply)
    logs: list[tuple[int, int, str]] = field(default_factory=list)   # (record index, level, line)


def record_packet(rec: dict, ifaces: dict[str, str]) -> tuple[RulePacket, Classification]:
    datagram = bytes.fromhex(rec["payload"])
    cls = classification(rec["prefix"])
    proto, src, dst, sport, dport = _flow_of(datagram)
    this_way = (src, dst, sport, dport)
    other_way = (dst, src, dport, sport)
    is_error = datagram[9] == 1 and datagram[(datagram[0] & 15) * 4] in ICMP_ERRORS
    if is_error:      # the quoted datagram went the other way from the error
        this_way, other_way = other_way, this_way
    orig, reply = (this_way, other_way) if cls.direction == ORIGINAL else (other_way, this_way)
    pkt = packet_from_datagram(
        datagram, in_iface=ifaces.get(str(rec["indev"]), ""),
        out_iface=ifaces.get(str(rec["outdev"]), ""), mark=rec["mark"],
        link_header=bytes.fromhex(rec.get("hwheader", "")))
    if cls.state not in (INVALID, UNTRACKED):
        pkt.ctproto, pkt.ct_orig, pkt.ct_reply = proto, orig, reply
        pkt.ctdir, pkt.ctstatus = cls.direction, cls.status
    return pkt, cls


def _conn_key(pkt: RulePacket) -> Optional[tuple]:
    return (pkt.ctproto, pkt.ct_orig) if pkt.ct_orig else None


def replay_records(rs: Ruleset, records: list[dict], ifaces: dict[str, str]) -> ReplayResult:
    result = ReplayResult()
    ctmarks: dict[tuple, int] = {}
    now = 0.0
    for index, rec in enumerate(records):
        now = rec.get("time", now)
        pkt, cls = record_packet(rec, ifaces)
        key = _conn_key(pkt)
        pkt.ctmark = ctmarks.get(key, 0) if key else 0
        arriving = rec["hook"] == "PREROUTING"
        first, second = ("PREROUTING", "INPUT") if arriving else ("OUTPUT", "POSTROUTING")
        # raw runs before conntrack: no entry yet, unless the packet brings one (loopback's
        # second pass, a REJECT reply the kernel attached its cause's entry to).
        brings_entry = (arriving and pkt.in_iface == "lo") or (not arriving and cls.state == "RELATED")
        raw_view = pkt if brings_entry else RulePacket(**{**pkt.__dict__, "ctstate": INVALID,
                                                          "ctproto": None, "ct_orig": None,
                                                          "ct_reply": None})
        raw_view.ctstate = cls.state if brings_entry else INVALID
        steps = [(first, raw_view, None, CONNTRACK_PRIORITY), (first, pkt, CONNTRACK_PRIORITY, None),
                 (second, pkt, None, None)]
        pkt.ctstate = cls.state
        verdict = "ACCEPT"
        result.notrack.append(None if brings_entry else False)
        for hook, view, after, before in steps:
            if hook == "INPUT":
                view.out_iface = ""
            if hook == "POSTROUTING":
                view.in_iface = ""
            view.mark, view.ctmark = pkt.mark, pkt.ctmark
            hv = rs.run_hook(hook, view, now, after=after, before=before)
            pkt.mark, pkt.ctmark = hv.mark, hv.ctmark
            result.rejects += [(index, reply) for reply in hv.rejects]
            result.logs += [(index, level, line) for level, line in hv.logs]
            if hv.notrack and not brings_entry:     # NOTRACK leaves an attached entry be
                result.notrack[-1] = True
            if hv.verdict == "DROP":
                verdict = "DROP"
                break
        if key and pkt.has_entry():
            ctmarks[key] = pkt.ctmark
        result.verdicts.append(verdict)
    return result


def load_scenario(name: str) -> tuple[str, list[dict], dict[str, str], str]:
    """(ruleset text, records, interface names by index, the kernel's iptables-save -c)."""
    base = DATA / name
    return ((base / "rules").read_text(), json.loads((base / "records.json").read_text()),
            json.loads((base / "ifaces.json").read_text()), (base / "save.txt").read_text())


def scenarios() -> list[str]:
    return sorted(p.name for p in DATA.iterdir() if (p / "records.json").exists())


def save_stamp(save_text: str) -> str:
    """The date iptables-save wrote in its `# Generated by` line."""
    first = save_text.splitlines()[0]
    return first.split(" on ", 1)[1]
