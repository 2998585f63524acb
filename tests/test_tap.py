"""The live tap (`--source tap:IFACE`) against the kernel, in throw-away network namespaces.

Each namespace test runs a helper (this file, as a script) inside `ip netns exec`: it taps
lo, feeds an Engine (profile linux) from the tap, makes real traffic on 127.0.0.1, then reads
the kernel's /proc/net/nf_conntrack and renders the engine's listing at the same instant and
prints both, with the tap's counters and the nftables `ct state` counters, as JSON.

Kernel facts relied on (docs/spec/conntrack.md §6, §9, §10): every locally generated packet passes
the output hook once, so the sum of the per-state counters there is the number of IPv4 packets
sent on lo; loopback packets are tracked in OUTPUT only (the second pass is skipped); listings
show seconds left rounded toward zero.

Only the loopback of namespaces made here carries traffic; they are deleted in a finalizer.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (str(ROOT), str(HERE), str(HERE / "kernel")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import netns  # noqa: E402  (tests/kernel: namespace plumbing)
import ruleset  # noqa: E402  (tests/kernel: counters_from_json)
from engine.linklayer import LINKTYPE_LINUX_SLL2, SLL2_HEADER  # noqa: E402
from enginehelp import view_text  # noqa: E402
from taphelp import (TRAFFIC_ENTRIES, assert_same_table, entry_summary,  # noqa: E402
                     icmp_echo, make_traffic, namespace, udp_to_closed_port)  # noqa: F401  (namespace: a fixture)

COUNTED_STATES = ("new", "established", "related", "invalid", "untracked")
BURST_PACKETS = 100_000
BATCH_DATAGRAMS = 3000
SO_RCVBUFFORCE = 33                 # asm-generic/socket.h; the socket module lacks them
SO_TIMESTAMPNS = 35


def run_inside(ns: str, *argv: str, timeout: float = 120) -> dict:
    """Run this file's helper in the namespace; its last stdout line is the JSON result."""
    done = subprocess.run(["ip", "netns", "exec", ns, sys.executable, str(Path(__file__)), *argv],
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"helper {argv} failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.kernel
@pytest.mark.parametrize("path", ("general", "fast"))
def test_tap_on_lo_builds_the_kernels_table(namespace, path):
    """TCP lifecycles, a refused connect, UDP with and without a reply, port-unreachable and
    an ICMP echo, tapped on lo: the engine's listing equals the kernel's (spec §10 ns 1):

        tcp 431999 ESTABLISHED ... [ASSURED]   tcp 119 TIME_WAIT ... [ASSURED]
        udp 599 ... sport=40051 dport=9 [UNREPLIED] ...   icmp 599 ... type=8 code=0 id=4660
    and a connect refused by RST leaves no entry (spec §10 ns 2, "reply RA as first reply").
    `fast`: each frame goes to the engine's fast path first (engine/fastpath.py), as the
    mount's engine thread feeds it, and that path answers some of them.
    (UDP, ICMP and CLOSE_WAIT timeouts raised to 600 s on both sides: SCENARIO_TIMEOUTS.)
    """
    result = run_inside(namespace, "traffic", path)
    assert_same_table(result["engine"], result["kernel"])
    assert (result["fast_taken"] > 0) == (path == "fast"), result["fast_taken"]
    kernel = entry_summary(result["kernel"])
    assert kernel == TRAFFIC_ENTRIES, result["kernel"]


@pytest.mark.kernel
def test_tap_keeps_one_copy_of_each_loopback_packet(namespace):
    """lo delivers each packet twice (PACKET_OUTGOING, then PACKET_HOST); the tap keeps one,
    so the IPv4 frames it kept equal the packets counted once each by the output hook's
    `ct state` counters, and the engine classified each exactly once."""
    result = run_inside(namespace, "traffic", "general")
    stats, nft = result["stats"], result["nft"]
    sent = sum(nft[state] for state in COUNTED_STATES)
    assert sent > 20                               # the scenario really made traffic
    assert stats["kernel_drops"] == 0
    assert result["ipv4_kept"] == sent
    assert result["verdicts"] == sent
    # The socket filter drops the incoming copies in the kernel; none reach userspace.
    assert stats["duplicates_skipped"] == 0
    assert stats["received"] == stats["kept"]


@pytest.mark.kernel
def test_tap_accounts_for_every_packet_of_a_100k_burst(namespace):
    """100,000 small UDP datagrams over lo in a few seconds: every one the output hook
    counted was either kept by the tap or is in the kernel's drop count."""
    result = run_inside(namespace, "burst", str(BURST_PACKETS), "0")
    sent = sum(result["nft"][state] for state in COUNTED_STATES)
    assert sent == BURST_PACKETS
    assert result["ipv4_kept"] + result["stats"]["kernel_drops"] == sent
    assert result["ipv4_kept"] == result["verdicts"]
    rate = result["ipv4_kept"] / result["seconds"]
    print(f"\ntap burst: {BURST_PACKETS} datagrams sent in {result['send_seconds']:.2f} s, "
          f"{result['ipv4_kept']} kept, {result['stats']['kernel_drops']} dropped, "
          f"through the engine at {rate:,.0f} packets/s")


@pytest.mark.kernel
def test_tap_counts_kernel_drops_when_its_buffer_overflows(namespace):
    """With a tiny receive ring (64 KiB: 8 blocks of 8 KiB, ~500 small packets) and a reader
    that starts late, the kernel drops frames; the drop counter (PACKET_STATISTICS tp_drops)
    says exactly how many: kept + drops == sent."""
    result = run_inside(namespace, "burst", "20000", str(64 << 10))
    sent = sum(result["nft"][state] for state in COUNTED_STATES)
    assert sent == 20000
    assert result["stats"]["kernel_drops"] > 0
    assert result["ipv4_kept"] > 0
    assert result["ipv4_kept"] + result["stats"]["kernel_drops"] == sent


@pytest.mark.kernel
def test_batches_hand_over_every_frame_once_in_order(namespace):
    """batches() hands over lists of frames, never an empty one, read a ring block at a
    time: concatenated, they are exactly the datagrams sent (each once, in sending order,
    as PACKET_OUTGOING IPv4 frames with the kernel's receive time), and `kept` counts them."""
    result = run_inside(namespace, "batches", str(BATCH_DATAGRAMS))
    assert result["empty_batches"] == 0
    assert result["sequence"] == list(range(BATCH_DATAGRAMS))
    assert result["batches"] < BATCH_DATAGRAMS              # some list held several frames
    assert result["linktypes"] == [276]                     # LINKTYPE_LINUX_SLL2
    assert result["pkttypes"] == [4]                        # PACKET_OUTGOING only on lo
    assert result["protocols"] == [0x0800]
    assert result["ifindexes"] == [socket.if_nametoindex("lo")]   # lo's own index
    assert result["arphrds"] == [772]                       # ARPHRD_LOOPBACK
    assert result["times_in_order"] is True
    assert result["times_within_run"] is True
    stats = result["stats"]
    assert stats["kept"] == result["frames"] == stats["received"]
    assert stats["kernel_drops"] == 0 and stats["duplicates_skipped"] == 0


@pytest.mark.kernel
def test_tap_frames_equal_what_recvmsg_reads_from_the_kernel(namespace):
    """The kernel as the oracle of the ring's decoding: beside the tap, a plain packet
    socket on lo reads the same traffic (TCP, UDP of many sizes, ICMP, IPv6) one recvmsg()
    at a time, with SO_TIMESTAMPNS.  Its PACKET_OUTGOING copies, framed as SLL2 from the
    sockaddr_ll recvmsg returns, are the tap's frames: same bytes, same times, same order."""
    result = run_inside(namespace, "recvmsg")
    assert result["recvmsg_outgoing"] > 300                # the traffic really flowed
    assert result["tap_frames"] == result["recvmsg_outgoing"]
    assert result["mismatches"] == []
    assert result["ipv6_frames"] > 0 and result["sizes"] > 50


def test_a_block_of_many_packets_decodes_to_what_recvmsg_would_give():
    """read_block() on a TPACKET_V3 block laid out as the kernel writes one (kernel_block):
    every kept packet becomes (tp_sec + tp_nsec * 1e-9, SLL2, SLL2 header from its own
    sockaddr_ll + its bytes), whatever sockaddr_ll the packet before had; loopback
    incoming copies are skipped and counted, packets cut to the snap length counted."""
    import mmap
    from engine.build import build_udp_datagram
    from procfs_ct.sources.tap import Columns, RingPacket, kernel_block, read_block
    lo = dict(ifindex=1, hatype=772, address=b"\0" * 6)
    eth = dict(ifindex=7, hatype=1)
    packets = []
    for n in range(600):
        datagram = build_udp_datagram("10.0.0.1", "10.0.0.2", 1000 + n, 53, b"q" * (n % 97))
        sockaddrs = [dict(lo, pkttype=4), dict(lo, pkttype=0),
                     dict(eth, pkttype=0, address=bytes([2, 0, 0, 0, 0, n % 3])),
                     dict(eth, pkttype=4, address=b"\2\0\0\0\0\xee"),
                     dict(eth, pkttype=3, address=b"\2\0\0\0\0\x01")]
        # The first half changes sockaddr_ll at every packet, the second in runs of 60.
        sockaddr = sockaddrs[n % 5 if n < 300 else n // 60 % 5]
        cut = n % 41 == 0 and len(datagram) > 30
        # Seconds shared by runs of packets, and going back now and then (two CPUs may
        # stamp packets of one block out of order): each packet keeps its own.
        packets.append(RingPacket(1_700_000_000 + n // 7 % 13, n * 1_234_567 % 1_000_000_000,
                                  datagram[:30] if cut else datagram,
                                  length=len(datagram), **sockaddr))
    block_size = 1 << 17
    ring = mmap.mmap(-1, block_size)
    ring[:] = kernel_block(packets, block_size)
    batch = Columns()
    kinds: dict = {}
    skipped, truncated, completed = read_block(ring, 48, len(packets), kinds, batch)
    kept = [p for p in packets if not (p.hatype == 772 and p.pkttype != 4)]
    assert skipped == len(packets) - len(kept) > 0
    assert truncated == sum(len(p.packet) < p.length for p in kept) > 0
    assert completed == 0
    expected = [(p.sec + p.nsec * 1e-9, 276,
                 SLL2_HEADER.pack(0x0800, 0, p.ifindex, p.hatype, p.pkttype,
                                  len(p.address), p.address) + p.packet)
                for p in kept]
    assert batch.tuples() == expected
    assert len(batch) == len(batch.times) == len(batch.frames) == len(kept)
    assert len(kinds) == 7                     # one cached SLL2 header per sockaddr_ll seen


def test_columns_index_and_window_as_the_list_of_tuples_they_stand_for():
    """Columns (what take_ready() hands the engine thread): frame i, a window start to end
    and the whole as tuples are what the list of (ts, linktype, frame) would give, with
    the window's tuples usable one after another (zip reuses its tuple only while the
    consumer keeps none: kept, they must still differ)."""
    from procfs_ct.sources.tap import Columns
    batch = Columns(276)
    for n in range(10):
        batch.times.append(1_700_000_000 + n / 8)
        batch.frames.append(bytes([n]) * (n + 1))
    as_list = [(1_700_000_000 + n / 8, 276, bytes([n]) * (n + 1)) for n in range(10)]
    assert len(batch) == 10 and bool(batch) and not Columns()
    assert [batch[n] for n in range(10)] == as_list and batch[-1] == as_list[-1]
    assert list(batch.window(3, 7)) == as_list[3:7]
    assert list(batch.window(8, 20)) == as_list[8:20]
    assert batch.tuples() == as_list


@pytest.mark.kernel
def test_ring_holds_a_20k_burst_for_a_reader_that_starts_late(namespace):
    """20,000 datagrams sent as fast as one process can, read through batches() only after
    the last was sent: every one the output hook counted is kept or in the kernel's drop
    count, and the default ring (64 MiB, ~128 bytes a small packet) drops none of them."""
    from procfs_ct.sources.tap import DEFAULT_RCVBUF
    result = run_inside(namespace, "burst", "20000", str(DEFAULT_RCVBUF), "batches")
    sent = sum(result["nft"][state] for state in COUNTED_STATES)
    assert sent == 20000
    assert result["ipv4_kept"] + result["stats"]["kernel_drops"] == sent
    assert result["stats"]["kernel_drops"] == 0
    assert result["ipv4_kept"] == result["verdicts"] == result["stats"]["kept"] == sent


@pytest.mark.kernel
def test_ring_bridges_a_second_of_a_slow_trickle_for_a_reader_that_starts_late(namespace):
    """200 datagrams 5 ms apart (1 s or more), read only after the last was sent: the kernel
    hands a block over 4 ms (RETIRE_BLOCK_MS) after its first packet however little it
    holds, so here nearly every datagram takes a block of its own, and a ring of fewer than
    200 blocks drops the rest whatever its size in bytes (64 blocks of 1 MiB kept ~64).
    The default ring keeps them all: a reader held up for a second loses nothing."""
    from procfs_ct.sources.tap import DEFAULT_RCVBUF, RETIRE_BLOCK_MS, ring_geometry
    assert 5 > RETIRE_BLOCK_MS             # else two datagrams could share each block
    result = run_inside(namespace, "burst", "200", str(DEFAULT_RCVBUF), "batches", "0.005")
    sent = sum(result["nft"][state] for state in COUNTED_STATES)
    assert sent == 200
    assert result["send_seconds"] >= 1.0
    assert result["stats"]["kernel_drops"] == 0, (ring_geometry(DEFAULT_RCVBUF), result)
    assert result["ipv4_kept"] == result["verdicts"] == result["stats"]["kept"] == sent


@pytest.mark.kernel
def test_a_packet_longer_than_a_ring_block_is_cut_and_counted(namespace):
    """With a 16 KiB ring (4 KiB blocks) a 6,000-byte datagram on lo (MTU 65536, so one
    packet) does not fit a block: it is handed over cut to what the block holds, the SLL2
    header intact, and counted in `truncated`."""
    result = run_inside(namespace, "truncate")
    assert result["truncated"] == 1
    assert SLL2_HEADER.size + 20 + 8 < result["frame_length"] < 4096
    assert result["kept"] == 1


@pytest.mark.kernel
def test_close_from_another_thread_ends_an_idle_tap_promptly(namespace):
    """The engine driver's pump thread blocks in next() while lo is silent; close() from
    another thread ends the iteration within a few poll intervals (0.2 s each) and closes
    the sockets."""
    result = run_inside(namespace, "stop")
    assert result["ended"] is True
    assert result["frames"] == 0
    assert result["seconds"] < 1.0
    assert result["closed"] is True


@pytest.mark.kernel
def test_the_engine_thread_reads_the_ring_itself_counts_drops_and_expires_while_idle(namespace):
    """The mount's engine driver on a tap (a pull source, procfs_ct/driver.py): no pump
    thread.  With a small ring (64 KiB, ~400 frames: more than the spill thread moves out
    between two looks) and the engine lock held (a busy engine) during a burst of 20,000
    datagrams, the ring overflows: net/stat/procfs_ct_source's counters say
    kept + kernel drops == every packet the output hook counted, and the engine tracked
    every frame kept.  Then, with the ring empty, the driver's (fake) clock passes the UDP
    timeout and the entry expires; stop() closes the tap and ends the engine thread."""
    result = run_inside(namespace, "driven", "20000", str(64 << 10))
    source = result["source"]
    assert "procfs-ct-engine" in result["threads"]
    assert "procfs-ct-source" not in result["threads"]      # no pump thread
    assert result["sent"] == 20000
    assert source["source_kernel_drops"] > 0
    assert source["source_kept"] + source["source_kernel_drops"] == result["sent"]
    assert source["packets"] == source["source_kept"]
    assert result["entries_before"] == 1 and result["entries_after"] == 0
    assert result["advances_while_idle"] > 0 and result["kept_while_idle"] == 0
    assert result["stopped"] is True and result["closed"] is True


@pytest.mark.kernel
def test_a_reader_held_up_past_every_slot_is_spilled_for_and_fed_every_frame_in_order(
        namespace):
    """The engine thread takes what the tap's reader process lays out in shared slots;
    held up (its lock held here) for 3 s of traffic, more than the ring's ~1 s and the
    slots' share of it, it would lose frames.  The reader keeps reading the ring into a
    list of its own once every slot is full, and lays those out as slots free: no drop,
    and the engine is fed every datagram once, in the order sent.  No thread of ours
    besides the engine thread; the reader is a process of its own."""
    result = run_inside(namespace, "spill", "150000", "50000")
    assert result["stats"]["kernel_drops"] == 0
    assert result["stats"]["spilled"] > 0
    assert result["numbers_in_order"] is True and result["fed"] == 150000
    assert result["threads"] == ["procfs-ct-engine"]
    assert result["reader"] == ["-m", "procfs_ct.sources.tapreader"]
    assert result["reader_gone_after_close"] is True


VETH_HERE, VETH_PEER = "10.231.0.1", "10.231.0.2"


@pytest.fixture
def peer_namespace(namespace):
    """A second namespace joined to the first by a veth pair: pcta (here) <-> pctb (peer)."""
    peer = f"{namespace}-b"
    try:
        netns.create_namespace(peer)
        netns.run("ip", "link", "add", "pcta", "netns", namespace, "type", "veth",
                  "peer", "name", "pctb", "netns", peer)
        for ns, dev, address in ((namespace, "pcta", VETH_HERE), (peer, "pctb", VETH_PEER)):
            netns.run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", dev)
            netns.run("ip", "-n", ns, "link", "set", dev, "up")
        yield peer
    finally:
        netns.delete_namespace(peer)          # takes the veth pair with it


@pytest.mark.kernel
def test_tap_on_veth_and_lo_tracks_received_packets_at_prerouting(namespace, peer_namespace):
    """tap:lo,pcta with a peer namespace behind the veth: a connection the peer opens to us
    (original direction received, PREROUTING), ours to the peer closed first by us, UDP both
    ways, UDP to a closed port of the peer (its ICMP error arrives RELATED), a ping. The
    engine's listing equals the kernel's. Packets from a veth peer arrive with unfinished
    TCP/UDP checksums (CHECKSUM_PARTIAL), which the kernel does not check and the tap fills
    in, so none of them is INVALID to the engine.  The fast path is offered every frame
    and takes none received (they are PREROUTING's)."""
    result = run_inside(namespace, "veth", peer_namespace, "fast")
    assert_same_table(result["engine"], result["kernel"])
    assert entry_summary(result["kernel"]) == {
        ("tcp", 50001, "ESTABLISHED", ("[ASSURED]",)),      # the peer connected to us
        ("tcp", 40001, "TIME_WAIT", ("[ASSURED]",)),
        ("udp", 40041, "-", ()),
        ("udp", 40051, "-", ("[UNREPLIED]",)),
        ("icmp", 4661, "-", ()),
    }
    assert result["stats"]["checksums_completed"] > 0
    assert result["stats"]["kernel_drops"] == 0


@pytest.mark.kernel
@pytest.mark.parametrize("reader", ("iteration", "driver"))
def test_tap_waits_out_an_interface_going_down_and_up(namespace, peer_namespace, reader):
    """`ip link set pcta down` sets ENETDOWN on the packet socket (poll() then returns at
    once until it is read); the tap clears it, idles without spinning, and sees the
    interface's packets again once it is back up -- read by iteration, and by the mount's
    engine thread (take_ready/wait_ready, procfs_ct/driver.py)."""
    result = run_inside(namespace, "down", reader)
    assert result["before"] == 1
    assert result["alive_while_down"] is True
    assert result["cpu_while_down"] < 0.3
    assert result["after"] == 1
    # Logged by the tap, whichever reads the ring (the reader process tells it the errno).
    assert f"tap pcta: {os.strerror(errno.ENETDOWN)}; waiting for it to come back" in \
        result["warnings"]


def test_missing_interface_is_a_one_line_usage_error():
    """tap on an interface that does not exist: UsageError 'tap:NAME: no such interface'."""
    if os.geteuid() != 0:
        pytest.skip("needs root (AF_PACKET)")
    from procfs_ct.cli import UsageError
    from procfs_ct.sources.tap import open_tap
    with pytest.raises(UsageError) as caught:
        open_tap("tap:pctnoif9")
    assert str(caught.value) == "tap:pctnoif9: no such interface"
    with pytest.raises(UsageError, match="^tap:lo-but-much-too-long: no such interface$"):
        open_tap("tap:lo-but-much-too-long")      # longer than IFNAMSIZ: not truncated to lo


def test_missing_privilege_is_a_one_line_usage_error():
    """Without CAP_NET_RAW the packet socket is refused (EPERM): 'tap:lo: needs root ...'.
    The child is root with CAP_NET_RAW removed from its bounding set (setpriv)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run a child without CAP_NET_RAW")
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from procfs_ct.cli import UsageError\n"
            "from procfs_ct.sources.tap import open_tap\n"
            "try:\n    open_tap('tap:lo')\n"
            "except UsageError as exc:\n    print(exc)\n") % str(ROOT)
    done = subprocess.run(["setpriv", "--bounding-set=-net_raw", sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "tap:lo: needs root (CAP_NET_RAW)"


def test_tap_spec_names_one_or_several_interfaces():
    from procfs_ct.cli import UsageError
    from procfs_ct.sources.tap import parse_tap_spec
    assert parse_tap_spec("tap:lo") == ["lo"]
    assert parse_tap_spec("tap:eth0,eth1,eth0") == ["eth0", "eth1"]
    with pytest.raises(UsageError):
        parse_tap_spec("tap:")


def test_ring_geometry_keeps_large_blocks_and_shrinks_them_for_a_small_ring():
    """The default 64 MiB ring is 256 blocks of 256 KiB (a 64 KiB GSO packet fits a block;
    each block is handed over within a few ms, so 256 of them bridge a second); a small
    ring gets smaller blocks, never below a page, so the kernel has several to fill."""
    import mmap
    from procfs_ct.sources.tap import DEFAULT_RCVBUF, ring_geometry
    assert ring_geometry(DEFAULT_RCVBUF) == (256 << 10, 256)
    assert ring_geometry(64 << 10) == (8 << 10, 8)
    assert ring_geometry(4096) == (mmap.PAGESIZE, 2)


# ---------------------------------------------------------------------------------------------
# The helper side: runs inside the namespace (python3 tests/test_tap.py SCENARIO ...)
# ---------------------------------------------------------------------------------------------
class TappedEngine:
    """A Tap on lo feeding an Engine (profile linux) from a thread, under one lock."""

    def __init__(self, rcvbuf: Optional[int] = None, interfaces: tuple = ("lo",),
                 use_batches: bool = False, fast_path: bool = False,
                 knobs: Optional[dict] = None) -> None:
        from engine.core import Engine
        from procfs_ct.sources.tap import DEFAULT_RCVBUF, Tap
        self.engine = Engine(profile="linux", knobs_overrides=knobs)
        # Offered each frame first, as the mount's engine thread does (procfs_ct/driver.py).
        self.fast = self.engine.fast_path(LINKTYPE_LINUX_SLL2) if fast_path else None
        self.fast_taken = 0
        self.tap = Tap(list(interfaces), rcvbuf=DEFAULT_RCVBUF if rcvbuf is None else rcvbuf)
        self.lock = threading.Lock()
        self.ipv4_kept = 0
        self.verdicts = 0
        self.use_batches = use_batches
        self.thread = threading.Thread(target=self._feed, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _feed(self) -> None:
        batches = self.tap.batches() if self.use_batches else ([frame] for frame in self.tap)
        for batch in batches:
            with self.lock:
                for ts, linktype, frame in batch:
                    before = self.engine.frames_not_ipv4
                    verdict = self.fast and self.fast(ts, linktype, frame)
                    if verdict:
                        self.fast_taken += 1
                    else:
                        verdict = self.engine.feed_frame(ts, linktype, frame)
                    if self.engine.frames_not_ipv4 == before:
                        self.ipv4_kept += 1
                    if verdict is not None:
                        self.verdicts += 1

    def stop(self) -> None:
        self.tap.close()
        self.thread.join(5)

    def snapshot(self) -> dict:
        """The kernel's listing and the engine's at the same instant."""
        with self.lock:
            now = time.time()
            with open("/proc/net/nf_conntrack") as listing:
                kernel = listing.read().splitlines()
            self.engine.advance(now)
            engine = view_text(self.engine, "net/nf_conntrack", now).splitlines()
        return {"kernel": kernel, "engine": engine}


def nft_counters() -> dict[str, int]:
    return ruleset.counters_from_json(netns.run("nft", "-j", "list", "ruleset"))


def wait_until_accounted(tapped: TappedEngine, timeout: float) -> dict[str, int]:
    """Wait until every packet the output hook counted was kept or dropped by the tap."""
    deadline = time.monotonic() + timeout
    while True:
        counters = nft_counters()
        sent = sum(counters[state] for state in COUNTED_STATES)
        drops = tapped.tap.poll_stats().kernel_drops
        with tapped.lock:
            accounted = tapped.ipv4_kept + drops
        if accounted >= sent or time.monotonic() > deadline:
            return counters
        time.sleep(0.05)


# The scenario's shortest timers, raised in the namespace's kernel and in the engine alike:
# on a loaded machine the scenario has taken tens of seconds (55 s seen), and the default
# 30 s UDP/ICMP and 60 s CLOSE_WAIT timers ran out before the snapshot.
SCENARIO_TIMEOUTS = {"udp_timeout": 600, "icmp_timeout": 600, "tcp_timeout_close_wait": 600}


def scenario_traffic(path: str) -> dict:
    for name, seconds in SCENARIO_TIMEOUTS.items():
        with open(f"/proc/sys/net/netfilter/nf_conntrack_{name}", "w") as knob:
            knob.write(f"{seconds}\n")
    tapped = TappedEngine(knobs=SCENARIO_TIMEOUTS, fast_path=path == "fast")
    tapped.start()
    keep = make_traffic()
    time.sleep(1.2)                 # let delayed ACKs go out and the timers count down
    counters = wait_until_accounted(tapped, timeout=10)
    result = tapped.snapshot()
    tapped.stop()
    for sock in keep:
        sock.close()
    result.update(nft=counters, stats=asdict(tapped.tap.stats), ipv4_kept=tapped.ipv4_kept,
                  verdicts=tapped.verdicts, fast_taken=tapped.fast_taken)
    return result


PEER_PROGRAM = """
import socket, sys
tcp = socket.socket(); tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind(("{peer}", 8080)); tcp.listen(4)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind(("{peer}", 7777))
out = socket.socket(); out.bind(("{peer}", 50001)); out.connect(("{here}", 9090))
out.sendall(b"hi"); assert out.recv(10) == b"yo"
print("connected", flush=True)
conn, _ = tcp.accept(); conn.sendall(conn.recv(10)); assert conn.recv(10) == b""; conn.close()
data, addr = udp.recvfrom(10); udp.sendto(data, addr)
sys.stdin.read()                     # until the test is done
"""


def scenario_veth(peer_ns: str, path: str) -> dict:
    """Run in the tapped namespace; the peer namespace's program is started from here."""
    tapped = TappedEngine(interfaces=("lo", "pcta"), fast_path=path == "fast")
    tapped.start()
    listener = socket.socket()
    listener.bind((VETH_HERE, 9090))
    listener.listen(4)
    program = PEER_PROGRAM.format(peer=VETH_PEER, here=VETH_HERE)
    peer = subprocess.Popen(["ip", "netns", "exec", peer_ns, sys.executable, "-c", program],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        incoming, _ = listener.accept()               # the peer connects to us
        assert incoming.recv(10) == b"hi"
        incoming.sendall(b"yo")
        assert peer.stdout.readline().strip() == "connected"
        client = socket.create_connection((VETH_PEER, 8080), source_address=(VETH_HERE, 40001))
        client.sendall(b"echo")
        assert client.recv(10) == b"echo"
        client.close()                                 # we close first -> TIME_WAIT here
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((VETH_HERE, 40041))
        udp.settimeout(5)
        udp.sendto(b"ping", (VETH_PEER, 7777))
        assert udp.recv(10) == b"ping"
        closed = udp_to_closed_port(VETH_HERE, VETH_PEER)  # noqa: F841  (open until the snapshot)
        icmp_echo(0x1235, VETH_PEER)
        time.sleep(1.2)
        result = tapped.snapshot()
    finally:
        peer.stdin.close()
        peer.wait(10)
    tapped.stop()
    result.update(stats=asdict(tapped.tap.stats), ipv4_kept=tapped.ipv4_kept)
    return result


def scenario_stop() -> dict:
    from procfs_ct.sources.tap import Tap
    tap = Tap(["lo"])
    frames = []
    reader = threading.Thread(target=lambda: frames.extend(tap), daemon=True)
    reader.start()
    time.sleep(0.5)                       # idle: the reader is blocked inside next()
    started = time.monotonic()
    tap.close()
    reader.join(5)
    return {"ended": not reader.is_alive(), "frames": len(frames),
            "seconds": time.monotonic() - started,
            "closed": tap.closed}


def scenario_driven(count: int, rcvbuf: int) -> dict:
    """An EngineDriver (fake clock, 1 s ahead of the frames' kernel times so each is due at
    once) on a tap of `rcvbuf` bytes; `count` datagrams sent while its engine lock is held,
    then the idle ring and the clock moved past udp_timeout, then stop()."""
    from conftest import FakeClock, wait_until
    from engine.core import Engine
    from procfs_ct.driver import EngineDriver
    from procfs_ct.sources.tap import Tap
    tap = Tap(["lo"], rcvbuf=rcvbuf)
    clock = FakeClock(time.time() + 1)
    driver = EngineDriver(Engine(profile="linux"), tap, clock=clock, advance_every=1.0)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # bound, never read
    sink.bind(("127.0.0.1", 7000))
    sender = ("import socket\n"
              "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
              "s.connect(('127.0.0.1', 7000))\n"
              f"for _ in range({count}):\n"
              "    s.send(b'x')\n")
    driver.start()
    threads = sorted(thread.name for thread in threading.enumerate()
                     if thread.name.startswith("procfs-ct-"))
    with driver.engine_lock:                  # the engine is busy: only the ring holds them
        subprocess.run([sys.executable, "-c", sender], check=True)
    sent = sum(nft_counters()[state] for state in COUNTED_STATES)

    def source() -> dict:
        return {name: int(value) for name, value in
                (line.split() for line in driver.source_stats_text().splitlines())}
    wait_until(lambda: (source()["source_kept"] + source()["source_kernel_drops"] >= sent
                        and driver.stats.packets >= source()["source_kept"]), 30)
    counted = source()
    entries_before, kept, advances = driver.engine.count, tap.stats.kept, driver.stats.advances
    clock.t += 31                             # udp_timeout 30: due, with nothing arriving
    wait_until(lambda: driver.engine.count == 0, 10)
    result = {"threads": threads, "sent": sent, "source": counted,
              "entries_before": entries_before, "entries_after": driver.engine.count,
              "advances_while_idle": driver.stats.advances - advances,
              "kept_while_idle": tap.stats.kept - kept}
    driver.stop()
    sink.close()
    return {**result, "stopped": not driver.running, "closed": tap.closed}


def scenario_spill(count: int, rate: int) -> dict:
    """An EngineDriver on a tap of the default ring, its engine lock held while `count`
    numbered datagrams go out at `rate` a second; the numbers of the frames it fed."""
    from conftest import wait_until
    from engine.core import Engine
    from procfs_ct.driver import EngineDriver
    from procfs_ct.sources.tap import Tap
    tap = Tap(["lo"])
    driver = EngineDriver(Engine(profile="linux"), tap)
    numbers: list = []
    feed_frame = driver.engine.feed_frame

    def recording(when, linktype, frame, *rest):
        if len(frame) == SLL2_HEADER.size + 28 + 4:
            numbers.append(int.from_bytes(frame[-4:], "big"))
        return feed_frame(when, linktype, frame, *rest)
    driver.engine.feed_frame = recording
    driver.listeners.append(lambda when, result: None)     # every frame through feed_frame
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # bound, never read
    sink.bind(("127.0.0.1", 7002))
    sender = ("import socket, time\n"
              "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
              "s.connect(('127.0.0.1', 7002))\n"
              "start = time.monotonic()\n"
              f"for n in range({count}):\n"
              "    s.send(n.to_bytes(4, 'big'))\n"
              # The time ahead read once: read again for the sleep, it could be past
              # (a negative sleep raised ValueError in a fresh clone's run).
              "    if n % 100 == 99:\n"
              f"        ahead = n / {rate} - (time.monotonic() - start)\n"
              "        if ahead > 0:\n"
              "            time.sleep(ahead)\n")
    driver.start()
    with driver.engine_lock:                  # the engine is busy for the whole burst
        subprocess.run([sys.executable, "-c", sender], check=True)
        threads = sorted(thread.name for thread in threading.enumerate()
                         if thread.name.startswith("procfs-ct-"))
        reader = tap._reader.process
        with open(f"/proc/{reader.pid}/cmdline", "rb") as file:
            command = file.read().split(b"\0")[1:3]
    wait_until(lambda: len(numbers) >= count
               or len(numbers) + tap.poll_stats().kernel_drops >= count, 60)
    driver.stop()
    tap.close()
    sink.close()
    return {"threads": threads, "stats": asdict(tap.stats), "fed": len(numbers),
            "numbers_in_order": numbers == list(range(count)),
            "reader": [part.decode() for part in command],
            "reader_gone_after_close": reader.poll() is not None}


def scenario_burst(count: int, rcvbuf: int, consumer: str = "frames", gap: str = "0") -> dict:
    """count datagrams from a separate process, `gap` seconds apart (0: back to back);
    rcvbuf 0 = the tap's default ring, else that ring and a reader that only starts once
    everything was sent (a small ring overflows); consumer "batches" reads through
    Tap.batches() instead of iterating."""
    tapped = TappedEngine(rcvbuf or None, use_batches=consumer == "batches")
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # bound, never read
    sink.bind(("127.0.0.1", 7000))
    if not rcvbuf:
        tapped.start()
    sender = ("import socket, time\n"
              "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
              "s.connect(('127.0.0.1', 7000))\n"
              f"for _ in range({count}):\n"
              "    s.send(b'x')\n"
              + (f"    time.sleep({float(gap)})\n" if float(gap) else ""))
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", sender], check=True)
    sent_at = time.monotonic()
    if rcvbuf:
        tapped.start()
    counters = wait_until_accounted(tapped, timeout=60)
    finished = time.monotonic()
    tapped.stop()
    sink.close()
    return {"nft": counters, "stats": asdict(tapped.tap.stats), "ipv4_kept": tapped.ipv4_kept,
            "verdicts": tapped.verdicts, "send_seconds": sent_at - started,
            "seconds": finished - started}


def scenario_batches(count: int) -> dict:
    """count numbered datagrams 127.0.0.1:40061 -> :7001, read through Tap.batches()."""
    from procfs_ct.sources.tap import Tap
    tap = Tap(["lo"])
    batches: list[list] = []
    reader = threading.Thread(target=lambda: batches.extend(tap.batches()), daemon=True)
    reader.start()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # bound, never read
    sink.bind(("127.0.0.1", 7001))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 40061))
    started = time.time()
    for number in range(count):
        sender.sendto(number.to_bytes(4, "big"), ("127.0.0.1", 7001))
    sent_at = time.time()

    def ours(frame: bytes) -> Optional[int]:
        ip = frame[SLL2_HEADER.size:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] == 17 and int.from_bytes(ip[ihl + 2:ihl + 4], "big") == 7001:
            return int.from_bytes(ip[ihl + 8:ihl + 12], "big")
        return None

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        seen = sum(ours(frame) is not None for batch in list(batches) for _, _, frame in batch)
        if seen >= count:
            break
        time.sleep(0.05)
    tap.close()
    reader.join(5)
    sender.close()
    sink.close()
    frames = [frame for batch in batches for frame in batch]
    times = [ts for ts, _, _ in frames]
    return {"batches": len(batches), "empty_batches": sum(not batch for batch in batches),
            "frames": len(frames),
            "sequence": [n for n in (ours(frame) for _, _, frame in frames) if n is not None],
            "linktypes": sorted({linktype for _, linktype, _ in frames}),
            "protocols": sorted({SLL2_HEADER.unpack_from(frame)[0] for _, _, frame in frames}),
            "ifindexes": sorted({SLL2_HEADER.unpack_from(frame)[2] for _, _, frame in frames}),
            "arphrds": sorted({SLL2_HEADER.unpack_from(frame)[3] for _, _, frame in frames}),
            "pkttypes": sorted({SLL2_HEADER.unpack_from(frame)[4] for _, _, frame in frames}),
            "times_in_order": times == sorted(times),
            "times_within_run": all(started - 0.01 <= ts <= sent_at + 0.01 for ts in times),
            "stats": asdict(tap.stats)}


def scenario_recvmsg() -> dict:
    """The tap and a plain packet socket on lo (SO_TIMESTAMPNS, read by recvmsg) seeing
    the same traffic; the recvmsg side's outgoing copies framed as the tap frames them."""
    from procfs_ct.sources.tap import ETH_P_ALL, Tap
    plain = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
    plain.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
    plain.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    plain.bind(("lo", ETH_P_ALL))
    time.sleep(0.2)              # the kernel turns receive timestamps on from a work item
    tap = Tap(["lo"])
    frames: list = []
    reader = threading.Thread(target=lambda: frames.extend(tap), daemon=True)
    reader.start()
    keep = make_traffic()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 7004))
    sink6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sink6.bind(("::1", 7005))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    for size in range(0, 3000, 11):
        sender.sendto(bytes([size & 0xFF]) * size, ("127.0.0.1", 7004))
        if size % 5 == 0:
            sender6.sendto(b"6" * size, ("::1", 7005))
    expected = []
    plain.setblocking(False)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            data, ancillary, _flags, address = plain.recvmsg(1 << 16, 64)
        except BlockingIOError:
            if len(frames) >= len(expected) and expected:
                break
            time.sleep(0.05)
            continue
        ifname, protocol, pkttype, hatype, hwaddr = address
        if pkttype != 4:
            continue                       # loopback's incoming copy: the tap keeps none
        stamp = [cdata for level, kind, cdata in ancillary
                 if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS]
        sec, nsec = struct.unpack("@qq", stamp[0]) if stamp else (0, 0)
        head = SLL2_HEADER.pack(protocol, 0, socket.if_nametoindex(ifname), hatype, pkttype,
                                len(hwaddr), hwaddr)
        expected.append((sec + nsec * 1e-9, 276, head + data))
    tap.close()
    reader.join(5)
    for sock in keep + [sink, sink6, sender, sender6, plain]:
        sock.close()
    mismatches = [{"index": n, "ours": [ours[0], ours[2].hex()[:120]],
                   "recvmsg": [theirs[0], theirs[2].hex()[:120]]}
                  for n, (ours, theirs) in enumerate(zip(frames, expected)) if ours != theirs]
    return {"tap_frames": len(frames), "recvmsg_outgoing": len(expected),
            "mismatches": mismatches[:5],
            "ipv6_frames": sum(frame[:2] == b"\x86\xdd" for _, _, frame in expected),
            "sizes": len({len(frame) for _, _, frame in expected})}


def scenario_truncate() -> dict:
    from procfs_ct.sources.tap import Tap
    tap = Tap(["lo"], rcvbuf=16 << 10)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 7002))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.sendto(b"z" * 6000, ("127.0.0.1", 7002))
    _ts, _linktype, frame = next(tap)
    tap.close()
    sender.close()
    sink.close()
    return {"frame_length": len(frame), "truncated": tap.stats.truncated, "kept": tap.stats.kept}


def _driven_reader(tap, frames: list):
    """(the engine thread, the EngineDriver) reading `tap`, each frame it feeds appended to
    `frames` (a listener keeps every frame on engine.feed_frame)."""
    from engine.core import Engine
    from procfs_ct.driver import EngineDriver
    driver = EngineDriver(Engine(profile="linux"), tap)
    feed_frame = driver.engine.feed_frame

    def recording(when, linktype, frame, *rest):
        frames.append((when, linktype, frame))
        return feed_frame(when, linktype, frame, *rest)
    driver.engine.feed_frame = recording
    driver.listeners.append(lambda when, result: None)
    driver.start()
    return driver._engine_thread, driver


def scenario_down(reader_kind: str = "iteration") -> dict:
    """Tap pcta, send a datagram to the peer, take the link down for a second, bring it
    back up, send another; counts the datagrams seen before and after.  The tap is read by
    a thread iterating it, or (`driver`) by the mount's engine thread (a pull source)."""
    import logging
    from procfs_ct.sources.tap import Tap
    warnings: list = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())    # type: ignore
    logging.getLogger("procfs_ct.sources.tap").addHandler(handler)
    tap = Tap(["pcta"])
    frames: list = []
    if reader_kind == "driver":
        reader, driver = _driven_reader(tap, frames)
    else:
        reader, driver = threading.Thread(target=lambda: frames.extend(tap), daemon=True), None
        reader.start()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind((VETH_HERE, 40071))

    def datagrams(payload: bytes) -> int:
        return sum(frame.endswith(payload) and frame[SLL2_HEADER.size + 9] == 17
                   for _, _, frame in frames)

    def send_and_wait(payload: bytes) -> int:
        sender.sendto(payload, (VETH_PEER, 7003))
        deadline = time.monotonic() + 5
        while not datagrams(payload) and time.monotonic() < deadline:
            time.sleep(0.05)
        return datagrams(payload)

    before = send_and_wait(b"pct-before")
    netns.run("ip", "link", "set", "pcta", "down")
    time.sleep(0.3)
    cpu = time.process_time()
    time.sleep(1.0)
    cpu = time.process_time() - cpu
    alive = reader.is_alive()
    netns.run("ip", "link", "set", "pcta", "up")
    after = send_and_wait(b"pct-after")
    if driver is not None:
        driver.stop()
    tap.close()
    reader.join(5)
    sender.close()
    return {"before": before, "after": after, "alive_while_down": alive,
            "cpu_while_down": cpu, "warnings": warnings}


def main(argv: list[str]) -> None:
    if argv[0] == "traffic":
        result = scenario_traffic(argv[1])
    elif argv[0] == "stop":
        result = scenario_stop()
    elif argv[0] == "veth":
        result = scenario_veth(argv[1], argv[2])
    elif argv[0] == "driven":
        result = scenario_driven(int(argv[1]), int(argv[2]))
    elif argv[0] == "spill":
        result = scenario_spill(int(argv[1]), int(argv[2]))
    elif argv[0] == "burst":
        result = scenario_burst(int(argv[1]), int(argv[2]), *argv[3:])
    elif argv[0] == "batches":
        result = scenario_batches(int(argv[1]))
    elif argv[0] == "recvmsg":
        result = scenario_recvmsg()
    elif argv[0] == "truncate":
        result = scenario_truncate()
    elif argv[0] == "down":
        result = scenario_down(*argv[1:])
    else:
        raise SystemExit(f"unknown scenario {argv[0]!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
