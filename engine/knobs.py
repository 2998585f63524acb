"""The knob (sysctl) registry: every knob of every kernel generation, declared once.

Each Knob names its canonical value (the modern sysctl name without `nf_conntrack_`),
the file paths of every generation that alias it, its defaults per profile, which kernel
handler parses a written value (int, jiffies, u8 or ulong) and its range, whose ends may
name another knob (ipfrag_high_thresh >= ipfrag_low_thresh).  The FUSE tree, write
validation, `--help` and the README table are all derived from KNOBS.

A write or read goes through `KnobValues.write_at` / `read_at` with the kernel's file
position, and answers what proc_sys_call_handler would: the count write(2) returns and
how far the position moves (the u8 handler leaves it at 0), checked against this
machine's kernel by tests/test_fileops_kernel.py.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Mapping, NamedTuple, Optional, Tuple, Union

from .profile import LINUX, check_profile

HZ = 250                      # the reference kernel's tick rate: bounds jiffies knobs
INT_MAX = 2**31 - 1
INT_MIN = -(2**31)
ULONG_MAX = 2**64 - 1
PAGE_SIZE = 4096
WRITE_WINDOW = PAGE_SIZE - 1  # the handlers parse at most this many bytes of one write
TOKEN_MAX = 21                # proc_get_long: TMPBUFLEN - 1; a number (with its sign) this long is refused


# Where each generation keeps its knobs (relative to the mount point).
MODERN_DIR = "sys/net/netfilter/nf_conntrack_"
IPCT_DIR = "sys/net/ipv4/netfilter/ip_conntrack_"
TUTORIAL_DIR = "sys/net/ipv4/netfilter/ip_ct_"

# The kernel handlers: proc_dointvec(_minmax), proc_dointvec_jiffies, proc_dou8vec_minmax,
# proc_doulongvec_minmax.
INT, JIFFIES, U8, ULONG = "int", "jiffies", "u8", "ulong"

# Each kind's own limits, before any declared range.
KIND_LIMITS: Dict[str, Tuple[int, int]] = {
    INT: (INT_MIN, INT_MAX),
    JIFFIES: (-(INT_MAX // HZ), INT_MAX // HZ),     # seconds: value * HZ must fit an int
    U8: (0, 255),
    ULONG: (0, ULONG_MAX),
}

Bound = Union[int, str]          # a number, or the name of the knob whose value bounds it
Range = Optional[Tuple[Bound, Bound]]


@dataclass(frozen=True)
class Knob:
    name: str                   # canonical name; trackers read knobs[name]
    kind: str                   # INT / JIFFIES (seconds) / U8 / ULONG: the linux handler
    linux: Optional[int]        # default in the linux profile (None: computed from RAM)
    tutorial: Optional[int]     # default in the tutorial profile
    doc: str
    linux_range: Range = None   # inclusive; None = the kind's own limits only
    tutorial_range: Range = None
    tutorial_kind: Optional[str] = None     # the 2.6 handler when it differs from `kind`
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
        return self.linux if profile == LINUX else self.tutorial

    def value_range(self, profile: str) -> Range:
        return self.linux_range if profile == LINUX else self.tutorial_range

    def handler(self, profile: str) -> str:
        """The kind of kernel handler that parses writes in this profile."""
        return self.tutorial_kind if profile != "linux" and self.tutorial_kind else self.kind


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
    Knob("icmpv6_timeout", JIFFIES, 30, 30, "ICMPv6 echo / node information entries (IPv6)"),
    _timeout("generic_timeout", 600, 600, "any other IP protocol"),
    Knob("gre_timeout", JIFFIES, 30, 30, "GRE before a reply (linux; the tutorial tracks GRE as generic)"),
    Knob("gre_timeout_stream", JIFFIES, 180, 180, "GRE stream (linux; the tutorial tracks GRE as generic)"),
    *(Knob(f"sctp_timeout_{state}", JIFFIES, secs, secs, f"SCTP {state.upper()} (linux; the tutorial tracks SCTP as generic)")
      for state, secs in (("closed", 10), ("cookie_wait", 3), ("cookie_echoed", 3),
                          ("established", 210), ("shutdown_sent", 3), ("shutdown_recd", 3),
                          ("shutdown_ack_sent", 3), ("heartbeat_sent", 30))),
    # Unsigned longs that bound each other: the kernel points high's extra1 (minimum) at
    # low's value and low's extra2 (maximum) at high's (nf_conntrack_reasm.c, ip_fragment.c).
    Knob("frag6_high_thresh", ULONG, 4194304, 4194304, "bytes of queued IPv6 fragments before eviction",
         linux_range=("frag6_low_thresh", ULONG_MAX), tutorial_range=("frag6_low_thresh", ULONG_MAX)),
    Knob("frag6_low_thresh", ULONG, 3145728, 3145728, "level IPv6 eviction prunes back to",
         linux_range=(0, "frag6_high_thresh"), tutorial_range=(0, "frag6_high_thresh")),
    Knob("frag6_timeout", JIFFIES, 60, 60, "seconds a partial IPv6 datagram is kept"),
    # -- IPv4 reassembly, which conntrack always runs first (spec §8) ----------------------
    # 2.6.18 parsed both thresholds with plain proc_dointvec (no range, no relation).
    Knob("ipfrag_high_thresh", ULONG, 4194304, 262144, "bytes of queued fragments before eviction",
         linux_range=("ipfrag_low_thresh", ULONG_MAX), tutorial_kind=INT, modern=False,
         extra_paths=("sys/net/ipv4/ipfrag_high_thresh",)),
    Knob("ipfrag_low_thresh", ULONG, 3145728, 196608, "level eviction prunes back to",
         linux_range=(0, "ipfrag_high_thresh"), tutorial_kind=INT, modern=False,
         extra_paths=("sys/net/ipv4/ipfrag_low_thresh",)),
    Knob("ipfrag_time", JIFFIES, 30, 30, "seconds a partial datagram is kept", modern=False,
         extra_paths=("sys/net/ipv4/ipfrag_time",)),
    Knob("ipfrag_max_dist", INT, 64, 64,
         "fragments from one source between two of a datagram before it is dropped (not used)",
         linux_range=(0, INT_MAX), tutorial_range=(0, INT_MAX), modern=False,
         extra_paths=("sys/net/ipv4/ipfrag_max_dist",)),
)

KNOBS_BY_NAME: Dict[str, Knob] = {k.name: k for k in KNOBS}
KNOBS_BY_PATH: Dict[str, Knob] = {path: k for k in KNOBS for path in k.paths}


def default_table_size(profile: str, ram_bytes: int) -> Tuple[int, int]:
    """(buckets, max) as the profile's kernel computes them from RAM (spec §7.1)."""
    if profile == LINUX:
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
_SPACES = b" \t\n\v\f\r"         # isspace(): skipped before and after a number
_BASE_DIGITS = {16: b"0123456789abcdefABCDEF", 10: b"0123456789", 8: b"01234567"}


def _skip_spaces(data: bytes, pos: int) -> int:
    while pos < len(data) and data[pos] in _SPACES:
        pos += 1
    return pos


def parse_sysctl_int(data: bytes) -> Tuple[int, bool, int]:
    """Parse one integer of `data` (one write's bytes) as proc_skip_spaces + proc_get_long do.

    Only the first WRITE_WINDOW bytes are looked at.  Returns (magnitude, negative, bytes
    of the window consumed incl. the blanks after the number); the sign is separate
    because unsigned handlers refuse even "-0".  Raises KnobWriteError(EINVAL).
    """
    window = data[:WRITE_WINDOW]
    pos = _skip_spaces(window, 0)
    if pos == len(window):
        raise KnobWriteError(errno.EINVAL, "no number")
    # proc_get_long copies at most TOKEN_MAX bytes and parses that copy with strtoul(.., 0).
    token = window[pos:pos + TOKEN_MAX]
    negative = token[:1] == b"-" and len(window) - pos > 1
    at = 1 if negative else 0
    first = token[at:at + 1]
    if not first or first not in _BASE_DIGITS[10]:
        raise KnobWriteError(errno.EINVAL, "not a number")
    if token[at:at + 2] in (b"0x", b"0X") and token[at + 2:at + 3] and \
            token[at + 2] in _BASE_DIGITS[16]:
        base, digits_at = 16, at + 2
    elif token[at:at + 1] == b"0":
        base, digits_at = 8, at
    else:
        base, digits_at = 10, at
    end = digits_at
    while end < len(token) and token[end] in _BASE_DIGITS[base]:
        end += 1
    value = int(token[digits_at:end], base)
    if value > ULONG_MAX:
        raise KnobWriteError(errno.EINVAL, "overflow")
    if end == TOKEN_MAX:
        raise KnobWriteError(errno.EINVAL, f"a number of {TOKEN_MAX} characters")
    after = pos + end
    if after < len(window) and window[after] not in _SEPARATORS:
        raise KnobWriteError(errno.EINVAL, "trailing garbage")
    return value, negative, _skip_spaces(window, after)


def convert(knob: Knob, magnitude: int, negative: bool, profile: str,
            values: Optional[Mapping[str, int]] = None) -> int:
    """Apply the handler's conversion and range checks (the do_proc_*_conv functions).

    `values` resolves a range end that names another knob; without it such an end is
    left unchecked.
    """
    kind = knob.handler(profile)
    if negative and kind in (U8, ULONG):
        raise KnobWriteError(errno.EINVAL, f"negative value for an unsigned ({kind}) knob")
    value = -magnitude if negative else magnitude
    low, high = KIND_LIMITS[kind]
    if not low <= value <= high:
        raise KnobWriteError(errno.EINVAL, f"outside the {kind} limits {low}..{high}")
    declared = knob.value_range(profile)
    if declared is not None:
        low, high = (_resolve(end, values) for end in declared)
        if (low is not None and value < low) or (high is not None and value > high):
            raise KnobWriteError(errno.EINVAL, f"out of range {declared[0]}..{declared[1]}")
    return value


def _resolve(end: Bound, values: Optional[Mapping[str, int]]) -> Optional[int]:
    if isinstance(end, int):
        return end
    return None if values is None else values[end]


class Written(NamedTuple):
    """What one write(2) to a knob answers."""
    count: int          # the write's return value
    advance: int        # how far the file position moves


class KnobValues:
    """The live values of one engine's knobs (one value per knob, shared by its aliases).

    Values are plain ints in a dict: a write is one assignment, so the engine thread
    sees it on its very next packet without a lock.
    """

    def __init__(self, profile: str, ram_bytes: int, *, max_entries: Optional[int] = None,
                 buckets: Optional[int] = None,
                 overrides: Optional[Dict[str, int]] = None) -> None:
        check_profile(profile)
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

    def read_at(self, name: str, size: int, position: int) -> bytes:
        """A read(2) of `size` bytes at the kernel's file `position`: the value's text cut
        to `size` at position 0, and end of file anywhere else (the handlers answer
        nothing to a read at a non-zero position: `dd bs=1` prints one byte)."""
        if position != 0:
            return b""
        return self.read_text(name).encode("ascii")[:size]

    def write_at(self, name: str, data: bytes, position: int) -> Written:
        """Apply a write(2) of `data` at the kernel's file `position` as the kernel would.

        * at a non-zero position the write is ignored and reported written
          (sysctl_writes_strict=1, the default);
        * the int handlers (int, jiffies, ulong) return the bytes consumed: the whole
          write less what is left of its first WRITE_WINDOW bytes after the number and
          its trailing blanks, and move the position as far;
        * the u8 handler returns the whole write and leaves the position at 0, so a
          second write on one descriptor is parsed again.
        Raises KnobWriteError (EACCES for read-only knobs, EINVAL for bad values); a
        refused write changes nothing.
        """
        knob = KNOBS_BY_NAME[name]
        if knob.readonly:
            raise KnobWriteError(errno.EACCES, f"{name} is read-only")
        if position != 0 or not data:
            return Written(len(data), len(data))
        magnitude, negative, consumed = parse_sysctl_int(data)
        self._values[name] = convert(knob, magnitude, negative, self.profile, self)
        if knob.handler(self.profile) == U8:
            return Written(len(data), 0)
        count = len(data) - (min(len(data), WRITE_WINDOW) - consumed)
        return Written(count, count)

    def write_text(self, name: str, data: bytes, offset: int = 0) -> int:
        """write_at's count: what write(2) returns."""
        return self.write_at(name, data, offset).count
