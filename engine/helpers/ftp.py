"""The FTP helper (nf_conntrack_ftp.c): PORT / EPRT from the client, the 227 (PASV) and
229 (EPSV) replies from the server announce the data connection.

The kernel reads a command only when its segment starts just after a newline it has
seen: per direction it remembers the sequence numbers that follow the last two
segments ending in '\\n' (seq_aft_nl), so the first line of each direction is never
read, and a command split across segments is not read either.  A segment that begins
like a command but cannot be parsed (a partial or malformed match) is dropped -- the
helper's one packet-filtering act -- and files nothing.
"""
from __future__ import annotations

from typing import Callable, List, NamedTuple, Optional, Tuple

from ..entry import ORIGINAL, REPLY
from ..packet import IPPROTO_TCP
from .call import U16, U32, HelpCall, before

NUM_SEQ_TO_REMEMBER = 2
PARTIAL = -1            # find_pattern(): the pattern starts here but does not parse

# A parsed command: the address it names (None: the connection's own, as EPSV says
# nothing of it) and the port.
Command = Tuple[Optional[int], int]
GetNum = Callable[[bytes, int, int], Optional[Command]]   # (data, start, term) -> Command


def _numbers(data: bytes, pos: int, count: int, sep: int, term: Optional[int]) -> Optional[Tuple[List[int], int]]:
    """try_number(): `count` decimal numbers separated by `sep`, ended by `term` (None:
    any other character); (numbers, length) or None.  Numbers are not range checked:
    the kernel keeps u32 arithmetic and truncates where it stores them."""
    numbers = [0] * count
    i = 0
    start = pos
    while pos < len(data) and i < count:
        ch = data[pos]
        if 48 <= ch <= 57:
            numbers[i] = (numbers[i] * 10 + ch - 48) & U32
        elif ch == sep:
            i += 1
        else:
            if (term is None or ch == term) and i == count - 1:
                return numbers, pos - start
            return None
        pos += 1
    return None


def _address(numbers: List[int]) -> int:
    return ((numbers[0] << 24) | (numbers[1] << 16) | (numbers[2] << 8) | numbers[3]) & U32


def try_rfc959(data: bytes, pos: int, term: Optional[int]) -> Optional[Command]:
    """192,168,1,1,5,6"""
    got = _numbers(data, pos, 6, ord(","), term)
    if got is None:
        return None
    numbers, _ = got
    return _address(numbers), ((numbers[4] << 8) | numbers[5]) & U16


def try_rfc1123(data: bytes, pos: int, term: Optional[int]) -> Optional[Command]:
    """A 227 reply: the numbers start at the first digit, parentheses or not."""
    while pos < len(data) and not 48 <= data[pos] <= 57:
        pos += 1
    if pos == len(data):
        return None
    return try_rfc959(data, pos, None)


def _port_until(data: bytes, pos: int, delim: int) -> Optional[int]:
    """get_port(): digits up to `delim`; 0 or anything else is no port."""
    port = 0
    while pos < len(data):
        ch = data[pos]
        if ch == delim:
            return port or None
        if not 48 <= ch <= 57:
            return None
        port = (port * 10 + ch - 48) & U16
        pos += 1
    return None


def _delimiter_ok(delim: int) -> bool:
    return not 48 <= delim <= 57 and 33 <= delim <= 126


def try_eprt(data: bytes, pos: int, term: Optional[int]) -> Optional[Command]:
    """|1|132.235.1.2|6275|  (IPv4 only: the engine's helpers run on IPv4 entries)."""
    if len(data) - pos <= 3:
        return None
    delim = data[pos]
    if not _delimiter_ok(delim) or data[pos + 2] != delim or data[pos + 1] != ord("1"):
        return None
    got = _numbers(data, pos + 3, 4, ord("."), delim)
    if got is None or got[1] == 0:
        return None
    numbers, length = got
    port = _port_until(data, pos + 3 + length + 1, delim)
    return None if port is None else (_address(numbers), port)


def try_epsv_response(data: bytes, pos: int, term: Optional[int]) -> Optional[Command]:
    """|||6446|"""
    if len(data) - pos <= 3:
        return None
    delim = data[pos]
    if not _delimiter_ok(delim) or data[pos + 1] != delim or data[pos + 2] != delim:
        return None
    port = _port_until(data, pos + 3, delim)
    return None if port is None else (None, port)


class Search(NamedTuple):
    pattern: bytes
    skip: Optional[int]          # skip up to and past this character first
    term: Optional[int]          # what must end the numbers
    getnum: GetNum


# The kernel's search[][] table: what each direction may say.
SEARCH = {
    ORIGINAL: (Search(b"PORT", ord(" "), ord("\r"), try_rfc959),
               Search(b"EPRT", ord(" "), ord("\r"), try_eprt)),
    REPLY: (Search(b"227 ", None, None, try_rfc1123),
            Search(b"229 ", ord("("), ord(")"), try_epsv_response)),
}
# 2.6.18's ip_conntrack_ftp read a 227 reply only inside parentheses (the RFC 1123 scan for
# the first digit came later, in nf_conntrack_ftp).
SEARCH_2_6 = {
    ORIGINAL: SEARCH[ORIGINAL],
    REPLY: (Search(b"227 ", ord("("), ord(")"), try_rfc959), SEARCH[REPLY][1]),
}


def find_pattern(data: bytes, search: Search):
    """1 and the command, 0 (not this command) or PARTIAL, as find_pattern() decides."""
    plen = len(search.pattern)
    if len(data) <= plen:
        return (PARTIAL, None) if search.pattern.lower().startswith(data.lower()) else (0, None)
    if data[:plen].lower() != search.pattern.lower():
        return 0, None
    pos = plen
    if search.skip is not None:
        while data[pos] != search.skip:
            if pos == len(data) - 1:
                return PARTIAL, None
            pos += 1
        pos += 1
    command = search.getnum(data, pos, search.term)
    return (PARTIAL, None) if command is None else (1, command)


def parse(data: bytes, direction: int, modern: bool = True) -> Tuple[int, Optional[Command]]:
    """Try every command of the direction on one segment's payload: (1, command),
    (0, None) for none, (PARTIAL, None) for one that does not parse."""
    for search in (SEARCH if modern else SEARCH_2_6)[direction]:
        found, command = find_pattern(data, search)
        if found:
            return found, command
    return 0, None


def new_state() -> Tuple[List[int], List[int]]:
    """seq_aft_nl per direction: sequence numbers just after a segment ending in \\n."""
    return [], []


def _update_nl_seq(remembered: List[int], nl_seq: int) -> None:
    if nl_seq in remembered:
        return
    if len(remembered) < NUM_SEQ_TO_REMEMBER:
        remembered.append(nl_seq)
        return
    oldest = 0 if before(remembered[0], remembered[1]) else 1
    if before(remembered[oldest], nl_seq):
        remembered[oldest] = nl_seq


def help(call: HelpCall) -> bool:
    """One segment of the control connection; False: drop it."""
    pkt = call.pkt
    if not call.established or pkt.tcp is None:
        return True
    data = pkt.payload
    if not data:
        return True
    direction = call.direction
    remembered = call.state[direction]
    seq = pkt.tcp.seq
    accept = True
    if seq in remembered:
        found, command = parse(data, direction, call.modern)
        if found == PARTIAL:
            return False                 # `out`: the newline is not remembered either
        if found:
            accept = _expect(call, command)
    if data[-1:] == b"\n":
        _update_nl_seq(remembered, (seq + len(data)) & U32)
    return accept


def _expect(call: HelpCall, command: Command) -> bool:
    """File the data connection's expectation; False when the table refuses it."""
    direction = call.direction
    here = call.tuple_of(direction)
    there = call.tuple_of(1 - direction)
    address, port = command
    if address is not None and address != here[0]:
        return True                      # names another host: not recorded (loose=0)
    return call.expect(there[0], there[1], IPPROTO_TCP, port) is None
