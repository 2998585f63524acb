"""The layer-3 protocols conntrack knows, behind one interface (a module per family).

An L3 module owns the table key of its family, the reply key, the address text and the
listing prefix of net/nf_conntrack: engine/ipv4.py and engine/ipv6.py have the same names.
"""
from __future__ import annotations

from types import ModuleType
from typing import Dict, Protocol, Tuple

from . import ipv4, ipv6


class L3(Protocol):
    FAMILY: int
    NAME: str
    LISTING_PREFIX: str
    ADDR_BITS: int

    def key(self, src: int, dst: int, a: int, b: int) -> bytes: ...
    def unkey(self, packed: bytes) -> Tuple[int, int, int, int]: ...
    def mirror_key(self, packed: bytes, a: int, b: int) -> bytes: ...
    def addr_text(self, addr: int) -> str: ...


L3_BY_FAMILY: Dict[int, ModuleType] = {ipv4.FAMILY: ipv4, ipv6.FAMILY: ipv6}


def l3_of(family: int) -> L3:
    return L3_BY_FAMILY[family]  # type: ignore[return-value]
