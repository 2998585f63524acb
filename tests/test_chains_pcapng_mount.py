"""`-i` named by a pcapng file's interfaces on a mount (`--source pcap:FILE --rules`).

The rc_firewall scenario (tests/data/rules/rc_firewall: the kernel's counters after
iptables-legacy with `-i va`/`-i lo` rules saw its traffic) written as a per-interface pcapng
(one Interface Description Block per interface, its if_name what `ip link` said) is played
by a mount at its own pace (its LOG rule's `--limit 3/minute` counts by the packets' times).
The mount's `procfs-ct iptables -L -v -n -x --line-numbers --mount` must then print the
kernel's listing, and `iptables-save -c` what `procfs-ct replay` of the same file gives.

The frames were captured on a veth with offloaded checksums, which the kernel did not check
(CHECKSUM_PARTIAL); they are written with the checksums filled in, as the live tap does,
so the mount needs no `nf_conntrack_checksum=0`.
"""
from __future__ import annotations

import json
import subprocess

from conftest import REPO, child_env, procfs_ct_command, wait_until
from engine.capture import read_capture
from engine.interfaces import frame_interface
from engine.linklayer import SLL2_HEADER
from pcapnghelp import write_pcapng
from procfs_ct.sources.tap import complete_l4_checksum
from ruleshelp import DATA

SCENARIO = DATA / "rc_firewall"
LISTING = ["-L", "-v", "-n", "-x", "--line-numbers"]
PLAYED_SECONDS = 60          # the capture spans 6 s; a loaded machine may take longer


def per_interface_capture(path) -> None:
    """The scenario as a pcapng, one IDB per interface, checksums completed."""
    with open(SCENARIO / "capture.pcap", "rb") as fileobj:
        frames = [frame._replace(data=frame.data[:SLL2_HEADER.size] +
                                 complete_l4_checksum(frame.data[SLL2_HEADER.size:]))
                  for frame in read_capture(fileobj)]
    ifaces = json.loads((SCENARIO / "ifaces.json").read_text())      # {"1": "lo", "2": "va"}
    indexes = sorted(int(k) for k in ifaces)
    write_pcapng(path, frames,
                 lambda frame: indexes.index(frame_interface(frame.linktype, frame.data).index),
                 [ifaces[str(i)] for i in indexes])


def run(*argv: str) -> str:
    done = subprocess.run(procfs_ct_command() + list(argv), capture_output=True, text=True,
                          env=child_env(), cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def uncommented(text: str) -> str:
    """A save without its comment lines (`# Generated ...`)."""
    return "".join(line for line in text.splitlines(True) if not line.startswith("#"))


def kernel_listing() -> str:
    """The kernel's `-L -n -v -x --line-numbers`: list.txt's first section."""
    sections = (SCENARIO / "list.txt").read_text().split("## ")
    command, _, listing = sections[1].partition("\n")
    assert command.split() == ["-t", "filter", "-L", "-n", "-v", "-x", "--line-numbers"]
    return listing


def test_a_pcapng_source_names_interfaces_as_the_kernel_did(mount_factory, tmp_path):
    capture = tmp_path / "per-interface.pcapng"
    per_interface_capture(capture)
    kernel = kernel_listing()
    assert "  va     *  " in kernel and "\n1          24 " in kernel    # -i va rules counted
    mount = mount_factory("--source", f"pcap:{capture}", "--profile", "linux",
                          "--rules", str(SCENARIO / "rules"))
    listing = lambda: run("iptables", "--mount", str(mount.mnt), *LISTING)   # noqa: E731
    assert wait_until(lambda: listing() == kernel, PLAYED_SECONDS), \
        listing() + mount.log_text()
    replayed = run("replay", str(capture), "--profile", "linux", "--rules",
                   str(SCENARIO / "rules"), "--format", "iptables-save")
    assert uncommented(run("iptables-save", "--mount", str(mount.mnt), "-c")) == \
        uncommented(replayed)
