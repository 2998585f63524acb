"""IPv4 reassembly in front of conntrack (spec 8), modelled on Linux ip_fragment.c.

Conntrack never sees fragments: the defrag hook holds them until the datagram
is whole, then the tracker sees one datagram.  Behaviour followed, per kernel
source (ip_frag_queue(), inet_frag_queue_insert(), ip_frag_reasm()):

- Queues are keyed by (src, dst, proto, ident) plus the defrag "user": the
  PREROUTING and OUTPUT hooks reassemble in separate queues.
- A queue lives `timeout` seconds (ipfrag_time) from its first fragment; the
  timer is not refreshed by later fragments.
- Overlap (RFC 5722 as Linux applies it to IPv4): a fragment overlapping held
  data discards the whole queue.  A fragment lying entirely inside one run of
  contiguous held fragments (an exact duplicate is the common case) is a
  duplicate: it alone is dropped, the queue is kept.
- A non-final fragment's length is cut down to a multiple of 8; a zero-length
  fragment, a final fragment ending before data already held, a second final
  fragment with a different end, or data beyond the final end discard the queue.
- The reassembled datagram takes the first fragment's header (options included),
  total length fixed, offset 0, MF clear, DF set if the largest fragment had DF,
  ECN bits merged by RFC 3168's rules, checksum recomputed.  Over 65535 bytes:
  dropped, queue discarded.
- Memory: bytes held over high_thresh evicts least recently fed queues until
  held bytes are at most low_thresh (the 2.6 ip_evictor() policy).

Chosen where the kernel is not emulated: memory is counted as the bytes of each
held fragment (IP header + kept payload), not skb truesize; ipfrag_max_dist is
not emulated; the IP header checksum of a fragment is not verified here.
Every discarded queue counts in reasm_fails, as the kernel's ReasmFails does.
"""
from __future__ import annotations

import bisect
import struct
from collections import OrderedDict
from dataclasses import asdict, dataclass
from operator import itemgetter
from typing import Optional

from .build import internet_checksum
from .hooks import PRE_ROUTING
from .ipv4 import HEADER_LEN
from .ipv4 import IP_DF, IP_MF, IP_OFFSET

IP_MAX_LEN = 65535
# An IPv4 header's fields feed() tests: version/IHL, TOS, total length, identification,
# fragment field.
_FIRST_FIELDS = struct.Struct("!BBHHH").unpack_from
# What a fragment's header says about it: TOS, total length, identification, fragment
# field, protocol, and its addresses as they are (the queue's key: no ints made).
_FRAGMENT_FIELDS = struct.Struct("!xBHHHxB2x8s").unpack_from
_U16 = struct.Struct("!H")         # the rebuilt header's total length, offset, checksum

# ECN codepoints of a fragment, as bits (ip4_frag_ecn()).
_NOT_ECT, _ECT_1, _ECT_0, _CE = 1, 2, 4, 8
_ECN_BIT = {0: _NOT_ECT, 1: _ECT_1, 2: _ECT_0, 3: _CE}
_ECT_ANY = _ECT_1 | _ECT_0 | _CE


@dataclass
class DefragStats:
    reasm_reqds: int = 0     # fragments received (IPSTATS_MIB_REASMREQDS)
    reasm_oks: int = 0       # datagrams reassembled
    reasm_fails: int = 0     # queues discarded, for any reason
    timeouts: int = 0        # queues dropped at ipfrag_time
    overlaps: int = 0        # queues discarded for overlapping data
    duplicates: int = 0      # fragments dropped as duplicates (queue kept)
    oversized: int = 0       # reassembled length over 65535
    evictions: int = 0       # queues evicted over high_thresh
    held_bytes: int = 0      # bytes held right now
    queues: int = 0          # queues open right now

    def as_dict(self) -> dict:
        return asdict(self)


class _Queue:
    """One datagram being reassembled (struct ipq / frag_queue)."""
    __slots__ = ("created", "header", "fragments", "runs", "tail_end", "length",
                 "last_in", "meat", "held", "max_size", "max_df_size", "ecn")

    def __init__(self, created: float) -> None:
        self.created = created
        self.header: Optional[bytes] = None   # what the offset-0 fragment keeps in front
        self.fragments: list[tuple[int, bytes]] = []   # (offset, payload), sorted
        # Runs of contiguous fragments as [start, end], sorted; a fragment filed
        # out of order starts its own run even when it touches a neighbour,
        # exactly as inet_frag_queue_insert() does (this decides "duplicate").
        self.runs: list[list[int]] = []
        self.tail_end = 0          # end of the highest fragment held
        self.length = 0            # known datagram payload length (q.len)
        self.last_in = False       # final fragment (MF clear) seen
        self.meat = 0              # payload bytes held
        self.held = 0              # bytes charged to the memory limit
        self.max_size = 0          # largest fragment (header + payload)
        self.max_df_size = 0       # largest fragment that had DF set
        self.ecn = 0


_OK, _DUPLICATE, _OVERLAP = "ok", "duplicate", "overlap"
_PAYLOAD = itemgetter(1)                # a held (offset, payload)'s payload


class FragmentQueues:
    """Holds fragments until their datagram is complete (inet_frag: queues, overlap,
    expiry, eviction), for one IP version.  Pure: time is passed in.

    A subclass reads its version's headers (its feed()) and rebuilds the datagram
    (rebuild()); high_thresh, low_thresh and timeout are plain attributes: a knob
    write takes effect at the next feed()/expire().
    """

    # What a non-final fragment's end is cut to: ANDed with this mask (IPv4: a multiple
    # of 8; IPv6's feed() lets the unaligned ones through, so nothing to cut).
    non_final_mask = -1

    def __init__(self, high_thresh: int, low_thresh: int, timeout: float) -> None:
        self.high_thresh = high_thresh
        self.low_thresh = low_thresh
        self.timeout = timeout
        self.stats = DefragStats()
        self._queues: dict[tuple, _Queue] = {}               # creation order: for expiry
        self._lru: OrderedDict[tuple, None] = OrderedDict()  # least recently fed first

    # -- what a subclass says ------------------------------------------------------

    def rebuild(self, queue: _Queue, ecn: int, length_field: int) -> bytes:
        """The whole datagram of a complete queue, its length field given."""
        raise NotImplementedError

    def length_field(self, queue: _Queue) -> int:
        """The length field the rebuilt datagram would carry (at most 65535)."""
        raise NotImplementedError

    # -- public ----------------------------------------------------------------

    def expire(self, now: float) -> int:
        """Drop queues whose time ran out; returns how many."""
        queues = self._queues
        # Creation order: when the oldest queue is still young, so is every other (the
        # common case, and every fragment asks first: no list, no walk).
        if not queues or now - next(iter(queues.values())).created < self.timeout:
            return 0                # (the gauges are up to date after every change)
        expired = []
        for key, queue in queues.items():
            if now - queue.created < self.timeout:
                break   # creation order: every later queue is younger still
            expired.append(key)
        for key in expired:
            self._discard(key)
            self.stats.timeouts += 1
            self.stats.reasm_fails += 1
        self._update_gauges()
        return len(expired)

    def clear(self) -> None:
        for key in list(self._queues):
            self._discard(key)
        self._update_gauges()

    # -- one fragment (ip_frag_queue / nf_ct_frag6_queue) -----------------------

    def queue_fragment(self, key: tuple, header: bytes, payload: bytes, offset: int,
                       more: bool, tos: int, df: bool, now: float) -> Optional[bytes]:
        """File one fragment; the whole datagram when it completes one, else None.

        The fragment, whatever its IP version: `key` the queue it belongs to (addresses,
        id, defrag user...), `header` the part the reassembled datagram keeps if it is
        offset 0, `payload` the fragmentable data it carries, cut to its length, `more`
        MF, `tos` the TOS / traffic class byte (its ECN bits are merged), `df` IPv4's DF.

        Written as one function on purpose: every fragment of a replay comes here, and
        the steps a fragment in order takes (expire() finding nothing, a new queue or
        the next fragment of one, the run extended at its tail) cost less inline than
        as the calls they were; what few fragments do (fail, overlap, a duplicate, one
        filed out of order, eviction) is still called."""
        queues = self._queues
        # expire()'s first test, inline: nearly always the oldest queue is young.
        if queues and now - next(iter(queues.values())).created >= self.timeout:
            self.expire(now)
        stats = self.stats
        stats.reasm_reqds += 1
        queue = queues.get(key)
        if queue is None:
            queue = queues[key] = _Queue(now)
            self._lru[key] = None
        else:
            self._lru.move_to_end(key)
        end = offset + len(payload)
        if not more:
            # The final fragment fixes the length; data beyond it or a
            # different final end means corruption.
            if end < queue.length or (queue.last_in and end != queue.length):
                return self._refuse(key)
            queue.last_in = True
            queue.length = end
        else:
            end &= self.non_final_mask
            if end > queue.length:
                if queue.last_in:
                    return self._refuse(key)
                queue.length = end
        if end == offset:
            return self._refuse(key)

        # inet_frag_queue_insert(): the common case, after everything held, here.
        runs = queue.runs
        tail_end = queue.tail_end
        if not runs:
            runs.append([offset, end])
            queue.tail_end = end
        elif tail_end < end:
            if offset < tail_end:
                stats.overlaps += 1
                return self._refuse(key)
            if offset == tail_end:
                runs[-1][1] = end
            else:
                runs.append([offset, end])
            queue.tail_end = end
        else:
            placement = self._insert_inside(runs, offset, end)
            if placement is _DUPLICATE:
                stats.duplicates += 1
                return self._dropped()
            if placement is _OVERLAP:
                stats.overlaps += 1
                return self._refuse(key)

        payload = payload[:end - offset]
        fragments = queue.fragments
        if not fragments or fragments[-1][0] <= offset:
            fragments.append((offset, payload))     # in order: where insort would put it
        else:
            bisect.insort(fragments, (offset, payload), key=itemgetter(0))
        if offset == 0:
            queue.header = header
        kept = len(payload)
        size = len(header) + kept
        queue.meat += kept
        queue.held += size
        stats.held_bytes += size
        queue.ecn |= _ECN_BIT[tos & 3]
        if queue.max_size < size:
            queue.max_size = size
        if df and queue.max_df_size < size:
            queue.max_df_size = size
        if queue.header is not None and queue.last_in and queue.meat == queue.length:
            return self._reassemble(key, queue)
        # Held: _dropped(), inline.
        if stats.held_bytes > self.high_thresh:
            self._evict()
        stats.queues = len(queues)
        return None

    @staticmethod
    def _insert_inside(runs: list, offset: int, end: int) -> str:
        """File [offset, end), ending at or before the tail, into the runs (the rest of
        inet_frag_queue_insert()): a fragment filed out of order starts its own run even
        when it touches a neighbour, exactly as the kernel does (this decides
        "duplicate")."""
        index = bisect.bisect_right(runs, offset, key=itemgetter(0))
        # Only the run starting at or before offset, or the next one, can intersect.
        for run in runs[max(index - 1, 0):index + 1]:
            if end <= run[0] or offset >= run[1]:
                continue
            if offset >= run[0] and end <= run[1]:
                return _DUPLICATE
            return _OVERLAP
        runs.insert(index, [offset, end])
        return _OK

    def _reassemble(self, key: tuple, queue: _Queue) -> Optional[bytes]:
        length = self.length_field(queue)
        if length > IP_MAX_LEN:
            self.stats.oversized += 1
            return self._refuse(key)
        seen = queue.ecn
        # ip_frag_ecn_table: Not-ECT mixed with any ECT/CE codepoint drops the datagram.
        if seen & _NOT_ECT and seen & _ECT_ANY:
            return self._refuse(key)
        self._discard(key)
        self.stats.reasm_oks += 1
        self.stats.queues = len(self._queues)
        return self.rebuild(queue, 3 if seen & _CE else 0, length)

    # -- queue bookkeeping -------------------------------------------------------

    def _dropped(self) -> None:
        """The end of a fragment held or dropped alone: eviction over high_thresh, the
        gauges."""
        if self.stats.held_bytes > self.high_thresh:
            self._evict()
        self.stats.queues = len(self._queues)
        return None

    def _fail(self, key: tuple) -> None:
        """Discard the queue (inet_frag_kill + ReasmFails); the fragment is dropped."""
        self._discard(key)
        self.stats.reasm_fails += 1
        return None

    def _refuse(self, key: tuple) -> None:
        """_fail() for the fragment being filed, then the end of its filing."""
        self._fail(key)
        return self._dropped()

    def _discard(self, key: tuple) -> None:
        queue = self._queues.pop(key)
        del self._lru[key]
        self.stats.held_bytes -= queue.held

    def _evict(self) -> None:
        while self._lru and self.stats.held_bytes > self.low_thresh:
            key = next(iter(self._lru))
            self._discard(key)
            self.stats.evictions += 1
            self.stats.reasm_fails += 1

    def _update_gauges(self) -> None:
        self.stats.queues = len(self._queues)

    @staticmethod
    def joined(head: bytearray, queue: _Queue) -> bytes:
        """The rebuilt header followed by every payload held, in order, as one bytes."""
        parts = [head]
        parts.extend(map(_PAYLOAD, queue.fragments))
        return b"".join(parts)


class Defragmenter(FragmentQueues):
    """Holds IPv4 fragments until their datagram is complete."""

    def __init__(self, high_thresh: int = 4194304, low_thresh: int = 3145728,
                 timeout: float = 30.0) -> None:
        super().__init__(high_thresh, low_thresh, timeout)

    def feed(self, datagram: bytes, now: float, hook: int = PRE_ROUTING) -> Optional[bytes]:
        """The whole datagram when `datagram` completes one, the datagram itself if
        it is not a fragment, else None (held, or dropped)."""
        # ipv4_fragment_info()'s tests.
        if len(datagram) < HEADER_LEN or datagram[0] >> 4 != 4:
            return datagram
        vihl, _tos, tot_len, _ident, frag = _FIRST_FIELDS(datagram)
        ihl = (vihl & 0x0F) * 4
        if not frag & (IP_MF | IP_OFFSET) or ihl < 20 or tot_len < ihl or tot_len > len(datagram):
            return datagram             # not a fragment, or a header parse_ipv4() refuses
        return self.file(datagram, ihl, now, hook)

    def file(self, datagram: bytes, ihl: int, now: float, hook: int) -> Optional[bytes]:
        """feed() for a datagram it takes: a fragment, its header of `ihl` bytes, its total
        length within the datagram.  (The fast path's fragments come here straight: its
        tests are feed()'s, already made.)"""
        tos, tot_len, ident, frag, proto, addresses = _FRAGMENT_FIELDS(datagram)
        return self.queue_fragment((addresses, proto, ident, hook), datagram[:ihl],
                                   datagram[ihl:tot_len], (frag & IP_OFFSET) << 3,
                                   frag & IP_MF, tos, frag & IP_DF, now)

    non_final_mask = ~7     # non-final fragments carry multiples of 8 bytes

    def length_field(self, queue: _Queue) -> int:
        return len(queue.header) + queue.length          # the total length

    def rebuild(self, queue: _Queue, ecn: int, length_field: int) -> bytes:
        """ip_frag_reasm(): the first fragment's header over all the payload."""
        rebuilt = bytearray(queue.header)
        rebuilt[1] |= ecn
        _U16.pack_into(rebuilt, 2, length_field)
        _U16.pack_into(rebuilt, 6, IP_DF if queue.max_df_size == queue.max_size else 0)
        rebuilt[10] = rebuilt[11] = 0   # the checksum is over the header with it zeroed
        _U16.pack_into(rebuilt, 10, internet_checksum(rebuilt))
        return self.joined(rebuilt, queue)
