"""A TCP flow driven through the engine's per-packet path, for the TCP tests
(test_tcp.py, test_tcp_window.py): the knobs, the two ends, and Flow."""
from __future__ import annotations

from engine.entry import ASSURED, ORIGINAL, REPLY, SEEN_REPLY
from engine.hooks import LOCAL_OUT
from engine.knobs import KnobValues
from engine.outcome import INVALID, REOPEN
from engine.packet import ACK, IPPROTO_TCP, SYN, Packet, TcpInfo
from engine.tracker import Tracker

# -- knobs: spec §3.3 (linux) and the tutorial's values (§3.1, §4.8) ---------------------------
LINUX_KNOBS = {
    "tcp_timeout_syn_sent": 120, "tcp_timeout_syn_recv": 60,
    "tcp_timeout_established": 432000, "tcp_timeout_fin_wait": 120,
    "tcp_timeout_close_wait": 60, "tcp_timeout_last_ack": 30,
    "tcp_timeout_time_wait": 120, "tcp_timeout_close": 10,
    "tcp_timeout_max_retrans": 300, "tcp_timeout_unacknowledged": 300,
    "tcp_loose": 1, "tcp_be_liberal": 0, "tcp_ignore_invalid_rst": 0,
    "tcp_max_retrans": 3, "checksum": 1,
}

# No unacknowledged / ignore_invalid_rst knobs: the tutorial profile must not read them.
TUTORIAL_KNOBS = {
    "tcp_timeout_syn_sent": 120, "tcp_timeout_syn_recv": 60,
    "tcp_timeout_established": 432000, "tcp_timeout_fin_wait": 120,
    "tcp_timeout_close_wait": 43200, "tcp_timeout_last_ack": 30,
    "tcp_timeout_time_wait": 120, "tcp_timeout_close": 10,
    "tcp_timeout_max_retrans": 300,
    "tcp_loose": 3, "tcp_be_liberal": 0, "tcp_max_retrans": 3, "checksum": 1,
}

KNOBS = {"linux": LINUX_KNOBS, "tutorial": TUTORIAL_KNOBS}

CLIENT, SERVER = 0x7F000001, 0x7F000002      # 127.0.0.1:41001 -> 127.0.0.2:6000 (§10 ns 2)

CPORT, SPORT = 41001, 6000

C_ISN, S_ISN = 1000, 5000                    # the client's and server's initial sequence numbers

def tcp_packet(direction: int, flags: int, seq: int, ack: int = 0, win: int = 65535,
               payload: int = 0, hook: int = LOCAL_OUT, **options) -> Packet:
    src, dst, sport, dport = ((CLIENT, SERVER, CPORT, SPORT) if direction == ORIGINAL
                              else (SERVER, CLIENT, SPORT, CPORT))
    return Packet(src, dst, IPPROTO_TCP, 40 + payload, hook=hook, sport=sport, dport=dport,
                  tcp=TcpInfo(flags, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, win, payload,
                              **options)).keyed()

class Flow:
    """One client->server flow driven through the engine's per-packet path (Tracker.process
    and confirm), watching what the TCP tracker answered.

    `send()` returns the TCP tracker's last answer for the packet (a timeout, IGNORE,
    DELETE; INVALID also when error() or new() refused it, so the tracker never judged it);
    REOPEN is counted in `reopened` and the packet judged again on the new entry.
    `ctstate` is the packet's classification by §6; `entry` the flow's entry in the table.
    The tracker reads only the knobs given here, so a profile reading a knob it must not
    (the tutorial: unacknowledged, ignore_invalid_rst) fails with KeyError.
    """

    def __init__(self, profile: str = "linux", **knobs: int) -> None:
        self.core = Tracker(profile, KnobValues(profile, 24 << 30))
        # The table's own knobs beside the TCP ones (no limit, no accounting or
        # timestamps); one dict, so a test changing a knob changes it for the next packet.
        self.knobs = dict(KNOBS[profile], max=0, acct=0, timestamp=0, **knobs)
        self.core._kv = self.knobs
        self.tracker = self.core.l4[IPPROTO_TCP]
        self.now = 0.0
        self.ctstate = None
        self.reopened = 0
        self._answers: list = []
        judge = self.tracker.packet

        def watched(*args):
            answer = judge(*args)
            self._answers.append(answer)
            return answer
        self.tracker.packet = watched

    @property
    def entry(self):
        hit = self.core.lookup_tuple((CLIENT, SERVER, IPPROTO_TCP, CPORT, SPORT))
        return None if hit is None else hit[0]

    def send(self, direction: int, flags: int, seq: int, ack: int = 0, **kw):
        return self.process(tcp_packet(direction, flags, seq, ack, **kw), direction)

    def process(self, pkt: Packet, direction: int):
        self._answers.clear()
        result = self.core.process(pkt, self.now)
        self.core.confirm(result, self.now)
        self.ctstate = str(result)
        self.reopened += self._answers.count(REOPEN)
        return self._answers[-1] if self._answers else INVALID

    def judge(self, pkt: Packet, direction: int):
        """The TCP tracker's answer for a packet on the entry, past error() (the tables)."""
        return self.tracker.packet(self.entry, pkt, direction, self.now, self.knobs)

    # What a listing line would show.
    @property
    def state(self) -> str:
        return self.tracker.state_name(self.entry)

    @property
    def left(self) -> float:
        return self.entry.expires - self.now

    @property
    def assured(self) -> bool:
        return bool(self.entry.status & ASSURED)

    @property
    def unreplied(self) -> bool:
        return not self.entry.status & SEEN_REPLY

    def handshake(self) -> None:
        """SYN, SYN/ACK, ACK; each must be accepted (values are checked by the tests)."""
        results = (self.send(ORIGINAL, SYN, C_ISN),
                   self.send(REPLY, SYN | ACK, S_ISN, C_ISN + 1),
                   self.send(ORIGINAL, ACK, C_ISN + 1, S_ISN + 1))
        assert all(isinstance(r, int) for r in results), results
        assert self.state == "ESTABLISHED" and self.assured
