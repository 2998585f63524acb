"""IPv6 through the sources, the state file and `conntrack -L`.

Engine level (no FUSE): a state export/import round trip keeps IPv6 entries, and their
records are checked as strictly as IPv4 ones; conntrack-tools' text of an IPv6 entry (as
observed with conntrack-tools 1.4.7 on kernel 6.18 in a throw-away namespace: inet_ntop's
compressed addresses, both families without -f).  Mounted: an IPv6 capture replayed by the
pcap source shows in net/nf_conntrack and not in net/ip_conntrack, `conntrack -L -f ipv6`
lists it, and a remount on the same state file brings the IPv6 entries back.
"""
from __future__ import annotations

import json
import re
import signal
import subprocess

import pytest

from conftest import REPO, child_env, procfs_ct_command, wait_until
from engine.build import (build_ethernet, build_icmpv6, build_ipv4, build_ipv6, build_tcp,
                          build_udp)
from engine.capture import PcapWriter
from engine.hooks import LOCAL_OUT
from engine.linklayer import ETH_P_IPV6, LINKTYPE_ETHERNET
from engine.packet import ACK, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, SYN
from enginehelp import T0, lines, make_engine
from procfs_ct import conntrack_format as fmt

A, B = "fd00::1:2", "::1"
FULL_A = "fd00:0000:0000:0000:0000:0000:0001:0002"

# Observed on 6.18: the same two entries in /proc/net/nf_conntrack and `conntrack -L`.
KERNEL_PROC = [
    "ipv6     10 icmpv6   58 29 src=0000:0000:0000:0000:0000:0000:0000:0001 "
    "dst=fd00:0000:0000:0000:0000:0000:0001:0002 type=128 code=0 id=16493 "
    "src=fd00:0000:0000:0000:0000:0000:0001:0002 dst=0000:0000:0000:0000:0000:0000:0000:0001 "
    "type=129 code=0 id=16493 mark=0 zone=0 use=2",
    "ipv6     10 udp      17 29 src=0000:0000:0000:0000:0000:0000:0000:0001 "
    "dst=0000:0000:0000:0000:0000:0000:0000:0001 sport=47001 dport=7001 [UNREPLIED] "
    "src=0000:0000:0000:0000:0000:0000:0000:0001 dst=0000:0000:0000:0000:0000:0000:0000:0001 "
    "sport=7001 dport=47001 mark=0 zone=0 use=2",
]
KERNEL_CONNTRACK_L = [
    "icmpv6   58 29 src=::1 dst=fd00::1:2 type=128 code=0 id=16493 src=fd00::1:2 dst=::1 "
    "type=129 code=0 id=16493 mark=0 use=1",
    "udp      17 29 src=::1 dst=::1 sport=47001 dport=7001 [UNREPLIED] src=::1 dst=::1 "
    "sport=7001 dport=47001 mark=0 use=1",
]


def test_conntrack_prints_ipv6_entries_with_compressed_addresses():
    flows = [fmt.parse_line(line) for line in KERNEL_PROC]
    assert [fmt.list_line(flow) for flow in flows] == KERNEL_CONNTRACK_L
    assert fmt.list_line(flows[1], extended=True) == "ipv6     10 " + KERNEL_CONNTRACK_L[1]
    only_v6 = fmt.Filter(family="ipv6")
    assert all(only_v6.matches(flow) for flow in flows)
    assert not any(fmt.Filter(family="ipv4").matches(flow) for flow in flows)
    assert fmt.Filter(orig={"dst": "fd00:0:0:0:0:0:1:2"}).matches(flows[0])


def test_count_takes_no_family_as_conntrack_1_4_7():
    """Observed: `conntrack -C -f ipv6` (and -f ipv4) exits 2 with this message."""
    import io
    from procfs_ct import cmd_conntrack
    out, err = io.StringIO(), io.StringIO()
    assert cmd_conntrack.run_argv(["-C", "-f", "ipv6"], out, err) == 2
    assert err.getvalue().startswith(f"{fmt.VERSION}: Illegal option `--family' with this command")


def test_replay_local_takes_ipv6_addresses_without_broadcasts():
    from engine.ipv6 import addr_value
    from procfs_ct.cmd_replay import parse_local
    from procfs_ct.errors import UsageError
    addresses, broadcasts = parse_local(["fd00:99::2/64,10.99.0.2/24"])
    assert addresses == {addr_value("fd00:99::2"), 0x0A630002}
    assert broadcasts == {0x0A6300FF}
    with pytest.raises(UsageError, match="'fd00::zz' is not an IPv6 address"):
        parse_local(["fd00::zz"])


# -- the state file -----------------------------------------------------------------------------

def populate6(eng) -> None:
    """An established TCP flow, an unreplied UDP one and an answered echo over IPv6, and one
    IPv4 flow beside them."""
    def send(t, src, dst, proto, l4):
        eng.feed_datagram(t, build_ipv6(src, dst, proto, l4), LOCAL_OUT)
    send(T0, A, B, IPPROTO_TCP, build_tcp(A, B, 40000, 443, flags=SYN, seq=100))
    send(T0, B, A, IPPROTO_TCP, build_tcp(B, A, 443, 40000, flags=SYN | ACK, seq=900, ack=101))
    send(T0, A, B, IPPROTO_TCP, build_tcp(A, B, 40000, 443, flags=ACK, seq=101, ack=901))
    send(T0 + 1, A, B, IPPROTO_UDP, build_udp(A, B, 5353, 53, b"q"))
    send(T0 + 2, A, B, IPPROTO_ICMPV6, build_icmpv6(A, B, 128, 0, 7, 1))
    send(T0 + 2, B, A, IPPROTO_ICMPV6, build_icmpv6(B, A, 129, 0, 7, 1))
    eng.feed_datagram(T0, build_ipv4("10.0.0.1", "10.0.0.2", IPPROTO_UDP,
                                     build_udp("10.0.0.1", "10.0.0.2", 1, 2, b"v4")), LOCAL_OUT)


def test_ipv6_entries_survive_an_export_and_import():
    original = make_engine("linux")
    populate6(original)
    state = json.loads(json.dumps(original.export_state(T0 + 10)))
    families = sorted(record.get("family", 2) for record in state["entries"])
    assert families == [2, 10, 10, 10]
    fresh = make_engine("linux")
    assert fresh.import_state(state, T0 + 12) == 4
    assert lines(fresh, T0 + 12) == lines(original, T0 + 12)
    assert sum(line.startswith("ipv6     10 ") for line in lines(fresh, T0 + 12)) == 3


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(family=3), "family: 3 is not a layer-3 family"),
    (lambda r: r.update(family="ipv6"), "family: 'ipv6' is not an unsigned 8-bit"),
    (lambda r: r.update(family=2), "is not an unsigned 32-bit integer"),   # 128-bit addresses
    (lambda r: r["tuple"].__setitem__(0, 1 << 128), "is not an unsigned 128-bit integer"),
])
def test_a_bad_ipv6_record_is_refused_and_changes_nothing(change, message):
    original = make_engine("linux")
    populate6(original)
    state = original.export_state(T0 + 10)
    change(next(r for r in state["entries"] if r.get("family") == 10))
    fresh = make_engine("linux")
    with pytest.raises(ValueError, match=re.escape(message)):
        fresh.import_state(state, T0 + 10)
    assert fresh.count == 0


def test_the_tutorial_profile_refuses_an_ipv6_record():
    original = make_engine("tutorial")
    original.feed_datagram(T0, build_ipv4("10.0.0.1", "10.0.0.2", IPPROTO_UDP,
                                          build_udp("10.0.0.1", "10.0.0.2", 1, 2)), LOCAL_OUT)
    state = original.export_state(T0 + 1)
    state["entries"][0].update(family=10)
    with pytest.raises(ValueError, match="family: 10 is not a layer-3 family this conntrack"):
        make_engine("tutorial").import_state(state, T0 + 1)


# -- mounted ---------------------------------------------------------------------------------

def write_ipv6_capture(path) -> None:
    """A TCP handshake and a UDP query over IPv6, and one IPv4 UDP datagram, as Ethernet."""
    frames = [
        build_ipv6(A, B, IPPROTO_TCP, build_tcp(A, B, 40000, 443, flags=SYN, seq=100)),
        build_ipv6(B, A, IPPROTO_TCP, build_tcp(B, A, 443, 40000, flags=SYN | ACK, seq=900,
                                                 ack=101)),
        build_ipv6(A, B, IPPROTO_TCP, build_tcp(A, B, 40000, 443, flags=ACK, seq=101, ack=901)),
        build_ipv6(A, B, IPPROTO_UDP, build_udp(A, B, 5353, 53, b"query")),
    ]
    v4 = build_ipv4("10.0.0.1", "10.0.0.2", IPPROTO_UDP,
                    build_udp("10.0.0.1", "10.0.0.2", 1000, 53, b"v4"))
    with open(path, "wb") as fileobj:
        writer = PcapWriter(fileobj, linktype=LINKTYPE_ETHERNET)
        for index, datagram in enumerate(frames):
            writer.write(T0 + index * 0.01, build_ethernet(datagram, ethertype=ETH_P_IPV6))
        writer.write(T0 + 0.1, build_ethernet(v4, pad=True))
    path.chmod(0o644)


@pytest.mark.mount
def test_an_ipv6_capture_is_listed_in_nf_conntrack_only_and_survives_a_remount(
        mount_factory, tmp_path):
    tmp_path.chmod(0o755)
    capture, state = tmp_path / "v6.pcap", tmp_path / "state.json"
    write_ipv6_capture(capture)
    first = mount_factory("--profile", "linux", "--source", f"pcap:{capture}@0",
                          "--state-file", str(state))
    assert wait_until(lambda: "source_done 1" in first.read("net/stat/procfs_ct_source"), 20), \
        first.log_text()
    modern = first.sh('cat "$MNT/net/nf_conntrack"', check=True).stdout.splitlines()
    legacy = first.sh('cat "$MNT/net/ip_conntrack"', check=True).stdout.splitlines()
    v6 = [line for line in modern if line.startswith("ipv6     10 ")]
    assert len(v6) == 2 and len(modern) == 3, modern
    assert any(" ESTABLISHED " in line and f"src={FULL_A}" in line for line in v6)
    assert len(legacy) == 1 and "10.0.0.1" in legacy[0] and "ipv6" not in legacy[0]
    listed = subprocess.run(procfs_ct_command() + ["exec", "--mount", str(first.mnt), "--",
                                                   "conntrack", "-L", "-f", "ipv6"],
                            cwd=REPO, env=child_env(), capture_output=True, text=True,
                            timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert sorted(line.split()[0] for line in listed.stdout.splitlines()) == ["tcp", "udp"]
    assert "src=fd00::1:2 dst=::1 sport=40000 dport=443" in listed.stdout
    assert "2 flow entries have been shown" in listed.stderr

    first.signal(signal.SIGTERM)
    assert wait_until(first.exited, 10)
    second = mount_factory("--profile", "linux", "--source", "none", "--state-file", str(state))
    after = second.sh('cat "$MNT/net/nf_conntrack"', check=True).stdout.splitlines()
    assert sorted(line.split()[2] for line in after if line.startswith("ipv6")) == ["tcp", "udp"]
    assert not any("ipv6" in line for line in
                   second.sh('cat "$MNT/net/ip_conntrack"', check=True).stdout.splitlines())
