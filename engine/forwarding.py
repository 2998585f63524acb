"""Forwarded datagrams in a capture taken on a router: seen twice, tracked once.

A cooked capture (`tcpdump -i any`) on a forwarding host records a forwarded datagram when
it arrives (PREROUTING: conntrack tracks it, then FORWARD, POSTROUTING) and again when it
leaves by the other interface, marked outgoing.  That second copy meets no conntrack hook
(OUTPUT is only for locally generated packets), so the engine must not track it as if it
were.  It is recognised by its bytes: the same datagram (addresses, IP id, length, protocol,
transport header) with the TTL (IPv6: hop limit) one lower -- a router rewrites nothing
else here (no NAT).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional

REMEMBERED = 4096        # arrivals kept: a forwarded copy leaves within a few packets of it


IPV6_HOP_LIMIT_AT, IPV4_TTL_AT = 7, 8


def hop_limit_at(datagram: bytes) -> int:
    """Where the TTL (IPv4) or hop limit (IPv6) sits."""
    return IPV6_HOP_LIMIT_AT if datagram[0] >> 4 == 6 else IPV4_TTL_AT


def fingerprint(datagram: bytes) -> Optional[bytes]:
    """What a forwarded copy keeps of the datagram: IPv4, all of the first 28 bytes but the
    TTL (byte 8) and the header checksum (bytes 10-11); IPv6, the first 48 bytes but the
    hop limit (byte 7).  None for a datagram too short."""
    if len(datagram) < 28:
        return None
    if datagram[0] >> 4 == 6:
        return datagram[0:7] + datagram[8:48] if len(datagram) >= 48 else None
    return datagram[0:8] + datagram[9:10] + datagram[12:28]


class ForwardedCopies:
    def __init__(self, remembered: int = REMEMBERED) -> None:
        # fingerprint -> TTL; empty (false) unless the capture has received packets, which
        # callers test before calling in: most captures have none.
        self.arrivals: "OrderedDict[bytes, int]" = OrderedDict()
        self._remembered = remembered

    def arrived(self, datagram: bytes) -> None:
        """A datagram received from a wire (PREROUTING)."""
        mark = fingerprint(datagram)
        if mark is None:
            return
        self.arrivals[mark] = datagram[hop_limit_at(datagram)]
        if len(self.arrivals) > self._remembered:
            self.arrivals.popitem(last=False)

    def is_copy(self, datagram: bytes) -> bool:
        """Is this outgoing datagram the forwarded copy of one that arrived?  (Each arrival
        matches one copy.)"""
        mark = fingerprint(datagram)
        ttl = self.arrivals.get(mark) if mark is not None else None
        if ttl is None or datagram[hop_limit_at(datagram)] != ttl - 1:
            return False
        del self.arrivals[mark]
        return True
