"""The TFTP helper (nf_conntrack_tftp.c): a read or write request to the server port
expects the server's answer, which comes from a new port of the server's choosing."""
from __future__ import annotations

from ..entry import REPLY
from ..packet import IPPROTO_UDP
from .call import HelpCall

OPCODE_READ, OPCODE_WRITE = 1, 2
REQUESTS = frozenset((OPCODE_READ, OPCODE_WRITE))


def help(call: HelpCall) -> bool:
    """Every packet of the entry, whatever its ctinfo (the kernel's tftp_help asks none)."""
    data = call.pkt.payload
    if len(data) < 2 or (data[0] << 8 | data[1]) not in REQUESTS:
        return True
    # From the reply tuple's source (the server, any port) to its destination port.
    src, dst, _proto, _sport, dport = call.tuple_of(REPLY)
    return call.expect(src, dst, IPPROTO_UDP, dport) is None
