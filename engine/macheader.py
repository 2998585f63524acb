"""The link-layer header LOG prints as `MAC=` for a packet that came in on an interface.

The kernel prints the skb's MAC header, dev->hard_header_len bytes (nf_log_syslog.c,
dump_mac_header): on Ethernet and on lo (whose header is an all-zero Ethernet one) the
destination, the source and the EtherType.  What a capture gives:

* an Ethernet frame carries the header itself;
* a Linux cooked frame (SLL2, `tcpdump -i any`) keeps the device type, the packet type, the
  sender's address and the protocol: lo's header is all zeros and the protocol; on an
  Ethernet device the source is the sender's address and the destination follows from the
  packet type -- broadcast ff:ff:.., IPv4 multicast 01:00:5e + the group's low 23 bits, and
  for a packet to this host the device's own address, which the device's outgoing frames
  in the same capture carry as theirs (SLL2 says which device: its interface index);
* SLL (v1) frames name no device: lo's header only.

Where the capture cannot tell, the header is b"" and LOG prints `MAC= ` with nothing.
"""
from __future__ import annotations

import struct
from typing import Dict, Optional

from .linklayer import (ARPHRD_ETHER, ARPHRD_LOOPBACK, LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL,
                        LINKTYPE_LINUX_SLL2, PACKET_HOST, PACKET_OUTGOING, SLL2_HEADER)

ETH_HLEN = 14
ETH_ALEN = 6
PACKET_BROADCAST, PACKET_MULTICAST = 1, 2      # sll_pkttype values (linux/if_packet.h)
BROADCAST_MAC = b"\xff" * ETH_ALEN
IPV4_MULTICAST_PREFIX = b"\x01\x00\x5e"
_SLL = struct.Struct("!HHH8sH")      # pkttype, hatype, halen, addr, protocol


def loopback_header(protocol: int) -> bytes:
    """lo's MAC header: two zero addresses and the EtherType."""
    return bytes(2 * ETH_ALEN) + protocol.to_bytes(2, "big")


class MacHeaders:
    """The MAC header of each incoming frame of one capture, learning the devices' own
    addresses from their outgoing frames as it goes."""

    def __init__(self) -> None:
        self.own: Dict[int, bytes] = {}          # ifindex -> the device's address

    def incoming(self, linktype: int, frame: bytes, datagram: bytes) -> bytes:
        """The header LOG would print for `frame` (whose IP datagram is `datagram`) at an
        input hook; b"" where the capture does not say."""
        if linktype == LINKTYPE_ETHERNET:
            return frame[:ETH_HLEN] if len(frame) >= ETH_HLEN else b""
        if linktype == LINKTYPE_LINUX_SLL2 and len(frame) >= SLL2_HEADER.size:
            protocol, _, ifindex, hatype, pkttype, halen, addr = SLL2_HEADER.unpack_from(frame)
            if hatype == ARPHRD_LOOPBACK:
                return loopback_header(protocol)
            if hatype != ARPHRD_ETHER or halen != ETH_ALEN:
                return b""
            if pkttype == PACKET_OUTGOING:
                self.own[ifindex] = addr[:ETH_ALEN]
                return b""
            dst = self._destination(pkttype, self.own.get(ifindex), datagram)
            return dst + addr[:ETH_ALEN] + protocol.to_bytes(2, "big") if dst else b""
        if linktype == LINKTYPE_LINUX_SLL and len(frame) >= _SLL.size:
            _, hatype, _, _, protocol = _SLL.unpack_from(frame)
            return loopback_header(protocol) if hatype == ARPHRD_LOOPBACK else b""
        return b""

    @staticmethod
    def _destination(pkttype: int, own: Optional[bytes], datagram: bytes) -> Optional[bytes]:
        if pkttype == PACKET_HOST:
            return own
        if pkttype == PACKET_BROADCAST:
            return BROADCAST_MAC
        if pkttype == PACKET_MULTICAST and len(datagram) >= 20:
            group = datagram[17:20]
            return IPV4_MULTICAST_PREFIX + bytes([group[0] & 0x7F]) + group[1:]
        return None
