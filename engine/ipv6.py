"""IPv6 as conntrack's layer 3: the same names as engine/ipv4.py.

A table key is source and destination address (16 bytes each, as in the header at offset
8) followed by the two 16-bit protocol parts: 36 bytes.  Addresses are ints, as IPv4's are.
Listings print addresses as the kernel's %pI6 does: eight groups of four hex digits, no
compression (observed on 6.18: `src=0000:0000:0000:0000:0000:0000:0000:0001`).
"""
from __future__ import annotations

import ipaddress
import struct
from typing import Tuple

FAMILY = 10                  # AF_INET6 / NFPROTO_IPV6
NAME = "ipv6"
LISTING_PREFIX = "ipv6     10 "  # nf_conntrack's first two columns: "%-8s %u "

HEADER = struct.Struct("!IHBB16s16s")   # version/class/flow, payload length, next, hops, src, dst
HEADER_LEN = 40
ADDRESSES_AT = 8             # src, dst

KEY = struct.Struct("!16s16sHH")  # src, dst, protocol part a, protocol part b
KEY_LEN = KEY.size
_PARTS = struct.Struct("!HH")
ADDR_BITS = 128


def key(src: int, dst: int, a: int, b: int) -> bytes:
    return KEY.pack(src.to_bytes(16, "big"), dst.to_bytes(16, "big"), a, b)


def unkey(packed: bytes) -> Tuple[int, int, int, int]:
    """(src, dst, a, b) of a key."""
    src, dst, a, b = KEY.unpack(packed)
    return int.from_bytes(src, "big"), int.from_bytes(dst, "big"), a, b


def mirror_key(packed: bytes, a: int, b: int) -> bytes:
    """The key with its addresses swapped and the protocol parts a, b (the reply's)."""
    return packed[16:32] + packed[0:16] + _PARTS.pack(a, b)


def addresses(packed: bytes) -> Tuple[int, int]:
    return int.from_bytes(packed[0:16], "big"), int.from_bytes(packed[16:32], "big")


def addr_text(addr: int) -> str:
    """Eight colon-separated groups of four hex digits, as the kernel's %pI6."""
    digits = f"{addr:032x}"
    return ":".join(digits[i:i + 4] for i in range(0, 32, 4))


def addr_value(text: str) -> int:
    """The int of an IPv6 address in any textual form (raises ValueError)."""
    try:
        return int(ipaddress.IPv6Address(text))
    except ipaddress.AddressValueError as error:
        raise ValueError(f"{text!r} is not an IPv6 address") from error
