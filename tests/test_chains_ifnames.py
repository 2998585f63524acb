"""How the chains name a cooked frame's interface index on a live mount (no FUSE).

The mount hands the engine an interface lookup (the tap's `interface_names`: its network
namespace's if_nameindex).  The chains ask it when an SLL2 frame brings an index they have
not named -- again for each new index (interfaces come and go), never again for one it did
not name either (a packet from a deleted interface must not cost a lookup each time) --
and a name given beforehand (`--iface`) is kept.
"""
from __future__ import annotations

from engine.build import build_udp_datagram
from engine.chains import Chains
from engine.core import Engine
from engine.linklayer import ARPHRD_ETHER, ETH_P_IP, LINKTYPE_LINUX_SLL2, PACKET_HOST, SLL2_HEADER
from engine.rules import Ruleset

PEER_MAC = bytes.fromhex("02000000000b")
RULES = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i eth0 -p udp
-A INPUT -i eth1 -p udp
-A INPUT -i fixed -p udp
COMMIT
"""


def received_on(index: int, sport: int) -> bytes:
    """A UDP datagram arriving for this host on interface `index`, as the tap frames it."""
    datagram = build_udp_datagram("10.0.0.2", "10.0.0.1", sport, 53, b"q")
    return SLL2_HEADER.pack(ETH_P_IP, 0, index, ARPHRD_ETHER, PACKET_HOST, 6,
                            PEER_MAC) + datagram


def counts(rules: Ruleset) -> list[str]:
    """The INPUT rules' packet counters, in order."""
    return [line.split("]")[0] + "]" for line in rules.save(counters=True).splitlines()
            if line.startswith("[") and "-A INPUT" in line]


class Namespace:
    """The interfaces an if_nameindex would list, changing as the test goes; asked how often."""

    def __init__(self, names: dict[int, str]) -> None:
        self.names = names
        self.asked = 0

    def __call__(self) -> dict[int, str]:
        self.asked += 1
        return dict(self.names)


def test_indexes_are_named_by_the_lookup_when_first_seen():
    rules = Ruleset.load_restore(RULES)
    engine = Engine("linux", ram_bytes=1 << 30)
    chains = Chains(engine, rules, iface_names={7: "fixed"})
    namespace = Namespace({1: "lo", 2: "eth0", 7: "renamed"})
    engine.interface_lookup = namespace
    feed = lambda index, sport: chains.feed_frame(1.0, LINKTYPE_LINUX_SLL2,   # noqa: E731
                                                  received_on(index, sport))
    feed(2, 1000)
    feed(2, 1001)
    assert namespace.asked == 1                   # once for index 2, then it is known
    assert counts(rules) == ["[2:58]", "[0:0]", "[0:0]"]
    feed(3, 1002)                                 # an index nobody names: asked once ...
    feed(3, 1003)                                 # ... and not again
    assert namespace.asked == 2
    namespace.names[4] = "eth1"                   # an interface that came up later
    feed(4, 1004)
    assert namespace.asked == 3
    feed(7, 1005)                                 # named beforehand: not asked, not renamed
    assert namespace.asked == 3
    assert counts(rules) == ["[2:58]", "[1:29]", "[1:29]"]


def test_without_a_lookup_an_index_stays_unnamed():
    rules = Ruleset.load_restore(RULES)
    engine = Engine("linux", ram_bytes=1 << 30)
    chains = Chains(engine, rules)
    chains.feed_frame(1.0, LINKTYPE_LINUX_SLL2, received_on(2, 1000))
    assert counts(rules) == ["[0:0]", "[0:0]", "[0:0]"]
