"""IPv6 reassembly in front of conntrack (nf_defrag_ipv6), modelled on Linux
nf_conntrack_reasm.c; the queues themselves (overlap, duplicates, expiry, eviction) are
engine/defrag.py's FragmentQueues, shared with IPv4.

What is IPv6's own, per kernel source (nf_ct_frag6_gather(), nf_ct_frag6_queue(),
nf_ct_frag6_reasm(), find_prev_fhdr(), ipv6frag_thdr_truncated()):

- A datagram is a fragment if a fragment header follows the fixed header and any
  hop-by-hop, routing, destination options or AH headers; otherwise (another header, "no
  next header", a chain cut short, a jumbogram) it passes untouched.  An atomic fragment
  (offset 0, M clear) is queued and completes at once (RFC 6946): it passes, without its
  fragment header.
- Queues are keyed by (source, destination, identification) plus the defrag "user": the
  PREROUTING and OUTPUT hooks reassemble in separate queues.  A queue lives
  nf_conntrack_frag6_timeout seconds from its first fragment.
- Overlap (RFC 5722): a fragment overlapping held data discards the whole datagram, those
  fragments still to come included (they open a new queue that never completes); a
  fragment inside one run of held data is a duplicate, dropped alone.
- A non-final fragment whose length is not a multiple of 8 discards its queue and is let
  through unreassembled (-EPROTO: conntrack then sees the fragment; see
  engine/parse_ipv6.py).  So is a first fragment that does not hold the whole upper-layer
  header (RFC 8200 4.5).  A fragment ending beyond 65535 is dropped.
- The reassembled datagram keeps the first fragment's unfragmentable part with the
  fragment header taken out (the header before it names the fragment's next header),
  payload length fixed, ECN bits merged as for IPv4.

Chosen where the kernel is not emulated: memory is counted as for IPv4 (header and
payload bytes held); the receiving interface is not part of the key.
"""
from __future__ import annotations

import struct
from typing import Optional

from . import ipv6
from .defrag import FragmentQueues, _Queue
from .hooks import PRE_ROUTING
from .packet import IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP
from .parse_ipv6 import (EXTENSION_HEADERS, FRAGMENT, FRAGMENT_HEADER_LEN, FRAGMENT_OFFSET_MASK,
                         MORE_FRAGMENTS, extension_length, skip_extensions)

FRAGMENT_HEADER = struct.Struct("!BBHI")     # next header, reserved, offset|M, identification
NEXT_HEADER_AT = 6                           # in the fixed header
IPV6_MAXPLEN = 65535
# The upper-layer header a first fragment must hold whole (ipv6frag_thdr_truncated()).
UPPER_HEADER_LEN = {IPPROTO_TCP: 20, IPPROTO_UDP: 8, IPPROTO_ICMPV6: 4}


def fragment_header_at(datagram: bytes, end: int) -> Optional[tuple[int, int]]:
    """(offset of the fragment header, offset of the next-header byte naming it), or None
    when the datagram is not a fragment (find_prev_fhdr())."""
    kind, pos, prev_at = datagram[NEXT_HEADER_AT], ipv6.HEADER_LEN, NEXT_HEADER_AT
    while kind != FRAGMENT:
        if kind not in EXTENSION_HEADERS or end - pos < 2:
            return None                   # an upper layer, "no next header", or cut short
        prev_at = pos
        length = extension_length(kind, datagram[pos + 1])
        kind = datagram[pos]
        pos += length
    if pos > end:
        return None
    return pos, prev_at


def upper_header_truncated(datagram: bytes, after_fragment: int, kind: int, end: int) -> bool:
    """A first fragment without its whole upper-layer header (ipv6frag_thdr_truncated())."""
    skipped = skip_extensions(datagram, after_fragment, kind, end)
    if skipped is None:
        return False
    pos, kind = skipped
    return pos + UPPER_HEADER_LEN.get(kind, 1) > end


class Defragmenter6(FragmentQueues):
    """Holds IPv6 fragments until their datagram is complete."""

    def __init__(self, high_thresh: int = 4194304, low_thresh: int = 3145728,
                 timeout: float = 60.0) -> None:
        super().__init__(high_thresh, low_thresh, timeout)
        self.passed_unreassembled = 0    # fragments let through as they are (-EPROTO)

    def feed(self, datagram: bytes, now: float, hook: int = PRE_ROUTING) -> Optional[bytes]:
        """The whole datagram when `datagram` completes one; the datagram itself if it is
        not a fragment (or one the kernel lets through as it is); else None (held, or
        dropped)."""
        if len(datagram) < ipv6.HEADER_LEN:
            return datagram                # ipv6_rcv's checks (the parser) refuse it
        kind = datagram[NEXT_HEADER_AT]
        if kind not in EXTENSION_HEADERS:
            # An upper layer right after the fixed header (every IPv6 datagram but a few):
            # fragment_header_at() would find none, whatever the lengths say.
            return datagram
        payload_len = int.from_bytes(datagram[4:6], "big")
        end = ipv6.HEADER_LEN + payload_len
        if payload_len == 0 or end > len(datagram):
            return datagram                # a jumbogram, or truncated: the parser decides
        found = fragment_header_at(datagram, end)
        if found is None:
            return datagram
        at, prev_at = found
        if end - at < FRAGMENT_HEADER_LEN:
            return None                    # pskb_may_pull() fails: -ENOMEM, dropped
        kind, _reserved, offset_more, ident = FRAGMENT_HEADER.unpack_from(datagram, at)
        offset, more = offset_more & FRAGMENT_OFFSET_MASK, bool(offset_more & MORE_FRAGMENTS)
        data_at = at + FRAGMENT_HEADER_LEN
        if offset == 0 and upper_header_truncated(datagram, data_at, kind, end):
            return datagram                # let through; conntrack finds it INVALID
        fragment_end = offset + end - data_at
        if fragment_end > IPV6_MAXPLEN:
            return None
        key = (int.from_bytes(datagram[8:24], "big"), int.from_bytes(datagram[24:40], "big"),
               ident, hook)
        if more and fragment_end & 7:
            # "not rounded to 8 bytes": the queue dies, the fragment goes on as it is.
            if key in self._queues:
                self._fail(key)
                self._update_gauges()
            self.passed_unreassembled += 1
            return datagram
        header = bytearray(datagram[:at])
        header[prev_at] = kind             # the fragment header is taken out
        traffic_class = (int.from_bytes(datagram[0:2], "big") >> 4) & 0xFF
        return self.queue_fragment(key, bytes(header), datagram[data_at:end], offset, more,
                                   traffic_class, False, now)

    def length_field(self, queue: _Queue) -> int:
        return len(queue.header) - ipv6.HEADER_LEN + queue.length    # the payload length

    def rebuild(self, queue: _Queue, ecn: int, length_field: int) -> bytes:
        """nf_ct_frag6_reasm(): the first fragment's unfragmentable part over all the data."""
        rebuilt = bytearray(queue.header)
        rebuilt[4:6] = length_field.to_bytes(2, "big")
        rebuilt[1] |= ecn << 4             # the traffic class's ECN bits (ipv6_change_dsfield)
        return self.joined(rebuilt, queue)
