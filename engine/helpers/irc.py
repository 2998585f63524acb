"""The IRC helper (nf_conntrack_irc.c): a DCC offer the client sends through its server
(PRIVMSG nick :\\1DCC SEND name ip port ...\\1) expects a connection from anywhere to the
address and port offered.

Since the 2022 fix the kernel reads a DCC only at the start of a PRIVMSG text (after
" :"), from the client (the original direction) only, in the first 4095 bytes.
"""
from __future__ import annotations

from typing import Optional, Tuple

from ..entry import ORIGINAL, REPLY
from ..packet import IPPROTO_TCP
from .call import U16, U32, HelpCall, strtoul

MAX_SEARCH_SIZE = 4095
MINMATCHLEN = 5
DCC_PROTOS = (b"SEND ", b"CHAT ", b"MOVE ", b"TSEND ", b"SCHAT ")
PRIVMSG = b"privmsg "


def parse_dcc(data: bytes, pos: int) -> Optional[Tuple[int, int]]:
    """parse_dcc(): skip the argument up to a space, then `ip port` (decimal) with a
    newline somewhere after them in the segment; (ip, port) or None."""
    limit = len(data)
    while True:
        ch = data[pos] if pos < limit else 0
        pos += 1
        if ch == 0x20:
            break
        if pos > limit - 12:
            return None
    if data.find(b"\n", pos) < 0:
        return None
    ip, pos = strtoul(data, pos)
    while pos < limit and data[pos] == 0x20:
        pos += 1
    if pos >= limit:
        return None
    port, _ = strtoul(data, pos)
    return ip & U32, port & U16


def offers(data: bytes, modern: bool = True):
    """The (ip, port) of each DCC the helper would consider, in the order it tries them.
    2.6's ip_conntrack_irc (modern False) took a "\\1DCC " anywhere in the segment."""
    data = data[:MAX_SEARCH_SIZE]
    limit = len(data)
    pos = 0
    if modern:
        while pos < limit - 10 and data[pos] in b" \r\n":
            pos += 1
        if pos < limit - 10:
            if data[pos:pos + 8].lower() != PRIVMSG:
                return
            pos += 8
    while pos < limit - (21 + MINMATCHLEN if modern else 19 + MINMATCHLEN):
        if not modern:
            if data[pos:pos + 5] != b"\x01DCC ":
                pos += 1
                continue
        elif data[pos:pos + 2] != b" :":
            pos += 1
            continue
        else:
            pos += 2
            if data[pos:pos + 5] != b"\x01DCC ":
                return
        pos += 5
        for proto in DCC_PROTOS:
            if data[pos:pos + len(proto)] != proto:
                continue
            pos += len(proto)
            offer = parse_dcc(data, pos)
            if offer is not None:
                yield offer


def help(call: HelpCall) -> bool:
    if call.direction != ORIGINAL or not call.established or call.pkt.tcp is None:
        return True
    client = call.tuple_of(ORIGINAL)[0]
    for ip, port in offers(call.pkt.payload, call.modern):
        if ip != client or port == 0:
            continue                      # "Forged DCC command": the kernel tries on
        return call.expect(None, call.tuple_of(REPLY)[1], IPPROTO_TCP, port) is None
    return True
