"""pcapng files written from stored frames, one Interface Description Block per interface
name (as `dumpcap -i lo -i va` writes them): shared by the tests of `-i`/`-o` named by a
pcapng file, in replay (test_chains_pcapng.py) and on a mount (test_chains_pcapng_mount.py).
"""
from __future__ import annotations

import struct

SHB, IDB, EPB = 0x0A0D0D0A, 1, 6
OPT_IF_NAME, OPT_END = 2, 0


def _block(block_type: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    total = len(body) + 12
    return struct.pack("<II", block_type, total) + body + struct.pack("<I", total)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def write_pcapng(path, frames, interface_of, names: list[str]) -> None:
    """frames (CapturedFrame) as EPBs of interface interface_of(frame), a position in
    `names`, each name an IDB (all of the frames' link type, microsecond timestamps)."""
    linktype = frames[0].linktype
    out = [_block(SHB, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))]
    for name in names:
        out.append(_block(IDB, struct.pack("<HHI", linktype, 0, 0) +
                          _option(OPT_IF_NAME, name.encode()) + _option(OPT_END, b"")))
    for frame in frames:
        micros = round(frame.ts * 1_000_000)
        out.append(_block(EPB, struct.pack("<IIIII", interface_of(frame), micros >> 32,
                                           micros & 0xFFFFFFFF, len(frame.data),
                                           len(frame.data)) + frame.data))
    path.write_bytes(b"".join(out))
