"""The fast path: the common packet, from frame bytes to its verdict in one call.

Most packets of a replay are a flow's next packet -- the ACKs and PSH/ACKs of an
ESTABLISHED TCP connection, the next datagram of a UDP flow -- or a flow's first: a SYN,
a first datagram.  The general path (Engine.feed_frame -> extract_ipv4 ->
Tracker.process -> TcpTracker.packet -> linux_in_window -> PacketResult -> confirm)
builds a Packet, a TcpInfo and a PacketResult for each and calls a dozen or two
functions, most of whose tests decide nothing for these packets.
`track(now, linktype, frame)` does the same work for them in one call, straight from the
frame's bytes, and returns the verdict the general path would have given, or None when
the packet is not one it takes -- having changed nothing, so that the general path then
handles it from the start.

It takes, in the linux profile (nf_conntrack) only:

* an untagged Ethernet frame, or a Linux cooked (SLL2) frame of packet type
  PACKET_OUTGOING -- what the live tap hands over for a packet this host sent, lo's
  outgoing copy among them: tracked in OUTPUT, as an Ethernet frame is by the default
  hook -- holding an unfragmented IPv4 datagram without IP options, with lengths
  extract_ipv4() would accept (the datagrams it reads in place).  The link header's
  layout is a LinkFrame of LINKS; one implementation serves them all;
* timers or expectations due: it expires them first, as Tracker.process() would -- every
  such datagram reaches it -- so this one change may precede a decline, the one the
  general path then makes no more;
* TCP, on an entry of the tuple: flags exactly ACK or PSH|ACK, options none or exactly
  NOP NOP TIMESTAMP (no window scale, SACK-permitted or SACK block to read), an entry
  that has seen a reply, in state ESTABLISHED -- or SYN_RECV for the original direction:
  the handshake's last ACK, which makes it ESTABLISHED and ASSURED -- whose sender side
  has been seen (maxwin not 0), and a segment that passes the window checks I-IV (a
  failure has outcomes of its own: IGNORE, INVALID, a liberal accept);
* TCP on an entry, any other segment (SYN/ACK, FIN, RST, the ACKs of the closing states,
  out of window, SACK, a side not seen yet): engine/fastpath_tcp.py's known_segment()
  takes it -- the common cells (the reply's SYN/ACK and refusing RST in SYN_SENT, FINs
  and the closing states' ACKs) by cases of their own, the others by the general path's
  own TcpTracker.linux_segment(), without the Packet, the second lookup and the
  PacketResult (it declines flags error() refuses and SYN_SENT* cells, which may reopen
  the entry);
* TCP without an entry: a lone SYN (NONE -> SYN_SENT), any options: Linux's two SYN
  layouts (engine/parse.py's linux_syn_options(): the MSS alone; MSS, SACK-permitted,
  timestamps, NOP, window scale) are recognised by byte compares, which fix what
  parse_tcp_options()' walk would read from them (SACK-permitted and the shift in the
  last byte, or nothing); others get the walk;
* UDP, ICMP queries and replies, plain GRE (keys 0; not PPTP's) and, over IPv4, the
  protocols of the generic tracker (engine/generic.py: a tuple of the addresses alone, the
  generic timeout, never ASSURED), with an entry of the tuple or without one;
* ICMP errors quoting a TCP or UDP datagram in an option-less, unfragmented quote:
  engine/fastpath_icmp.py's icmp_error() answers RELATED or INVALID as Tracker._related();
  ICMPv6's neighbour discovery and MLD messages are UNTRACKED (its errors: the general path);
* a new entry only while no expectation is pending (none can claim the tuple, no helper
  is attached) and the table has room (no early drop); an entry found has no helper;
* IPv4 datagrams conntrack refuses before any entry is made or touched, each counted in
  the `invalid` stat with the verdict INVALID, as Tracker.process() does (_invalid()):
  a TCP header cut short or with a bad data offset and a UDP length that does not fit
  (the parser's l4_error), and a TCP flags byte error() refuses (with or without an
  entry).  IPv6's take the general path.

Why the answer is the same, bit for bit: for such a packet every test the general path
makes has the outcome these preconditions fix -- no checksum is verified outside
PREROUTING, ACK, PSH|ACK and SYN are valid flag combinations of their class, the
transitions taken have no special cell, no RST/FIN/SACK handling applies -- so what is
left is the lookup or the new entry, the window update of linux_in_window() for that
case, the protocol's timeout rules (TcpTracker._linux_packet(), UdpTracker.packet(), ...),
the counters, the `found` or `new` stat, the insertion and the timer filing, done here in
the same order on the same fields (a new entry's slots set by admit() itself, as
Entry.__init__ would: entry.ENTRY_SLOTS is checked at import).  make_fast_path() checks
the table facts it relies on (the transitions, the flag classes) when it is built.
tests/test_fastpath.py replays the kernel scenarios, the benchmark's mix and hand-built
edge flows (the closing flows and ICMP errors of the other cases too) with and without it
and requires identical entries, tables, timers, stats and verdicts.

The engine-wide conditions (no chains, no hook listeners, the fast extraction on, no
PREROUTING default hook) are checked by Engine.fast_path() when the fast path is made;
whoever holds it must not change them while using it (engine/replay.py makes it for one
capture's feed; procfs_ct/driver.py looks again before every hold of the engine lock, as
chains and listeners may come at run time).  Knob values need no such care: they are
read on every packet.  Arrivals remembered to spot forwarded copies are checked per packet.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from operator import itemgetter
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Dict, FrozenSet, NamedTuple, Optional, Tuple

from . import ipv4, ipv6
from .ctstate import INVALID as INVALID_VERDICT
from .ctstate import CtState, Verdict
from .entry import (ASSURED, ENTRY_SLOTS, EXPECTED, REPLY, SEEN_REPLY, STATUS_BITS, Entry,
                    kind_of)
from .expect import INFINITY
from .fastpath_frag import HELD, make_fragment
from .fastpath_icmp import make_icmp_error
from .fastpath_found import (ESTABLISHED_ORIGINAL, ESTABLISHED_REPLY, NEW_ORIGINAL,
                            RELATED_ORIGINAL)
from .fastpath_sctp import make_known_sctp
from .fastpath_tcp import make_known_segment
from .hooks import LOCAL_OUT
from .linklayer import (ETH_P_IP, ETH_P_IPV6, LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL2,
                        PACKET_OUTGOING, SLL2_HEADER)
from .icmp import ICMP_INVERSE, NR_ICMP_TYPES, REQUEST_TYPES
from .icmpv6 import ICMPV6_INVERSE
from .icmpv6 import NOT_TRACKED_TYPES as ICMPV6_NOT_TRACKED
from .icmpv6 import REQUEST_TYPES as ICMPV6_REQUEST_TYPES
from .packet import (ACK, ICMP_ERROR_TYPES, IPPROTO_GRE, IPPROTO_ICMP, IPPROTO_ICMPV6,
                     IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, PSH, SYN)
from .parse import GRE_VERSION_1, TIMESTAMP_ONLY, linux_syn_options, tcp_info_with_options
from .table import Keyed
from .tcp_tables import (C_ACK, C_SYN, CLASS_OF_FLAGS, ESTABLISHED, NONE, STATE_TIMEOUT_KNOB,
                         SYN_RECV, SYN_SENT, TABLES, VALID_FLAGS)
from .tcp_window import (BE_LIBERAL, CONN_BYTES, DATA_UNACKNOWLEDGED, END_AT, FLAGS,
                         LAST_INDEX, M32, MAX_WSCALE, MAXACK_SET, MAXACKWINCONST, MAXEND_AT,
                         MAXWIN_AT, RETRANS, SACK_PERM, SCALE, SIDE, STATE, THROUGH_LAST,
                         WINDOW_SCALE, read_options)
from .udp import STREAM_AFTER

if TYPE_CHECKING:
    from .core import Engine

FastTrack = Callable[[float, int, bytes], Optional[Verdict]]

# The TCP header after ports: seq, ack, data offset, flags, window.
_TCP_AFTER_PORTS = struct.Struct("!IIBBH")
_UDP_LENGTH = struct.Struct("!H")
struct_error = struct.error
TWO32 = M32 + 1
ACKNOWLEDGED = ~DATA_UNACKNOWLEDGED          # a side's flags with the bit cleared
TIMESTAMPS_DOFF = 20 + 12                   # a TCP header with NOP NOP TIMESTAMP(10) alone
IPV4_NO_OPTIONS = 0x45
FRAGMENT = ipv4.IP_MF | ipv4.IP_OFFSET      # more fragments, or an offset
NO_KEYS = bytes(4)                          # GRE keys 0, 0 (parse.gre_keys())
# ICMP types that make or find an entry of their own (no errors; higher types are refused).
ICMP_QUERY_TYPES = frozenset(range(NR_ICMP_TYPES + 1)) - ICMP_ERROR_TYPES
ACK_FLAGS = frozenset((ACK, PSH | ACK))     # the flags bytes taken on an entry
# The TCP header's length by its data offset byte (the high nibble, in 32-bit words; the
# low one is reserved and the AE flag): an offset short of the 20-byte header maps to more
# than any datagram holds, so that one comparison with the datagram's payload refuses it.
NO_TCP_HEADER = 1 << 16
TCP_HEADER_LEN = tuple((byte >> 4) * 4 if byte >> 4 >= 5 else NO_TCP_HEADER
                       for byte in range(256))
SYN_FLAGS = frozenset((SYN,))               # and without one
# The verdict of an original-direction packet on a found entry, by the entry's status
# (Tracker.process(): ESTABLISHED once a reply was seen, else RELATED if expected, else
# NEW): one index in place of two bit tests (CPython 3.11 specialises neither `&` nor
# `status & BIT` tests; a tuple index it does).  An entry carries no status bit but
# STATUS_BITS (engine/persist.py refuses others), all of them below 16.
assert STATUS_BITS == 0b1111
ORIGINAL_VERDICTS = tuple(
    ESTABLISHED_ORIGINAL if status & SEEN_REPLY else
    RELATED_ORIGINAL if status & EXPECTED else NEW_ORIGINAL
    for status in range(STATUS_BITS + 1))



# A first SYN's connection state, written in one call into a zeroed TcpConn: the original
# side's end, maxend and maxwin, its scale and flags, the reply side's maxend, then the
# state and the last packet's class; the bytes between stay 0.
assert (END_AT, MAXEND_AT, MAXWIN_AT, FLAGS, LAST_INDEX) == (0, 4, 8, SCALE + 1, STATE + 1)
_SYN_CONN = struct.Struct(f"=3I{SCALE - 12}xBB{SIDE + MAXEND_AT - FLAGS - 1}xI"
                          f"{STATE - SIDE - MAXEND_AT - 4}xBB")
pack_syn_conn = _SYN_CONN.pack_into
# admit() sets an entry's slots itself, in place of Entry.__init__: these, no others.
assert ENTRY_SLOTS == ("orig", "reply", "status", "expires", "l4", "timer_slot", "hnext",
                       "ext")


def _acks_to_established() -> Tuple[FrozenSet[int], FrozenSet[int]]:
    """By direction, the states the TCP case takes an ACK in: those of SYN_RECV and
    ESTABLISHED (the ones _linux_packet() assures an entry from) that an ACK moves to
    ESTABLISHED in the linux table without a special cell -- none if ACK and PSH|ACK
    were not valid flags of class ACK."""
    if not all(VALID_FLAGS["linux"][flags] and CLASS_OF_FLAGS[flags] == C_ACK
               for flags in ACK_FLAGS):
        return frozenset(), frozenset()
    row = TABLES["linux"]
    from_states = (SYN_RECV, ESTABLISHED)
    original, reply = (frozenset(old for old in from_states
                                 if row[d][C_ACK][old] == ESTABLISHED) for d in (0, 1))
    return original, reply


def _syn_opens() -> bool:
    """The linux table facts the first SYN relies on: SYN is a valid flags byte of class
    SYN, and it moves a new entry from NONE to SYN_SENT."""
    return (all(VALID_FLAGS["linux"][flags] and CLASS_OF_FLAGS[flags] == C_SYN
                for flags in SYN_FLAGS)
            and TABLES["linux"][0][C_SYN][NONE] == SYN_SENT)


class LinkFrame(NamedTuple):
    """Where a link type puts what the fast path reads before the IP header."""
    linktype: int
    protocol_at: int                # the ethertype (Ethernet) or protocol (cooked) field
    ip_at: int                      # the IP header: the link header's length
    pkttype_at: Optional[int]       # a cooked header's packet type, else None


class L3Frame(NamedTuple):
    """Where an IP version puts what the fast path reads, and which of its cases it takes.
    The cases are written once, over these offsets and lengths; a table key is the
    addresses and the ports in place, in either version."""
    l3: ModuleType                  # engine/ipv4.py or engine/ipv6.py
    ethertype: int                  # the link header's protocol for it
    header_len: int                 # the fixed header taken (IPv4: no options)
    head_fields: str                # the struct format of the header's fields read first
    gre: int                        # the protocol number of its plain GRE case; -1: none
    # Its ICMP (engine/icmp.py, engine/icmpv6.py): the protocol number, the types that
    # make or find an entry of their own, of them those that make one, a request's reply
    # type, the timeout's knob, what the tracker's new() puts in entry.l4 (None: nothing,
    # the creation time stays), and whether the errors' case (fastpath_icmp.py) is taken.
    icmp: int
    icmp_queries: FrozenSet[int]
    icmp_requests: FrozenSet[int]
    icmp_inverse: Dict[int, int]
    icmp_timeout: str
    icmp_l4: Optional[int]
    icmp_errors: bool

    def head(self, link: LinkFrame) -> struct.Struct:
        """The one unpack from the link's protocol field: the protocol, then head_fields
        from the IP header's first byte."""
        return struct.Struct(f"!H{link.ip_at - link.protocol_at - 2}x{self.head_fields}")


# IPv4: version/IHL, total length, fragment field, protocol -- what decides whether the
# datagram is one extract_ipv4() reads.  IPv6: the version nibble's byte, payload length,
# next header: TCP, UDP or ICMPv6 right after the fixed header (no extension header, so
# neither nf_defrag_ipv6 nor ipv6_skip_exthdr() has anything to do) is what it takes;
# ICMPv6 echo and node information queries and replies, and the neighbour discovery and
# MLD messages it leaves untracked (its errors quote a flow: the general path), no GRE
# over IPv6.
IPV4_FRAME = L3Frame(ipv4, ETH_P_IP, ipv4.HEADER_LEN, "BxHxxHxB", IPPROTO_GRE, IPPROTO_ICMP,
                     ICMP_QUERY_TYPES, REQUEST_TYPES, ICMP_INVERSE, "icmp_timeout", 0, True)
IPV6_FRAME = L3Frame(ipv6, ETH_P_IPV6, ipv6.HEADER_LEN, "B3xHB", -1, IPPROTO_ICMPV6,
                     frozenset(ICMPV6_INVERSE), ICMPV6_REQUEST_TYPES, ICMPV6_INVERSE,
                     "icmpv6_timeout", None, False)
IPV6_UPPER_TAKEN = frozenset((IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6, IPPROTO_SCTP))
IPV6_VERSION = 6


# The link types taken.  A cooked frame (what the live tap hands over) is taken when its
# packet type is PACKET_OUTGOING: linklayer.strip_ip() gives it the hook LOCAL_OUT, as the
# default hook Engine.fast_path() requires gives an Ethernet frame.  Any other packet type
# (received: PREROUTING, checksums verified, routing; lo's looped-back incoming copy)
# takes the general path.
LINKS = {link.linktype: link for link in (
    LinkFrame(LINKTYPE_ETHERNET, 12, 14, None),
    # SLL2: protocol, reserved, ifindex, arphrd, pkttype, addr_len, addr (SLL2_HEADER).
    LinkFrame(LINKTYPE_LINUX_SLL2, 0, SLL2_HEADER.size, struct.calcsize("!HHIH")),
)}


@dataclass(frozen=True, slots=True)
class RareCases:
    """What only track()'s rarer cases read: another link type or IP version, fragments,
    expiry, a timer filing, a table made after the track (IPv6's), a flow's first packet,
    TCP segments other than the ACK case, ICMP, GRE and SCTP.  They are one closure
    variable, read as attributes, because every closure variable costs every call of
    track() ~14 instructions (CPython 3.11 copies each into the call's frame and releases
    it at its end: ~1,100 instructions a call for track()'s 55 of round 11), and an
    attribute read ~10 more than a closure variable's: a value read at most once a call,
    and on few calls, is cheaper here.  A known UDP datagram reads none of these, a known
    ACK none but a filing's."""
    other: FastTrack
    twin: FastTrack
    fragment: Optional[Callable[[float, bytes], Verdict]]
    expire: Callable[[float], int]
    file_timer: Callable[[Any, float], None]
    tables: Dict[Tuple[int, int], Keyed]
    tcp_id: Tuple[int, int]
    udp_id: Tuple[int, int]
    new_tcp: Callable[..., Optional[Verdict]]
    new_udp: Callable[..., Optional[Verdict]]
    known_segment: Callable[..., Optional[Verdict]]
    tcp_options_at: int
    l4_at: int
    src_at: int
    header8_min: int
    icmp_proto: int
    icmp_queries: FrozenSet[int]
    icmp_error: Callable[[bytes, int, int], Optional[Verdict]]
    icmp_id: Tuple[int, int]
    icmp_table: Optional[Keyed]
    icmp_id_at: int
    icmp_id_end: int
    icmp_type_code_end: int
    icmp_timeout: str
    new_icmp: Callable[..., Optional[Verdict]]
    gre_proto: int
    gre_id: Tuple[int, int]
    gre_version_at: int
    new_gre: Callable[..., Optional[Verdict]]
    known_sctp: Callable[[float, bytes, bytes, int], Optional[Verdict]]
    invalid: Callable[[], Optional[Verdict]]
    family: int
    generic_protos: FrozenSet[int]
    new_generic: Callable[..., Optional[Verdict]]


def _make_invalid(stats: Dict[str, int]) -> Callable[[], Verdict]:
    """invalid(): Tracker._invalid() for a datagram conntrack refuses before any entry is
    made or touched (an l4_error of the parser, the protocol's error() or new() saying no):
    the `invalid` stat counts it, the verdict is INVALID."""
    def invalid() -> Verdict:
        stats["invalid"] += 1
        return INVALID_VERDICT

    return invalid


def _no_invalid() -> None:
    """RareCases.invalid where these refusals are not taken (IPv6): the general path's."""
    return None


# The verdict of an ICMPv6 message conntrack leaves untracked: equal to fastpath_frag's
# HELD, but another object, so that a replay records it (it finds HELD by identity).
UNTRACKED_VERDICT = Verdict(CtState.UNTRACKED, False)
assert UNTRACKED_VERDICT is not HELD


def _icmpv6_untracked(frame: bytes, tot_len: int, l4_at: int) -> Optional[Verdict]:
    """ICMPv6's messages other than its queries and replies, where the errors' case is not
    taken: neighbour discovery and MLD (icmpv6.NOT_TRACKED_TYPES) are UNTRACKED, no entry
    and no stat, as Tracker.process() answers them (Icmpv6Tracker.untracked(): its
    error() verifies no checksum outside PREROUTING, and they quote no flow); the errors
    that quote one take the general path."""
    return UNTRACKED_VERDICT if frame[l4_at] in ICMPV6_NOT_TRACKED else None


def _none(now: float, linktype: int, frame: bytes) -> None:
    """The end of the chain of link types: a frame of none of them takes the general path."""
    return None


def make_fast_path(engine: "Engine", first: int = LINKTYPE_ETHERNET) -> FastTrack:
    """The fast path's track(now, linktype, frame) for this engine (see the module text):
    one track per link type of LINKS and IP version, the IPv4 one handing an IPv6 frame to
    its twin, each handing a frame of another link type to the next; `first` is tried
    first (the link type most frames have: it saves a call)."""
    # IPv4 fragments go to the defragmenter at the hook their frame gives them (the whole
    # datagram then to an Ethernet track of its own): taken where that is LOCAL_OUT.
    ethernet = LINKS[LINKTYPE_ETHERNET]
    fragment = make_fragment(engine, LOCAL_OUT, _make_link_track(
        engine, ethernet, IPV4_FRAME, _none, _none, None))
    track: FastTrack = _none
    for linktype in sorted(LINKS, key=lambda linktype: linktype == first):
        link = LINKS[linktype]
        hook = LOCAL_OUT if link.pkttype_at is not None else engine.default_hook
        twin = _make_link_track(engine, link, IPV6_FRAME, track, _none, None)
        track = _make_link_track(engine, link, IPV4_FRAME, track, twin,
                                 fragment if hook == LOCAL_OUT else None)
    return track


def _make_link_track(engine: "Engine", link: LinkFrame, version: L3Frame, other: FastTrack,
                     twin: FastTrack,
                     fragment: Optional[Callable[[float, bytes], Verdict]]) -> FastTrack:
    """The fast path for frames of one link type and IP version; `other` takes frames of
    other link types, `twin` of the other IP version, `fragment` IPv4 fragments (None:
    declined)."""
    # Frame offsets: the link header, then the IP header without options.
    own_linktype = link.linktype
    pkttype_at = link.pkttype_at
    protocol_at = link.protocol_at
    ip_at = link.ip_at
    l3 = version.l3
    is_ipv6 = l3 is ipv6
    # The IP version's fields read per packet, as locals.
    ethertype, ip_len, gre_proto = version.ethertype, version.header_len, version.gre
    icmp_proto, icmp_queries = version.icmp, version.icmp_queries
    icmp_timeout = version.icmp_timeout
    header8_min = ip_len + 8                        # the shortest ICMP datagram taken
    src_at = key_at = ip_at + l3.ADDRESSES_AT       # the table key, in place: addresses,
    dst_at = src_at + (l3.KEY_LEN - 4) // 2         # (two of them, then two ports)
    l4_at = ip_at + ip_len                          # then the ports
    dport_at = l4_at + 2
    key_end = key_at + l3.KEY_LEN
    tcp_seq_at = udp_len_at = icmp_id_at = l4_at + 4
    icmp_id_end = icmp_id_at + 2
    icmp_code_at = gre_version_at = l4_at + 1
    icmp_type_code_end = l4_at + 2
    tcp_options_at = l4_at + 20
    timestamp_only_end = tcp_options_at + len(TIMESTAMP_ONLY)
    # Slices read on every packet, made once (frame[a:b] builds a slice object per call).
    key_span = slice(key_at, key_end)
    timestamp_only_span = slice(tcp_options_at, timestamp_only_end)

    tracker = engine.tracker
    conns = tracker.conns
    tables = conns.tables()             # others: only once their first packet made them
    # IPv4's common tables exist from the start (ConnTable: the listing's order); IPv6's
    # are made by their first packet, on the general path: looked up per packet (None).
    # (`table = tcp_table or tables.get(tcp_id)`: an empty IPv4 table is looked up again,
    # finding itself -- one test fewer on every packet than `is not None else`.)
    tcp_id, udp_id, gre_id = ((l3.FAMILY, proto) for proto in (IPPROTO_TCP, IPPROTO_UDP,
                                                               IPPROTO_GRE))
    tcp_table = tables.get(tcp_id) if not is_ipv6 else None
    udp_table = tables.get(udp_id) if not is_ipv6 else None
    icmp_id = (l3.FAMILY, icmp_proto)
    icmp_table = tables.get(icmp_id) if not is_ipv6 else None
    timers = tracker.timers
    expects = tracker.expects
    stats = tracker.stats
    kv = tracker._kv
    arrivals = engine.forwarded.arrivals
    file_timer = timers.file
    expire = tracker.expire
    unpack_ip = version.head(link).unpack_from

    unpack_tcp = _TCP_AFTER_PORTS.unpack_from
    unpack_udp_len = _UDP_LENGTH.unpack_from
    unpack_fields = THROUGH_LAST.unpack_from
    pack_fields = THROUGH_LAST.pack_into
    established_timeout = STATE_TIMEOUT_KNOB[ESTABLISHED]
    original_acks, reply_acks = _acks_to_established()
    opens = _syn_opens()
    syn_sent_timeout = STATE_TIMEOUT_KNOB[SYN_SENT]
    valid_flags = VALID_FLAGS["linux"]
    # The protocols of the generic tracker, over IPv4 (IPv6's take the general path):
    # those without a tracker of their own (Tracker.tracker_of()) -- a set difference, not
    # 256 calls per track made (~1 M instructions once, 50 a packet of a 20,000-frame count).
    proto_at = ip_at + 9
    generic_protos = frozenset() if is_ipv6 else frozenset(range(256)).difference(tracker.l4)
    # IPv4's refusals are answered here; IPv6's by the general path (see the module text).
    invalid = _no_invalid if is_ipv6 else _make_invalid(stats)
    known_segment = make_known_segment(tracker, ip_len,   # other segments of a known entry
                                       invalid)
    known_sctp = make_known_sctp(tracker, l3, ip_at, ip_len)
    icmp_error = make_icmp_error(tracker) if version.icmp_errors else _icmpv6_untracked
    # Entry(key, reply, now, proto, l3) without a Python call: object.__new__ of its
    # kind (entry.kind_of()), then Entry.__init__'s slots set in admit().
    new_object = object.__new__
    tcp_kind, udp_kind, icmp_kind, gre_kind = (
        kind_of(Entry, l3, proto) for proto in (IPPROTO_TCP, IPPROTO_UDP, icmp_proto,
                                                IPPROTO_GRE))
    # A new entry's reply key, read from the frame: the addresses swapped, then the ports
    # (TCP, UDP: swapped() and the l3's mirror_key()) or the ICMP id (its type and code
    # follow): the parts in one C call, joined in another.
    join = b"".join
    reply_parts = itemgetter(slice(dst_at, l4_at), slice(src_at, dst_at),
                             slice(dport_at, key_end), slice(l4_at, dport_at))
    icmp_reply_parts = itemgetter(slice(dst_at, l4_at), slice(src_at, dst_at),
                                  slice(icmp_id_at, icmp_id_end))
    icmp_requests, icmp_inverse, icmp_l4 = (version.icmp_requests, version.icmp_inverse,
                                            version.icmp_l4)

    def admit(kind: type, key: bytes, reply: bytes, l4: Any, now: float, tot_len: int,
              timeout: float, table: Keyed) -> Optional[Verdict]:
        """The new entry of an original-direction packet, or None when the general path
        must decide: an expectation could claim the tuple, or the table is full
        (Tracker._new_entry(), early drop).  Else Entry(key, reply, now, ...) of `kind`
        with the protocol's state `l4`, Tracker.process()'s bookkeeping for it, then
        Tracker.confirm() putting it in the table (`table`, its protocol's dict) with its
        timer."""
        limit = kv["max"]
        if expects.next_due != INFINITY or (limit and conns.count >= limit):
            return None
        # Entry.__init__'s slots (ENTRY_SLOTS), without its call: `expires` is set below,
        # `hnext` by the insertion and `timer_slot` by the filing, before anything reads
        # them.
        entry = new_object(kind)
        entry.orig = key
        entry.reply = reply
        entry.status = 0
        entry.l4 = l4
        entry.ext = None
        if kv["acct"]:
            entry.counters = [1, 0, tot_len, 0]
        if kv["timestamp"]:
            entry.created = now
        stats["new"] += 1
        expires = entry.expires = now + timeout
        conns.insert(entry, table)
        file_timer(entry, expires)      # a new entry has no filing yet
        return NEW_ORIGINAL

    def new_udp(now: float, frame: bytes, key: bytes, tot_len: int,
                table: Keyed) -> Optional[Verdict]:
        """The first datagram of a UDP flow (UdpTracker.new(): entry.l4 keeps the first
        packet's time)."""
        return admit(udp_kind, key, join(reply_parts(frame)), now, now, tot_len,
                     kv["udp_timeout"], table)

    def new_icmp(now: float, frame: bytes, key: bytes, tot_len: int,
                 table: Keyed) -> Optional[Verdict]:
        """An ICMP request without an entry (IcmpTracker.new(); other types make none)."""
        icmp_type = frame[l4_at]
        if icmp_type not in icmp_requests:
            return None
        # IcmpTracker.invert(): the reply type, the same code and id.
        reply = join(icmp_reply_parts(frame)) + bytes((icmp_inverse[icmp_type],
                                                       frame[icmp_code_at]))
        return admit(icmp_kind, key, reply, now if icmp_l4 is None else icmp_l4, now,
                     tot_len, kv[icmp_timeout], table)

    def new_gre(now: float, frame: bytes, key: bytes, tot_len: int,
                table: Keyed) -> Optional[Verdict]:
        """The first packet of a plain GRE flow (GreTracker.new(): its two timeouts)."""
        timeouts = (kv["gre_timeout"], kv["gre_timeout_stream"])
        return admit(gre_kind, key, addresses_swapped(frame), timeouts, now, tot_len,
                     timeouts[0], table)

    def new_generic(now: float, frame: bytes, key: bytes, tot_len: int,
                    table: Keyed) -> Optional[Verdict]:
        """The first packet of a flow the generic tracker takes (GenericTracker.new()
        sets nothing: entry.l4 keeps the creation time), its entry of the protocol's kind."""
        return admit(kind_of(Entry, l3, frame[proto_at]), key, addresses_swapped(frame), now,
                     now, tot_len, kv["generic_timeout"], table)

    def addresses_swapped(frame: bytes) -> bytes:
        """The reply key of a tuple without ports (GRE's keys 0, the generic tracker's):
        the addresses swapped (l4.swapped() of zeros is zeros)."""
        return frame[dst_at:l4_at] + frame[src_at:dst_at] + NO_KEYS

    def new_tcp(now: float, frame: bytes, key: bytes, tot_len: int, flags: int, seq: int,
                ack: int, win: int, doff: int, table: Keyed) -> Optional[Verdict]:
        """A connection's first SYN (TcpTracker.new(), then _linux_packet())."""
        if flags not in SYN_FLAGS or not opens:
            # TcpTracker.error() refuses the flags byte before any lookup: INVALID.
            return None if valid_flags[flags] else invalid()
        # init_from_syn() on the original side, written out: the side starts at the
        # SYN's end (seq + payload + 1, modulo 2**32 without a mask), its window or 1.
        end = seq + tot_len - ip_len - doff + 1
        if end > M32:
            end -= TWO32
        maxwin = win or 1
        # Its scale and flags: what read_options() makes of the options on a new side
        # (whose flags are 0: nothing to keep).  No options, or the MSS alone: 0 and 0.
        # Linux's full SYN layout: the window scale (at most MAX_WSCALE), SACK-permitted
        # -- parse_tcp_options()' walk finds the same in those bytes.  Any other options
        # get the walk and read_options() (`options`, after the state is written).
        options = None
        scale = side_flags = 0
        if doff > 20:
            layout = linux_syn_options(frame, tcp_options_at, doff - 20)
            if layout is None:
                options = tcp_info_with_options(frame, flags, seq, ack, win,
                                                tot_len - ip_len - doff, tcp_options_at,
                                                l4_at + doff)
            elif layout[1]:             # the full layout: a window scale, SACK-permitted
                scale = layout[0]
                if scale > MAX_WSCALE:
                    scale = MAX_WSCALE
                side_flags = SACK_PERM | WINDOW_SCALE
        # NONE -SYN-> SYN_SENT has no special cell, and linux_in_window() passes a SYN on
        # the side it has just started: of its updates only the receiver's maxend changes,
        # to the SYN's (unscaled) window from ack 0, as "right" (1 for a window of 0).
        # LAST_DIR stays ORIGINAL (0), every other field 0.
        conn = bytearray(CONN_BYTES)
        pack_syn_conn(conn, 0, end, end, maxwin, scale, side_flags, maxwin, SYN_SENT, C_SYN)
        if options is not None:
            read_options(conn, 0, options, BE_LIBERAL)
        # The timeout rules: no retransmission counted, no data unacknowledged, and the
        # last window is still 0, so rule (d) (also what (a) could give) or (e).
        timeout = kv[syn_sent_timeout]
        if timeout > kv["tcp_timeout_max_retrans"]:
            timeout = kv["tcp_timeout_max_retrans"]
        return admit(tcp_kind, key, join(reply_parts(frame)), conn, now, tot_len, timeout,
                     table)

    rare = RareCases(other, twin, fragment, expire, file_timer, tables, tcp_id, udp_id, new_tcp,
                     new_udp, known_segment, tcp_options_at, l4_at, src_at, header8_min,
                     icmp_proto, icmp_queries, icmp_error, icmp_id, icmp_table, icmp_id_at,
                     icmp_id_end, icmp_type_code_end, icmp_timeout, new_icmp, gre_proto, gre_id,
                     gre_version_at, new_gre, known_sctp, invalid, l3.FAMILY,
                     generic_protos, new_generic)

    def track(now: float, linktype: int, frame: bytes) -> Optional[Verdict]:
        if linktype != own_linktype:
            return rare.other(now, linktype, frame)
        size = len(frame) - ip_at
        if (size < 28 or arrivals
                or (pkttype_at is not None and frame[pkttype_at] != PACKET_OUTGOING)):
            return None
        if is_ipv6:
            protocol, first, payload_len, proto = unpack_ip(frame, protocol_at)
            tot_len = ip_len + payload_len  # (a Packet's length: the whole datagram)
            # A datagram cut short, an extension header or another upper layer: the
            # general path (defragmentation, ipv6_skip_exthdr()).  (A jumbogram's payload
            # length 0 is shorter than the TCP and UDP cases take.)
            if (protocol != ethertype or first >> 4 != IPV6_VERSION or tot_len > size
                    or proto not in IPV6_UPPER_TAKEN):
                return None
        else:
            protocol, vihl, tot_len, frag, proto = unpack_ip(frame, protocol_at)
            if protocol != ethertype:
                return rare.twin(now, linktype, frame)
            if vihl != IPV4_NO_OPTIONS or tot_len > size or tot_len < ip_len:
                return None                 # (a total length short of the header: malformed)
            if frag & FRAGMENT:
                # Straight to the defragmenter.
                if rare.fragment is None:
                    return None
                return rare.fragment(now, frame[ip_at:])
        if now >= timers.next_due:             # (the expectations' next_due included)
            # Tracker.process() expires entries first, and every datagram from here on
            # reaches it (extract_ipv4() or parse_ipv4() reads it: its total length covers
            # the header): do it here, so that the packet can still be taken.
            rare.expire(now)
        key = frame[key_span]
        if proto == IPPROTO_TCP:
            # A datagram short of the TCP header has no data offset that fits in it (the
            # header's 20 bytes do not): the check below refuses it, without a test of its
            # own, once the header has been read -- from the frame's padding, or from
            # beyond a frame that ends with the datagram: struct.error.
            try:
                seq, ack, doff, flags, win = unpack_tcp(frame, tcp_seq_at)
            except struct_error:
                return None
            doff = TCP_HEADER_LEN[doff]
            if doff > tot_len - ip_len:
                return rare.invalid()           # a bad data offset: the parser's l4_error
            table = tcp_table or rare.tables.get(rare.tcp_id)
            if table is None:
                return None                     # its first packet makes the table
            entry = table.get(key)
            if entry is None:
                return rare.new_tcp(now, frame, key, tot_len, flags, seq, ack, win, doff,
                                    table)
            if entry.helper is not None:
                return None
            # linux_in_window() for a non-SYN, non-RST segment with ACK and no SACK block:
            # sack == ack, no side to initialise.  Its check and update are written out
            # here again, specialised, on purpose: a shared function would be one more
            # call with ~20 arguments on a third of all packets, the cost this path cuts.
            # Every segment it does not take -- other flags or options, no reply seen yet,
            # a state an ACK does not move to ESTABLISHED without a special cell, the
            # sender's side starting with this packet, a window check failing (IGNORE,
            # INVALID or a liberal accept) -- goes to known_segment() below, in one place.
            status = entry.status
            taken = False
            if (flags in ACK_FLAGS and status & SEEN_REPLY
                    and (doff == 20 or (doff == TIMESTAMPS_DOFF
                                        and frame[timestamp_only_span] == TIMESTAMP_ONLY))):
                conn = entry.l4
                if key == entry.reply:
                    d = REPLY
                    acks = reply_acks
                    verdict = ESTABLISHED_REPLY
                    (receiver_end, receiver_maxend, receiver_maxwin, receiver_maxack,
                     receiver_scale, receiver_flags, receiver_loose, sender_end,
                     sender_maxend, sender_maxwin, sender_maxack, sender_scale, sender_flags,
                     sender_loose, old, _, last_dir, last_seq, last_ack, last_end,
                     last_win) = unpack_fields(conn)
                else:
                    d = 0
                    acks = original_acks
                    verdict = ESTABLISHED_ORIGINAL
                    (sender_end, sender_maxend, sender_maxwin, sender_maxack, sender_scale,
                     sender_flags, sender_loose, receiver_end, receiver_maxend,
                     receiver_maxwin, receiver_maxack, receiver_scale, receiver_flags,
                     receiver_loose, old, _, last_dir, last_seq, last_ack, last_end,
                     last_win) = unpack_fields(conn)
                # seq + payload, modulo 2**32: the payload's length first, in small ints,
                # and a bare ACK's end is its seq (a value of 2**30 or more is a Python int
                # of two digits: each operation on it allocates, masking more than
                # comparing).
                end = seq
                payload = tot_len - ip_len - doff
                if payload:
                    end = seq + payload
                    if end > M32:
                        end -= TWO32
                maxackwin = (sender_maxwin if sender_maxwin > MAXACKWINCONST
                             else MAXACKWINCONST)
                # The window checks on differences of sequence numbers, without `& M32`:
                # (x & M32) >= HALF is bit 31 of x, for any int x, and `x >> 31 & 1` reads
                # it in small ints (x is a one-digit int for all but the farthest segments:
                # shifting it and the AND take CPython's short paths, no allocation).  The
                # four checks pass together exactly when bit 31 is set in all four
                # differences: in their AND (II is skipped while the receiver's maxwin is
                # 0: -1 stands in for its difference).
                #   I:   before(seq, sender maxend + 1)      beyond = seq - maxend - 1
                #   II:  after(end, sender end - receiver maxwin)
                #        (sender end - maxwin - 1 - end)  = end_gap - maxwin - 1
                #   III: before(ack, receiver end + 1)       unsent = ack - end - 1
                #   IV:  after(ack, receiver end - MAXACKWINDOW(sender))
                #        (receiver end - maxackwin - 1 - ack) = -2 - unsent - maxackwin
                # (The updates' after(a, b) below: bit 31 of b - a.)
                unsent = ack - receiver_end - 1
                end_gap = sender_end - end
                taken = (old in acks
                         and sender_maxwin          # (0: its side starts with this packet)
                         and ((seq - sender_maxend - 1) & unsent & (-2 - unsent - maxackwin)
                              & (end_gap - receiver_maxwin - 1 if receiver_maxwin else -1))
                         >> 31 & 1)
            if not taken:
                return rare.known_segment(now, frame, entry, key, tot_len, flags, seq, ack,
                                          win, doff, rare.tcp_options_at)
            scaled = win << sender_scale
            if sender_maxwin < scaled:          # swin = win + sack - ack, sack == ack
                sender_maxwin = scaled
            if end_gap >> 31 & 1:                                   # after(end, sender end)
                sender_end = end
                sender_flags |= DATA_UNACKNOWLEDGED
            if not sender_flags & MAXACK_SET:
                sender_maxack = ack
                sender_flags |= MAXACK_SET
            elif (sender_maxack - ack) >> 31 & 1:                   # after(ack, maxack)
                sender_maxack = ack
            if receiver_maxwin and (sender_maxend - end) >> 31 & 1:     # after(end, maxend)
                receiver_maxwin = (receiver_maxwin - sender_maxend + end) & M32
            right = ack + scaled
            if right > M32:
                right -= TWO32
            if (receiver_maxend - 1 - right) >> 31 & 1:             # after(right, maxend - 1)
                receiver_maxend = right if scaled else (right + 1) & M32
            if ack == receiver_end:
                receiver_flags &= ACKNOWLEDGED
            # (seq first: the field that differs most often from the last packet's.)
            if (last_seq == seq and last_dir == d and last_ack == ack and last_end == end
                    and last_win == win):
                retrans = conn[RETRANS] = (conn[RETRANS] + 1) & 0xFF
            else:
                retrans = conn[RETRANS] = 0
            # Both sides, the state, the last packet's class and the last packet itself
            # (the same values again when it was a retransmission) in one call.
            if d:
                pack_fields(conn, 0, receiver_end, receiver_maxend, receiver_maxwin,
                            receiver_maxack, receiver_scale, receiver_flags, receiver_loose,
                            sender_end, sender_maxend, sender_maxwin, sender_maxack,
                            sender_scale, sender_flags, sender_loose, ESTABLISHED, C_ACK,
                            d, seq, ack, end, win)
            else:
                pack_fields(conn, 0, sender_end, sender_maxend, sender_maxwin,
                            sender_maxack, sender_scale, sender_flags, sender_loose,
                            receiver_end, receiver_maxend, receiver_maxwin, receiver_maxack,
                            receiver_scale, receiver_flags, receiver_loose, ESTABLISHED,
                            C_ACK, d, seq, ack, end, win)
            # TcpTracker._linux_packet()'s timeout rules (a), (c), (d), (e); (b) is RST's.
            timeout = kv[established_timeout]
            if (retrans >= kv["tcp_max_retrans"]
                    and timeout > kv["tcp_timeout_max_retrans"]):
                timeout = kv["tcp_timeout_max_retrans"]
            elif ((sender_flags | receiver_flags) & DATA_UNACKNOWLEDGED
                  and timeout > kv["tcp_timeout_unacknowledged"]):
                timeout = kv["tcp_timeout_unacknowledged"]
            elif win == 0 and timeout > kv["tcp_timeout_max_retrans"]:   # the last window
                timeout = kv["tcp_timeout_max_retrans"]
            if not status & ASSURED:            # from SYN_RECV or ESTABLISHED, seen a reply
                entry.status = status | ASSURED
        else:
            # The entry of the tuple, or a new one (the protocol's new_*() takes it or not).
            if proto == IPPROTO_UDP:
                # A datagram short of the UDP header has no length that fits in it, read
                # as the TCP case reads its header (struct.error: the frame ends first).
                try:
                    udp_len = unpack_udp_len(frame, udp_len_at)[0]
                except struct_error:
                    return None
                if udp_len < 8 or udp_len > tot_len - ip_len:
                    return rare.invalid()       # the parser's l4_error ("udp length")
                table = udp_table or rare.tables.get(rare.udp_id)
                if table is None:
                    return None                 # its first packet makes the table
                make = rare.new_udp
            elif proto == rare.icmp_proto:
                if tot_len < rare.header8_min:
                    return None
                if frame[rare.l4_at] not in rare.icmp_queries:
                    # An error message quotes another flow: Tracker._related()'s answer
                    # (ICMPv6's: the general path; the messages it leaves untracked).
                    return rare.icmp_error(frame, tot_len, rare.l4_at)
                # The key's parts: the id, then type << 8 | code (parse.icmp_header()).
                key = (frame[rare.src_at:rare.l4_at]
                       + frame[rare.icmp_id_at:rare.icmp_id_end]
                       + frame[rare.l4_at:rare.icmp_type_code_end])
                table = rare.icmp_table or rare.tables.get(rare.icmp_id)
                if table is None:
                    return None                 # its first packet makes the table
                make = rare.new_icmp
            elif proto == rare.gre_proto:
                # Plain GRE has keys 0; PPTP's (version 1) the general path reads.
                if tot_len >= 28 and frame[rare.gre_version_at] & 0x07 == GRE_VERSION_1:
                    return None
                table = rare.tables.get(rare.gre_id)
                if table is None:
                    return None                 # its first packet makes the table
                key = frame[rare.src_at:rare.l4_at] + NO_KEYS
                make = rare.new_gre
            elif proto == IPPROTO_SCTP:
                return rare.known_sctp(now, frame, key, tot_len)     # a known association's
            elif proto in rare.generic_protos:
                # A protocol of the generic tracker (engine/generic.py): its tuple is the
                # addresses alone (ports 0, as parse_ipv4() reads no header of it).
                table = rare.tables.get((rare.family, proto))
                if table is None:
                    return None                 # its first packet makes the table
                key = frame[rare.src_at:rare.l4_at] + NO_KEYS
                make = rare.new_generic
            else:
                return None
            entry = table.get(key)
            if entry is None:
                return make(now, frame, key, tot_len, table)
            if entry.helper is not None:
                return None
            status = entry.status
            # The protocol's packet() (modern): the timeout.
            if proto == IPPROTO_UDP:
                if not status & SEEN_REPLY or now <= entry.l4 + STREAM_AFTER:
                    timeout = kv["udp_timeout"]
                else:
                    status |= ASSURED
                    timeout = kv["udp_timeout_stream"]
            elif proto == rare.icmp_proto:
                timeout = kv[rare.icmp_timeout]
            elif proto != rare.gre_proto:       # the generic tracker's: never ASSURED
                timeout = kv["generic_timeout"]
            elif status & SEEN_REPLY:           # GRE: the timeouts fixed at creation
                status |= ASSURED
                timeout = entry.l4[1]
            else:
                timeout = entry.l4[0]
            # Tracker.process(): the direction and state of a hit, SEEN_REPLY from a reply.
            if key == entry.reply:
                d = REPLY
                status |= SEEN_REPLY
                verdict = ESTABLISHED_REPLY
            else:
                d = 0
                verdict = ORIGINAL_VERDICTS[status]
            entry.status = status
        stats["found"] += 1
        ext = entry.ext                 # (entry.counters without the property's call)
        if ext is not None and ext.counters is not None:
            counters = ext.counters
            counters[d] += 1
            counters[2 + d] += tot_len
        expires = entry.expires = now + timeout
        slot = entry.timer_slot
        if slot is None or expires < slot:
            rare.file_timer(entry, expires)
        return verdict

    return track
