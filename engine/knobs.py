"""The knob (sysctl) registry: every knob of every kernel generation, declared once.

Each Knob names its canonical value (the modern sysctl name without `nf_conntrack_`),
the file paths of every generation that alias it, its defaults per profile, how a
written value is parsed (int, jiffies or u8, spec §3.4) and its range.  The FUSE tree,
write validation, `--help` and the README table are all derived from KNOBS.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Optional, Tuple

HZ = 250                      # the reference kernel's tick rate: bounds jiffies knobs
INT_MAX = 2**31 - 1
INT_MIN = -(2**31)
ULONG_MAX = 2**64 - 1
PAGE_SIZE = 4096              # the kernel cuts longer writes to one page

PROFILES = ("tutorial", "linux")

# Where each generation keeps its knobs (relative to the mount point).
MODERN_DIR = "sys/net/netfilter/nf_conntrack_"
IPCT_DIR = "sys/net/ipv4/netfilter/ip_conntrack_"
TUTORIAL_DIR = "sys/net/ipv4/netfilter/ip_ct_"

INT, JIFFIES, U8 = "int", "jiffies", "u8"

Range = Optional[Tuple[int, int]]


@dataclass(frozen=True)
class Knob:
    name: str                   # canonical name; trackers read knobs[name]
    kind: str                   # INT / JIFFIES (seconds) / U8
    linux: Optional[int]        # default in the linux profile (None: computed from RAM)
    tutorial: Optional[int]     # default in the tutorial profile
    doc: str
    linux_range: Range = None   # inclusive; None = the kind's own limits only
    tutorial_range: Range = None
    readonly: bool = False
    modern: bool = True         # has a sys/net/netfilter/nf_conntrack_<name> file
    ipct: bool = False          # has a sys/net/ipv4/netfilter/ip_conntrack_<name> file (2.6)
    ip_ct: bool = False         # has the tutorial's sys/net/ipv4/netfilter/ip_ct_<name> file
    extra_paths: Tuple[str, ...] = ()

    @property
    def paths(self) -> Tuple[str, ...]:
        """Every file that reads and writes this one value."""
        found = []
        if self.modern:
            found.append(MODERN_DIR + self.name)
        if self.ipct:
            found.append(IPCT_DIR + self.name)
        if self.ip_ct:
            found.append(TUTORIAL_DIR + self.name)
        found.extend(self.extra_paths)
        return tuple(found)

    def default(self, profile: str) -> Optional[int]:
        return self.linux if profile == "linux" else self.tutorial

    def value_range(self, profile: str) -> Range:
        return self.linux_range if profile == "linux" else self.tutorial_range


def _timeout(name: str, linux: int, tutorial: int, doc: str, *, ipct: bool = True,
             ip_ct: bool = True) -> Knob:
    return Knob(name, JIFFIES, linux, tutorial, doc, ipct=ipct, ip_ct=ip_ct)


BOOL = (0, 1)
BYTE = (0, 255)

KNOBS: Tuple[Knob, ...] = (
    # -- the table ---------------------------------------------------------------------
    Knob("max", INT, None, None, "most entries the table holds; 0 = no limit",
         linux_range=(0, INT_MAX), ipct=True,
         extra_paths=("sys/net/nf_conntrack_max", "sys/net/ipv4/ip_conntrack_max")),
    Knob("count", INT, None, None, "entries in the table now", readonly=True, ipct=True),
    Knob("buckets", INT, None, None, "hash buckets (fixed at mount; --buckets)",
         readonly=True, ipct=True),
    Knob("expect_max", INT, None, None, "most expectations", linux_range=(1, INT_MAX)),
    Knob("checksum", U8, 1, 1, "verify L4 checksums of packets arriving (PREROUTING)",
         linux_range=BOOL, ipct=True),
    Knob("log_invalid", U8, 0, 0, "protocol number whose invalid packets are logged; 255 = all",
         linux_range=BYTE, tutorial_range=BYTE, ipct=True),
    Knob("acct", U8, 0, 0, "packet/byte counters on entries created from now on",
         linux_range=BOOL),
    Knob("timestamp", U8, 0, 0, "delta-time on entries created from now on", linux_range=BOOL),
    Knob("events", U8, 2, 2, "event delivery: 0 off, 1 on, 2 when a listener exists",
         linux_range=(0, 2)),
    # -- TCP ---------------------------------------------------------------------------
    _timeout("tcp_timeout_syn_sent", 120, 120, "TCP SYN_SENT (and SYN_SENT2)"),
    _timeout("tcp_timeout_syn_recv", 60, 60, "TCP SYN_RECV"),
    _timeout("tcp_timeout_established", 432000, 432000, "TCP ESTABLISHED (5 days)"),
    _timeout("tcp_timeout_fin_wait", 120, 120, "TCP FIN_WAIT"),
    # The tutorial's table says 12 hours for CLOSE_WAIT; no kernel source has it (spec §4.8).
    _timeout("tcp_timeout_close_wait", 60, 43200, "TCP CLOSE_WAIT (the tutorial: 12 hours)"),
    _timeout("tcp_timeout_last_ack", 30, 30, "TCP LAST_ACK"),
    _timeout("tcp_timeout_time_wait", 120, 120, "TCP TIME_WAIT"),
    _timeout("tcp_timeout_close", 10, 10, "TCP CLOSE"),
    _timeout("tcp_timeout_max_retrans", 300, 300,
             "timer after tcp_max_retrans identical retransmissions"),
    _timeout("tcp_timeout_unacknowledged", 300, 300, "timer while data is unacknowledged",
             ipct=False, ip_ct=False),
    Knob("tcp_loose", U8, 1, 3,
         "pick up connections already under way (tutorial: packets per direction unchecked)",
         linux_range=BOOL, ipct=True, ip_ct=True),
    Knob("tcp_be_liberal", U8, 0, 0, "accept out-of-window TCP packets",
         linux_range=BOOL, ipct=True, ip_ct=True),
    Knob("tcp_ignore_invalid_rst", U8, 0, 0, "accept RSTs with a sequence number below the window",
         linux_range=BOOL),
    Knob("tcp_max_retrans", U8, 3, 3, "identical retransmissions before the max_retrans timer",
         linux_range=BYTE, ipct=True, ip_ct=True),
    # -- UDP, ICMP, generic and the rest ---------------------------------------------------
    _timeout("udp_timeout", 30, 30, "UDP before a reply (and modern: within 2 s of the first)"),
    _timeout("udp_timeout_stream", 120, 180, "UDP stream (ASSURED)"),
    _timeout("icmp_timeout", 30, 30, "ICMP request entries"),
    Knob("icmpv6_timeout", JIFFIES, 30, 30, "ICMPv6 (not tracked: IPv4 only)"),
    _timeout("generic_timeout", 600, 600, "any other IP protocol"),
    Knob("gre_timeout", JIFFIES, 30, 30, "GRE before a reply (tracked as generic here)"),
    Knob("gre_timeout_stream", JIFFIES, 180, 180, "GRE stream (tracked as generic here)"),
    *(Knob(f"sctp_timeout_{state}", JIFFIES, secs, secs, f"SCTP {state.upper()} (not tracked)")
      for state, secs in (("closed", 10), ("cookie_wait", 3), ("cookie_echoed", 3),
                          ("established", 210), ("shutdown_sent", 3), ("shutdown_recd", 3),
                          ("shutdown_ack_sent", 3), ("heartbeat_sent", 30))),
    Knob("frag6_high_thresh", INT, 4194304, 4194304, "IPv6 reassembly memory (not used)"),
    Knob("frag6_low_thresh", INT, 3145728, 3145728, "IPv6 reassembly memory (not used)"),
    Knob("frag6_timeout", JIFFIES, 60, 60, "IPv6 reassembly time (not used)"),
    # -- IPv4 reassembly, which conntrack always runs first (spec §8) ----------------------
    Knob("ipfrag_high_thresh", INT, 4194304, 262144, "bytes of queued fragments before eviction",
         linux_range=(0, INT_MAX), tutorial_range=(0, INT_MAX), modern=False,
         extra_paths=("sys/net/ipv4/ipfrag_high_thresh",)),
    Knob("ipfrag_low_thresh", INT, 3145728, 196608, "level eviction prunes back to",
         linux_range=(0, INT_MAX), tutorial_range=(0, INT_MAX), modern=False,
         extra_paths=("sys/net/ipv4/ipfrag_low_thresh",)),
    Knob("ipfrag_time", JIFFIES, 30, 30, "seconds a partial datagram is kept", modern=False,
         extra_paths=("sys/net/ipv4/ipfrag_time",)),
)

KNOBS_BY_NAME: Dict[str, Knob] = {k.name: k for k in KNOBS}
KNOBS_BY_PATH: Dict[str, Knob] = {path: k for k in KNOBS for path in k.paths}


def default_table_size(profile: str, ram_bytes: int) -> Tuple[int, int]:
    """(buckets, max) as the profile's kernel computes them from RAM (spec §7.1)."""
    if profile == "linux":
        buckets = ram_bytes // 16384 // 8            # sizeof(struct hlist_head) on 64-bit
        if ram_bytes > 4 << 30:
            buckets = 262144
        elif ram_bytes > 1 << 30:
            buckets = 65536
        buckets = max(buckets, 1024)
        buckets = -(-buckets // 512) * 512            # whole 4 KiB pages of heads
        return buckets, buckets
    # ip_conntrack: RAM / 16384 / sizeof(struct list_head).  The tutorial's figures
    # (128 MB -> 8192 entries) are the i386 ones, where a list_head is 8 bytes.
    buckets = ram_bytes // 16384 // 8
    if ram_bytes > 1 << 30:
        buckets = 8192
    buckets = max(buckets, 16)
    return buckets, 8 * buckets


class KnobWriteError(Exception):
    """A write the kernel refuses; .errno is what write(2) fails with."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err


_SEPARATORS = b" \t\n"           # proc_wspace_sep: what may follow a number
_SPACES = b" \t\n\v\f\r"         # isspace(): skipped before a number


def parse_sysctl_int(data: bytes) -> Tuple[int, bool, int]:
    """Parse one integer as the kernel's proc_get_long does.

    Returns (magnitude, negative, bytes consumed incl. trailing blanks); the sign is
    separate because unsigned handlers refuse even "-0".  Raises KnobWriteError(EINVAL).
    """
    data = data[:PAGE_SIZE]
    pos = 0
    while pos < len(data) and data[pos] in _SPACES:
        pos += 1
    if pos == len(data):
        raise KnobWriteError(errno.EINVAL, "no number")
    negative = data[pos:pos + 1] == b"-"
    if negative:
        pos += 1
    start = pos
    if data[pos:pos + 2].lower() == b"0x" and pos + 2 < len(data) and \
            chr(data[pos + 2]).lower() in "0123456789abcdef":
        base, pos = 16, pos + 2
        digits = "0123456789abcdef"
    elif data[pos:pos + 1] == b"0":
        base, digits = 8, "01234567"
    else:
        base, digits = 10, "0123456789"
    number_start = pos
    while pos < len(data) and chr(data[pos]).lower() in digits:
        pos += 1
    if pos == number_start or (base == 16 and pos == start + 2):
        raise KnobWriteError(errno.EINVAL, "not a number")
    if pos - start > 21:                               # TMPBUFLEN - 1 in proc_get_long
        raise KnobWriteError(errno.EINVAL, "number too long")
    value = int(data[number_start:pos].decode(), base)
    if value > ULONG_MAX:
        raise KnobWriteError(errno.EINVAL, "overflow")
    if pos < len(data) and data[pos] not in _SEPARATORS:
        raise KnobWriteError(errno.EINVAL, "trailing garbage")
    while pos < len(data) and data[pos] in _SPACES:
        pos += 1
    return value, negative, pos


def convert(knob: Knob, magnitude: int, negative: bool, profile: str) -> int:
    """Apply the handler's conversion and range checks (do_proc_dointvec_*_conv)."""
    value = -magnitude if negative else magnitude
    if knob.kind == U8:
        if negative:
            raise KnobWriteError(errno.EINVAL, "negative value for an unsigned knob")
        limit = knob.value_range(profile) or BYTE
        if not limit[0] <= value <= min(limit[1], 255):
            raise KnobWriteError(errno.EINVAL, f"out of range {limit[0]}..{limit[1]}")
        return value
    if value > INT_MAX or value < INT_MIN:
        raise KnobWriteError(errno.EINVAL, "does not fit in an int")
    if knob.kind == JIFFIES and abs(value) > INT_MAX // HZ:
        raise KnobWriteError(errno.EINVAL, f"more than {INT_MAX // HZ} seconds")
    limit = knob.value_range(profile)
    if limit is not None and not limit[0] <= value <= limit[1]:
        raise KnobWriteError(errno.EINVAL, f"out of range {limit[0]}..{limit[1]}")
    return value


class KnobValues:
    """The live values of one engine's knobs (one value per knob, shared by its aliases).

    Values are plain ints in a dict: a write is one assignment, so the engine thread
    sees it on its very next packet without a lock.
    """

    def __init__(self, profile: str, ram_bytes: int, *, max_entries: Optional[int] = None,
                 buckets: Optional[int] = None,
                 overrides: Optional[Dict[str, int]] = None) -> None:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r} (choose from {', '.join(PROFILES)})")
        self.profile = profile
        default_buckets, default_max = default_table_size(profile, ram_bytes)
        if buckets is not None:
            # The module parameter hashsize sets buckets; max follows as 8 x buckets.
            default_buckets, default_max = buckets, 8 * buckets
        self._values: Dict[str, int] = {}
        for knob in KNOBS:
            value = knob.default(profile)
            self._values[knob.name] = 0 if value is None else value
        self._values["buckets"] = default_buckets
        self._values["max"] = default_max if max_entries is None else max_entries
        self._values["expect_max"] = max(default_buckets // 256 * 4, 1)
        self._values.update(overrides or {})
        self._live: Dict[str, Callable[[], int]] = {}

    def __getitem__(self, name: str) -> int:
        live = self._live.get(name)
        return live() if live is not None else self._values[name]

    def provide(self, name: str, source: Callable[[], int]) -> None:
        """Make a read-only knob (count) report a live value."""
        self._live[name] = source

    def set(self, name: str, value: int) -> None:
        """Set a value directly (state restore, tests); no parsing or range check."""
        self._values[name] = value

    def items(self) -> Iterator[Tuple[str, int]]:
        for knob in KNOBS:
            yield knob.name, self[knob.name]

    def read_text(self, name: str) -> str:
        return f"{self[name]}\n"

    def write_text(self, name: str, data: bytes, offset: int = 0) -> int:
        """Apply a write(2) of `data` at `offset` as the kernel would; returns bytes taken.

        Raises KnobWriteError (EACCES for read-only knobs, EINVAL for bad values);
        a refused write changes nothing.
        """
        knob = KNOBS_BY_NAME[name]
        if knob.readonly:
            raise KnobWriteError(errno.EACCES, f"{name} is read-only")
        if offset != 0:
            return len(data)        # sysctl_writes_strict: ignored, reported as written
        if not data:
            return 0
        magnitude, negative, consumed = parse_sysctl_int(data)
        self._values[name] = convert(knob, magnitude, negative, self.profile)
        return consumed
