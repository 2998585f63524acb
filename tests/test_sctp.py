"""The SCTP tracker (engine/sctp.py, engine/sctp_tables.py, engine/parse_sctp.py) without FUSE.

The kernel comparison is in the stored scenarios sctp_association and sctp_checks
(tests/test_differential.py); these tests pin the table's shape, the parser's chunk checks,
the CRC at PREROUTING and the tracker's answers on a fake clock.
"""
from __future__ import annotations

import struct

import pytest

from engine.build import build_ipv4
from engine.crc32c import crc32c
from engine.hooks import LOCAL_OUT, PRE_ROUTING
from engine.parse import parse_ipv4
from engine.sctp import SctpTracker
from engine.sctp_tables import (ABORT, COOKIE_ACK, COOKIE_ECHO, DATA, HEARTBEAT_ACK, INIT,
                                INIT_ACK, IV, NONE, SHUTDOWN, SHUTDOWN_ACK, SHUTDOWN_COMPLETE,
                                STATE_NAMES, STATE_TIMEOUT_KNOB, TRANSITIONS, next_state)
from engine.entry import ORIGINAL, REPLY
from engine.knobs import KNOBS_BY_NAME
from enginehelp import T0, lines, make_engine

CLIENT, SERVER = "127.0.0.1", "127.0.0.2"
CLIENT_TAG, SERVER_TAG = 0x11111111, 0x22222222


def chunk(chunk_type: int, value: bytes = b"", flags: int = 0) -> bytes:
    raw = struct.pack("!BBH", chunk_type, flags, 4 + len(value)) + value
    return raw + b"\0" * (-len(raw) % 4)


def init(chunk_type: int, tag: int) -> bytes:
    return chunk(chunk_type, struct.pack("!IIHHI", tag, 65536, 10, 10, 1))


def sctp_datagram(direction: int, vtag: int, *chunks: bytes, crc_ok: bool = True) -> bytes:
    src, dst, sport, dport = ((CLIENT, SERVER, 45000, 6000) if direction == ORIGINAL
                              else (SERVER, CLIENT, 6000, 45000))
    body = struct.pack("!HHII", sport, dport, vtag, 0) + b"".join(chunks)
    crc = crc32c(body) ^ (0 if crc_ok else 1)
    return build_ipv4(src, dst, 132, body[:8] + struct.pack("<I", crc) + body[12:])


class Association:
    """One association fed to an engine at LOCAL_OUT, one packet per 10 ms of fake time."""

    def __init__(self, hook: int = LOCAL_OUT) -> None:
        self.eng = make_engine()
        self.t = T0
        self.hook = hook

    def send(self, direction: int, vtag: int, *chunks: bytes, **kw) -> str:
        self.t += 0.01
        return str(self.eng.feed_datagram(self.t, sctp_datagram(direction, vtag, *chunks, **kw),
                                          self.hook))

    def setup(self) -> list:
        return [self.send(ORIGINAL, 0, init(INIT, CLIENT_TAG)),
                self.send(REPLY, CLIENT_TAG, init(INIT_ACK, SERVER_TAG)),
                self.send(ORIGINAL, SERVER_TAG, chunk(COOKIE_ECHO, b"cookie")),
                self.send(REPLY, CLIENT_TAG, chunk(COOKIE_ACK))]

    def listing(self) -> list:
        return lines(self.eng, self.t)


# -- the table ------------------------------------------------------------------------------
def test_crc32c_check_value():
    """RFC 3720 B.4 / the usual CRC catalogue: CRC-32C of "123456789"."""
    assert crc32c(b"123456789") == 0xE3069283


def test_table_rows_cover_every_state_and_reply_never_opens():
    """Nine states per row (no HEARTBEAT_ACKED on 6.18); a reply-direction chunk never meets
    NONE, so that column is all IV; every cell is a state or IV."""
    assert len(STATE_NAMES) == 9 and len(STATE_TIMEOUT_KNOB) == 9
    for direction in (ORIGINAL, REPLY):
        for row in TRANSITIONS[direction].values():
            assert len(row) == 9 and all(0 <= cell <= IV for cell in row)
    assert all(row[NONE] == IV for row in TRANSITIONS[REPLY].values())
    assert all(name in KNOBS_BY_NAME for name in STATE_TIMEOUT_KNOB)


def test_chunks_without_a_row_keep_the_state():
    assert next_state(ORIGINAL, 4, DATA) == 4
    assert next_state(REPLY, 2, 3) == 2                  # SACK


# -- parsing ----------------------------------------------------------------------------------
def test_parse_reads_vtag_chunks_and_initiate_tag():
    pkt = parse_ipv4(sctp_datagram(ORIGINAL, 0, init(INIT, CLIENT_TAG)), LOCAL_OUT)
    assert (pkt.sport, pkt.dport, pkt.sctp.vtag) == (45000, 6000, 0)
    assert pkt.sctp.chunks == ((INIT, 0, CLIENT_TAG),) and pkt.sctp.chunks_ok


@pytest.mark.parametrize("chunks, why", [
    ((init(INIT, 1), chunk(DATA, b"x" * 12)), "INIT not alone"),
    ((chunk(DATA, b"x" * 12), chunk(COOKIE_ECHO, b"c")), "COOKIE ECHO not first"),
    ((struct.pack("!BBH", DATA, 0, 0),), "zero-length chunk"),
    ((), "no chunk at all"),
])
def test_parse_fails_the_basic_checks(chunks, why):
    pkt = parse_ipv4(sctp_datagram(ORIGINAL, 0, *chunks), LOCAL_OUT)
    assert not pkt.sctp.chunks_ok, why


def test_truncated_common_header_is_an_l4_error():
    pkt = parse_ipv4(build_ipv4(CLIENT, SERVER, 132, struct.pack("!HHI", 1, 2, 3)), LOCAL_OUT)
    assert pkt.l4_error == "truncated sctp header" and (pkt.sport, pkt.dport) == (1, 2)


def test_crc_is_checked_at_prerouting_only():
    good = Association(PRE_ROUTING)
    assert good.send(ORIGINAL, 0, init(INIT, CLIENT_TAG)) == "NEW"
    bad = Association(PRE_ROUTING)
    assert bad.send(ORIGINAL, 0, init(INIT, CLIENT_TAG), crc_ok=False) == "INVALID"
    assert bad.listing() == []
    bad.eng.knobs.set("checksum", 0)
    assert bad.send(ORIGINAL, 0, init(INIT, CLIENT_TAG), crc_ok=False) == "NEW"
    local = Association(LOCAL_OUT)
    assert local.send(ORIGINAL, 0, init(INIT, CLIENT_TAG), crc_ok=False) == "NEW"


# -- the tracker ----------------------------------------------------------------------------
def test_setup_assures_and_lists_like_the_kernel():
    a = Association()
    assert a.setup() == ["NEW", "ESTABLISHED reply", "ESTABLISHED", "ESTABLISHED reply"]
    (line,) = a.listing()
    assert line == ("ipv4     2 sctp     132 210 ESTABLISHED src=127.0.0.1 dst=127.0.0.2 "
                    "sport=45000 dport=6000 src=127.0.0.2 dst=127.0.0.1 sport=6000 dport=45000 "
                    "[ASSURED] mark=0 zone=0 use=2")


def test_first_init_lists_closed_with_its_timeout():
    a = Association()
    a.send(ORIGINAL, 0, init(INIT, CLIENT_TAG))
    (line,) = a.listing()
    assert " 132 10 CLOSED " in line and "[UNREPLIED]" in line


def test_wrong_vtag_is_invalid_and_changes_nothing():
    a = Association()
    a.setup()
    before = list(a.eng.tracker.entries())[0].l4[:]
    assert a.send(ORIGINAL, 0xBAD, chunk(DATA, b"x" * 12)) == "INVALID"
    assert a.send(ORIGINAL, 0xBAD, chunk(ABORT)) == "INVALID"
    assert list(a.eng.tracker.entries())[0].l4 == before
    assert a.send(ORIGINAL, SERVER_TAG, chunk(DATA, b"x" * 12)) == "ESTABLISHED"


@pytest.mark.parametrize("vtag, first", [
    (0, chunk(DATA, b"x" * 12)), (SERVER_TAG, chunk(COOKIE_ACK)), (SERVER_TAG, chunk(ABORT)),
    (SERVER_TAG, chunk(SHUTDOWN_COMPLETE)), (7, init(INIT, CLIENT_TAG))])
def test_packets_that_may_not_open_an_entry(vtag, first):
    a = Association()
    assert a.send(ORIGINAL, vtag, first) == "INVALID"
    assert a.listing() == []


def test_graceful_shutdown_ends_closed():
    a = Association()
    a.setup()
    assert a.send(ORIGINAL, SERVER_TAG, chunk(SHUTDOWN, b"\0\0\0\1")) == "ESTABLISHED"
    assert " SHUTDOWN_SENT " in a.listing()[0]
    a.send(REPLY, CLIENT_TAG, chunk(SHUTDOWN_ACK))
    assert " SHUTDOWN_ACK_SENT " in a.listing()[0]
    a.send(ORIGINAL, SERVER_TAG, chunk(SHUTDOWN_COMPLETE))
    assert " 132 10 CLOSED " in a.listing()[0]


def test_abort_with_t_bit_carries_the_peers_tag():
    a = Association()
    a.setup()
    assert a.send(REPLY, CLIENT_TAG, chunk(ABORT, flags=1)) == "INVALID"   # own tag, T set
    assert a.send(REPLY, SERVER_TAG, chunk(ABORT, flags=1)) == "ESTABLISHED reply"
    assert " CLOSED " in a.listing()[0]


def test_heartbeat_opens_a_secondary_path_established_by_its_ack():
    a = Association()
    assert a.send(ORIGINAL, 0x33, chunk(4, b"\0\1\0\x08info")) == "NEW"
    assert " HEARTBEAT_SENT " in a.listing()[0]
    assert a.send(REPLY, 0x44, chunk(HEARTBEAT_ACK, b"\0\1\0\x08info")) == "ESTABLISHED reply"
    assert " 210 ESTABLISHED " in a.listing()[0] and "[ASSURED]" in a.listing()[0]


def test_state_file_fields_are_checked():
    tracker = SctpTracker("linux")
    assert tracker.restore_l4([4, 1, 2, 0, 0, 0, 0], 0.0) == [4, 1, 2, 0, 0, 0, 0]
    for bad in ([9, 0, 0, 0, 0, 0, 0], [4, 0, 0, 2, 0, 0, 0], [4, 0, 0], "x"):
        with pytest.raises(ValueError):
            tracker.restore_l4(bad, 0.0)


def test_tutorial_tracks_sctp_as_generic():
    eng = make_engine("tutorial")
    eng.feed_datagram(T0, sctp_datagram(ORIGINAL, 0, chunk(DATA, b"x" * 12)), LOCAL_OUT)
    (line,) = lines(eng, T0, "net/ip_conntrack")
    assert line.startswith("unknown  132 600 ")


def test_state_file_round_trip_keeps_state_tags_and_flags():
    """export_entries() / import_entries() (--state-file): the association comes back in
    its state, with its tags, so the next packet is judged as before the save."""
    a = Association()
    a.setup()
    records = a.eng.tracker.export_entries(a.t)
    b = Association()
    b.t = a.t + 5
    assert b.eng.tracker.import_entries(records, a.t, b.t) == 1
    (line,) = b.listing()
    assert " 132 205 ESTABLISHED " in line and "[ASSURED]" in line
    assert b.send(ORIGINAL, 0xBAD, chunk(DATA, b"x" * 12)) == "INVALID"
    assert b.send(ORIGINAL, SERVER_TAG, chunk(DATA, b"x" * 12)) == "ESTABLISHED"
