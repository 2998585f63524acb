"""The table: limit and early drop (spec §7.2), expiry cost, stat rendering (spec §2)."""
from engine.build import build_ethernet, build_ipv4, build_udp_datagram
from engine.linklayer import LINKTYPE_ETHERNET
import engine.tracker
from engine.ctstate import CtState
from engine.entry import Entry

from enginehelp import T0, lines, make_engine, udp, view_text


def _assure(eng, t, sport):
    """A UDP flow replied to and refreshed after 2 s: ASSURED in both profiles."""
    udp(eng, t, "10.0.0.1", "10.0.0.2", sport, 53)
    udp(eng, t + 0.01, "10.0.0.2", "10.0.0.1", 53, sport)
    udp(eng, t + 2.5, "10.0.0.1", "10.0.0.2", sport, 53)


def test_full_table_of_assured_entries_refuses_new_ones_and_counts_drop():
    """The tutorial: ASSURED entries "will not be erased if we reach the maximum"."""
    for profile in ("linux", "tutorial"):
        eng = make_engine(profile, max_entries=4, buckets=1)
        eng.knobs.set("max", 4)
        for port in range(4):
            _assure(eng, T0, 1000 + port)
        v = udp(eng, T0 + 3, "10.0.0.9", "10.0.0.2", 5000, 53)
        assert v.state == CtState.INVALID
        assert eng.count == 4 and eng.tracker.stats["drop"] == 1
        assert all("[ASSURED]" in l for l in lines(eng, T0 + 3))


def test_linux_early_drop_evicts_every_unassured_entry_of_the_bucket():
    """spec §7.2 modern: every non-ASSURED entry of the first bucket that has any."""
    eng = make_engine("linux", buckets=1)
    eng.knobs.set("max", 4)
    _assure(eng, T0, 1000)
    for port in range(3):
        udp(eng, T0 + 3, "10.0.0.1", "10.0.0.3", 2000 + port, 9)
    assert udp(eng, T0 + 4, "10.0.0.1", "10.0.0.3", 3000, 9).state == CtState.NEW
    assert eng.count == 2 and eng.tracker.stats["early_drop"] == 3


def test_tutorial_early_drop_evicts_the_oldest_unassured_entry():
    """spec §7.2 2.6-ipct: the oldest non-ASSURED entry of that chain, one entry."""
    eng = make_engine("tutorial", buckets=1)
    eng.knobs.set("max", 3)
    for port in range(3):
        udp(eng, T0 + port, "10.0.0.1", "10.0.0.3", 2000 + port, 9)
    udp(eng, T0 + 4, "10.0.0.1", "10.0.0.3", 3000, 9)
    ports = sorted(int(l.split("sport=")[1].split()[0]) for l in lines(eng, T0 + 4, "net/ip_conntrack"))
    assert ports == [2001, 2002, 3000] and eng.tracker.stats["early_drop"] == 1


def test_lowering_max_applies_to_the_next_new_connection():
    eng = make_engine("linux", buckets=1)
    for port in range(5):
        udp(eng, T0, "10.0.0.1", "10.0.0.3", 2000 + port, 9)
    assert eng.knobs.write_text("max", b"3\n") == 2
    udp(eng, T0 + 1, "10.0.0.1", "10.0.0.3", 3000, 9)
    assert eng.count == 1 and eng.tracker.stats["early_drop"] == 5


def test_max_zero_means_no_limit():
    eng = make_engine("linux", buckets=1)
    eng.knobs.set("max", 0)
    for port in range(50):
        udp(eng, T0, "10.0.0.1", "10.0.0.3", 2000 + port, 9)
    assert eng.count == 50


def test_expiry_touches_only_what_expires(monkeypatch):
    """An expiry pass looks at the entries that are due and no other (the timer wheel):
    nothing with nothing due, the due ones when they are due -- never the whole table."""
    class CountedEntry(Entry):
        """An Entry counting every read of its expiry time."""
        __slots__ = ("_expires",)
        reads = 0

        @property
        def expires(self):
            CountedEntry.reads += 1
            return self._expires

        @expires.setter
        def expires(self, value):
            self._expires = value
    monkeypatch.setattr(engine.tracker, "Entry", CountedEntry)
    eng = make_engine("linux")
    for port in range(5000):
        udp(eng, T0, "10.0.0.1", "10.0.0.3", port, 9)
    CountedEntry.reads = 0
    assert eng.tracker.expire(T0 + 29) == 0
    assert CountedEntry.reads == 0
    udp(eng, T0 + 29, "10.0.0.1", "10.0.0.3", 7, 9)        # refreshed: lives to T0+59
    CountedEntry.reads = 0
    assert eng.tracker.expire(T0 + 30) == 4999
    # The due ones, twice each: the wheel orders the current second by expiry, then the
    # tracker checks it.
    assert CountedEntry.reads <= 2 * 5000 + 10
    CountedEntry.reads = 0
    assert eng.tracker.expire(T0 + 58) == 0 and CountedEntry.reads == 0
    assert eng.count == 1 and eng.tracker.expire(T0 + 59) == 1


def test_stat_file_formats_match_the_kernel_layout():
    """spec §2: header spacing, %08x cells, one row per CPU, 2.6 rows end with a space."""
    eng = make_engine("linux", ncpu=2)
    udp(eng, T0, "127.0.0.1", "127.0.0.1", 1, 2)
    eng.feed_datagram(T0, build_ipv4("127.0.0.1", "127.0.0.1", 17, b"\x00\x01"), 3)  # invalid
    modern = view_text(eng, "net/stat/nf_conntrack", T0).splitlines()
    assert modern[0] == ("entries  clashres found new invalid ignore delete chainlength insert "
                         "insert_failed drop early_drop icmp_error  expect_new expect_create "
                         "expect_delete search_restart")
    assert modern[1] == ("00000001  00000000 00000000 00000000 00000001 00000000 00000000 "
                         "00000000 00000000 00000000 00000000 00000000 00000000  00000000 "
                         "00000000 00000000 00000000")
    assert modern[2].startswith("00000001  00000000 00000000 00000000 00000000") and len(modern) == 3
    old = view_text(eng, "net/stat/ip_conntrack", T0).splitlines()
    assert old[0] == ("entries  searched found new invalid ignore delete delete_list insert "
                      "insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete")
    assert old[1].endswith(" ") and old[1].startswith("00000001  00000000 00000000 00000001 00000001")


def test_expiry_in_slices_files_a_full_bucket_again_a_slice_at_a_time():
    """A bucket holding every entry, all refreshed since they were filed (the server
    shape's SYN_RECV filings), is looked at `budget` filings per expire_some() call; the
    entries that did expire go, the others are filed at their new time; what a slice
    leaves stays due, and a packet's expire() finishes it."""
    eng = make_engine("linux")
    for port in range(1000):
        udp(eng, T0, "10.0.0.1", "10.0.0.3", 2000 + port, 9)       # filed at T0 + 30
    for port in range(900):
        udp(eng, T0 + 29, "10.0.0.1", "10.0.0.3", 2000 + port, 9)  # now due at T0 + 59
    tracker = eng.tracker
    slices = 1
    while not tracker.expire_some(T0 + 30, 64):
        slices += 1
        assert tracker.timers.next_due <= T0 + 30      # the rest is still due
    assert slices == 16 and eng.count == 900           # 1000 filings, 64 a slice
    assert tracker.expire(T0 + 58) == 0 and tracker.expire(T0 + 59) == 900
    # Half a pass, then a packet's expire() (process() calls it when something is due).
    for port in range(10):
        udp(eng, T0 + 60, "10.0.0.1", "10.0.0.3", 3000 + port, 9)      # due at T0 + 90
    for port in range(5):
        udp(eng, T0 + 89, "10.0.0.1", "10.0.0.3", 3000 + port, 9)      # refreshed
    assert not tracker.expire_some(T0 + 91, 4)
    tracker.expire(T0 + 91)
    assert eng.count == 5 and tracker.timers.next_due > T0 + 91
    assert tracker.expire_some(T0 + 91, 4)             # nothing left: done at once
    assert tracker.expire(T0 + 119) == 5


def test_each_live_entry_is_in_the_chain_of_its_original_key():
    """Insertion and removal keep every live entry in exactly the hash chain that
    early drop searches for its original key (ConnTable.bucket()), and no other: UDP
    flows, many per chain, made by the fast path and the general path, some of them
    expired and removed."""
    eng = make_engine("linux", buckets=7)
    fast = eng.fast_path()
    for port in range(60):
        frame = build_ethernet(build_udp_datagram("10.0.0.1", "10.0.0.2", 1000 + port, 53,
                                                  b"q"))
        if port % 2:
            assert fast(T0 + port, LINKTYPE_ETHERNET, frame) is not None
        else:
            eng.feed_frame(T0 + port, LINKTYPE_ETHERNET, frame)
    eng.advance(T0 + 60 + 30 - 20)          # the first flows' 30 s ran out
    conns = eng.tracker.conns
    live = list(conns.entries())
    assert 10 < len(live) < 60
    chained = {bucket: list(conns.chain(bucket)) for bucket in range(conns.buckets)}
    assert sorted(id(entry) for chain in chained.values() for entry in chain) == sorted(
        id(entry) for entry in live)
    assert all(conns.bucket(entry.orig) == bucket
               for bucket, chain in chained.items() for entry in chain)
