"""--state-file: the table survives a restart of the daemon (DESIGN.md, "Where it goes
beyond the kernel": "the table and the knobs survive a restart of the daemon").

Engine level: export_state(T) then import_state(.., T+5) in a fresh Engine must give the
listing the original shows at T+5, line for line, and the same classification of the next
packets (TCP window state, UDP stream rule, ICMP request count, GRE timeouts all restored).
Mounted: a mount that is SIGTERMed saves its table; a mount on the same state file with no
traffic shows the same entries.
"""
from __future__ import annotations

import json
import re
import signal
import time

import pytest

from engine.build import build_ipv4, build_tcp_datagram
from engine.ctstate import CtState
from engine.hooks import LOCAL_OUT
from engine.tcp_window import STATE_FIELD
from engine.packet import ACK, PSH, SYN
from enginehelp import T0, icmp, lines, make_engine, udp, view_text

C_ADDR, S_ADDR = "10.0.0.1", "10.0.0.2"
C_SEQ, S_SEQ = 1000, 5000
PROFILES = ["linux", "tutorial"]
EXTRAS = {"acct": 1, "timestamp": 1}


def tcp(eng, t, src, dst, sport, dport, flags, seq, ack=0, window=8000, payload=b""):
    datagram = build_tcp_datagram(src, dst, sport, dport, flags=flags, seq=seq, ack=ack,
                                  window=window, payload=payload)
    return eng.feed_datagram(t, datagram, LOCAL_OUT)


def gre(eng, t, src, dst):
    return eng.feed_datagram(t, build_ipv4(src, dst, 47, b"\x00\x00\x08\x00"), LOCAL_OUT)


def populate(eng) -> None:
    """One of each: TCP established (small known windows), an unreplied SYN, UDP assured,
    an ICMP echo outstanding, a GRE (linux) / generic (tutorial) flow with a reply."""
    tcp(eng, T0, C_ADDR, S_ADDR, 40000, 80, SYN, C_SEQ)
    tcp(eng, T0, S_ADDR, C_ADDR, 80, 40000, SYN | ACK, S_SEQ, C_SEQ + 1, window=4000)
    tcp(eng, T0, C_ADDR, S_ADDR, 40000, 80, ACK, C_SEQ + 1, S_SEQ + 1)
    tcp(eng, T0 + 1, C_ADDR, S_ADDR, 40001, 22, SYN, 777)
    udp(eng, T0, C_ADDR, S_ADDR, 5353, 53)
    udp(eng, T0 + 0.5, S_ADDR, C_ADDR, 53, 5353)
    udp(eng, T0 + 3, C_ADDR, S_ADDR, 5353, 53)       # > 2 s later: stream, ASSURED
    icmp(eng, T0 + 2, C_ADDR, S_ADDR, 8, ident=7, seq=1)
    gre(eng, T0 + 2, C_ADDR, S_ADDR)
    gre(eng, T0 + 3, S_ADDR, C_ADDR)


def restored(profile: str, saved_at: float, restored_at: float, **overrides):
    original = make_engine(profile, knobs_overrides=dict(EXTRAS, **overrides))
    populate(original)
    state = json.loads(json.dumps(original.export_state(saved_at)))   # through real JSON
    fresh = make_engine(profile, knobs_overrides=dict(EXTRAS, **overrides))
    count = fresh.import_state(state, restored_at)
    return original, fresh, count


@pytest.mark.parametrize("profile", PROFILES)
def test_restored_listing_equals_the_original_five_seconds_later(profile):
    """Each entry keeps tuple, status, state column, seconds left (counted from the save),
    counters and delta-time: the listing of the restored engine at T+5 is the original's."""
    saved_at = T0 + 10
    original, fresh, count = restored(profile, saved_at, saved_at + 5)
    assert count == original.count == 5
    assert fresh.count == 5
    for view in ("net/nf_conntrack", "net/ip_conntrack"):
        before = lines(original, saved_at + 5, view)
        assert lines(fresh, saved_at + 5, view) == before
        assert len(before) == 5
    listing = "\n".join(lines(fresh, saved_at + 5))
    assert "ESTABLISHED" in listing and "SYN_SENT" in listing and "[ASSURED]" in listing
    assert "packets=" in listing and "delta-time=" in listing


@pytest.mark.parametrize("profile", PROFILES)
def test_restored_tcp_window_state_classifies_next_segments_like_the_original(profile):
    """§4.7: the window bounds survive: in-window data is ESTABLISHED in both engines, data
    far beyond the receiver's window (check I) INVALID in both."""
    now = T0 + 15
    original, fresh, _ = restored(profile, T0 + 10, now)
    for eng in (original, fresh):
        ok = tcp(eng, now, C_ADDR, S_ADDR, 40000, 80, PSH | ACK, C_SEQ + 1, S_SEQ + 1,
                 payload=b"x" * 100)
        bad = tcp(eng, now, C_ADDR, S_ADDR, 40000, 80, PSH | ACK, C_SEQ + 100_000,
                  S_SEQ + 1, payload=b"x" * 10)
        assert ok.state == CtState.ESTABLISHED
        assert bad.state == CtState.INVALID
        # The unreplied SYN's answer completes its handshake in both.
        assert tcp(eng, now, S_ADDR, C_ADDR, 22, 40001, SYN | ACK, 9000, 778).reply
    assert lines(fresh, now) == lines(original, now)


def test_restored_udp_and_icmp_state_answer_like_the_original():
    """tutorial ICMP: the echo reply answers the one outstanding request and deletes the
    entry in both (spec §5.2); UDP stays ASSURED with the stream timeout (spec §5.1)."""
    now = T0 + 15
    original, fresh, _ = restored("tutorial", T0 + 10, now)
    for eng in (original, fresh):
        assert icmp(eng, now, S_ADDR, C_ADDR, 0, ident=7, seq=1).state == CtState.ESTABLISHED
        assert eng.count == 4
        udp(eng, now, C_ADDR, S_ADDR, 5353, 53)
    assert lines(fresh, now) == lines(original, now)
    udp_line = [line for line in lines(fresh, now) if line.startswith("ipv4     2 udp")][0]
    assert int(udp_line.split()[4]) == 180 and "[ASSURED]" in udp_line


def test_restored_udp_keeps_the_time_of_its_first_packet():
    """linux §5.1: a replied UDP flow turns stream (ASSURED, udp_timeout_stream) only more
    than 2 s after its first packet; the restored entry counts from that same packet."""
    original = make_engine("linux")
    udp(original, T0 + 9, C_ADDR, S_ADDR, 7000, 53)
    udp(original, T0 + 9.5, S_ADDR, C_ADDR, 53, 7000)
    fresh = make_engine("linux")
    assert fresh.import_state(json.loads(json.dumps(original.export_state(T0 + 10))),
                              T0 + 10.5) == 1
    for eng in (original, fresh):
        udp(eng, T0 + 10.5, C_ADDR, S_ADDR, 7000, 53)          # 1.5 s after the first
        assert "[ASSURED]" not in lines(eng, T0 + 10.5)[0]
        udp(eng, T0 + 11.5, C_ADDR, S_ADDR, 7000, 53)          # 2.5 s after the first
        assert "[ASSURED]" in lines(eng, T0 + 11.5)[0]
    assert lines(fresh, T0 + 11.5) == lines(original, T0 + 11.5)


def test_entries_whose_time_ran_out_while_down_are_not_restored():
    """Down for 200 s: the unreplied SYN (120 s), the UDP stream (180 s from T0+3), the
    ICMP echo (30 s) and GRE (180 s from T0+3) ran out; only the established TCP is back."""
    saved_at = T0 + 10
    back_at = saved_at + 200
    original, fresh, count = restored("linux", saved_at, back_at)
    original.advance(back_at)
    assert count == original.count == fresh.count == 1
    assert lines(fresh, back_at) == lines(original, back_at)
    assert "ESTABLISHED" in lines(fresh, back_at)[0]


def test_downtime_counts_against_the_restored_timers():
    """Time passes while the daemon is down: the unreplied SYN (SYN_SENT, 120 s from its
    packet at T0+1) still expires at T0+121 when restored at T0+110, not 111 s later."""
    back_at = T0 + 110
    _, fresh, _ = restored("linux", T0 + 10, back_at)
    syn_line = [line for line in lines(fresh, back_at) if "SYN_SENT" in line][0]
    assert int(syn_line.split()[4]) == 11
    fresh.advance(T0 + 120.5)
    assert any("SYN_SENT" in line for line in lines(fresh, T0 + 120.5))
    fresh.advance(T0 + 121)
    assert not any("SYN_SENT" in line for line in lines(fresh, T0 + 121))


def test_full_table_restores_everything_above_a_lower_max():
    """The table limit is not applied on import (spec silent: a restore is not new traffic)."""
    original = make_engine("linux")
    for port in range(10):
        udp(original, T0, C_ADDR, S_ADDR, 1000 + port, 53)
    small = make_engine("linux", max_entries=3)
    assert small.import_state(original.export_state(T0), T0) == 10
    assert small.count == 10 and small.knobs["count"] == 10
    stat = view_text(small, "net/stat/nf_conntrack", T0).splitlines()
    assert int(stat[1].split()[0], 16) == 10          # the entries column


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s.update(version=99), "version 99 is not supported"),
    (lambda s: s.update(profile="tutorial"), "'tutorial' profile"),
    (lambda s: s.pop("format"), "not a procfs-ct state file"),
    (lambda s: s.update(entries={}), "entries: not a list"),
    (lambda s: s["entries"][0].pop("left"), "table entry 0: no 'left' field"),
    (lambda s: s["entries"][0].update(tuple=[1, 2]), "table entry 0: tuple: not a list of 5"),
    (lambda s: s["entries"][1].update(l4=[1] * 3), "table entry 1: l4: not a list of 24"),
    (lambda s: s["entries"][1].update(status=-1), "table entry 1: status"),
    (lambda s: s["entries"][2].update(left=float("inf")), "table entry 2: left: inf is not"),
    (lambda s: s.update(saved_at="yesterday"), "saved_at: 'yesterday' is not a finite number"),
    # Poisoned values a running engine could never have saved: each refused by name.
    (lambda s: s["entries"][0]["l4"].__setitem__(STATE_FIELD, 200),
     "table entry 0: l4: TCP state 200 does not exist"),
    (lambda s: s["entries"][2].update(left=1e300), "table entry 2: left: 1e+300 is not"),
    (lambda s: s["entries"][2].update(left=-1), "table entry 2: left: -1 is not"),
    (lambda s: s["entries"][2].update(status=0x100), "table entry 2: status: 0x100 has bits"),
    (lambda s: s["entries"][2].update(age=float("nan")), "table entry 2: age: nan is not"),
    (lambda s: s["entries"][2].update(l4=True), "table entry 2: l4: True is not a number"),
    (lambda s: s["entries"][3].update(l4=True), "table entry 3: l4: True is not an unsigned"),
    (lambda s: s["entries"][4].update(l4=[30, 10**9]), "table entry 4: l4: GRE timeouts"),
    (lambda s: s["entries"][4].update(tuple=[1, 2, 47, 70000, 0]),
     "table entry 4: tuple: 70000 is not an unsigned 16-bit"),
    (lambda s: s["entries"][4].update(extra=1), "table entry 4: unknown field 'extra'"),
])
def test_bad_states_are_refused_with_one_line_and_change_nothing(mutate, message):
    """A malformed or foreign state raises a one-line ValueError before any entry goes in."""
    original = make_engine("linux")
    populate(original)
    state = original.export_state(T0 + 10)
    mutate(state)
    fresh = make_engine("linux")
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        fresh.import_state(state, T0 + 10)
    assert "\n" not in str(caught.value)
    assert fresh.count == 0


# -- the state file module -------------------------------------------------------------------
def saved_file(tmp_path, profile="linux", **knobs):
    """A good state file of a populated engine (saved at T0 + 10) and its document."""
    from procfs_ct import statefile
    path = tmp_path / "state.json"
    original = make_engine(profile)
    for name, value in knobs.items():
        original.knobs.set(name, value)
    populate(original)
    statefile.save(str(path), original, T0 + 10)
    return path, json.loads(path.read_text())


def test_a_missing_file_is_a_fresh_start_and_a_good_one_restores_table_and_knobs(tmp_path):
    from procfs_ct import statefile
    assert statefile.restore(str(tmp_path / "none.json"), make_engine("linux"), T0).entries == 0
    path, _ = saved_file(tmp_path, udp_timeout=77)
    fresh = make_engine("linux")
    restored = statefile.restore(str(path), fresh, T0 + 11)
    assert (restored.entries, restored.saved_at) == (5, T0 + 10)
    assert fresh.knobs["udp_timeout"] == 77 and restored.knobs["udp_timeout"] == 77


@pytest.mark.parametrize("profile, change, message", [
    ("linux", lambda d: d["knobs"].update(checksum=300),
     "knobs.checksum: 300: outside the u8 limits 0..255"),
    ("tutorial", lambda d: d["knobs"].update(checksum=300),
     "knobs.checksum: 300: outside the u8 limits 0..255"),
    ("linux", lambda d: d["knobs"].update(max=-5), "knobs.max: -5: out of range 0..2147483647"),
    ("linux", lambda d: d["knobs"].update(tcp_loose=True), "knobs.tcp_loose: true: not an integer"),
    ("linux", lambda d: d["knobs"].update(udp_timeout=10 ** 400),
     "knobs.udp_timeout: 1000000000000000000000000000000000000000...: overflow"),
    ("linux", lambda d: d["knobs"].update(udp_timeout=8589935),
     "knobs.udp_timeout: 8589935: outside the jiffies limits -8589934..8589934"),
    ("linux", lambda d: d["knobs"].update(udp_timeout=1.5), "knobs.udp_timeout: 1.5: not an integer"),
    ("linux", lambda d: d["knobs"].update(count=3), "knobs.count: 3: count is read-only"),
    ("linux", lambda d: d["knobs"].update(bogus=1), "knobs.bogus: 1: no such knob"),
    ("linux", lambda d: d.update(knobs=[1]), "knobs: [1]: not an object"),
    ("linux", lambda d: d["entries"][0].update(left="soon"), "table entry 0: left"),
    ("linux", lambda d: d.update(version=7), "version 7"),
    ("tutorial", lambda d: None, "saved by a 'linux' profile engine"),
])
def test_every_field_is_checked_and_a_bad_one_changes_nothing(tmp_path, profile, change, message):
    """As strict as a write to the file the value came from: one line naming the field
    and the value; neither the knobs nor the table of the engine change."""
    from procfs_ct import statefile
    path, document = saved_file(tmp_path, udp_timeout=77)
    change(document)
    path.write_text(json.dumps(document))
    fresh = make_engine(profile)
    before = dict(fresh.knobs.items())
    with pytest.raises(statefile.StateFileError) as caught:
        statefile.restore(str(path), fresh, T0 + 11)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert dict(fresh.knobs.items()) == before and fresh.count == 0


@pytest.mark.parametrize("text, message", [("{not json", "not JSON: Expecting property name"),
                                           ("[1, 2]", "not a procfs-ct state file")])
def test_a_file_that_is_not_a_state_document_is_refused(tmp_path, text, message):
    from procfs_ct import statefile
    path = tmp_path / "state.json"
    path.write_text(text)
    with pytest.raises(statefile.StateFileError, match=re.escape(message)):
        statefile.restore(str(path), make_engine("linux"), T0)


def test_knobs_given_on_the_command_line_keep_their_value(tmp_path):
    """--max 1234 beats the file's max; the file's other knobs are restored."""
    from procfs_ct import statefile
    path, _ = saved_file(tmp_path, max=777, udp_timeout=55)
    fresh = make_engine("linux", max_entries=1234)
    statefile.restore(str(path), fresh, T0 + 11, keep={"max"})
    assert (fresh.knobs["max"], fresh.knobs["udp_timeout"]) == (1234, 55)


def test_a_knobs_only_file_of_the_earlier_format_still_loads(tmp_path):
    """Files written before the table was kept hold {"knobs": {...}} only: knobs restored."""
    from procfs_ct import statefile
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"knobs": {"udp_timeout": 55}}))
    eng = make_engine("linux")
    assert statefile.restore(str(path), eng, T0).entries == 0
    assert eng.knobs["udp_timeout"] == 55


def test_save_keeps_knobs_and_replaces_the_file_atomically(tmp_path):
    """The knob values and the table share the file; no temporary file is left behind."""
    from procfs_ct import statefile
    path, _ = saved_file(tmp_path, udp_timeout=77)
    original = make_engine("linux")
    populate(original)
    statefile.save(str(path), original, T0 + 10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    fresh = make_engine("linux")
    assert statefile.restore(str(path), fresh, T0 + 10).entries == 5
    assert lines(fresh, T0 + 10) == lines(original, T0 + 10)


class RecordingLock:
    """A lock that notes each hold and can run an action (the engine at work) while free."""

    def __init__(self):
        import threading
        self._lock = threading.Lock()
        self.holds = 0
        self.between_holds = None

    def locked(self) -> bool:
        return self._lock.locked()

    def __enter__(self):
        if self.holds and self.between_holds is not None:
            self.between_holds(self.holds)
        self._lock.acquire()
        self.holds += 1
        return self

    def __exit__(self, *exc):
        self._lock.release()


def test_the_saver_exports_a_slice_per_hold_of_the_lock_and_writes_without_it(tmp_path,
                                                                               monkeypatch):
    """StateSaver.save_now(): the engine lock is held per slice of entries (packets and
    reads go on between slices), never while the file is written; an entry killed between
    two slices is not saved; the file restores what was left."""
    from procfs_ct import statefile
    monkeypatch.setattr(statefile, "EXPORT_SLICE", 2)
    original = make_engine("linux")
    populate(original)
    lock = RecordingLock()
    killed = []

    def engine_at_work(holds):
        if holds == 2:          # after the first slice: the last entry dies
            victim = original.tracker.live_entries()[-1]
            killed.append(victim.tuple(0))
            original.tracker.conns.remove(victim)
    lock.between_holds = engine_at_work
    writes = []
    write = statefile.write_document
    monkeypatch.setattr(statefile, "write_document", lambda p, pieces: write(
        p, (writes.append(lock.locked()) or piece for piece in pieces)))
    path = tmp_path / "state.json"
    saver = statefile.StateSaver(str(path), original, lock, lambda: T0 + 10, interval=0)
    assert saver.save_now() == 4
    assert lock.holds == 1 + 3               # the header and list, then 5 entries by 2
    assert writes and not any(writes)
    document = json.loads(path.read_text())
    assert document["saved_at"] == T0 + 10 and len(document["entries"]) == 4
    assert killed and list(killed[0]) not in [r["tuple"] for r in document["entries"]]
    fresh = make_engine("linux")
    assert statefile.restore(str(path), fresh, T0 + 10).entries == 4
    assert lines(fresh, T0 + 10) == lines(original, T0 + 10)


@pytest.mark.mount
def test_a_remount_on_the_same_state_file_shows_the_saved_entries(mount_factory, capture_file,
                                                                tmp_path):
    """SIGTERM saves the table; a mount with no traffic on the same file lists the same
    connections, each with at most the elapsed time (+1 s of rounding) less to live."""
    state = tmp_path / "ct-state.json"
    first = mount_factory("--profile", "linux", "--source", f"pcap:{capture_file}@0",
                          "--state-file", str(state))
    count = "sys/net/netfilter/nf_conntrack_count"
    assert wait_for(lambda: int(first.read(count)) > 50, 10), first.log_text()
    assert wait_for(lambda: "source_done 1" in first.read("net/stat/procfs_ct_source"), 20), \
        first.log_text()
    read_at = time.time()               # before the read: its lines are made after this
    before = parse_listing(first.read("net/nf_conntrack"))
    first.signal(signal.SIGTERM)
    assert wait_for(first.exited, 10)
    assert state.exists(), first.log_text()
    second = mount_factory("--profile", "linux", "--source", "none", "--state-file", str(state))
    after = parse_listing(second.read("net/nf_conntrack"))
    elapsed = time.time() - read_at
    assert len(after) > 50
    assert set(after) <= set(before)
    assert {k for k, left in before.items() if left > elapsed + 1} <= set(after)
    for key, left in after.items():
        assert before[key] - elapsed - 1 <= left <= before[key], key


def parse_listing(text: str) -> dict:
    """Each line without its seconds-left (and delta-time) column -> seconds left."""
    result = {}
    for line in text.splitlines():
        fields = line.split()
        key = " ".join(fields[:4] + [f for f in fields[5:] if not f.startswith("delta-time")])
        result[key] = int(fields[4])
    return result


def wait_for(predicate, timeout: float) -> bool:
    from conftest import wait_until
    return wait_until(predicate, timeout)


# -- the state file of a running mount ----------------------------------------------------------
def state_entries(path) -> int:
    """Entries in the state file now; -1 while it does not exist (it is replaced whole)."""
    try:
        return len(json.loads(path.read_text())["entries"])
    except FileNotFoundError:
        return -1


@pytest.mark.mount
def test_the_table_is_saved_periodically_and_survives_kill_9(mount_factory, tmp_path):
    """--state-interval: the file is rewritten while the daemon runs, so a SIGKILL loses
    at most one interval; the next mount restores it and logs how old it was."""
    state = tmp_path / "state.json"
    first = mount_factory("--profile", "linux", "--source", "synthetic:500",
                          "--state-file", str(state), "--state-interval", "0.5")
    assert wait_for(lambda: state_entries(state) > 50, 20), first.log_text()
    first.signal(signal.SIGKILL)
    assert wait_for(first.exited, 10)
    saved = state_entries(state)
    second = mount_factory("--profile", "linux", "--source", "none", "--state-file", str(state))
    restored = re.search(r"restored (\d+) entries from \S+, saved ([0-9.]+) s ago",
                         second.log.read_text())
    assert restored, second.log_text()
    assert 0 < int(restored.group(1)) <= saved
    assert len(second.read("net/nf_conntrack").splitlines()) > 0


@pytest.mark.mount
def test_a_bad_state_file_is_set_aside_and_the_mount_starts_empty(mount_factory, tmp_path):
    """One bad field (checksum 300 for the linux profile): the file is renamed PATH.bad,
    one line naming the field and the value is printed and logged, and the mount starts
    with an empty table and the command line's knobs -- nothing of the file is used."""
    state = tmp_path / "state.json"
    document = {"format": "procfs-ct-state", "version": 1, "profile": "linux",
                "saved_at": time.time(), "entries": [],
                "knobs": {"udp_timeout": 55, "checksum": 300}}
    state.write_text(json.dumps(document))
    mount = mount_factory("--profile", "linux", "--source", "none", "--max", "4321",
                          "--state-file", str(state))
    printed = mount.proc.stderr.readline()
    expected = (f"--state-file {state}: knobs.checksum: 300: outside the u8 limits 0..255; set aside as "
                f"{state}.bad, starting with an empty table")
    assert printed == f"procfs-ct mount: {expected}\n"
    assert expected in mount.log.read_text()
    assert json.loads((tmp_path / "state.json.bad").read_text()) == document
    assert mount.read("sys/net/netfilter/nf_conntrack_udp_timeout") == "30\n"
    assert mount.read("sys/net/netfilter/nf_conntrack_max") == "4321\n"
    assert mount.read("net/nf_conntrack") == ""


@pytest.mark.mount
def test_max_on_the_command_line_beats_the_state_file(mount_factory, tmp_path):
    state = tmp_path / "state.json"
    first = mount_factory("--source", "none", "--state-file", str(state))
    first.sh("echo 777 > $MNT/sys/net/netfilter/nf_conntrack_max; "
             "echo 44 > $MNT/sys/net/netfilter/nf_conntrack_udp_timeout", check=True)
    first.stop()
    second = mount_factory("--source", "none", "--state-file", str(state), "--max", "999")
    assert second.read("sys/net/netfilter/nf_conntrack_max") == "999\n"
    assert second.read("sys/net/netfilter/nf_conntrack_udp_timeout") == "44\n"


@pytest.mark.parametrize("interval", ["-1", "nan", "inf"])
def test_a_bad_state_interval_is_one_line_and_mounts_nothing(tmp_path, interval):
    import subprocess
    from conftest import REPO, child_env, is_mounted, procfs_ct_command
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(procfs_ct_command() + ["mount", str(mnt), "--source", "none",
                                                 "--state-interval", interval],
                          cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and "--state-interval" in done.stderr
    assert not is_mounted(mnt)
