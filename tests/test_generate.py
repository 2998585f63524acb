"""`procfs-ct generate --out FILE.pcap` (issue 4 item 3).

The synthetic source written as an Ethernet pcap that tcpdump reads without a
warning; the same seed gives the same bytes; replaying the file through the
engine gives exactly what the live synthetic source gives at the same seed.
"""
from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.capture import read_capture
from engine.core import Engine
from enginehelp import view_text
from engine.linklayer import LINKTYPE_ETHERNET
from engine.replay import replay
from procfs_ct.cli import main
from procfs_ct.cmd_generate import DEFAULT_START
from procfs_ct.sources.synthetic import SyntheticTraffic

ROOT = Path(__file__).resolve().parent.parent
TCPDUMP = shutil.which("tcpdump")
needs_tcpdump = pytest.mark.skipif(TCPDUMP is None, reason="tcpdump not installed")
GiB = 1 << 30


def generate(path: Path, *extra: str) -> int:
    return main(["generate", "--out", str(path), *extra])


def test_same_seed_writes_the_same_bytes(tmp_path):
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    assert generate(a, "--seconds", "3", "--seed", "4") == 0
    assert generate(b, "--seconds", "3", "--seed", "4") == 0
    assert a.read_bytes() == b.read_bytes()
    assert a.stat().st_size > 100_000


def test_another_seed_writes_other_bytes(tmp_path):
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    generate(a, "--seconds", "2", "--seed", "4")
    generate(b, "--seconds", "2", "--seed", "5")
    assert a.read_bytes() != b.read_bytes()


def test_file_is_an_ethernet_pcap_covering_exactly_the_requested_seconds(tmp_path, capsys):
    path = tmp_path / "g.pcap"
    generate(path, "--seconds", "4", "--rate", "300")
    data = path.read_bytes()
    # Classic little-endian microsecond pcap, version 2.4, link type 1 (Ethernet).
    assert data[:4] == bytes.fromhex("d4c3b2a1")
    assert int.from_bytes(data[20:24], "little") == LINKTYPE_ETHERNET
    with open(path, "rb") as fileobj:
        frames = list(read_capture(fileobj))
    assert frames[0].ts >= DEFAULT_START
    assert frames[-1].ts < DEFAULT_START + 4
    assert {frame.linktype for frame in frames} == {LINKTYPE_ETHERNET}
    err = capsys.readouterr().err
    assert err == (f"procfs-ct generate: wrote {len(frames)} packets (4 s, seed 0, 300 pps) "
                   f"to {path}\n")


def test_file_holds_the_live_sources_frames(tmp_path):
    """Frame for frame, time for time, what SyntheticTraffic yields at that seed/start."""
    path = tmp_path / "g.pcap"
    generate(path, "--seconds", "2", "--seed", "8", "--start", "1800000000")
    with open(path, "rb") as fileobj:
        written = [(frame.ts, frame.data) for frame in read_capture(fileobj)]
    live = list(itertools.takewhile(lambda item: item[0] < 1_800_000_002,
                                    SyntheticTraffic(seed=8, start=1_800_000_000).frames()))
    assert written == live


@pytest.mark.parametrize("profile", ["linux", "tutorial"])
def test_replaying_the_file_gives_the_live_sources_table(tmp_path, profile):
    """The engine's replay of the capture and an engine fed live by the synthetic
    source at the same seed show the same listing at the same instant."""
    path = tmp_path / "g.pcap"
    generate(path, "--seconds", "5", "--seed", "6")
    at = DEFAULT_START + 5
    replayed = replay(str(path), profile=profile, at=at, ram_bytes=24 * GiB, ncpu=2)
    live = Engine(profile, ram_bytes=24 * GiB, ncpu=2)
    for ts, frame in SyntheticTraffic(seed=6, start=DEFAULT_START).frames():
        if ts >= at:
            break
        live.feed_frame(ts, LINKTYPE_ETHERNET, frame)
    live.advance(at)
    view = "net/nf_conntrack" if profile == "linux" else "net/ip_conntrack"
    table = view_text(live, view, at)
    assert len(table.splitlines()) > 1000
    assert view_text(replayed.engine, view, at) == table


@needs_tcpdump
def test_tcpdump_reads_the_file_without_warnings(tmp_path):
    """Exit 0; stderr holds only tcpdump's own 'reading from file' line; every packet
    printed; -vv finds no bad checksum (it checks IP, TCP, UDP and ICMP sums)."""
    path = tmp_path / "g.pcap"
    generate(path, "--seconds", "4")
    with open(path, "rb") as fileobj:
        count = sum(1 for _ in read_capture(fileobj))
    done = subprocess.run([TCPDUMP, "-nn", "-vv", "-r", str(path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0
    assert done.stderr.splitlines() == [
        f"reading from file {path}, link-type EN10MB (Ethernet), snapshot length 262144"]
    out = done.stdout
    assert sum(1 for line in out.splitlines() if not line.startswith((" ", "\t"))) == count
    assert "incorrect" not in out and "bad cksum" not in out
    assert "(correct)" in out and "[udp sum ok]" in out


def test_out_dash_writes_the_capture_to_standard_output(tmp_path):
    path = tmp_path / "g.pcap"
    generate(path, "--seconds", "1")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "procfs_ct.cli", "generate", "--out", "-",
                           "--seconds", "1"], capture_output=True, env=env, timeout=120)
    assert done.returncode == 0
    assert done.stdout == path.read_bytes()


@pytest.mark.parametrize("args, message", [
    (["--seconds", "0"], "--seconds must be a positive number, not 0"),
    (["--seconds", "-2"], "--seconds must be a positive number, not -2"),
    (["--rate", "0"], "--rate must be a positive number, not 0"),
    (["--rate", "nan"], "--rate must be a positive number, not nan"),
    (["--start", "-1"], "--start must be a time a pcap can hold"),
])
def test_bad_arguments_are_one_line_and_exit_2(tmp_path, capsys, args, message):
    path = tmp_path / "g.pcap"
    assert generate(path, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"procfs-ct generate: {message}")
    assert err.count("\n") == 1
    assert not path.exists()


def test_unwritable_output_is_one_line_and_exit_2(tmp_path, capsys):
    assert generate(tmp_path / "missing" / "g.pcap", "--seconds", "1") == 2
    assert capsys.readouterr().err == (f"procfs-ct generate: cannot write "
                                       f"{tmp_path / 'missing' / 'g.pcap'}: "
                                       "No such file or directory\n")
