"""One measurement in a fresh interpreter: `python -m bench.worker TASK ARGS...`.

Each task prints one JSON object on its last line.  A fresh process per measurement keeps
the runs independent (no warm caches, no memory left over from an earlier figure) and lets
the kernel-side tasks run inside a network namespace (`ip netns exec NS python -m ...`).
"""
from __future__ import annotations

import gc
import json
import math
import os
import resource
import subprocess
import sys
import time
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Tuple

T0 = 1_700_000_000.0
GiB = 1 << 30


def _engine(max_entries: int):
    from engine.core import Engine
    return Engine("linux", ram_bytes=24 * GiB, max_entries=max_entries, ncpu=2)


# -- tracking ------------------------------------------------------------------------------
def task_replay(path: str, profile: str = "linux") -> Dict[str, Any]:
    """engine.replay.replay on a capture, in process: the engine's packets/s."""
    from engine.replay import replay
    cpu = time.process_time()
    start = time.perf_counter()
    result = replay(path, profile=profile)
    seconds = time.perf_counter() - start
    return {"packets": len(result.verdicts), "seconds": seconds,
            "cpu_seconds": time.process_time() - cpu, "entries": result.engine.count}


def task_dpkt(path: str) -> Dict[str, Any]:
    """dpkt decoding the same capture to L4 objects: Ethernet -> IP -> TCP/UDP/ICMP."""
    import dpkt
    decoded = 0
    cpu = time.process_time()
    start = time.perf_counter()
    with open(path, "rb") as fileobj:
        for _ts, buf in dpkt.pcap.Reader(fileobj):
            eth = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            if isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, (dpkt.tcp.TCP, dpkt.udp.UDP,
                                                                    dpkt.icmp.ICMP)):
                decoded += 1
    seconds = time.perf_counter() - start
    return {"decoded": decoded, "seconds": seconds, "cpu_seconds": time.process_time() - cpu}


def task_floor(path: str) -> Dict[str, Any]:
    """The floor of any per-packet Python tracker on this file: a bare loop over the
    records (whole file in memory, no frame copies) that slices each packet's key, looks
    it up and updates two fields -- no states, windows, timers or stats."""
    import struct
    with open(path, "rb") as fileobj:
        data = fileobj.read()
    record = struct.Struct("<IIII").unpack_from
    table: Dict[bytes, list] = {}
    get = table.get
    start = time.perf_counter()
    pos, size, packets = 24, len(data), 0
    while pos + 16 <= size:
        seconds, fraction, caplen, _ = record(data, pos)
        frame = pos + 16
        ts = seconds + fraction * 1e-6
        if data[frame + 12:frame + 14] == b"\x08\x00":
            key = data[frame + 26:frame + 38]
            entry = get(key)
            if entry is None:
                table[key] = [ts, 1]
            else:
                entry[0] = ts
                entry[1] += 1
        pos = frame + caplen
        packets += 1
    return {"packets": packets, "seconds": time.perf_counter() - start, "keys": len(table)}


def task_profile(path: str, out: str, limit: str = "30") -> Dict[str, Any]:
    """cProfile of an in-process replay; the top functions by own time go to `out`."""
    import cProfile
    import io
    import pstats
    from engine.replay import replay
    profiler = cProfile.Profile()
    profiler.enable()
    replay(path, profile="linux")
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(int(limit))
    with open(out, "w") as fileobj:
        fileobj.write(text.getvalue())
    return {"written": out}


# -- memory --------------------------------------------------------------------------------
def _rss() -> int:
    import psutil
    return psutil.Process().memory_info().rss


def task_memory(entries: str, mix: str = "mix", mode: str = "rss") -> Dict[str, Any]:
    """Bytes per entry for a table of `entries` entries of `mix` (bench/traffic.py), or of
    a table shape of bench/shapes.py when `mix` names one (server, gateway, pair).

    rss: RSS after the table is built minus RSS before the engine existed, then again
    after one nf_conntrack render (any per-entry text cache filled).  tracemalloc: the
    same deltas as Python's allocator sees them (no fragmentation, no interpreter pools).
    """
    from bench.shapes import SHAPES, datagrams
    from bench.traffic import mixed_datagrams
    from engine.hooks import LOCAL_OUT
    wanted = int(entries)

    def source(count: int):
        return datagrams(mix, count) if mix in SHAPES else mixed_datagrams(count, mix)
    for _ in source(64):
        pass                                 # warm up the builders' own caches
    gc.collect()
    if mode == "tracemalloc":
        import tracemalloc
        tracemalloc.start()
        measure: Callable[[], int] = lambda: tracemalloc.get_traced_memory()[0]
    else:
        measure = _rss
    before = measure()
    engine = _engine(max(2 * wanted, 1024))
    feed = engine.feed_datagram
    now = T0
    start = time.perf_counter()
    for datagram in source(wanted):
        feed(now, datagram, LOCAL_OUT)
        now += 1e-6
    build_seconds = time.perf_counter() - start
    gc.collect()
    after_build = measure()
    from engine.render import render_listing
    text = render_listing(engine.tracker, now, True)
    lines = text.count(b"\n")
    del text
    gc.collect()
    after_render = measure()
    count = engine.count
    return {"entries": count, "lines": lines, "mode": mode, "mix": mix,
            "build_seconds": build_seconds,
            "per_entry": (after_build - before) / count,
            "per_entry_after_render": (after_render - before) / count}


# -- expiry (in process) -------------------------------------------------------------------
def task_expiry(table: str, sizes: str) -> Dict[str, Any]:
    """Time tracker.expire() for k expiring entries in a table of `table` entries."""
    import struct
    from bench.shapes import pair_ports
    from engine.build import build_udp_datagram
    from engine.hooks import LOCAL_OUT
    total = int(table)
    results = []
    template = bytearray(build_udp_datagram("10.0.0.1", "10.0.0.2", 1, 1, b"x"))
    for k in (int(x) for x in sizes.split(",")):
        engine = _engine(total)
        engine.knobs.set("udp_timeout", 3600)
        ports = pair_ports(total)
        for n, (sport, dport) in enumerate(ports):
            if n == total - k:
                engine.knobs.set("udp_timeout", 30)      # the last k entries expire first
            struct.pack_into("!HH", template, 20, sport, dport)
            engine.feed_datagram(T0, bytes(template), LOCAL_OUT)
        gc.collect()
        start = time.perf_counter()
        idle = engine.tracker.expire(T0 + 29)           # nothing due yet
        idle_seconds = time.perf_counter() - start
        start = time.perf_counter()
        removed = engine.tracker.expire(T0 + 31)
        seconds = time.perf_counter() - start
        results.append({"expiring": k, "removed": removed, "seconds": seconds,
                        "idle_removed": idle, "idle_seconds": idle_seconds,
                        "left": engine.count})
        del engine
        gc.collect()
    return {"table": total, "results": results}


def task_fill(capture: str, entries: str) -> Dict[str, Any]:
    """Inside a namespace: send the datagrams of a shape capture from a raw socket (the
    kernel tracks them in OUTPUT, as the mount's engine does), then report its count."""
    import socket
    from bench.captures import capture_datagrams
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    send = sock.sendto
    sent = 0
    start = time.perf_counter()
    for datagram in capture_datagrams(capture):
        send(datagram, (socket.inet_ntoa(datagram[16:20]), 0))
        sent += 1
    seconds = time.perf_counter() - start
    with open("/proc/sys/net/netfilter/nf_conntrack_count") as fileobj:
        count = int(fileobj.read())
    return {"entries": count, "wanted": int(entries), "sent": sent, "seconds": seconds}


# -- listing (files) -----------------------------------------------------------------------
# The mount shares one render of a listing among the readers of the next 0.5 s while one
# holds it (procfs_ct/fs.py SNAPSHOT_TTL): runs are spaced further apart, so each renders.
RUN_GAP = 0.6


def task_render(entries: str, rounds: str = "11") -> Dict[str, Any]:
    """The renderer alone, in process: CPU seconds per line of net/nf_conntrack and
    net/ip_conntrack for each table shape (bench/shapes.py), best of `rounds` rounds, the
    shapes and files taking turns in each round."""
    from engine.hooks import LOCAL_OUT
    from engine.render import render_listing
    from .captures import capture_datagrams, shape_capture
    from .shapes import SHAPES
    wanted = int(entries)
    tables = {}
    for shape in SHAPES:
        engine = _engine(2 * wanted)
        now = T0
        for datagram in capture_datagrams(shape_capture(shape, wanted)):
            engine.feed_datagram(now, datagram, LOCAL_OUT)
            now += 1e-6
        tables[shape] = (engine, now)
    best: Dict[str, float] = {}
    for _ in range(int(rounds)):
        for shape, (engine, now) in tables.items():
            for name, modern in (("nf_conntrack", True), ("ip_conntrack", False)):
                start = time.process_time()
                render_listing(engine.tracker, now, modern)
                seconds = time.process_time() - start
                key = f"{shape} {name}"
                best[key] = min(best.get(key, seconds), seconds)
    return {"entries": {shape: engine.count for shape, (engine, _) in tables.items()},
            "us_per_line": {key: seconds * 1e6 / tables[key.split()[0]][0].count
                            for key, seconds in best.items()}}


def _in_turns(runs: str, paths: Tuple[str, ...]) -> Iterator[str]:
    """Each path once a run, `runs` runs, the paths taking turns (the kernel's file and
    ours see the same load), each turn RUN_GAP after the last."""
    for _ in range(int(runs)):
        for path in paths:
            time.sleep(RUN_GAP)
            yield path


def task_timecat(runs: str, *paths: str) -> Dict[str, Any]:
    """Wall time of `cat PATH > /dev/null` (each run a new cat) for each path, the paths
    taking turns run by run, and the size of each."""
    times: Dict[str, List[float]] = {path: [] for path in paths}
    for path in _in_turns(runs, paths):
        start = time.perf_counter()
        subprocess.run(["cat", path], stdout=subprocess.DEVNULL, check=True)
        times[path].append(time.perf_counter() - start)
    sizes = {}
    for path in paths:
        time.sleep(RUN_GAP)
        sizes[path] = len(subprocess.run(["cat", path], stdout=subprocess.PIPE, check=True).stdout)
    return {"seconds": times, "bytes": sizes}


def task_ttfb(runs: str, *paths: str) -> Dict[str, Any]:
    """Time from starting `head -1 PATH` until its first byte arrives, paths taking turns."""
    times: Dict[str, List[float]] = {path: [] for path in paths}
    for path in _in_turns(runs, paths):
        start = time.perf_counter()
        proc = subprocess.Popen(["head", "-1", path], stdout=subprocess.PIPE)
        first = os.read(proc.stdout.fileno(), 1)
        times[path].append(time.perf_counter() - start)
        proc.stdout.read()
        proc.wait()
        if not first:
            raise RuntimeError(f"head -1 {path}: empty")
    return {"seconds": times}


def source_stat(stats_path: str, wanted: str) -> int:
    """One counter of a mount's net/stat/procfs_ct_source."""
    with open(stats_path) as fileobj:
        for line in fileobj:
            name, value = line.split()
            if name == wanted:
                return int(value)
    raise RuntimeError(f"no {wanted} line in {stats_path}")


LAG_SAMPLE_EVERY = 10       # writes between two samples of the engine's lag


def task_knobwrite(path: str, runs: str = "200", gap: str = "0.01",
                   stats_path: str = "") -> Dict[str, Any]:
    """open/write/close of a knob (what `echo N > knob` does), timed, then read back.

    With stats_path (a mount's source statistics), also the engine's packets/s over a
    window as long as the writes just before them, and over the writes, and the largest
    lag behind its source (lag_ms, sampled) in each: a source's own rate varies, so the
    lag, not the rate, says whether the engine keeps up."""
    times: List[float] = []
    original = open(path).read().strip()
    value = int(original)
    rates: Dict[str, Any] = {}
    if stats_path:
        window = int(runs) * float(gap)
        start, fed = time.monotonic(), source_stat(stats_path, "packets")
        lags = []
        while time.monotonic() - start < window:
            time.sleep(LAG_SAMPLE_EVERY * float(gap))
            lags.append(source_stat(stats_path, "lag_ms"))
        fed_now = source_stat(stats_path, "packets")
        rates["rate_before"] = (fed_now - fed) / (time.monotonic() - start)
        rates["lag_ms_before"] = max(lags)
        start, fed, lags = time.monotonic(), source_stat(stats_path, "packets"), []
    for n in range(int(runs)):
        data = f"{value + 1 + n % 2}\n".encode()
        begin = time.perf_counter()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)      # as echo N > knob
        os.write(fd, data)
        os.close(fd)
        times.append(time.perf_counter() - begin)
        time.sleep(float(gap))
        if stats_path and n % LAG_SAMPLE_EVERY == LAG_SAMPLE_EVERY - 1:
            lags.append(source_stat(stats_path, "lag_ms"))
    if stats_path:
        fed_now = source_stat(stats_path, "packets")
        rates["rate_during"] = (fed_now - fed) / (time.monotonic() - start)
        rates["lag_ms_during"] = max(lags)
    seen = open(path).read().strip()
    expected = str(value + 1 + (int(runs) - 1) % 2)
    with open(path, "w") as fileobj:
        fileobj.write(original + "\n")
    return {"seconds": times, "read_back_ok": seen == expected, **rates}


# -- live tap ------------------------------------------------------------------------------
def _thread_cpu_seconds(name: str) -> float:
    """CPU seconds the thread called `name` has run (schedstat), 0 if there is none."""
    import threading
    for thread in threading.enumerate():
        if thread.name == name and thread.native_id is not None:
            with open(f"/proc/self/task/{thread.native_id}/schedstat") as fileobj:
                return int(fileobj.read().split()[0]) / 1e9
    return 0.0


def _softirq_seconds() -> float:
    """CPU seconds all CPUs have spent in softirq (/proc/stat): where lo's receive path,
    conntrack and the packet sockets' copies run when the sender's own context hands off."""
    with open("/proc/stat") as fileobj:
        fields = fileobj.readline().split()
    return int(fields[7]) / os.sysconf("SC_CLK_TCK")


# EngineDriver's pump and engine threads (a pull source, the tap, has no pump: its
# reader is a process of its own, _reader_cpu_seconds()).
TAP_THREADS = {"tap": "procfs-ct-source", "engine": "procfs-ct-engine"}


def _reader_cpu_seconds(tap: Any) -> float:
    """CPU seconds the tap's reader process (procfs_ct/sources/tapreader.py) has run, 0
    before it starts (or in a tree without it)."""
    reader = getattr(tap, "_reader", None)
    if reader is None:
        return 0.0
    with open(f"/proc/{reader.process.pid}/stat") as fileobj:
        fields = fileobj.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
TAP_SWITCH_INTERVAL_ENV = "PROCFS_CT_BENCH_SWITCH_INTERVAL"   # seconds, for task_tap


def _mounts_driver(engine: Any, tap: Any) -> Any:
    """The EngineDriver `procfs-ct mount` runs (procfs_ct/cmd_mount.py mount_driver(): its
    GIL switch interval and collector policy); TAP_SWITCH_INTERVAL_ENV sets another switch
    interval to compare."""
    from procfs_ct.cmd_mount import mount_driver
    driver = mount_driver(engine, tap)
    if os.environ.get(TAP_SWITCH_INTERVAL_ENV):
        sys.setswitchinterval(float(os.environ[TAP_SWITCH_INTERVAL_ENV]))
    return driver


class SenderCpu(NamedTuple):
    """CPU seconds a sender process ran: in user space, and in the kernel on its behalf."""
    user: float
    system: float


def _blast(rate: str, packets: str, ports: str, addresses: str, sources: str,
           sender: str) -> Tuple[Dict[str, Any], SenderCpu]:
    """bench/blast.py in a process of its own: its {"sent", "seconds", "end"} and the CPU
    it ran -- getrusage(RUSAGE_CHILDREN) counts a child once it has been waited for, so
    the difference around the run is this child's alone (the worker runs one at a time)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-m", "bench.blast", "--sender", sender, rate,
                           packets, ports, addresses, sources],
                          capture_output=True, text=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (json.loads(done.stdout.strip().splitlines()[-1]),
            SenderCpu(after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime))


def task_tap(rate: str, packets: str, ports: str = "1024", addresses: str = "1",
             sources: str = "1", sender: str = "socket") -> Dict[str, Any]:
    """Inside a namespace: the tap on lo feeding an engine while bench/blast.py's `sender`
    sends (to `ports` ports of `addresses` addresses, from `sources` source ports).

    `drained` is when the engine had tracked every frame the tap kept (or nothing moved for
    2 s); the sustained rate is what was tracked from the sender's first packet to then,
    which no ring or queue size can flatter.  The two threads' CPU seconds (schedstat)
    over the same span say what each frame cost the tap and the engine."""
    from engine.core import Engine
    from procfs_ct.sources.tap import Tap
    tap = Tap(["lo"])
    engine = Engine("linux", ram_bytes=24 * GiB, ncpu=2)
    driver = _mounts_driver(engine, tap)
    driver.start()
    time.sleep(0.3)
    cpu_before = {part: _thread_cpu_seconds(name) for part, name in TAP_THREADS.items()}
    reader_before = _reader_cpu_seconds(tap)
    softirq_before = _softirq_seconds()
    sent, sender_cpu = _blast(rate, packets, ports, addresses, sources, sender)
    softirq = _softirq_seconds() - softirq_before
    wanted = sent["sent"]
    deadline = time.monotonic() + 300
    last, still = -1, 0
    while time.monotonic() < deadline:
        stats = tap.poll_stats()
        done = driver.stats.packets
        if stats.kept + stats.kernel_drops >= wanted and done >= stats.kept:
            break
        if done == last:
            still += 1
            if still > 20:                 # nothing moved for 2 s: whatever is missing is lost
                break
        else:
            last, still = done, 0
        time.sleep(0.1)
    drained = time.monotonic()
    cpu = {part: _thread_cpu_seconds(name) - cpu_before[part]
           for part, name in TAP_THREADS.items()}
    reader_cpu = _reader_cpu_seconds(tap) - reader_before
    stats = tap.poll_stats()
    tracked = driver.stats.packets
    driver.stop()
    tap.close()
    started = sent["end"] - sent["seconds"]
    return {"rate": float(rate), "sender": sender, "sent": wanted, "send_seconds": sent["seconds"],
            "kept": stats.kept, "kernel_drops": stats.kernel_drops, "tracked": tracked,
            "drain_end": drained - sent["end"],
            "sustained": tracked / (drained - started),
            "tap_cpu_us": 1e6 * cpu["tap"] / max(1, stats.received),
            "reader_cpu_us": 1e6 * reader_cpu / max(1, stats.received),
            "spilled": getattr(stats, "spilled", 0),
            "engine_cpu_us": 1e6 * cpu["engine"] / max(1, tracked),
            "sender_cpu_us": 1e6 * (sender_cpu.user + sender_cpu.system) / max(1, wanted),
            "softirq_share": softirq / sent["seconds"],
            "entries": engine.count, "early_drops": engine.tracker.stats["early_drop"],
            "fast_path": getattr(driver.stats, "fast_path", 0),   # 0: a tree without it
            "switch_interval": sys.getswitchinterval()}


def task_tap_drain(packets: str, ports: str = "1024", addresses: str = "1",
                   sources: str = "1") -> Dict[str, Any]:
    """Inside a namespace: our side of the tap alone, no sender beside it.  One pass of
    bench/blast.py's flows is tracked first (the table as a long run has it), then
    `packets` more wait in the tap's ring with nobody reading, then the engine driver
    starts and takes them: the rate it drains them at and both threads' CPU per frame
    are what the tap and the engine cost, whatever the sender and the load would take."""
    from engine.core import Engine
    from procfs_ct.sources.tap import Tap
    flows = int(sources) * math.lcm(int(ports), int(addresses))
    tap = Tap(["lo"])
    engine = Engine("linux", ram_bytes=24 * GiB, ncpu=2)
    _blast("0", str(flows), ports, addresses, sources, "socket")     # its CPU: not wanted
    # Until every frame of the pass is read or dropped (a loaded machine slows the sender
    # past the ring's second: waiting for all of them hung the task).
    warm, batches = 0, tap.batches()
    while warm + tap.poll_stats().kernel_drops < flows:
        for ts, linktype, frame in next(batches):
            engine.feed_frame(ts, linktype, frame)
            warm += 1
    _blast("0", packets, ports, addresses, sources, "socket")
    time.sleep(0.05)                   # the last block is handed over (retire timer: 4 ms)
    drops_before = tap.stats.kernel_drops
    kept_before = tap.stats.kept
    wanted = int(packets) - (tap.poll_stats().kernel_drops - drops_before)
    driver = _mounts_driver(engine, tap)
    cpu_before = {part: _thread_cpu_seconds(name) for part, name in TAP_THREADS.items()}
    started = time.monotonic()
    driver.start()
    while driver.stats.packets < wanted and time.monotonic() < started + 60:
        time.sleep(0.002)
    drained = time.monotonic() - started
    cpu = sum(_thread_cpu_seconds(name) - cpu_before[part] for part, name in TAP_THREADS.items())
    cpu += _reader_cpu_seconds(tap)     # started with the driver: all of it is this drain's
    tracked = driver.stats.packets
    driver.stop()
    tap.close()
    return {"flows": flows, "warmed": warm, "sent": int(packets),
            "kernel_drops": int(packets) - wanted,
            "kept": tap.stats.kept - kept_before, "tracked": tracked, "seconds": drained,
            "rate": tracked / drained, "cpu_us": 1e6 * cpu / max(1, tracked),
            "switch_interval": sys.getswitchinterval(), "entries": engine.count}


def task_blast_ceiling(packets: str, ports: str = "1024", addresses: str = "1",
                       sources: str = "1", sender: str = "socket") -> Dict[str, Any]:
    """Inside a namespace with nobody tapping: bench/blast.py's `sender` unpaced, its own
    ceiling, and its CPU per datagram (user and system: the kernel's share of sending;
    the user time includes building the packet sender's frames before the first send)."""
    sent, cpu = _blast("0", packets, ports, addresses, sources, sender)
    count = max(1, sent["sent"])
    return {**sent, "sender": sender, "user_cpu_us": 1e6 * cpu.user / count,
            "system_cpu_us": 1e6 * cpu.system / count}


TASKS = {name[5:]: value for name, value in globals().items() if name.startswith("task_")}


def main(argv: List[str]) -> int:
    task = TASKS[argv[0]]
    result = task(*argv[1:])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
