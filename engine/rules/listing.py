"""`iptables -L [-v] [-n] [-x] [--line-numbers]`: the table listing of libiptc's print_firewall.

Without -n iptables resolves addresses to host names (DNS, /etc/hosts); the engine does no
I/O, so it prints addresses numerically in both modes ("anywhere" for 0.0.0.0/0 without -n,
as iptables); ports and protocols get their names from the embedded tables, as iptables's
getservbyport/getprotobynumber give them on the reference machine.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .matches import (CommentMatch, ConnmarkMatch, ConntrackMatch, IcmpMatch, LimitMatch,
                      MarkMatch, Match, MultiportMatch, StateMatch, TcpMatch, UdpMatch,
                      states_text, tcp_flags_text)
from .limit import rate_text
from .names import ICMP_TYPES
from .services import SERVICE_NAMES
from .targets import (ConnmarkTarget, CtTarget, LogTarget, MarkTarget, NotrackTarget,
                      RejectTarget, Target)
from .values import ALL_ONES, address_text, ipv4_text, protocol_text

if TYPE_CHECKING:
    from .ruleset import Chain, Table

_LEVEL_NAMES = {0: "emerg", 1: "alert", 2: "crit", 3: "err", 4: "warn", 5: "notice",
                6: "info", 7: "debug"}
_LOG_FLAG_BITS = {"--log-tcp-sequence": 1, "--log-tcp-options": 2, "--log-ip-options": 4,
                  "--log-uid": 8}


def _num(value: int, exact: bool, table: bool = True) -> str:
    """xtables_print_num: exact with -x, else K/M/G/T rounded, padded for the table."""
    if exact:
        return f"{value:8d} " if table else f"{value} "
    if value <= 99999:
        return f"{value:5d} " if table else f"{value} "
    for unit in "KMGT":
        value = (value + 500) // 1000
        if value <= 9999 or unit == "T":
            return f"{value:4d}{unit} " if table else f"{value}{unit} "
    raise AssertionError


def _port(port: int, numeric: bool, proto: str) -> str:
    """A port as -L prints it: its service name for `proto` (getservbyport) unless -n."""
    if numeric:
        return str(port)
    return SERVICE_NAMES.get(proto, {}).get(port, str(port))


def _ports(name: str, low: int, high: int, inv: bool, numeric: bool, proto: str) -> str:
    if (low, high) == (0, 0xFFFF) and not inv:
        return ""
    bang = "!" if inv else ""
    if low == high:
        return f" {name}:{bang}{_port(low, numeric, proto)}"
    return f" {name}s:{bang}{_port(low, numeric, proto)}:{_port(high, numeric, proto)}"


def _match_text(m: Match, numeric: bool, proto: str) -> str:
    if isinstance(m, TcpMatch):
        text = " tcp" + _ports("spt", *m.sport, m.sport_inv, numeric, "tcp") \
            + _ports("dpt", *m.dport, m.dport_inv, numeric, "tcp")
        if m.option is not None:
            text += f" option={'!' if m.option_inv else ''}{m.option}"
        if m.flag_mask or m.flags_inv:
            shown = (f"0x{m.flag_mask:02X}/0x{m.flag_cmp:02X}" if numeric else
                     f"{tcp_flags_text(m.flag_mask)}/{tcp_flags_text(m.flag_cmp)}")
            text += f" flags:{'!' if m.flags_inv else ''}{shown}"
        return text
    if isinstance(m, UdpMatch):
        return " udp" + _ports("spt", *m.sport, m.sport_inv, numeric, "udp") \
            + _ports("dpt", *m.dport, m.dport_inv, numeric, "udp")
    if isinstance(m, IcmpMatch):
        if not numeric:
            for name, spec in ICMP_TYPES.items():
                if spec == (m.type, m.code_min, m.code_max):
                    return f" icmp {'!' if m.invert else ''}{name}"
        text = " icmp" + (" !" if m.invert else "")
        if m.type == 0xFF:
            return text + " any"
        text += f"type {m.type}"
        if m.code_min == m.code_max:
            text += f" code {m.code_min}"
        elif (m.code_min, m.code_max) != (0, 0xFF):
            text += f" codes {m.code_min}-{m.code_max}"
        return text
    if isinstance(m, StateMatch):
        return f"{' !' if m.invert else ''} state {states_text(m.mask or 0)}"
    if isinstance(m, ConntrackMatch):
        return m.save().replace("--", "")
    if isinstance(m, MultiportMatch):
        kind = (m.kind or "--ports")[2:]
        ports = ",".join(_port(lo, numeric, proto) if lo == hi else
                         f"{_port(lo, numeric, proto)}:{_port(hi, numeric, proto)}"
                         for lo, hi in m.ranges)
        return f" multiport {kind} {' !' if m.invert else ''}{ports}"
    if isinstance(m, LimitMatch):
        return f" limit: avg {rate_text(m.avg)} burst {m.burst}"
    if isinstance(m, CommentMatch):
        return f" /* {m.comment} */"
    if isinstance(m, ConnmarkMatch):
        mark = f"0x{m.value:x}" + (f"/0x{m.mask:x}" if m.mask != ALL_ONES else "")
        return f" connmark match {'!' if m.invert else ''} {mark}"
    if isinstance(m, MarkMatch):
        mark = f"0x{m.value:x}" + (f"/0x{m.mask:x}" if m.mask != ALL_ONES else "")
        return f" mark match{' !' if m.invert else ''} {mark}"
    return ""


def _target_text(t: Target, numeric: bool) -> str:
    if isinstance(t, LogTarget):
        if numeric:
            flags = sum(bit for name, bit in _LOG_FLAG_BITS.items() if name in t.flags)
            text = f" LOG flags {flags} level {t.level}"
        else:
            text = f" LOG level {_LEVEL_NAMES[t.level]}"
            for name in _LOG_FLAG_BITS:
                if name in t.flags:
                    text += {"--log-tcp-sequence": " tcp-sequence", "--log-tcp-options":
                             " tcp-options", "--log-ip-options": " ip-options",
                             "--log-uid": " uid"}[name]
        if t.prefix:
            text += f' prefix "{t.prefix}"'
        return text
    if isinstance(t, RejectTarget):
        return f" reject-with {t.kind}"
    if isinstance(t, MarkTarget):
        value, mask = t.value or 0, t.mask
        if value == 0:
            return f" MARK and 0x{~mask & ALL_ONES:x}"
        if value == mask:
            return f" MARK or 0x{value:x}"
        if mask == 0:
            return f" MARK xor 0x{value:x}"
        if mask == ALL_ONES:
            return f" MARK set 0x{value:x}"
        return f" MARK xset 0x{value:x}/0x{mask:x}"
    if isinstance(t, ConnmarkTarget):
        if t.mode == "set":
            return f" CONNMARK xset 0x{t.ctmark:x}/0x{t.ctmask:x}"
        if t.nfmask == ALL_ONES and t.ctmask == ALL_ONES:
            return f" CONNMARK {t.mode}"
        if t.nfmask == t.ctmask:
            return f" CONNMARK {t.mode} mask 0x{t.nfmask:x}"
        return f" CONNMARK {t.mode} nfmask 0x{t.nfmask:x} ctmask ~0x{t.ctmask:x}"
    if isinstance(t, CtTarget):
        return (" CT notrack" if t.notrack else "") + (
            f" CT helper {t.helper_name}" if t.helper_name else "")
    if isinstance(t, NotrackTarget):
        return " NOTRACK"          # iptables 1.8 loads NOTRACK as CT: its column says CT
    return ""


def _address(addr: int, mask: int, numeric: bool) -> str:
    if mask == 0 and not numeric:
        return "anywhere"
    if mask == ALL_ONES:
        return ipv4_text(addr)
    return address_text(addr, mask)


def list_chains(table: "Table", chains: list["Chain"], flags: set[str]) -> str:
    """The text of `iptables -L` for these chains of `table`; flags from the command line."""
    numeric, verbose = "numeric" in flags, "verbose" in flags
    exact, line_numbers = "exact" in flags, "line_numbers" in flags
    out: list[str] = []
    for n, chain in enumerate(chains):
        if n:
            out.append("\n")
        if chain.builtin:
            counts = ""
            if verbose:
                counts = f" {_num(chain.packets, exact, False)}packets, {_num(chain.bytes, exact, False)}bytes"
            out.append(f"Chain {chain.name} (policy {chain.policy}{counts})\n")
        else:
            out.append(f"Chain {chain.name} ({table.references(chain.name)} references)\n")
        head = "num  " if line_numbers else ""
        if verbose:
            head += f"{'pkts':>5} {'bytes':>5} " if not exact else f"{'pkts':>8} {'bytes':>10} "
        head += f"{'target':<9}  prot opt"
        if verbose:
            head += f" {'in':<6} {'out':<6} "
        head += f" {'source':<19}  {'destination':<19} \n"
        out.append(head)
        for i, rule in enumerate(chain.rules, start=1):
            line = f"{i:<4d} " if line_numbers else ""
            if verbose:
                line += _num(rule.packets, exact) + _num(rule.bytes, exact)
            column = "CT" if isinstance(rule.target_ext, NotrackTarget) else rule.target
            line += f"{column:<9} "
            line += "!" if rule.proto_inv else " "
            line += f"{(str(rule.proto) if numeric else (protocol_text(rule.proto) if rule.proto else 'all')):<5}"
            line += ("!" if rule.fragment is False else "-") + ("f" if rule.fragment is not None else "-") + " "
            if verbose:
                iface_in = ("!" if rule.in_inv else "") + (rule.in_iface or ("*" if numeric else "any"))
                iface_out = ("!" if rule.out_inv else "") + (rule.out_iface or ("*" if numeric else "any"))
                line += f" {iface_in:<6} {iface_out:<6} "
            line += ("!" if rule.src_inv else " ") + f"{_address(rule.src, rule.src_mask, numeric):<19} "
            line += ("!" if rule.dst_inv else " ") + f"{_address(rule.dst, rule.dst_mask, numeric):<19} "
            proto = protocol_text(rule.proto)
            line += "".join(_match_text(m, numeric, proto) for m in rule.matches)
            if rule.target_ext is not None:
                line += _target_text(rule.target_ext, numeric)
            if rule.goto:
                line += "[goto] "
            out.append(line)
            out.append("\n")
    return "".join(out)

