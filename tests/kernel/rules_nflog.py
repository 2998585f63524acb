"""An NFLOG listener (nfnetlink_log, stdlib only): every packet the recorder's nft rules log,
with its hook, interfaces, mark, IP datagram, and the conntrack entry it carries then.

The recorder chains (`nft_recorder()`) sit at priority -180 of prerouting and output: after
raw (-300) and conntrack (-200), before mangle (-150) and filter (0), so each record holds the
classification the iptables rules of the scenario saw. The log prefix carries the
classification (see nft_recorder).
"""
from __future__ import annotations

import socket
import struct
from typing import Optional

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET, NFULNL_MSG_CONFIG = 0, 1
NFULA_CFG_CMD, NFULA_CFG_MODE, NFULA_CFG_QTHRESH, NFULA_CFG_FLAGS = 1, 2, 4, 6
NFULNL_CFG_CMD_BIND = 1
NFULNL_COPY_PACKET = 2
NFULNL_CFG_F_CONNTRACK = 2
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
NFULA = {1: "packet_hdr", 2: "mark", 3: "timestamp", 4: "indev", 5: "outdev", 9: "payload",
         10: "prefix", 16: "hwheader", 18: "ct", 19: "ct_info"}
GROUP = 7
HOOK_NAMES = {0: "PREROUTING", 1: "INPUT", 2: "FORWARD", 3: "OUTPUT", 4: "POSTROUTING"}


STATUS_NAMES = (("expected", 1), ("seen-reply", 2), ("assured", 4), ("confirmed", 8))


def _status_expr(bits: int) -> str:
    names = [name for name, bit in STATUS_NAMES if bits & bit]
    return "|".join(names) if names else "0"


def nft_recorder() -> str:
    """This kernel has no NFLOG conntrack glue (CONFIG_NETFILTER_NETLINK_GLUE_CT unset), so
    the classification travels in the log prefix: one rule per state, direction and set of
    status bits, "STATE DIR STATUS" (e.g. "new o 0"), "invalid" or "untracked"."""
    all_bits = "|".join(name for name, _ in STATUS_NAMES)
    rules = ['ct state untracked log prefix "untracked" group %d' % GROUP,
             'ct state invalid log prefix "invalid" group %d' % GROUP]
    for state in ("new", "established", "related"):
        for direction in ("original", "reply"):
            for bits in range(16):
                rules.append(f"ct state {state} ct direction {direction} "
                             f"ct status & ({all_bits}) == {_status_expr(bits)} "
                             f'log prefix "{state} {direction[0]} {bits}" group {GROUP}')
    lines = ["table ip pctrlog {"]
    for chain, hook in (("pre", "prerouting"), ("out", "output")):
        lines += [f"    chain {chain} {{",
                  f"        type filter hook {hook} priority -180; policy accept;",
                  *(f"        {rule}" for rule in rules), "    }"]
    return "\n".join(lines + ["}", ""])


def _attrs(data: bytes) -> dict[int, bytes]:
    out, i = {}, 0
    while i + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, i)
        if length < 4:
            break
        out[kind & 0x3FFF] = data[i + 4:i + length]
        i += (length + 3) & ~3
    return out


def _attr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _tuple(data: bytes) -> list[int]:
    top = _attrs(data)
    ip, proto = _attrs(top.get(1, b"")), _attrs(top.get(2, b""))
    src = struct.unpack("!I", ip[1])[0] if 1 in ip else 0
    dst = struct.unpack("!I", ip[2])[0] if 2 in ip else 0
    num = proto[1][0] if 1 in proto else 0
    sport = struct.unpack("!H", proto[2])[0] if 2 in proto else 0
    dport = struct.unpack("!H", proto[3])[0] if 3 in proto else 0
    return [num, src, dst, sport, dport]


class NflogListener:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind((0, 0))
        self.seq = 0
        self._config(_attr(NFULA_CFG_CMD, struct.pack("=B", NFULNL_CFG_CMD_BIND)))
        self._config(_attr(NFULA_CFG_MODE, struct.pack("!IBx", 0xFFFF, NFULNL_COPY_PACKET))
                     + _attr(NFULA_CFG_QTHRESH, struct.pack("!I", 1))
                     + _attr(NFULA_CFG_FLAGS, struct.pack("!H", NFULNL_CFG_F_CONNTRACK)))
        self.sock.settimeout(0.5)

    def _config(self, attrs: bytes) -> None:
        self.seq += 1
        body = struct.pack("!BBH", socket.AF_UNSPEC, 0, GROUP) + attrs
        header = struct.pack("=IHHII", 16 + len(body),
                             NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_CONFIG,
                             NLM_F_REQUEST | NLM_F_ACK, self.seq, 0)
        self.sock.send(header + body)
        reply = self.sock.recv(65536)
        length, kind = struct.unpack_from("=IH", reply)
        if kind == NLMSG_ERROR and struct.unpack_from("=i", reply, 16)[0] != 0:
            raise OSError(-struct.unpack_from("=i", reply, 16)[0], "NFLOG config refused")

    def drain(self) -> list[dict]:
        """Every record queued so far (returns when half a second passes with none)."""
        records = []
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except socket.timeout:
                return records
            i = 0
            while i + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, i)
                if kind == NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_PACKET:
                    records.append(self._record(data[i + 20:i + length]))
                i += (length + 3) & ~3

    @staticmethod
    def _record(body: bytes) -> dict:
        attrs = _attrs(body)
        hook = attrs[1][2]
        rec: dict = {"hook": HOOK_NAMES[hook],
                     "prefix": attrs.get(10, b"").rstrip(b"\0").decode(),
                     "indev": struct.unpack("!I", attrs[4])[0] if 4 in attrs else 0,
                     "outdev": struct.unpack("!I", attrs[5])[0] if 5 in attrs else 0,
                     "mark": struct.unpack("!I", attrs[2])[0] if 2 in attrs else 0,
                     "payload": attrs.get(9, b"").hex(),
                     "hwheader": attrs.get(16, b"").hex()}
        if 3 in attrs:
            sec, usec = struct.unpack("!QQ", attrs[3])
            rec["time"] = sec + usec / 1e6
        ctinfo: Optional[int] = struct.unpack("!I", attrs[19])[0] if 19 in attrs else None
        rec["ctinfo"] = ctinfo
        if 18 in attrs:
            ct = _attrs(attrs[18])
            rec["ct_status"] = struct.unpack("!I", ct[3])[0] if 3 in ct else 0
            rec["ct_mark"] = struct.unpack("!I", ct[8])[0] if 8 in ct else 0
            rec["ct_orig"] = _tuple(ct[1]) if 1 in ct else None
            rec["ct_reply"] = _tuple(ct[2]) if 2 in ct else None
        return rec
