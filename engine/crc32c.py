"""CRC32c (Castagnoli), the checksum of SCTP packets (RFC 4960 appendix B).

Table-driven, reflected polynomial 0x82F63B78; only PREROUTING packets with the checksum
knob on pay for it, as only those are verified (engine/parse.py).
"""
from __future__ import annotations


def _table() -> tuple:
    rows = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        rows.append(crc)
    return tuple(rows)


_TABLE = _table()


def crc32c(data: bytes) -> int:
    """The CRC32c of data (crc32c(b"123456789") == 0xE3069283)."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
