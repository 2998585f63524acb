"""Which interface a captured frame crossed: what `-i`/`-o` rules match.

Only Linux cooked captures (`tcpdump -i any`) say it: SLL2 carries the interface index and
the device type, SLL (v1) the device type alone.  Indexes get their names from the
caller (`--iface 3=veth0`); a loopback device is `lo` without being named.
"""
from __future__ import annotations

import struct
from typing import Dict, Iterable, NamedTuple, Optional

from .linklayer import LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2

ARPHRD_LOOPBACK = 772
LOOPBACK_NAME = "lo"
IFNAMSIZ = 16                      # names are at most 15 characters, as the kernel's

_SLL2_INDEX_TYPE = struct.Struct("!4xIH")      # ifindex, arphrd after protocol and reserved
_SLL_TYPE = struct.Struct("!2xH")              # arphrd after pkttype


class FrameInterface(NamedTuple):
    index: Optional[int]           # None: the capture does not say
    loopback: bool


UNKNOWN = FrameInterface(None, False)


def frame_interface(linktype: int, frame: bytes) -> FrameInterface:
    """The interface a cooked frame was captured on; UNKNOWN for other link types."""
    if linktype == LINKTYPE_LINUX_SLL2 and len(frame) >= _SLL2_INDEX_TYPE.size:
        index, arphrd = _SLL2_INDEX_TYPE.unpack_from(frame)
        return FrameInterface(index, arphrd == ARPHRD_LOOPBACK)
    if linktype == LINKTYPE_LINUX_SLL and len(frame) >= _SLL_TYPE.size:
        return FrameInterface(None, _SLL_TYPE.unpack_from(frame)[0] == ARPHRD_LOOPBACK)
    return UNKNOWN


def parse_iface_names(specs: Iterable[str]) -> Dict[int, str]:
    """{index: name} from `INDEX=NAME` texts (each may hold several, comma-separated);
    ValueError naming the bad one."""
    names: Dict[int, str] = {}
    for spec in specs:
        for item in spec.split(","):
            index, sep, name = item.partition("=")
            if not sep or not index.strip().isdigit() or not name:
                raise ValueError(f"{item!r} is not INDEX=NAME (e.g. 3=veth0)")
            if len(name) >= IFNAMSIZ or any(c.isspace() or c == "/" for c in name):
                raise ValueError(f"{name!r} is not an interface name")
            names[int(index)] = name
    return names


def interface_name(iface: FrameInterface, names: Dict[int, str]) -> str:
    """The name rules match; "" when nothing names it (no `-i NAME` matches it then)."""
    if iface.index is not None and iface.index in names:
        return names[iface.index]
    return LOOPBACK_NAME if iface.loopback else ""
