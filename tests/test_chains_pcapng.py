"""`-i`/`-o` named by a pcapng file's interfaces, against the kernel.

The rc_firewall scenario (tests/data/rules/rc_firewall, made by tests/kernel/rules_oracle.py)
was captured by `tcpdump -i any` (LINUX_SLL2: each frame carries its interface index) while
iptables-legacy held rules with `-i va`.  Its frames are written here into a pcapng file as
a per-interface capture would be (`dumpcap -i lo -i va -y LINUX_SLL2`): one Interface
Description Block per interface, its if_name option the interface's name (from the
scenario's ifaces.json, what `ip link` said), each frame an Enhanced Packet Block on its own
interface.  `procfs-ct replay` of that file with no --iface must count as the kernel did;
the same frames under one `any` interface (which names none) must not.
"""
from __future__ import annotations

import json
import subprocess

from conftest import child_env, procfs_ct_command
from engine.capture import read_capture, read_named_capture
from engine.interfaces import frame_interface
from pcapnghelp import write_pcapng
from ruleshelp import DATA

SCENARIO = DATA / "rc_firewall"
CHECKSUM_OFF = "nf_conntrack_checksum=0"    # offloaded veth checksums (test_chains_kernel.py)


def scenario_frames() -> list:
    with open(SCENARIO / "capture.pcap", "rb") as fileobj:
        return list(read_capture(fileobj))


def replay_save(capture, *extra: str) -> str:
    done = subprocess.run(procfs_ct_command() + [
        "replay", str(capture), "--profile", "linux", "--rules", str(SCENARIO / "rules"),
        "--set", CHECKSUM_OFF, "--format", "iptables-save", *extra],
        capture_output=True, text=True, env=child_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def without_stamps(save_text: str) -> str:
    return "".join(line for line in save_text.splitlines(True) if not line.startswith("# "))


def per_interface_capture(tmp_path):
    frames = scenario_frames()
    ifaces = json.loads((SCENARIO / "ifaces.json").read_text())      # {"1": "lo", "2": "va"}
    indexes = sorted(int(k) for k in ifaces)
    path = tmp_path / "per-interface.pcapng"
    write_pcapng(path, frames,
                 lambda frame: indexes.index(frame_interface(frame.linktype, frame.data).index),
                 [ifaces[str(i)] for i in indexes])
    return path


def test_the_reader_names_each_frame_by_its_interface(tmp_path):
    path = per_interface_capture(tmp_path)
    with open(path, "rb") as fileobj:
        named = list(read_named_capture(fileobj))
    assert [frame for frame, _ in named] == scenario_frames()
    ifaces = json.loads((SCENARIO / "ifaces.json").read_text())
    for frame, name in named:
        assert name == ifaces[str(frame_interface(frame.linktype, frame.data).index)]


def test_pcapng_interface_names_count_as_the_kernel(tmp_path):
    kernel = without_stamps((SCENARIO / "save.txt").read_text())
    assert "] -A INPUT -i va -p tcp -j tcp_packets" in kernel and \
        "[0:0] -A INPUT -i va -p tcp" not in kernel     # the -i rules did count
    assert without_stamps(replay_save(per_interface_capture(tmp_path))) == kernel


def test_an_any_interface_names_nothing(tmp_path):
    """Under one `any` IDB the indexes are unnamed: -i va matches nothing without --iface,
    and with it the replay counts as the kernel again."""
    path = tmp_path / "any.pcapng"
    write_pcapng(path, scenario_frames(), lambda frame: 0, ["any"])
    with open(path, "rb") as fileobj:
        assert {name for _, name in read_named_capture(fileobj)} == {None}
    kernel = without_stamps((SCENARIO / "save.txt").read_text())
    assert without_stamps(replay_save(path)) != kernel
    assert without_stamps(replay_save(path, "--iface", "1=lo,2=va")) == kernel
