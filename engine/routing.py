"""What the routing decision after PREROUTING drops: conntrack has seen the packet (and made
it an unconfirmed entry), then ip_rcv_finish() finds no way on for it, so it never reaches
INPUT or FORWARD, its entry is destroyed and no stat column moves (observed on 6.18:
tests/data/wire/wire_martian_source, wire_martian_destination, wire_bad_ip_options).

Two checks, both tables below:
* ip_route_input_slow()'s martians, tested in the kernel's order: the first rule whose
  address class matches decides (a limited-broadcast destination is delivered before the
  zero-source rule is reached); a source that is one of the host's own addresses
  (fib_validate_source()) when the host's addresses are known;
* ip_options_compile() on a received header with options (ip_rcv_options()): a malformed
  option, or a source route (accept_source_route is 0 in a new namespace).

and, when the host is described (its addresses, its links' broadcast addresses, whether it
forwards: ip_forward), a destination it neither owns nor forwards to (ip_error() without
forwarding drops it silently; tests/data/wire/wire_martian_destination).

Not modelled: rp_filter (0 in a new namespace: any other source is accepted),
route_localnet (0: loopback addresses are martians off lo), multicast destinations.
"""
from __future__ import annotations

from ipaddress import IPv4Network
from typing import Collection, FrozenSet, NamedTuple, Optional, Tuple

MULTICAST = IPv4Network("224.0.0.0/4")
ZERONET = IPv4Network("0.0.0.0/8")
LOOPBACK = IPv4Network("127.0.0.0/8")
LIMITED_BROADCAST = IPv4Network("255.255.255.255/32")
ZERO = IPv4Network("0.0.0.0/32")


class AddressRule(NamedTuple):
    field: str                       # "src", "dst" or "both" (src and dst both match)
    network: IPv4Network
    drop: Optional[str]              # why routing drops it; None: delivered (brd_input)

    def matches(self, address: int) -> bool:
        return address & int(self.network.netmask) == int(self.network.network_address)


# ip_route_input_slow()'s checks before the FIB lookup, in its order.
MARTIAN_RULES: Tuple[AddressRule, ...] = (
    AddressRule("src", MULTICAST, "martian source (multicast)"),
    AddressRule("src", LIMITED_BROADCAST, "martian source (limited broadcast)"),
    AddressRule("dst", LIMITED_BROADCAST, None),                     # brd_input
    AddressRule("both", ZERO, None),                                 # brd_input (0 -> 0)
    AddressRule("src", ZERONET, "martian source (0.0.0.0/8)"),
    AddressRule("dst", ZERONET, "martian destination (0.0.0.0/8)"),
    AddressRule("dst", LOOPBACK, "martian destination (loopback, route_localnet=0)"),
    AddressRule("src", LOOPBACK, "martian source (loopback, route_localnet=0)"),
)


def _first_octets(field: str) -> FrozenSet[int]:
    """The first address bytes some rule on `field` can match: a packet whose addresses
    start otherwise (nearly all) skips the table."""
    octets = set()
    for rule in MARTIAN_RULES:
        if rule.field in (field, "both"):
            first = int(rule.network.network_address) >> 24
            octets.update(range(first, (int(rule.network.broadcast_address) >> 24) + 1))
    return frozenset(octets)


SRC_FIRST_OCTETS, DST_FIRST_OCTETS = _first_octets("src"), _first_octets("dst")

IPOPT_END, IPOPT_NOOP = 0, 1
IPOPT_LSRR, IPOPT_SSRR = 0x83, 0x89
# ip_options_compile(): each option's least length and least pointer value (for those that
# have a pointer); an option below them is malformed.
OPTION_MIN_LENGTH = {0x07: 3, IPOPT_LSRR: 3, IPOPT_SSRR: 3, 0x44: 4, 0x94: 4}
OPTION_MIN_POINTER = {0x07: 4, IPOPT_LSRR: 4, IPOPT_SSRR: 4, 0x44: 5}
# Well formed, but a host with accept_source_route=0 drops them (ip_rcv_options()).
REFUSED_OPTIONS = {IPOPT_LSRR: "source route (accept_source_route=0)",
                   IPOPT_SSRR: "source route (accept_source_route=0)"}


class Host(NamedTuple):
    """What routing knows of the host: its own addresses (None: every destination is
    it), its links' broadcast addresses (delivered; not martian as sources), ip_forward."""
    addresses: Optional[Collection[int]] = None
    broadcasts: Collection[int] = ()
    forwarding: bool = True


ANY_HOST = Host()
NOT_FORWARDED = "not this host's address, and it does not forward (ip_forward=0)"
OWN_SOURCE = "martian source (one of this host's addresses: fib_validate_source)"


def _first_rule(src: int, dst: int) -> Optional[AddressRule]:
    for rule in MARTIAN_RULES:
        if rule.field == "both":
            hit = rule.matches(src) and rule.matches(dst)
        else:
            hit = rule.matches(src if rule.field == "src" else dst)
        if hit:
            return rule
    return None


def options_refused(options: bytes) -> Optional[str]:
    """Why ip_rcv_options() drops a received header with these option bytes, or None."""
    at = 0
    while at < len(options):
        kind = options[at]
        if kind == IPOPT_END:
            break
        if kind == IPOPT_NOOP:
            at += 1
            continue
        if at + 1 >= len(options):
            return "ip option without a length"
        length = options[at + 1]
        if length < 2 or at + length > len(options):
            return f"ip option {kind:#x}: length {length}"
        if length < OPTION_MIN_LENGTH.get(kind, 2):
            return f"ip option {kind:#x}: length {length} too short"
        least = OPTION_MIN_POINTER.get(kind)
        if least is not None and options[at + 2] < least:
            return f"ip option {kind:#x}: pointer {options[at + 2]}"
        if kind in REFUSED_OPTIONS:
            return REFUSED_OPTIONS[kind]
        at += length
    return None


def not_routed(dst: int, host: Host) -> Optional[str]:
    """Why a host that does not forward drops a packet for another address, or None."""
    if host.forwarding or host.addresses is None:
        return None
    if dst in host.addresses or dst in host.broadcasts:
        return None
    return NOT_FORWARDED


IPV6_MULTICAST_FIRST_BYTE = 0xFF       # ff00::/8


def routing_drops(src: int, dst: int, datagram: Optional[bytes] = None,
                  host: Host = ANY_HOST, ipv6: bool = False) -> Optional[str]:
    """Why a packet received from a wire goes no further than PREROUTING, or None.
    `datagram`: its bytes, when its header has options (fast-path packets have none).
    IPv6 (`ipv6`): the IPv4 martian and option tables do not apply (`::` is a valid source
    for duplicate address detection); multicast is delivered; only a non-forwarding host's
    packets for another address are dropped."""
    if ipv6:
        if dst >> 120 == IPV6_MULTICAST_FIRST_BYTE:
            return None
        return not_routed(dst, host)
    rule = None
    if src >> 24 in SRC_FIRST_OCTETS or dst >> 24 in DST_FIRST_OCTETS:
        rule = _first_rule(src, dst)
    if rule is not None:
        reason = rule.drop              # a martian, or a broadcast delivered as such
    elif host.addresses is not None and src in host.addresses:
        reason = OWN_SOURCE
    else:
        reason = not_routed(dst, host)
    if reason is None and datagram is not None and datagram[0] & 0x0F > 5:
        reason = options_refused(datagram[20:(datagram[0] & 0x0F) * 4])
    return reason


def martian(src: int, dst: int, local_addresses: Optional[Collection[int]] = None
            ) -> Optional[str]:
    """Why routing drops a received packet for its addresses alone (the host forwarding
    whatever is not its own), or None."""
    return routing_drops(src, dst, host=Host(local_addresses))
