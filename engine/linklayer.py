"""Link-layer framing of captured frames: from a pcap link type and frame to IP bytes.

strip_ip() keeps IPv4 and IPv6 datagrams (the engine dispatches on the version nibble;
the iptables chains pass IPv6 by, as empty ip6tables chains would); strip_link() keeps
IPv4 only, for the callers that read IPv4 headers.

Link type numbers are pcap's LINKTYPE_* values (tcpdump.org/linktypes.html).
Only the cooked Linux headers (SLL, SLL2) say which way a packet went, so only
they give a netfilter hook hint: outgoing packets met conntrack in OUTPUT,
everything else in PREROUTING.
"""
from __future__ import annotations

import struct
from typing import Callable, Optional

from .hooks import LOCAL_OUT, PRE_ROUTING

LINKTYPE_NULL = 0          # BSD loopback: 4-byte address family in the capturing host's byte order
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW_DLT12 = 12    # DLT_RAW as written by some platforms into pcap files
LINKTYPE_RAW = 101         # raw IPv4 or IPv6, version nibble decides
LINKTYPE_LOOP = 108        # OpenBSD loopback: address family in network byte order
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

AF_INET = 2
# AF_INET6 as the capturing host wrote it into a NULL/LOOP header: its value differs by
# system (BSD 24, FreeBSD 28, Darwin 30; Linux's 10 is there for completeness).
AF_INET6_VALUES = frozenset((10, 24, 28, 30))
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
IP_VERSION_OF_ETHERTYPE = {ETH_P_IP: 4, ETH_P_IPV6: 6}
# Tag protocol ids that may precede the real ethertype: 802.1Q, 802.1ad (QinQ)
# and the pre-standard 0x9100 QinQ tag some switches still emit.
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
VLAN_TPIDS = frozenset((ETH_P_8021Q, ETH_P_8021AD, 0x9100))

PACKET_HOST = 0            # sll_pkttype of a packet addressed to this host
PACKET_OTHERHOST = 3       # sll_pkttype of a frame for another host's MAC: ip_rcv drops it
PACKET_OUTGOING = 4        # sll_pkttype of a packet this host sent
ARPHRD_ETHER = 1           # sll_hatype of an Ethernet device

_U16 = struct.Struct("!H")
_SLL2_HEAD = struct.Struct("!HHIHB")   # protocol, reserved, ifindex, arphrd, pkttype
# The whole SLL2 header: protocol, reserved, ifindex, arphrd, pkttype, addr_len, addr.
SLL2_HEADER = struct.Struct("!HHIHBB8s")

Stripped = tuple[Optional[bytes], Optional[int]]
NOT_IP: Stripped = (None, None)


def ip_version(datagram: bytes) -> int:
    """The version nibble of an IP datagram (0 for an empty one)."""
    return datagram[0] >> 4 if datagram else 0


def _after_ethertype(frame: bytes, offset: int, ethertype: int) -> Optional[bytes]:
    """Skip any VLAN tags starting at offset; return the IPv4/IPv6 payload or None
    (another ethertype, or a version nibble that contradicts it: ip_rcv/ipv6_rcv drop it)."""
    while ethertype in VLAN_TPIDS:
        if len(frame) < offset + 4:
            return None
        ethertype = _U16.unpack_from(frame, offset + 2)[0]
        offset += 4
    version = IP_VERSION_OF_ETHERTYPE.get(ethertype)
    if version is None or ip_version(frame[offset:offset + 1]) != version:
        return None
    return frame[offset:]


def _ip_only(data: bytes) -> Optional[bytes]:
    """Raw-IP link types carry IPv4 or IPv6: the version nibble decides."""
    if ip_version(data) not in (4, 6):
        return None
    return data


def _family_ok(family: int, data: bytes) -> Optional[bytes]:
    """The datagram after a NULL/LOOP header if its family and version agree."""
    if family == AF_INET and ip_version(data) == 4:
        return data
    if family in AF_INET6_VALUES and ip_version(data) == 6:
        return data
    return None


def _ethernet(frame: bytes) -> Stripped:
    if len(frame) < 14:
        return NOT_IP
    return _after_ethertype(frame, 14, _U16.unpack_from(frame, 12)[0]), None


def _null(frame: bytes) -> Stripped:
    # The family was written in the capturing host's byte order, which the file
    # does not record: AF_INET (2) reads as 2 in one order or 0x02000000 in the other.
    if len(frame) < 4:
        return NOT_IP
    little, big = int.from_bytes(frame[:4], "little"), int.from_bytes(frame[:4], "big")
    family = little if little < 256 else big
    return _family_ok(family, frame[4:]), None


def _loop(frame: bytes) -> Stripped:
    if len(frame) < 4:
        return NOT_IP
    return _family_ok(int.from_bytes(frame[:4], "big"), frame[4:]), None


def _raw(frame: bytes) -> Stripped:
    return _ip_only(frame), None


def _raw_version(version: int) -> Callable[[bytes], Stripped]:
    """LINKTYPE_IPV4 / LINKTYPE_IPV6: one version only."""
    def strip(frame: bytes) -> Stripped:
        return (frame if ip_version(frame) == version else None), None
    return strip


ARPHRD_LOOPBACK = 772


def _hook_from_pkttype(pkttype: int, arphrd: int) -> int:
    # Everything on a loopback device was made on this host, so conntrack tracked it
    # in OUTPUT (and skipped the second, receiving pass): no checksum checks there.
    if pkttype == PACKET_OUTGOING or arphrd == ARPHRD_LOOPBACK:
        return LOCAL_OUT
    return PRE_ROUTING


def _linux_sll(frame: bytes) -> Stripped:
    # pkttype(2) arphrd(2) addr_len(2) addr(8) protocol(2)
    if len(frame) < 16:
        return NOT_IP
    pkttype, arphrd = _U16.unpack_from(frame, 0)[0], _U16.unpack_from(frame, 2)[0]
    protocol = _U16.unpack_from(frame, 14)[0]
    if pkttype == PACKET_OTHERHOST:
        return NOT_IP
    return _after_ethertype(frame, 16, protocol), _hook_from_pkttype(pkttype, arphrd)


def _linux_sll2(frame: bytes) -> Stripped:
    if len(frame) < SLL2_HEADER.size:
        return NOT_IP
    protocol, _reserved, _ifindex, arphrd, pkttype = _SLL2_HEAD.unpack_from(frame)
    if pkttype == PACKET_OTHERHOST:
        return NOT_IP
    return (_after_ethertype(frame, SLL2_HEADER.size, protocol),
            _hook_from_pkttype(pkttype, arphrd))


_STRIPPERS: dict[int, Callable[[bytes], Stripped]] = {
    LINKTYPE_NULL: _null,
    LINKTYPE_ETHERNET: _ethernet,
    LINKTYPE_RAW_DLT12: _raw,
    LINKTYPE_RAW: _raw,
    LINKTYPE_LOOP: _loop,
    LINKTYPE_LINUX_SLL: _linux_sll,
    LINKTYPE_IPV4: _raw_version(4),
    LINKTYPE_IPV6: _raw_version(6),
    LINKTYPE_LINUX_SLL2: _linux_sll2,
}

SUPPORTED_LINKTYPES = frozenset(_STRIPPERS)


def strip_ip(linktype: int, frame: bytes) -> Stripped:
    """(IPv4 or IPv6 datagram or None, hook hint or None) for one captured frame.

    The datagram still carries any link padding after the IP total/payload length; the
    parser cuts it.  None means: not IP, too short, an unknown link type, or a frame for
    another host's MAC (a cooked capture's PACKET_OTHERHOST: ip_rcv/ipv6_rcv drop it
    unread; tests/data/wire/wire_other_host_frames).
    The hook hint is LOCAL_OUT/PRE_ROUTING for Linux cooked captures, else None.
    """
    stripper = _STRIPPERS.get(linktype)
    if stripper is None:
        return NOT_IP
    datagram, hook = stripper(frame)
    if datagram is None:
        return NOT_IP
    return datagram, hook


def strip_link(linktype: int, frame: bytes) -> Stripped:
    """strip_ip() for IPv4 datagrams only: (None, None) for IPv6 too."""
    datagram, hook = strip_ip(linktype, frame)
    if ip_version(datagram or b"") != 4:
        return NOT_IP
    return datagram, hook
