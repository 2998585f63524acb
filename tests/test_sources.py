"""Traffic source specs (procfs_ct/sources): synthetic[:PPS], pcap:FILE[@SPEED], tap:IFACE, none.

A source yields (due time, linktype, frame); it never sleeps (the driver waits).
A capture plays from `start` on its own timing divided by SPEED; @0 makes every
frame due at once, in file order (issue 4 item 2).  A bad spec is one UsageError
line, raised when the source is opened, before any frame.
"""
from __future__ import annotations

import itertools
import logging
import struct
from pathlib import Path

import pytest

from engine.build import build_ethernet, build_udp_datagram
from engine.capture import PcapWriter
from engine.linklayer import LINKTYPE_ETHERNET, LINKTYPE_RAW
from procfs_ct.cli import UsageError
from procfs_ct.sources import open_source
from procfs_ct.sources.synthetic import SyntheticTraffic

DATA = Path(__file__).parent / "data"
START = 5000.0
CAPTURE_TIMES = (100.0, 100.5, 101.0, 103.0)


def datagram(n: int) -> bytes:
    return build_udp_datagram("10.0.0.1", "10.0.0.2", 40000 + n, 53, b"q%d" % n)


def write_capture(path: Path, times=CAPTURE_TIMES, linktype: int = LINKTYPE_RAW) -> list:
    frames = [datagram(n) if linktype == LINKTYPE_RAW else build_ethernet(datagram(n))
              for n in range(len(times))]
    with open(path, "wb") as fileobj:
        writer = PcapWriter(fileobj, linktype=linktype)
        for ts, frame in zip(times, frames):
            writer.write(ts, frame)
    return frames


@pytest.fixture
def capture(tmp_path) -> tuple[Path, list]:
    path = tmp_path / "four.pcap"
    return path, write_capture(path)


# -- synthetic -------------------------------------------------------------------

def test_synthetic_spec_yields_the_seeded_synthetic_frames_as_ethernet():
    got = list(itertools.islice(open_source("synthetic", seed=3, start=START), 300))
    want = list(itertools.islice(SyntheticTraffic(seed=3, start=START).frames(), 300))
    assert got == [(ts, LINKTYPE_ETHERNET, frame) for ts, frame in want]
    assert got[0][0] >= START


def test_synthetic_spec_passes_the_rate_on():
    got = list(itertools.islice(open_source("synthetic:25", seed=3, start=START), 300))
    want = list(itertools.islice(SyntheticTraffic(seed=3, rate=25, start=START).frames(), 300))
    default = list(itertools.islice(open_source("synthetic", seed=3, start=START), 300))
    assert [frame for _, _, frame in got] == [frame for _, frame in want]
    assert got != default


def test_synthetic_without_start_plays_from_now():
    import time
    before = time.time()
    ts, _, _ = next(open_source("synthetic:1000"))
    assert before <= ts <= time.time() + 3


# -- none and tap ------------------------------------------------------------------

def test_none_yields_nothing_and_ends():
    assert list(open_source("none")) == []


def test_tap_on_a_missing_interface_is_one_clear_line():
    with pytest.raises(UsageError, match="no such interface") as exc:
        open_source("tap:pctnosuch0")
    assert "\n" not in str(exc.value)


# -- pcap timing -----------------------------------------------------------------

def test_pcap_plays_from_start_on_its_own_timing(capture):
    path, frames = capture
    got = list(open_source(f"pcap:{path}", start=START))
    assert got == [(START + ts - CAPTURE_TIMES[0], LINKTYPE_RAW, frame)
                   for ts, frame in zip(CAPTURE_TIMES, frames)]
    assert [ts for ts, _, _ in got] == [5000.0, 5000.5, 5001.0, 5003.0]


def test_pcap_at_speed_2_halves_every_gap(capture):
    path, frames = capture
    got = list(open_source(f"pcap:{path}@2", start=START))
    assert [ts for ts, _, _ in got] == [5000.0, 5000.25, 5000.5, 5001.5]
    assert [frame for _, _, frame in got] == frames


def test_pcap_at_speed_0_makes_every_frame_due_at_once_in_file_order(capture):
    path, frames = capture
    got = list(open_source(f"pcap:{path}@0", start=START))
    assert got == [(START, LINKTYPE_RAW, frame) for frame in frames]


def test_pcap_slow_motion_stretches_gaps(capture):
    path, _ = capture
    got = list(open_source(f"pcap:{path}@0.5", start=START))
    assert [ts for ts, _, _ in got] == [5000.0, 5001.0, 5002.0, 5006.0]


def test_pcap_clock_stepping_back_does_not_move_due_times_back(tmp_path):
    """Frames keep file order; a frame stamped earlier than its predecessor is due
    when the predecessor was, so the engine's clock never runs backwards."""
    path = tmp_path / "back.pcap"
    frames = write_capture(path, times=(10.0, 12.0, 11.0, 13.0))
    got = list(open_source(f"pcap:{path}", start=START))
    assert [ts for ts, _, _ in got] == [5000.0, 5002.0, 5002.0, 5003.0]
    assert [frame for _, _, frame in got] == frames


def test_pcap_without_start_plays_from_when_its_first_frame_is_read(capture, monkeypatch):
    """Opened (the mount checks it first) at 100, read at 250 (the mount is up): the
    first frame is due at 250, not 150 s late."""
    import types
    from procfs_ct.sources import pcapfile
    path, frames = capture
    clock = types.SimpleNamespace(time=lambda: 100.0)
    monkeypatch.setattr(pcapfile, "time", clock)
    source = open_source(f"pcap:{path}@2")
    clock.time = lambda: 250.0
    got = list(source)
    assert [ts for ts, _, _ in got] == [250.0, 250.25, 250.5, 251.5]
    assert [frame for _, _, frame in got] == frames


def test_pcap_keeps_each_frames_link_type():
    """A tcpdump capture of Linux cooked frames (SLL2, 276) comes through untouched."""
    got = list(open_source(f"pcap:{DATA / 'veth_any_sll2.pcap'}@0", start=START))
    assert len(got) == 22
    assert {linktype for _, linktype, _ in got} == {276}


def test_pcap_file_name_containing_an_at_sign(tmp_path):
    path = tmp_path / "incident@host.pcap"
    write_capture(path)
    assert len(list(open_source(f"pcap:{path}", start=START))) == 4
    assert [ts for ts, _, _ in open_source(f"pcap:{path}@0", start=START)] == [START] * 4


def test_pcap_replay_logs_progress_and_its_end(capture, caplog):
    path, _ = capture
    with caplog.at_level(logging.INFO, logger="procfs_ct.sources.pcap"):
        list(open_source(f"pcap:{path}@0", start=START))
    messages = [record.getMessage() for record in caplog.records]
    assert messages[0].startswith(f"pcap {path}: replaying ")
    assert any("% replayed" in message for message in messages)
    assert messages[-1] == f"pcap {path}: replay finished: 4 frames over 0.000 s"


@pytest.mark.parametrize("taken", ["one at a time", "in batches"])
def test_pcap_damaged_mid_file_ends_the_replay_cleanly(capture, caplog, taken):
    """A record claiming an impossible length ends the source (with a warning);
    frames before it were delivered."""
    path, frames = capture
    data = bytearray(path.read_bytes())
    third = 24 + 2 * 16 + len(frames[0]) + len(frames[1])
    struct.pack_into("<I", data, third + 8, 10_000_000)
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.INFO, logger="procfs_ct.sources.pcap"):
        source = open_source(f"pcap:{path}", start=START)
        got = (list(source) if taken == "one at a time"
               else [item for batch in source.batches() for item in batch])
    assert [frame for _, _, frame in got] == frames[:2]
    assert any(r.levelno == logging.WARNING and "stopped at frame 3" in r.getMessage()
               for r in caplog.records)
    assert caplog.records[-1].getMessage() == \
        f"pcap {path}: replay finished: 2 frames over 0.500 s"


# -- pcap batches (what the mount's pump takes) ---------------------------------------

def many_frames_capture(path: Path, count: int = 500) -> tuple[list, list]:
    """count frames of 40-1000 bytes, 1-3 ms apart with a clock step back at frame 300."""
    times, ts = [], 100.0
    for n in range(count):
        ts += -0.5 if n == 300 else 0.001 * (1 + n % 3)
        times.append(ts)
    frames = [build_udp_datagram("10.0.0.1", "10.0.0.2", 1024 + n, 53, bytes(n * 7 % 960))
              for n in range(count)]
    with open(path, "wb") as fileobj:
        writer = PcapWriter(fileobj, linktype=LINKTYPE_RAW)
        for ts, frame in zip(times, frames):
            writer.write(ts, frame)
    return times, frames


def expected_due(times: list, speed: float) -> list:
    """Each frame's due time as the module doc says, written out independently."""
    due, out = START, []
    for ts in times:
        if speed > 0:
            due = max(due, START + (ts - times[0]) / speed)
        out.append(due)
    return out


@pytest.mark.parametrize("speed", ["0", "1", "2.5", "0.5"])
def test_pcap_batches_give_every_frame_with_its_due_time(tmp_path, monkeypatch, speed):
    from engine import capture as capture_module
    monkeypatch.setattr(capture_module, "READ_CHUNK", 4096)     # ~10 frames a batch
    path = tmp_path / "many.pcap"
    times, frames = many_frames_capture(path)
    batches = list(open_source(f"pcap:{path}@{speed}", start=START).batches())
    assert len(batches) > 30 and all(batches)
    got = [item for batch in batches for item in batch]
    want_due = expected_due(times, float(speed))
    assert [frame for _, _, frame in got] == frames
    assert [linktype for _, linktype, _ in got] == [LINKTYPE_RAW] * len(frames)
    assert [due for due, _, _ in got] == pytest.approx(want_due, abs=1e-9)
    assert all(a <= b for a, b in zip(want_due, want_due[1:]))  # the step back is held
    assert got == list(open_source(f"pcap:{path}@{speed}", start=START))   # iteration: same


def test_pcapng_batches_carry_the_interface_names(tmp_path):
    from engine.capture import CapturedFrame
    from pcapnghelp import write_pcapng
    frames = [CapturedFrame(100.0 + n * 0.01, LINKTYPE_RAW, datagram(n)) for n in range(9)]
    path = tmp_path / "named.pcapng"
    write_pcapng(path, frames, lambda frame: frames.index(frame) % 2, ["lo", "va"])
    got = [item for batch in open_source(f"pcap:{path}@2", start=START).batches()
           for item in batch]
    assert [item[1:] for item in got] == [(LINKTYPE_RAW, f.data, ["lo", "va"][n % 2])
                                          for n, f in enumerate(frames)]
    assert [item[0] for item in got] == pytest.approx([START + n * 0.005 for n in range(9)])


def test_pcap_batches_log_progress_by_the_tenth(tmp_path, monkeypatch, caplog):
    from engine import capture as capture_module
    monkeypatch.setattr(capture_module, "READ_CHUNK", 4096)
    path = tmp_path / "many.pcap"
    many_frames_capture(path)
    with caplog.at_level(logging.INFO, logger="procfs_ct.sources.pcap"):
        for _ in open_source(f"pcap:{path}@0", start=START).batches():
            pass
    progress = [r.getMessage() for r in caplog.records if "% replayed" in r.getMessage()]
    percents = [int(m.split(": ")[1].split("%")[0]) for m in progress]
    assert len(progress) == 9 and percents == sorted(percents)
    assert all(p >= 10 * (n + 1) for n, p in enumerate(percents))


# -- bad specs ---------------------------------------------------------------------

@pytest.mark.parametrize("spec, message", [
    ("bogus", "unknown traffic source 'bogus'"),
    ("", "unknown traffic source ''"),
    ("none:x", "unknown traffic source 'none:x'"),
    ("synthetic:abc", "must be a positive number, not 'abc'"),
    ("synthetic:0", "must be a positive number, not '0'"),
    ("synthetic:-3", "must be a positive number, not '-3'"),
    ("synthetic:nan", "must be a positive number, not 'nan'"),
    ("synthetic:inf", "must be a positive number, not 'inf'"),
    ("synthetic:", "must be a positive number, not ''"),
    ("pcap:", "pcap source needs a file"),
    ("pcap:/nonexistent/x.pcap", "/nonexistent/x.pcap: no such file"),
    ("pcap:/nonexistent/x.pcap@2", "/nonexistent/x.pcap: no such file"),
])
def test_bad_spec_is_one_usage_line(spec, message):
    with pytest.raises(UsageError) as caught:
        open_source(spec)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("speed", ["fast", "-1", "nan", ""])
def test_bad_replay_speed_is_refused(capture, speed):
    path, _ = capture
    with pytest.raises(UsageError, match="replay speed .* must be a number >= 0"):
        open_source(f"pcap:{path}@{speed}")


def test_a_file_that_is_not_a_capture_is_refused_when_opened(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a capture at all\n")
    with pytest.raises(UsageError, match=r"notes\.txt: not a pcap or pcapng capture"):
        open_source(f"pcap:{path}")


def test_an_empty_file_is_refused_when_opened(tmp_path):
    path = tmp_path / "empty.pcap"
    path.write_bytes(b"")
    with pytest.raises(UsageError, match=r"empty\.pcap: empty capture file"):
        open_source(f"pcap:{path}")


def test_a_directory_is_not_a_capture(tmp_path):
    with pytest.raises(UsageError, match="is a directory"):
        open_source(f"pcap:{tmp_path}")


def test_a_capture_can_come_through_a_pipe(capture):
    """Not seekable, no size: still replayed in order (e.g. tcpdump -w - | ...)."""
    import os
    import threading
    path, frames = capture
    read_end, write_end = os.pipe()
    writer = threading.Thread(target=lambda: (os.write(write_end, path.read_bytes()),
                                              os.close(write_end)))
    writer.start()
    try:
        got = list(open_source(f"pcap:/dev/fd/{read_end}@0", start=START))
    finally:
        writer.join()
        os.close(read_end)
    assert [frame for _, _, frame in got] == frames
