"""The iptables chains in front of the state machine: a Ruleset at the engine's hooks.

`Chains(engine, ruleset)` registers itself at every hook of `engine` (engine/core.py):

* at PREROUTING and OUTPUT the raw table runs *before* conntrack (priority -300 < -200):
  the packet has no entry yet -- unless it brings one (a loopback packet's from OUTPUT, a
  REJECT reply's) -- and NOTRACK there makes conntrack leave it UNTRACKED, without entry;
* after conntrack, mangle and filter see the state it gave (`--state`, `--ctstate`,
  INVALID included), then INPUT / FORWARD / POSTROUTING run all their tables;
* a DROP anywhere stops the packet; an entry made for it and not yet confirmed is thrown
  away (no insert); the packet's mark travels from hook to hook, CONNMARK's mark is kept
  on the entry;
* a REJECT reply is sent as the kernel sends it: a locally generated packet (OUTPUT,
  POSTROUTING) attached to its cause's entry, RELATED, in the other direction than the
  cause (nf_ct_attach); a cause without an entry leaves the reply to be tracked as any.

Frames come in through `feed_frame`: a cooked capture says where each was captured
(engine/interfaces.py), a pcapng file by its interfaces' names; an arriving packet's interface is its `-i`, a sent one's its
`-o`; a packet sent to this host itself (captured on lo, or sent to 127/8 or a local
address) walks both ways, out and back in through lo.  The kernel's own REJECT replies are
in a capture too, after the engine already sent its own: the captured copy is skipped.

ip6tables is not emulated: an IPv6 packet is tracked exactly as without chains (same hooks,
same confirmation) and the IPv4 tables never see it -- as if every ip6tables chain were
empty with an ACCEPT policy.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, List, Optional, Set, Tuple

from . import ipv4
from .core import NF_ACCEPT, NF_DROP, NF_NOTRACK, Engine
from .ctstate import CtState, PacketResult
from .hooks import FORWARD, LOCAL_IN, LOCAL_OUT, POST_ROUTING, PRE_ROUTING, TRACKING_HOOKS, Hook
from .interfaces import LOOPBACK_NAME, FrameInterface, frame_interface, interface_name
from .linklayer import ETH_P_IP, ip_version, strip_ip
from .macheader import MacHeaders, loopback_header
from .packet import IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Packet
from .parse import ParseError, parse_ipv4
from .rules import CONNTRACK_PRIORITY, RulePacket, Ruleset
from .rules.packet import ORIGINAL, REPLY
from .rules.tables import DROP, tables_at

# The engine's hooks by the names iptables gives their chains.
CHAIN_OF_HOOK: Dict[Hook, str] = {PRE_ROUTING: "PREROUTING", LOCAL_IN: "INPUT",
                                  FORWARD: "FORWARD", LOCAL_OUT: "OUTPUT",
                                  POST_ROUTING: "POSTROUTING"}
# Where a packet's input interface is known (-i) and where its output one is (-o).
HOOKS_WITH_IN = frozenset((PRE_ROUTING, LOCAL_IN, FORWARD))
HOOKS_WITH_OUT = frozenset((FORWARD, LOCAL_OUT, POST_ROUTING))

LOOPBACK_NET, LOOPBACK_MASK = 0x7F000000, 0xFF000000
# REJECT replies sent and not yet seen in the capture; a reply a hook dropped never shows.
REPLIES_REMEMBERED = 64
LOOPBACK_MAC = loopback_header(ETH_P_IP)     # what a packet looped back through lo carries
LOG_LINES_KEPT = 1000


def _without_ip_id(datagram: bytes) -> bytes:
    """A datagram less its IP ID and header checksum: an ICMP error's ID is drawn by the
    kernel's generator, so the engine's reply and the captured one differ only there."""
    return datagram[:4] + b"\0\0" + datagram[6:10] + b"\0\0" + datagram[12:]


def rule_view(pkt: Packet, datagram: bytes) -> RulePacket:
    """The packet as the matches read it: header fields, ports, flags, ICMP type."""
    view = RulePacket(src=pkt.src, dst=pkt.dst, proto=pkt.proto, length=pkt.ip_len,
                      raw=datagram[:pkt.ip_len])
    if pkt.proto in (IPPROTO_TCP, IPPROTO_UDP):
        view.sport, view.dport = pkt.sport, pkt.dport
        if pkt.tcp is not None:
            view.tcp_flags = pkt.tcp.flags
    elif pkt.proto == IPPROTO_ICMP and pkt.icmp is not None:
        view.icmp_type, view.icmp_code = pkt.icmp.type, pkt.icmp.code
    return view


def set_conntrack_fields(view: RulePacket, result: Optional[PacketResult],
                         tuples_known: bool = False) -> None:
    """What -m state/conntrack/connmark see: the state conntrack gave and its entry;
    INVALID and no entry before conntrack has looked (raw).  `tuples_known`: the view
    already holds this entry's tuples (they never change; its status and mark may)."""
    entry = None if result is None else result.entry
    view.ctstate = CtState.INVALID.name if result is None else result.state.name
    if entry is None or result.state in (CtState.INVALID, CtState.UNTRACKED):
        view.ctproto = view.ct_orig = view.ct_reply = None
        view.ctdir, view.ctstatus, view.ctmark = ORIGINAL, 0, 0
        return
    if not tuples_known:
        src, dst, proto, a, b = entry.tuple(0)
        rsrc, rdst, _, ra, rb = entry.tuple(1)
        view.ctproto, view.ct_orig, view.ct_reply = proto, (src, dst, a, b), (rsrc, rdst, ra, rb)
    view.ctdir = REPLY if result.reply else ORIGINAL
    view.ctstatus = entry.status
    view.ctmark = entry.mark


@dataclass
class _InFlight:
    """One packet on its way through the hooks (REJECT replies nest inside their cause)."""
    datagram: bytes
    in_iface: str
    out_iface: str
    mac: bytes = b""                # its MAC header at the input hooks (LOG's MAC=)
    view: Optional[RulePacket] = None
    entry: object = None            # the entry whose tuples the view holds


@dataclass
class ChainsStats:
    # The latest LOG lines, (syslog level, line): a ring, so a LOG rule cannot fill memory.
    logs: Deque[Tuple[int, str]] = field(default_factory=lambda: deque(maxlen=LOG_LINES_KEPT))
    log_lines: int = 0                                          # LOG lines made in all
    replies_sent: int = 0                                       # REJECT replies generated
    captured_replies_skipped: int = 0                           # their copies in the capture


class Chains:
    """A Ruleset evaluated at an Engine's hooks; Engine.feed_frame hands frames to
    `feed_frame` once it is attached."""

    def __init__(self, engine: Engine, ruleset: Ruleset,
                 iface_names: Optional[Dict[int, str]] = None,
                 log_sink: Optional[Callable[[int, str], None]] = None) -> None:
        self.engine = engine
        self.ruleset = ruleset
        self._busy: Dict[Tuple[Hook, bool], bool] = {}
        self.ruleset_changed()
        self.iface_names = dict(iface_names or {})
        self._unnamed: Set[int] = set()     # indexes the interface lookup did not name
        self.stats = ChainsStats()
        self.log_sink = log_sink        # called with (syslog level, line) for each LOG line
        self._in_flight: List[_InFlight] = []
        engine.chains = self              # Engine.feed_frame now comes here
        self._replies: Deque[bytes] = deque(maxlen=REPLIES_REMEMBERED)
        self._mac_headers = MacHeaders()
        for hook in TRACKING_HOOKS:
            engine.listen_before_conntrack(hook, self._before_conntrack)
        for hook in CHAIN_OF_HOOK:
            engine.listen(hook, self._at_hook)

    # -- packets in ------------------------------------------------------------------------
    def feed_frame(self, ts: float, linktype: int, frame: bytes,
                   captured_on: Optional[str] = None) -> Optional[PacketResult]:
        """One captured frame through the hooks; None if conntrack never sees it (as
        Engine.feed_frame) or it is the capture's copy of a REJECT reply already sent.
        `captured_on`: the interface the capture file says the frame was captured on (a
        pcapng if_name); a name given for a cooked frame's index (`--iface`) goes first."""
        engine = self.engine
        datagram, hook = strip_ip(linktype, frame)
        # Every frame, ARP's too: a device's outgoing ones tell its own address.
        mac = self._mac_headers.incoming(linktype, frame, datagram or b"")
        if datagram is None:
            engine.frames_not_ipv4 += 1
            return None
        hook = engine.default_hook if hook is None else hook
        if ip_version(datagram) == 6:
            # No ip6tables: the hooks below pass it by, conntrack tracks it as ever.
            return engine.feed_datagram(ts, datagram, hook)
        if self._replies and _without_ip_id(datagram[:_ip_len(datagram)]) in self._replies:
            self._replies.remove(_without_ip_id(datagram[:_ip_len(datagram)]))
            self.stats.captured_replies_skipped += 1
            return None
        iface = frame_interface(linktype, frame)
        name = self._interface_name(iface, captured_on)
        looped = iface.loopback or name == LOOPBACK_NAME or (
            hook == LOCAL_OUT and len(datagram) >= 20 and self.is_local(_dst_of(datagram)))
        if looped:
            flight = _InFlight(datagram, LOOPBACK_NAME, LOOPBACK_NAME, LOOPBACK_MAC)
        elif hook == LOCAL_OUT:
            flight = _InFlight(datagram, "", name)
        else:
            flight = _InFlight(datagram, name, "", mac)
        self._in_flight.append(flight)
        try:
            return engine.feed_datagram(ts, datagram, hook, looped_back=looped)
        finally:
            self._in_flight.pop()

    def _interface_name(self, iface: FrameInterface, captured_on: Optional[str]) -> str:
        """The name `-i`/`-o` match for a frame's interface: `--iface`'s for its index, else
        the capture file's (`captured_on`), else the engine's interface lookup (a live
        mount: asked again for each index it has not named yet -- interfaces come and go --
        but once only for an index it does not know either)."""
        index = iface.index
        if index not in self.iface_names:
            if captured_on is not None:
                return captured_on
            lookup = self.engine.interface_lookup
            if index is not None and lookup is not None and index not in self._unnamed:
                for known, name in lookup().items():
                    self.iface_names.setdefault(known, name)
                if index not in self.iface_names:
                    self._unnamed.add(index)
        return interface_name(iface, self.iface_names)

    def ruleset_changed(self) -> None:
        """Note which hooks have a loaded table (call after tables are added or flushed):
        a hook without one lets packets by without building their view."""
        loaded = self.ruleset.tables
        for hook, chain in CHAIN_OF_HOOK.items():
            for early in (False, True):
                self._busy[(hook, early)] = any(
                    name in loaded and (not early or prio < CONNTRACK_PRIORITY) and
                    (early or hook not in TRACKING_HOOKS or prio > CONNTRACK_PRIORITY)
                    for prio, name in tables_at(chain))

    def is_local(self, address: int) -> bool:
        """A destination this host receives itself (a packet sent there goes through lo)."""
        local = self.engine.local_addresses
        return (address & LOOPBACK_MASK) == LOOPBACK_NET or (local is not None and address in local)

    # -- the hooks ---------------------------------------------------------------------------
    def _view(self, pkt: Packet, hook: Hook, result: Optional[PacketResult]) -> RulePacket:
        flight = self._in_flight[-1]
        view = flight.view
        if view is None:
            view = flight.view = rule_view(pkt, flight.datagram)
        entry = None if result is None else result.entry
        set_conntrack_fields(view, result, entry is not None and entry is flight.entry)
        flight.entry = entry
        view.in_iface = flight.in_iface if hook in HOOKS_WITH_IN else ""
        view.link_header = flight.mac if hook in HOOKS_WITH_IN else b""
        view.out_iface = flight.out_iface if hook in HOOKS_WITH_OUT else ""
        return view

    def _before_conntrack(self, hook: Hook, pkt: Packet, result: Optional[PacketResult],
                          now: float) -> int:
        if not self._busy[(hook, True)] or pkt.l3 is not ipv4:
            return NF_ACCEPT
        view = self._view(pkt, hook, result)
        verdict = self.ruleset.run_hook(CHAIN_OF_HOOK[hook], view, now, before=CONNTRACK_PRIORITY)
        answer = self._carry(verdict, view, result, now)
        if verdict.helper is not None:
            pkt.template_helper = verdict.helper    # read if the packet makes a new entry
        if answer == NF_ACCEPT and verdict.notrack:
            return NF_NOTRACK           # the engine ignores it for a packet with an entry
        return answer

    def _at_hook(self, hook: Hook, pkt: Packet, result: PacketResult, now: float) -> int:
        if not self._busy[(hook, False)] or pkt.l3 is not ipv4:     # the IPv4 tables only
            return NF_ACCEPT
        view = self._view(pkt, hook, result)
        after = CONNTRACK_PRIORITY if hook in TRACKING_HOOKS else None
        verdict = self.ruleset.run_hook(CHAIN_OF_HOOK[hook], view, now, after=after)
        return self._carry(verdict, view, result, now)

    def _carry(self, verdict, view: RulePacket, result: Optional[PacketResult],
               now: float) -> int:
        """Keep what the rules changed (marks, logs) and send what they answered (REJECT)."""
        view.mark = verdict.mark
        entry = None if result is None else result.entry
        if entry is not None and result.state not in (CtState.INVALID, CtState.UNTRACKED):
            entry.mark = verdict.ctmark
        if verdict.logs:
            self.stats.logs.extend(verdict.logs)
            self.stats.log_lines += len(verdict.logs)
            if self.log_sink is not None:
                for level, line in verdict.logs:
                    self.log_sink(level, line)
        for reply in verdict.rejects:
            self._send_reply(reply, result, now)
        return NF_DROP if verdict.verdict == DROP else NF_ACCEPT

    def _send_reply(self, datagram: bytes, cause: Optional[PacketResult], now: float) -> None:
        """A REJECT reply leaves this host at OUTPUT, carrying its cause's entry."""
        pkt = parse_ipv4(datagram, LOCAL_OUT)
        if isinstance(pkt, ParseError):
            return                      # the builders make whole datagrams: cannot happen
        attached = None
        if (cause is not None and cause.entry is not None
                and cause.state not in (CtState.INVALID, CtState.UNTRACKED)):
            # nf_ct_attach: RELATED, in the direction opposite to the cause's.
            attached = PacketResult(CtState.RELATED, not cause.reply, LOCAL_OUT, cause.entry)
        looped = self.is_local(pkt.dst)
        cause_flight = self._in_flight[-1]
        out = LOOPBACK_NAME if looped else cause_flight.in_iface
        self.stats.replies_sent += 1
        self._replies.append(_without_ip_id(datagram))
        self._in_flight.append(_InFlight(datagram, LOOPBACK_NAME if looped else "", out,
                                         LOOPBACK_MAC if looped else b""))
        try:
            self.engine.feed_packet(pkt, now, attached=attached, looped_back=looped)
        finally:
            self._in_flight.pop()


def _ip_len(datagram: bytes) -> int:
    return int.from_bytes(datagram[2:4], "big") if len(datagram) >= 4 else len(datagram)


def _dst_of(datagram: bytes) -> int:
    return int.from_bytes(datagram[16:20], "big")
