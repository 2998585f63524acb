"""A capture's reader process (procfs_ct/sources/capturereader.py): what the mount's engine
thread takes from it is what the capture read in process gives -- every frame, its due
time, link type and interface name, in order -- with the same log lines; it reads only a
few chunks ahead, hands a damaged file's good frames on, and ends with the daemon."""
from __future__ import annotations

import logging
import marshal
import mmap
import os
import struct
import subprocess
import time

import pytest

from conftest import FakeClock, wait_until
from engine.build import build_udp_datagram
from engine.capture import PcapWriter
from engine.linklayer import LINKTYPE_RAW
from enginehelp import make_engine
from processhelp import gone_within, run_script
from procfs_ct.driver import EngineDriver
from procfs_ct.sources import capturereader, open_source, slots
from procfs_ct.sources.pcapfile import replay_capture

START = 5000.0
WAIT = 10.0


def write_capture(path, count: int, step: float = 0.001) -> list:
    """`count` UDP datagrams of 1-1000 bytes of payload, `step` seconds apart, with the
    clock stepping back once (frame 300)."""
    frames = [build_udp_datagram("10.0.0.1", "10.0.0.2", 1024 + n % 50000, 53,
                                 bytes(1 + n * 7 % 1000)) for n in range(count)]
    with open(path, "wb") as fileobj:
        writer = PcapWriter(fileobj, linktype=LINKTYPE_RAW)
        ts = 100.0
        for n, frame in enumerate(frames):
            ts += -0.5 if n == 300 else step
            writer.write(ts, frame)
    return frames


def pulled(source) -> list:
    """Every frame the source's reader process hands over, its batches joined."""
    reader = source.pull_source()
    got = []
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        batch = reader.take_ready()
        if batch is None:
            return got
        got += batch
        if not batch:
            reader.wait_ready(0.2)
    raise AssertionError("the reader never ended")


@pytest.mark.parametrize("speed", ["0", "1", "2.5"])
def test_the_reader_hands_over_what_the_capture_read_in_process_gives(tmp_path, speed):
    path = tmp_path / "udp.pcap"
    write_capture(path, 5000)
    got = pulled(open_source(f"pcap:{path}@{speed}", start=START))
    assert len(got) == 5000
    assert got == list(open_source(f"pcap:{path}@{speed}", start=START))


def test_the_reader_keeps_the_interface_names_of_a_pcapng_capture(tmp_path):
    from engine.capture import CapturedFrame
    from pcapnghelp import write_pcapng
    frames = [CapturedFrame(100.0 + n * 0.01, LINKTYPE_RAW,
                            build_udp_datagram("10.0.0.1", "10.0.0.2", 1000 + n, 53, b"x"))
              for n in range(9)]
    path = tmp_path / "named.pcapng"
    write_pcapng(path, frames, lambda frame: frames.index(frame) % 2, ["lo", "va"])
    got = pulled(open_source(f"pcap:{path}@2", start=START))
    assert got == list(open_source(f"pcap:{path}@2", start=START))
    assert [item[3] for item in got] == ["lo", "va"] * 4 + ["lo"]


def test_the_reader_logs_the_replay_as_the_capture_read_in_process_does(tmp_path, caplog):
    path = tmp_path / "udp.pcap"
    write_capture(path, 5000)
    logged = []
    for read in (pulled, list):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="procfs_ct.sources.pcap"):
            read(open_source(f"pcap:{path}@0", start=START))
        logged.append([record.getMessage() for record in caplog.records])
    progress = [message for message in logged[0] if "% replayed" in message]
    assert logged[0][0].startswith(f"pcap {path}: replaying ")
    assert len(progress) == 9
    assert logged[0][-1] == f"pcap {path}: replay finished: 5000 frames over 0.000 s"
    assert logged[0] == logged[1]


def test_a_capture_damaged_mid_file_hands_on_its_good_frames_then_ends(tmp_path, caplog):
    path = tmp_path / "udp.pcap"
    frames = write_capture(path, 3)
    data = bytearray(path.read_bytes())
    third = 24 + 2 * 16 + len(frames[0]) + len(frames[1])
    struct.pack_into("<I", data, third + 8, 10_000_000)
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.INFO, logger="procfs_ct.sources.pcap"):
        got = pulled(open_source(f"pcap:{path}", start=START))
    assert [frame for _, _, frame in got] == frames[:2]
    assert any(r.levelno == logging.WARNING and "stopped at frame 3" in r.getMessage()
               for r in caplog.records)
    assert caplog.records[-1].getMessage() == \
        f"pcap {path}: replay finished: 2 frames over 0.001 s"


def test_the_mount_reads_a_capture_a_few_chunks_ahead_in_a_reader_process(tmp_path):
    """The driver takes the capture's frames from its reader process (no pump thread);
    while none is due the engine thread holds one slot's frames and the reader has filled
    SLOTS more and read no further; then every frame is fed, and the reader, its last slot
    taken, is gone."""
    path = tmp_path / "udp.pcap"
    write_capture(path, 40_000, step=0.0001)
    clock = FakeClock(START)
    source = replay_capture(str(path), speed=1.0, start=START + 1000)
    reader = source.pull_source()
    driver = EngineDriver(make_engine("linux"), source, clock=clock, scheduled=True)
    assert driver._pump_thread is None
    driver.start()
    try:
        assert wait_until(lambda: reader.child is not None
                          and slots.filled(reader.child.shared) == capturereader.SLOTS + 1, WAIT)
        time.sleep(0.3)                     # what the reader would read on, if it could
        assert slots.filled(reader.child.shared) == capturereader.SLOTS + 1
        assert slots.taken(reader.child.shared) == 1
        assert driver.stats.packets == 0
        clock.t = START + 1100              # every frame is due
        assert wait_until(lambda: driver.stats.source_done, WAIT)
        assert wait_until(lambda: reader.child.exited(), WAIT)
    finally:
        driver.stop()
    assert driver.stats.packets == 40_000 and driver.stats.packet_errors == 0


def test_a_capture_read_from_a_pipe_has_no_reader_process(tmp_path):
    path, fifo = tmp_path / "udp.pcap", str(tmp_path / "fifo")
    write_capture(path, 10)
    os.mkfifo(fifo)
    with subprocess.Popen(["cp", str(path), fifo]):
        source = replay_capture(fifo, start=START)
        assert source.pull_source() is None
        assert len(list(source)) == 10


def test_a_batch_too_large_for_a_slot_is_laid_out_in_parts_in_order():
    frame = bytes(200_000)
    batch = [(START + n, LINKTYPE_RAW, frame) for n in range(9)]
    parts = capturereader.fitting(batch)
    assert len(parts) > 1
    assert [item for _, data in parts for item in marshal.loads(data)] == batch
    assert [count for count, _ in parts] == [len(marshal.loads(data)) for _, data in parts]
    room = capturereader.SLOT_SIZE - 64
    assert all(len(data) <= room for _, data in parts)
    size = slots.shared_size(capturereader.SLOT_SIZE, capturereader.SLOTS)
    shared = mmap.mmap(-1, size)
    for number, (count, data) in enumerate(parts):
        capturereader.write_slot(shared, number, capturereader.FRAMES, 0, count, data)
    got = [capturereader.read_slot(shared, number)[2] for number in range(len(parts))]
    assert got == [marshal.loads(data) for _, data in parts]


def test_a_slot_out_of_step_is_an_error():
    shared = mmap.mmap(-1, slots.shared_size(capturereader.SLOT_SIZE, capturereader.SLOTS))
    capturereader.write_slot(shared, 0, capturereader.FRAMES, 0, 1,
                             marshal.dumps([(START, 1, b"x")], 2))
    with pytest.raises(RuntimeError, match="out of step"):
        capturereader.read_slot(shared, capturereader.SLOTS)    # the same place, a lap on


def test_the_reader_process_ends_with_the_process_that_started_it(tmp_path):
    """The daemon killed mid-replay (no close): the reader sees its pipe close and exits."""
    path = tmp_path / "udp.pcap"
    write_capture(path, 40_000)
    [pid] = run_script("import os\n"
                       "from procfs_ct.sources import open_source\n"
                       f"reader = open_source('pcap:{path}').pull_source()\n"
                       "reader.take_ready()\n"
                       "print(reader.child.process.pid, flush=True)\n"
                       "os._exit(0)\n")
    assert gone_within(pid)
