"""bench/run: every figure of the performance brief beside its reference, measured in the same run.

    bench/run                       everything (about 40 minutes on 2 cores, --runs 3; the
                                    tap section about 15 of them, its two senders)
    bench/run --only listing,knobs --runs 5
    bench/run --quick               smaller captures and tables, for a smoke run
    bench/run --only listing --listing-entries 65536    the listing at one table size

Figures (ratio = ours / reference; the target says which way is better):
  tracking   packets/s of engine.replay.replay and of `procfs-ct replay` on a 1,000,000-packet
             mixed capture, against dpkt merely decoding the same file to L4, by CPU time
             of the working process (the headline: the load does not move it) and by wall
             clock; and the floor: a bare Python loop over the file that only looks each
             key up;
  memory     bytes per entry at 262,144 entries in one process (RSS delta, tracemalloc
             cross-check), against the kernel's nf_conntrack slab object; 1,000,000 entries;
  listing    `cat MNT/net/nf_conntrack` and `cat MNT/net/ip_conntrack` against the kernel's
             `cat /proc/net/nf_conntrack` holding the same entries in a namespace, the two
             taking turns, at 65,536 and 262,144 entries on three table shapes
             (bench/shapes.py: server, gateway mix, one address pair), the worst the
             headline; `head -1` time to first byte; the daemon's RSS per entry before any
             listing and after every file has been read, over an empty mount's;
  knobs      `echo N > knob` latency (median, p99) while the mount tracks 50,000 packets/s,
             and the engine's packets/s during the writes and just before;
  expiry     CPU share of the mount with 262,144 idle entries; expiry cost vs entries expiring;
  tap        packets/s the live tap on lo holds for 20 s without drops or backlog, the
             sustained tracking rate behind it, CPU per frame of the tap and engine
             threads (bench/tapcost.py: instructions), and the sender's own ceiling and
             kernel CPU a datagram, for 1,024 flows and for 65,536 (to 65,536 addresses or
             from 64 source ports), each offered by two of bench/blast.py's senders: UDP
             sockets, and prebuilt frames from an AF_PACKET transmit ring (--sender packet,
             which costs the kernel less a datagram and so can offer 200 k/s beside the
             tap); the headline: the worst traffic, offered by the packet sender;
  profile    (only with --only profile) cProfile of the replay: where the time goes;
  daemon-memory  (only when named) the listing section's daemon RSS per entry alone, at
             262,144 entries on each shape, without the kernel's table or timed cats.
Each figure is the median of --runs runs, printed with the runs' range and the machine's
1-minute load average before and after it (other work on the machine skews a figure: run
it when the load is low).  The table is written to bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import time
import traceback
from typing import Callable, Dict, List, Optional, Tuple

from procfs_ct.tree import VIEWS

from . import captures, shapes, system
from .common import (PYTHON, REPO, Figure, Measuring, cache_path, load_average, median,
                     say, worker)
from .worker import source_stat

SECTIONS = ("tracking", "memory", "listing", "knobs", "expiry", "tap")
OPTIONAL = ("profile", "daemon-memory")   # run only when named in --only


# -- tracking ------------------------------------------------------------------------------
def _children_cpu() -> float:
    """CPU seconds (user + system) of the waited-for child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench_tracking(args: argparse.Namespace) -> List[Figure]:
    """Packets/s of the replay, the CLI and the bare loop against dpkt's decode, taking
    turns in each run.  The headline is the rate by CPU time (packets over the CPU seconds
    of the process doing the work, time.process_time() inside the worker): on a machine
    shared with other work the wall clock counts the time other processes held the CPU
    -- a run at load 2 moved the wall ratio from 0.98 to 2.23 -- while a process's own
    CPU time is the rate it would have alone.  The wall-clock figures stay beside it."""
    packets = 100_000 if args.quick else 1_000_000
    path = captures.mixed_capture(packets)
    ours, cli, dpkt, floor = [], [], [], []
    ours_cpu, cli_cpu, dpkt_cpu = [], [], []
    measuring = Measuring("tracking runs")
    measuring.__enter__()
    for run in range(args.runs):
        # The headline's two sides one right after the other: the VM's speed drifts over
        # tens of seconds (the same code measured 83-103 k/s between runs, round 12).
        result = worker("replay", path, "linux")
        ours.append(result["packets"] / result["seconds"])
        ours_cpu.append(result["packets"] / result["cpu_seconds"])
        try:
            result = worker("dpkt", path)
            dpkt.append(packets / result["seconds"])
            dpkt_cpu.append(packets / result["cpu_seconds"])
        except RuntimeError as exc:
            if "No module named 'dpkt'" not in str(exc):
                raise
            say("  dpkt is not installed: pip install -e '.[bench]'")
        cpu = _children_cpu()
        start = time.perf_counter()
        subprocess.run([PYTHON, "-m", "procfs_ct.cli", "replay", path, "--profile", "linux"],
                       cwd=REPO, stdout=subprocess.DEVNULL, check=True,
                       env=dict(os.environ, PYTHONPATH=REPO))
        cli.append(packets / (time.perf_counter() - start))
        cli_cpu.append(packets / (_children_cpu() - cpu))
        result = worker("floor", path)
        floor.append(result["packets"] / result["seconds"])
        say(f"  run {run + 1} (load {load_average():.2f}): replay {ours[-1]:.0f} pps wall, "
            f"{ours_cpu[-1]:.0f} by CPU time; CLI {cli[-1]:.0f} / {cli_cpu[-1]:.0f}; "
            f"bare loop {floor[-1]:.0f} pps"
            + (f"; dpkt {dpkt[-1]:.0f} / {dpkt_cpu[-1]:.0f}" if dpkt else ""))
    measuring.__exit__()
    ref, ref_cpu, load = median(dpkt), median(dpkt_cpu), measuring.load
    by_cpu = "packets per CPU second of the process"
    return [Figure(f"HEADLINE: tracking {packets} packets, engine.replay.replay (linux), "
                   f"{by_cpu}", median(ours_cpu), ref_cpu, "pps", "dpkt decode to L4", ">= 2",
                   note="the rate each would have alone; per run (its two sides one right after the "
                        f"other) {_per_run(ours_cpu, dpkt_cpu)}",
                   runs=ours_cpu, reference_runs=dpkt_cpu, load=load),
            Figure(f"tracking {packets} packets, engine.replay.replay (linux), wall clock",
                   median(ours), ref, "pps", "dpkt decode to L4", ">= 2", runs=ours,
                   reference_runs=dpkt, load=load),
            Figure(f"tracking {packets} packets, `procfs-ct replay --profile linux` end to end, "
                   f"{by_cpu}", median(cli_cpu), ref_cpu, "pps", "dpkt decode to L4", ">= 2",
                   runs=cli_cpu, reference_runs=dpkt_cpu, load=load),
            Figure(f"tracking {packets} packets, `procfs-ct replay --profile linux` end to end,"
                   " wall clock", median(cli), ref, "pps", "dpkt decode to L4", ">= 2",
                   runs=cli, reference_runs=dpkt, load=load),
            Figure(f"floor: a bare Python loop over the same {packets} packets (key slice, "
                   "dict lookup, two updates; no conntrack at all)", median(floor), ref, "pps",
                   "dpkt decode to L4", note=f"5x dpkt leaves {_budget_us(median(floor), ref)} "
                   "per packet for everything conntrack does", runs=floor,
                   reference_runs=dpkt, load=load)]


def _per_run(ours: List[float], reference: List[float]) -> str:
    """Each run's own ratio, ours over the reference measured beside it."""
    return ", ".join(f"{a / b:.2f}" for a, b in zip(ours, reference)) or "n/a"


def _budget_us(floor_pps: Optional[float], dpkt_pps: Optional[float]) -> str:
    """Microseconds per packet between the bare loop and 5x dpkt's rate."""
    if not floor_pps or not dpkt_pps:
        return "n/a"
    return f"{(1 / (5 * dpkt_pps) - 1 / floor_pps) * 1e6:.2f} us"


# -- memory --------------------------------------------------------------------------------
def kernel_entry_bytes() -> float:
    """The kernel's nf_conntrack slab object size (what one entry costs it)."""
    try:
        with open("/proc/slabinfo") as fileobj:
            for line in fileobj:
                fields = line.split()
                if fields and fields[0] == "nf_conntrack":
                    return float(fields[3])          # objsize
    except OSError:
        pass
    return 256.0                                      # issue 5's figure, when slabinfo is closed


def bench_memory(args: argparse.Namespace) -> List[Figure]:
    entries = 32768 if args.quick else 262144
    kernel = kernel_entry_bytes()
    figures = []
    rss = worker("memory", entries, "mix", "rss")
    traced = worker("memory", entries, "mix", "tracemalloc")
    say(f"  mix: {rss['per_entry']:.0f} B/entry RSS, {rss['per_entry_after_render']:.0f} after a "
        f"render; tracemalloc {traced['per_entry']:.0f} / {traced['per_entry_after_render']:.0f}")
    figures.append(Figure(f"memory per entry at {rss['entries']} entries (mix: 1/2 UDP, "
                          f"1/3 TCP established, 1/6 ICMP), RSS after a listing",
                          rss["per_entry_after_render"], kernel, "B", "kernel slab", "ours <= 500",
                          note=f"before any listing {rss['per_entry']:.0f} B; "
                               f"tracemalloc {traced['per_entry_after_render']:.0f} B"))
    for mix in ("udp", "tcp", "icmp"):
        one = worker("memory", entries, mix, "rss")
        figures.append(Figure(f"memory per entry at {one['entries']} entries, {mix} only",
                              one["per_entry_after_render"], kernel, "B", "kernel slab",
                              note=f"before any listing {one['per_entry']:.0f} B"))
    big = 100_000 if args.quick else 1_000_000
    million = worker("memory", big, "mix", "rss")
    figures.append(Figure(f"memory per entry at {million['entries']} entries (mix), RSS",
                          million["per_entry_after_render"], kernel, "B", "kernel slab",
                          note=f"built in {million['build_seconds']:.0f} s, "
                               f"{million['lines']} lines listed"))
    return figures


# -- listing and the daemon's memory ---------------------------------------------------------
def kernel_sysctls() -> Dict[str, str]:
    return {f"net.netfilter.nf_conntrack_{name}": str(value)
            for name, value in shapes.LONG_TIMEOUTS.items()}


def daemon_rss(pid: int) -> int:
    import psutil
    return psutil.Process(pid).memory_info().rss


def daemon_cpu(pid: int) -> float:
    """The daemon's CPU seconds so far (user + system, every thread)."""
    import psutil
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def empty_mount_rss() -> int:
    """RSS of a mount with an empty table (source none), after reading every file: what a
    daemon costs before its entries."""
    with system.Mount("none") as mount:
        read_every_file(mount)
        time.sleep(0.5)
        return daemon_rss(mount.pid)


def read_every_file(mount: system.Mount) -> None:
    for view in VIEWS:                   # every listing the mount serves, source counters too
        subprocess.run(["cat", mount.path(view.path)], stdout=subprocess.DEVNULL, check=True)


def daemon_rss_figure(label: str, rss_before: int, rss_after: int, empty_rss: int,
                      count: int, targeted: bool) -> Figure:
    """The daemon's RSS per entry over an empty mount's, after every file was read."""
    return Figure(f"daemon RSS per entry, {label}, after reading every file",
                  (rss_after - empty_rss) / count, kernel_entry_bytes(), "B", "kernel slab",
                  "ours <= 500" if targeted else "",
                  note=f"before any listing {(rss_before - empty_rss) / count:.0f} B"
                       f" (RSS {rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB, "
                       f"empty mount {empty_rss / 2**20:.0f} MiB)")


def bench_daemon_memory(args: argparse.Namespace) -> List[Figure]:
    """The listing section's daemon RSS figures alone (no kernel table, no timed cats):
    each shape's capture replayed into a mount, every file read, RSS per entry."""
    entries = 32768 if args.quick else 262144
    empty_rss = empty_mount_rss()
    say(f"  an empty mount's RSS after reading every file: {empty_rss / 2**20:.1f} MiB")
    figures = []
    for shape in shapes.SHAPES:
        capture = captures.shape_capture(shape, entries)
        with system.Mount(f"pcap:{capture}@0", max_entries=entries, expect=entries,
                          knobs=shapes.LONG_TIMEOUTS) as mount:
            rss_before = daemon_rss(mount.pid)
            read_every_file(mount)
            time.sleep(RELEASE_WAIT)
            figure = daemon_rss_figure(f"{entries} entries, {shape}", rss_before,
                                       daemon_rss(mount.pid), empty_rss, mount.count(), True)
        say(f"  {shape}: {figure.ours:.0f} B per entry ({figure.note})")
        figures.append(figure)
    return figures


def bench_listing(args: argparse.Namespace) -> List[Figure]:
    """`cat` of net/nf_conntrack and net/ip_conntrack on a mount against the kernel's `cat`
    of its own /proc/net/nf_conntrack holding the same entries, on every table shape, the
    two taking turns run by run; `head -1` time to first byte; the daemon's RSS per entry
    before any listing and after every file has been read."""
    figures: List[Figure] = []
    default_sizes = (8192, 32768) if args.quick else (65536, 262144)
    sizes = args.listing_entries or default_sizes
    targeted = max(default_sizes)        # head -1's and memory's targets are at this size
    runs = max(args.runs, 3)
    empty_rss = empty_mount_rss()
    say(f"  an empty mount's RSS after reading every file: {empty_rss / 2**20:.1f} MiB")
    worst: Dict[int, List[Figure]] = {}
    for entries in sizes:
        for shape in shapes.SHAPES:
            capture = captures.shape_capture(shape, entries)
            label = f"{entries} entries, {shape}"
            with system.Namespace(ruleset=system.FILL_RULESET, sysctls=kernel_sysctls(),
                                  addresses=system.SHAPE_PREFIXES) as ns, \
                    system.Mount(f"pcap:{capture}@0", max_entries=entries, expect=entries,
                                 knobs=shapes.LONG_TIMEOUTS) as mount:
                filled = worker("fill", capture, entries, netns=ns.name)
                if filled["entries"] != entries:
                    say(f"  {label}: the kernel holds {filled['entries']} entries, not {entries}")
                kernel_file = ns.proc_net("nf_conntrack")
                ours_nf, ours_ip = mount.path("net/nf_conntrack"), mount.path("net/ip_conntrack")
                rss_before = daemon_rss(mount.pid)
                cpu_before = daemon_cpu(mount.pid)
                with Measuring(f"{label}: cat") as cat_load:
                    cats = worker("timecat", runs, kernel_file, ours_nf, ours_ip)
                # timecat cats each of our files `runs` times, then once more for its size.
                cpu_per_cat = (daemon_cpu(mount.pid) - cpu_before) * 1000 / (2 * (runs + 1))
                with Measuring(f"{label}: head -1") as ttfb_load:
                    ttfb = worker("ttfb", max(runs, TTFB_RUNS), kernel_file, ours_nf)
                read_every_file(mount)
                time.sleep(RELEASE_WAIT)
                rss_after = daemon_rss(mount.pid)
                count = mount.count()
            ms = {path: [s * 1000 for s in times] for path, times in cats["seconds"].items()}
            sizes_note = (f"kernel {filled['entries']} entries, {cats['bytes'][kernel_file]} B; "
                          f"ours {count} entries, {cats['bytes'][ours_nf]} B; the daemon's CPU "
                          f"{cpu_per_cat:.0f} ms a cat (both files' mean)")
            say(f"  {label}: {sizes_note}")
            for name, path, note in (("nf_conntrack", ours_nf, sizes_note),
                                     ("ip_conntrack", ours_ip,
                                      f"ours {cats['bytes'][ours_ip]} B in the 2.6 format; "
                                      "the kernel has no ip_conntrack: its nf_conntrack")):
                figure = Figure(f"cat net/{name}, {label}", median(ms[path]),
                                median(ms[kernel_file]), "ms", "kernel cat", "<= 1.0",
                                note=note, runs=ms[path], reference_runs=ms[kernel_file],
                                load=cat_load.load)
                figures.append(figure)
                worst.setdefault(entries, []).append(figure)
            first = {path: [s * 1000 for s in times] for path, times in ttfb["seconds"].items()}
            figures.append(Figure(f"head -1 first byte, {label}", median(first[ours_nf]),
                                  median(first[kernel_file]), "ms", "kernel",
                                  "<= 2.0" if entries == targeted else "",
                                  runs=first[ours_nf], reference_runs=first[kernel_file],
                                  load=ttfb_load.load))
            figures.append(daemon_rss_figure(label, rss_before, rss_after, empty_rss, count,
                                             entries == targeted))
    for entries, listed in worst.items():
        top = max(listed, key=lambda f: f.ratio or 0)
        figures.insert(0, Figure(f"HEADLINE: worst listing of {entries} entries over the "
                                 f"shapes and files ({top.name})", top.ours, top.reference,
                                 "ms", "kernel cat", "<= 1.0", runs=top.runs,
                                 reference_runs=top.reference_runs, load=top.load))
    return figures


RELEASE_WAIT = 1.0      # seconds for the last reader's release to reach the daemon
# `head -1` runs per figure (each side): a first byte is a few ms, most of it the spawn of
# head, and one run in five meets the other work of the shared machine (2.3-6.5 ms for one
# figure in round 6): three runs' median moved with it.  Fifteen cost ~20 s a table.
TTFB_RUNS = 15


# -- knobs ---------------------------------------------------------------------------------
def percentile(values: List[float], share: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


KNOB_GAP = 0.01         # seconds between two writes


def scheduler_seconds(pid: int) -> Tuple[float, float]:
    """(CPU seconds, seconds runnable but waiting for a CPU) of every thread of pid so far
    (/proc/PID/task/*/schedstat): how much of the daemon's time the machine's load took."""
    ran = waited = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fileobj:
                fields = fileobj.read().split()
        except OSError:             # a thread that ended meanwhile
            continue
        ran += int(fields[0])
        waited += int(fields[1])
    return ran / 1e9, waited / 1e9


def bench_knobs(args: argparse.Namespace) -> List[Figure]:
    """`echo N > knob` (open O_WRONLY|O_CREAT|O_TRUNC, write, close) of a timeout knob while
    the mount tracks 50,000 packets/s: median and p99 of each run against the kernel's own
    knob, and the engine's packet rate while the writes run against its rate in an equal
    window just before; --runs runs, each on a fresh mount, the figures their medians."""
    packets = 100_000 if args.quick else 1_000_000
    path = captures.mixed_capture(packets)
    speed = 50000 / captures.GENERATE_RATE                 # the capture is ~20,000 pps
    knob = "sys/net/netfilter/nf_conntrack_udp_timeout"
    writes = 200
    medians, p99s, kernel_medians, kernel_p99s, notes, slowest = [], [], [], [], [], []
    with Measuring("knob writes") as load:
        for run in range(args.runs):
            with system.Namespace() as ns:
                kernel = worker("knobwrite", "/proc/" + knob, writes, KNOB_GAP, netns=ns.name)
            with system.Mount(f"pcap:{path}@{speed:g}", expect=1000) as mount:
                start_count = mount.count()
                stats = mount.path("net/stat/procfs_ct_source")
                # The daemon's CPU per packet over the window says how fast it could track
                # with a CPU to itself; its wait for a CPU, how much the machine's load held
                # it back (the engine lags either way: these say which).
                ran, waited = scheduler_seconds(mount.pid)
                fed, began = source_stat(stats, "packets"), time.monotonic()
                ours = worker("knobwrite", mount.path(knob), writes, KNOB_GAP, stats)
                ran_after, waited_after = scheduler_seconds(mount.pid)
                fed_after, wall = source_stat(stats, "packets"), time.monotonic() - began
                end_count = mount.count()
            cpu_us = (ran_after - ran) * 1e6 / max(1, fed_after - fed)
            us = [s * 1e6 for s in ours["seconds"]]
            kernel_us = [s * 1e6 for s in kernel["seconds"]]
            medians.append(median(us))
            p99s.append(percentile(us, 0.99))
            kernel_medians.append(median(kernel_us))
            kernel_p99s.append(percentile(kernel_us, 0.99))
            slowest.append(max(us))
            notes.append(f"table {start_count} -> {end_count}, engine "
                         f"{ours['rate_before']:.0f} -> {ours['rate_during']:.0f} packets/s, "
                         f"largest lag behind the capture {ours['lag_ms_before']} -> "
                         f"{ours['lag_ms_during']} ms, daemon CPU {cpu_us:.1f} us a packet "
                         f"(one core: {1e6 / cpu_us / 1000:.0f} k packets/s), waiting for a CPU "
                         f"{(waited_after - waited) / wall:.0%} of the time, "
                         f"read back {'ok' if ours['read_back_ok'] else 'WRONG'}")
            say(f"  run {run + 1}: median {medians[-1]:.0f} us, p99 {p99s[-1]:.0f} us, "
                f"kernel {kernel_medians[-1]:.0f} / {kernel_p99s[-1]:.0f} us; {notes[-1]}")
    note = (f"replaying at {speed:g}x = 50,000 packets/s offered; engine packets/s and its "
            f"largest lag (net/stat/procfs_ct_source lag_ms, sampled) before -> during the "
            f"writes, the daemon's CPU per packet fed and its threads' wait for a CPU (sum "
            f"over threads, per second) over both windows, per run: {'; '.join(notes)}")
    return [Figure("knob write latency (echo: open/write/close), median", median(medians),
                   median(kernel_medians), "us", "kernel", "ours <= 1000", note=note,
                   runs=medians, reference_runs=kernel_medians, load=load.load),
            Figure("knob write latency, p99", median(p99s), median(kernel_p99s), "us", "kernel",
                   "ours <= 5000", note=f"slowest {max(slowest):.0f} us", runs=p99s,
                   reference_runs=kernel_p99s, load=load.load)]


# -- expiry --------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    import psutil
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def bench_expiry(args: argparse.Namespace) -> List[Figure]:
    entries = 32768 if args.quick else 262144
    window = 5.0 if args.quick else 10.0
    shares: Dict[str, float] = {}
    idle_source = f"pcap:{captures.shape_capture('pair', entries)}@0"
    for label, source, expect in (("idle", idle_source, entries),
                                  ("empty", "none", 0)):
        with system.Mount(source, max_entries=entries, expect=expect,
                          knobs={"udp_timeout": 3600}) as mount:
            time.sleep(2.0)                             # let the load settle
            before = cpu_seconds(mount.pid)
            time.sleep(window)
            shares[label] = (cpu_seconds(mount.pid) - before) / window * 100
    inproc = worker("expiry", entries, "1000,10000,100000" if not args.quick else "1000,10000")
    cost = ", ".join(f"{r['removed']} expiring: {r['seconds'] * 1000:.1f} ms "
                     f"({r['seconds'] / max(r['removed'], 1) * 1e6:.2f} us each)"
                     for r in inproc["results"])
    idle = max(r["idle_seconds"] for r in inproc["results"]) * 1e6
    say(f"  expiry cost in a table of {entries}: {cost}; a pass with nothing due {idle:.0f} us")
    return [Figure(f"CPU of the mount with {entries} idle entries", shares["idle"], shares["empty"],
                   "%", "same mount, empty table", "ours <= 2",
                   note=f"difference {shares['idle'] - shares['empty']:.2f} % of a core"),
            Figure(f"expiry cost in a table of {entries} entries", None, None, "",
                   "", note=cost + f"; nothing due: {idle:.0f} us")]


# -- tap -----------------------------------------------------------------------------------
TAP_RATES = (50000, 100000, 150000, 200000, 250000, 0)  # offered packets/s; 0: as fast as it can
TAP_SECONDS, TAP_QUICK_SECONDS = 20, 5              # long enough that the ring (~420,000
                                                    # small frames) cannot hide a deficit
TAP_PORTS = 1024                                    # ports the sender cycles over
# The traffic the sender makes, by name: (ports, addresses of 127.0.0.0/8, source ports)
# -- a handful of flows, and the worst case users meet, many distinct flows (a table of
# 65,536 entries, each flow's next datagram 65,536 datagrams after its last) to 65,536
# distinct addresses: the headline.  The same 65,536 flows from 64 source ports to 1,024
# ports of one address make the same table for the engine but cost the sender 0.3-1.1 us
# (~20 %) less kernel CPU a datagram (a new destination address per datagram costs it a
# route lookup), and on two CPUs shared by the sender, lo's softirq and both our threads
# the sender's cost is part of what the figure measures (bench/RESULTS.md, tap65k): the
# two together say how much of the gap is the sender's.
TAP_SHAPES = {"1,024 flows": (TAP_PORTS, 1, 1),
              "65,536 flows to 65,536 addresses": (TAP_PORTS, 65536, 1),
              "65,536 flows from 64 source ports": (TAP_PORTS, 1, 64)}
TAP_CEILING_PACKETS = 2_000_000
# bench/blast.py's two senders, the headline's first.  Both offer the same datagrams (the
# same flows, bytes but for the IP id, tests/test_bench_blast.py); the packet sender hands
# lo prebuilt frames from an AF_PACKET transmit ring, and spares the kernel the UDP socket
# path per datagram (a route lookup per destination, __ip_select_ident, an skb built from
# user data; 1.8 against 3.8-4.6 us of kernel CPU a datagram, bench/RESULTS.md, pktsend):
# the socket sender beside the tap offered ~191 k/s at 65,536 addresses with no drop at
# any rate (round 11), so the figure measured the sender, not the tap.  The socket
# sender's figures stay beside it: the traffic real sockets make.
TAP_SENDERS = ("packet", "socket")
TAP_HEADLINE_SENDER = TAP_SENDERS[0]


def tap_held(result: dict) -> bool:
    """The engine kept up with the offered rate: no frame dropped or missing, and the last
    one tracked within a second (plus 5 % of the sending time) of the sender's end -- a
    backlog that a bigger ring would only have hidden longer counts as not keeping up."""
    return (result["kernel_drops"] == 0 and result["tracked"] >= result["sent"]
            and result["drain_end"] <= 1.0 + 0.05 * result["send_seconds"])


def _gil_share(result: dict) -> float:
    """CPU seconds a second of the tap and the engine thread together while tracking (the
    engine thread alone behind a pull source; the tap's reader process has a GIL of its
    own): one GIL, so near 1.0 they, not the sender or the CPUs, set the rate."""
    return result["sustained"] * (result["tap_cpu_us"] + result["engine_cpu_us"]) / 1e6


def _tap_threads_cpu(result: dict) -> str:
    """Our CPU per frame: the engine thread (behind a pull source it takes the frames the
    tap's reader process lays out, procfs_ct/sources/tapreader.py) and that reader, a
    process of its own (no GIL shared); a tap thread only in a tree that has one."""
    reader = result.get("reader_cpu_us", 0.0)       # 0.0: a tree without the reader
    engine = f"engine thread {result['engine_cpu_us']:.2f} us, reader process {reader:.2f} us"
    if not result["tap_cpu_us"]:
        return engine
    return f"tap thread {result['tap_cpu_us']:.2f} us, {engine}"


def bench_tap(args: argparse.Namespace) -> List[Figure]:
    """Each traffic shape at each rate of TAP_RATES, from each sender of TAP_SENDERS; the
    worst shape by the packet sender's figure is the headline."""
    seconds = TAP_QUICK_SECONDS if args.quick else TAP_SECONDS
    figures: List[Figure] = []
    bests: Dict[str, Dict[str, Optional[float]]] = {sender: {} for sender in TAP_SENDERS}
    for shape, (ports, addresses, sources) in TAP_SHAPES.items():
        for sender in TAP_SENDERS:
            best, shape_figures = _bench_tap_shape(shape, ports, addresses, sources, seconds,
                                                   sender)
            bests[sender][shape] = best
            figures += shape_figures
    headline = bests[TAP_HEADLINE_SENDER]
    worst = min(headline, key=lambda shape: headline[shape] or 0)
    note = "; ".join(f"{shape}: " + ", ".join(f"{sender} sender {bests[sender][shape] or 0:.0f}"
                                              for sender in TAP_SENDERS) + " pps"
                     for shape in TAP_SHAPES)
    return [Figure(f"live tap on lo, highest offered rate held for {seconds} s (no drop, "
                   f"no backlog), the worst traffic: {worst}; offered by the "
                   f"{TAP_HEADLINE_SENDER} sender (bench/blast.py --sender "
                   f"{TAP_HEADLINE_SENDER}: the one that can offer 200 k/s beside the tap)",
                   headline[worst], 200000, "pps", "wanted", ">= 1", note=note)] + figures


def _bench_tap_shape(shape: str, ports: int, addresses: int, sources: int, seconds: int,
                     sender: str) -> Tuple[Optional[float], List[Figure]]:
    """One traffic shape from one sender: (the highest offered rate held or None, its
    figures)."""
    say(f"  traffic: {shape} ({sources} source ports x {ports} ports x {addresses} "
        f"addresses), {sender} sender")
    load = os.getloadavg()[0]
    with system.Namespace(ruleset=system.DROP_RULESET) as ns:
        ceiling = worker("blast_ceiling", TAP_CEILING_PACKETS, ports, addresses, sources,
                         sender, netns=ns.name)
    ceiling_pps = ceiling["sent"] / ceiling["seconds"]
    say(f"  {sender} sender alone (nobody tapping): {ceiling_pps:.0f} pps, CPU a datagram "
        f"{ceiling['system_cpu_us']:.2f} us system, {ceiling['user_cpu_us']:.2f} us user; "
        f"load {load:.2f} -> {os.getloadavg()[0]:.2f}")
    results = []
    for rate in TAP_RATES:
        packets = int((rate or 250000) * seconds)
        load = os.getloadavg()[0]
        with system.Namespace(ruleset=system.DROP_RULESET) as ns:
            result = worker("tap", rate, packets, ports, addresses, sources, sender,
                            netns=ns.name)
        offered = result["sent"] / result["send_seconds"]
        results.append((offered, result))
        say(f"  offered {offered:.0f} pps: sent {result['sent']}, kept {result['kept']}, "
            f"kernel drops {result['kernel_drops']}, tracked {result['tracked']} "
            f"({result['fast_path']} by the fast path), drained {result['drain_end']:.1f} s "
            f"after the sender stopped; sustained {result['sustained']:.0f} pps; CPU per "
            f"frame: {_tap_threads_cpu(result)}, sender {result['sender_cpu_us']:.2f} us; "
            f"our threads {_gil_share(result):.2f} s a second (one GIL: at most 1); "
            f"softirq {100 * result['softirq_share']:.0f} % of a CPU while sending; "
            f"{result['entries']} entries, {result['early_drops']} early drops; load "
            f"{load:.2f} -> {os.getloadavg()[0]:.2f}{'' if tap_held(result) else ' (not held)'}")
    held = [offered for offered, result in results if tap_held(result)]
    best = max(held) if held else None
    sustained = max(result["sustained"] for _offered, result in results)
    details = "; ".join(f"{offered / 1000:.0f}k offered: {r['kernel_drops']} dropped, "
                        f"drained +{r['drain_end']:.1f} s" for offered, r in results)
    return best, [
        Figure(f"live tap on lo, {shape}, {sender} sender: highest offered rate held for "
               f"{seconds} s", best, 200000, "pps", "wanted", ">= 1", note=details),
        Figure(f"live tap on lo, {shape}, {sender} sender: sustained tracking rate (tracked "
               "/ first packet to drained)", sustained, 200000, "pps", "wanted", ">= 1"),
        Figure(f"{sender} sender (bench/blast.py --sender {sender}) alone, {shape}, nobody "
               "tapping: the ceiling", ceiling_pps, None, "pps",
               note=f"{ceiling['system_cpu_us']:.2f} us system CPU a datagram")]


# -- where the time goes -------------------------------------------------------------------
def bench_profile(args: argparse.Namespace) -> List[Figure]:
    """cProfile of an in-process replay of the mixed capture: the top functions by own time
    (cProfile slows Python calls down, so read the shares, not the absolute times)."""
    path = captures.mixed_capture(100_000 if args.quick else 1_000_000)
    out = cache_path("profile.txt")
    worker("profile", path, out, 25)
    with open(out) as fileobj:
        text = fileobj.read()
    start = text.find("   ncalls")
    say(text[start:].rstrip() if start >= 0 else text)
    say(f"  (full profile: {out})")
    return []


RUNNERS: Dict[str, Callable[[argparse.Namespace], List[Figure]]] = {
    "profile": bench_profile, "daemon-memory": bench_daemon_memory,
    "tracking": bench_tracking, "memory": bench_memory, "listing": bench_listing,
    "knobs": bench_knobs, "expiry": bench_expiry, "tap": bench_tap,
}
NEEDS_SYSTEM = {"listing", "knobs", "expiry", "tap", "daemon-memory"}


NOTES_MARKER = "<!-- notes: kept as they are when bench/run rewrites the table above -->"


def write_results(path: str, figures: List[Figure], command: str, seconds: float) -> None:
    """The table of figures, then whatever stands below NOTES_MARKER in the old file."""
    import psutil
    notes = ""
    if os.path.exists(path):
        with open(path) as fileobj:
            old = fileobj.read()
        if NOTES_MARKER in old:
            notes = old[old.index(NOTES_MARKER):]
    lines = ["# Benchmark results", "",
             f"Command: `{command}` (bench/run, {time.strftime('%Y-%m-%d %H:%M')}, "
             f"{seconds / 60:.0f} min). Python {platform.python_version()}, "
             f"{os.cpu_count()} CPUs, kernel {platform.release()}, "
             f"{psutil.virtual_memory().total >> 30} GiB RAM. Medians of the runs; "
             "ratio = ours / reference.", "",
             "| figure | ours | reference | ratio | target | runs (ours / reference) | load before -> after |",
             "|---|---|---|---|---|---|---|"]
    from .common import fmt
    for f in figures:
        ref = f"{fmt(f.reference, f.unit)} ({f.reference_name})" if f.reference is not None else ""
        ratio = f"{f.ratio:.2f}" if f.ratio is not None else ""
        target = f.target + ("" if f.met is None else " met" if f.met else " **not met**")
        ours = fmt(f.ours, f.unit) if f.ours is not None else ""
        load = f"{f.load[0]:.2f} -> {f.load[1]:.2f}" if f.load else ""
        lines.append(f"| {f.name}{' — ' + f.note if f.note else ''} | {ours} | {ref} | "
                     f"{ratio} | {target} | {f.spread()} | {load} |")
    with open(path, "w") as fileobj:
        fileobj.write("\n".join(lines) + "\n")
        if notes:
            fileobj.write("\n" + notes)


def _entry_counts(text: str) -> Tuple[int, ...]:
    """`65536,262144` -> (65536, 262144): positive entry counts, for --listing-entries."""
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of entry counts: {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"entry counts must be positive: {text!r}")
    return counts


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n")[0],
                                     epilog="\n".join(__doc__.split("\n")[2:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections ({', '.join(SECTIONS + OPTIONAL)}; "
                             "profile prints where the replay's time goes)")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--listing-entries", type=_entry_counts, default=None,
                        metavar="N[,N...]",
                        help="the listing section's table sizes (default 65536,262144; "
                             "--quick 8192,32768); head -1's and memory's targets are "
                             "at 262144 (--quick 32768)")
    parser.add_argument("--results", default=os.path.join(REPO, "bench", "RESULTS.md"),
                        help="write the table here ('-' for none)")
    args = parser.parse_args(argv)
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(wanted) - set(SECTIONS) - set(OPTIONAL)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    why_not = system.available()
    figures: List[Figure] = []
    started = time.monotonic()
    failed = False
    for section in wanted:
        say(f"== {section}")
        if section in NEEDS_SYSTEM and why_not:
            say(f"  skipped: {why_not}")
            continue
        try:
            with Measuring(section) as measuring:
                got = RUNNERS[section](args)
        except Exception:
            failed = True
            say(f"  {section} failed:\n{traceback.format_exc()}")
            continue
        for figure in got:
            if figure.load is None:
                figure.load = measuring.load
            say(figure.line())
        figures.extend(got)
    command = "bench/run " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.results != "-" and figures:
        write_results(args.results, figures, command.strip(), time.monotonic() - started)
        say(f"written: {args.results}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
