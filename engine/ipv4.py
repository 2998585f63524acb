"""IPv4 as conntrack's layer 3: the header's layout, the table key, address text.

A table key is the tuple without its protocol numbers (each (l3, protocol) pair has its
own table): source and destination address as they sit in the IPv4 header at offset 12,
followed by the two 16-bit protocol parts (TCP/UDP ports; ICMP id and type << 8 | code; GRE
keys; 0, 0 for protocols without).  So the common packet's key is one 12-byte slice of its
bytes, 48 bytes of memory where a 5-tuple of ints costs ~140.
"""
from __future__ import annotations

import struct
from typing import Tuple

FAMILY = 2                   # AF_INET / NFPROTO_IPV4
NAME = "ipv4"
LISTING_PREFIX = "ipv4     2 "   # nf_conntrack's first two columns: "%-8s %u "

# The header: ver/ihl tos tot_len id frag ttl proto csum src dst.
HEADER = struct.Struct("!BBHHHBBHII")
HEADER_LEN = 20
ADDRESSES_AT = 12            # src, dst
IP_DF = 0x4000
IP_MF = 0x2000
IP_OFFSET = 0x1FFF

KEY = struct.Struct("!IIHH")      # src, dst, protocol part a, protocol part b
KEY_LEN = KEY.size
_ADDRESSES = struct.Struct("!II")
_PARTS = struct.Struct("!HH")


def key(src: int, dst: int, a: int, b: int) -> bytes:
    return KEY.pack(src, dst, a, b)


def unkey(packed: bytes) -> Tuple[int, int, int, int]:
    """(src, dst, a, b) of a key."""
    return KEY.unpack(packed)


def mirror_key(packed: bytes, a: int, b: int) -> bytes:
    """The key with its addresses swapped and the protocol parts a, b (the reply's)."""
    return packed[4:8] + packed[0:4] + _PARTS.pack(a, b)


def addresses(packed: bytes) -> Tuple[int, int]:
    return _ADDRESSES.unpack_from(packed)


def addr_text(addr: int) -> str:
    """Dotted quad, as the kernel's %pI4."""
    return f"{addr >> 24}.{(addr >> 16) & 255}.{(addr >> 8) & 255}.{addr & 255}"


def addr_value(text: str) -> int:
    """The int of a dotted quad (raises ValueError)."""
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts):
        raise ValueError(f"{text!r} is not an IPv4 address")
    a, b, c, d = (int(p) for p in parts)
    return a << 24 | b << 16 | c << 8 | d


ADDR_BITS = 32
