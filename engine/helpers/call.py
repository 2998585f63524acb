"""What a helper is handed for one packet of its control connection (the kernel's
help(skb, protoff, ct, ctinfo)), and the numbers helpers share."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..entry import Entry
from ..packet import Packet

U16 = 0xFFFF
U32 = 0xFFFFFFFF

# expect(src or None, dst, proto, dport) files an expectation of this entry (any source
# port); it returns None when filed, else why not (engine/expect.py).
Expect = Callable[[Optional[int], int, int, int], Optional[str]]


@dataclass
class HelpCall:
    entry: Entry
    pkt: Packet
    direction: int               # ORIGINAL or REPLY
    established: bool            # ctinfo is IP_CT_ESTABLISHED or IP_CT_ESTABLISHED_REPLY
    expect: Expect
    modern: bool = True          # nf_conntrack (linux profile), not 2.6's ip_conntrack

    def tuple_of(self, direction: int) -> tuple:
        """(src, dst, proto, sport, dport) of one direction of the entry."""
        return self.entry.tuple(direction)

    @property
    def state(self) -> Any:
        """The helper's private state on this entry (the kernel's nfct_help_data)."""
        return self.entry.help_state


def before(a: int, b: int) -> bool:
    """TCP sequence comparison modulo 2**32 (the kernel's before())."""
    return (a - b) & 0x80000000 != 0 and a != b


def strtoul(data: bytes, pos: int) -> tuple:
    """simple_strtoul(s, &end, 10): the decimal digits at pos (none: 0) and where they end."""
    value = 0
    while pos < len(data) and 48 <= data[pos] <= 57:
        value = value * 10 + data[pos] - 48
        pos += 1
    return value, pos
