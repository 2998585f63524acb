"""`procfs-ct mount MOUNTPOINT`: serve the engine's /proc files over FUSE.

This module is the command line: its arguments, the checks made before anything
starts, and `run`.  Detaching, signals and unmounting are in daemon.py, the state file
in statefile.py.  Order of events, and why:
  1. check everything that can be checked (mountpoint, source spec, engine options,
     the files it will write) while errors can still be printed as one line;
  2. restore the state file, if any: a file that fails its checks is set aside and
     said so in one line, and the mount starts empty;
  3. daemonise unless --foreground (double fork, before any thread exists); the
     parent waits until the kernel has mounted the filesystem and exits 0, or 1;
  4. block the shutdown signals, start the signal watcher, the engine thread and the
     state saver, then FUSE() in the main thread until unmounted;
  5. after FUSE() returns: stop the engine thread, save the state file a last time.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import threading
import time
from typing import Any, Iterator, Optional, Set, Tuple

from engine.profile import PROFILES
from procfs_ct import daemon, statefile
from procfs_ct.errors import UsageError
from procfs_ct.rulesfile import RULES_VIEWS, attach_chains, load_rules_file
from procfs_ct.tree import default_tree, describe

log = daemon.log

HELP = "Mount the emulated /proc files (net/*, sys/*) at MOUNTPOINT over FUSE."
SOURCES = ("synthetic[:PACKETS_PER_SECOND] (default) | pcap:FILE[@SPEED] | tap:IFACE[,IFACE...] "
           "| sockets[:SECONDS] | none")
# Sources whose frames are all known in advance: the engine's time waits for them.
SCHEDULED_SOURCES = ("synthetic", "pcap", "none")
# How long the engine thread may keep the GIL while a FUSE thread waits for it.  The
# default 5 ms made every read of a busy daemon wait up to a few intervals: 7-byte reads
# at 20,000 packets/s had a p99 of 15 ms; with 0.5 ms it is about 1 ms.  A knob write is
# four FUSE calls (open, write, flush, release), each a GIL hand-off: at 50,000 packets/s
# (load ~4) its median was 1.6-2.5 ms with 0.5 ms, 0.8-1.3 ms with 0.2 ms, and the
# engine's rate no lower (bench/RESULTS.md).  Measured again once the pcap pump took lists
# (round 8, load 4.3-5.1, medians of 3 runs): 0.1 ms 0.98-1.01 ms, 0.2 ms 0.88-1.26 ms,
# 0.5 ms 1.26-1.96 ms, 1 ms 2.85-3.42 ms, the engine's rate the same within the noise.
# On a quiet machine with the engine keeping up (lead, 14:47-14:56, load 0.6-0.9, five
# sets of 3 runs each, in turns): 0.1 ms 0.90-0.97 ms in every set, 0.2 ms 1.10-1.20 ms;
# p99 3.6-5.3 against 3.6-5.1 ms; the engine 50,000 packets/s either way, and the live tap
# (two Python threads under one GIL) held 201/184/197 k against 198/191/200 k: within its noise.
GIL_SWITCH_INTERVAL = 0.0001


def _epilog() -> str:
    return (f"SPEC: {SOURCES}\n\n" + describe(default_tree()) + "\n\n"
            "Stop it with `fusermount -u MOUNTPOINT`, SIGTERM or SIGINT.")


EPILOG = _epilog()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mountpoint", metavar="MOUNTPOINT", help="an empty directory")
    parser.add_argument("--source", default="synthetic", metavar="SPEC",
                        help="where packets come from (default: synthetic)")
    parser.add_argument("--profile", choices=PROFILES, default="tutorial",
                        help="tutorial (2.4/2.6 ip_conntrack, default) or linux (nf_conntrack)")
    parser.add_argument("--seed", type=int, default=0, metavar="N",
                        help="seed of the synthetic source (default 0)")
    parser.add_argument("--max", type=int, dest="max_entries", default=None, metavar="N",
                        help="table size limit (default: from RAM, by the profile's formula)")
    parser.add_argument("--buckets", type=int, default=None, metavar="N",
                        help="hash buckets (default: from RAM); max follows as 8 x buckets")
    parser.add_argument("--foreground", "-f", action="store_true",
                        help="stay in the foreground (default: become a daemon once mounted)")
    parser.add_argument("--allow-other", action="store_true",
                        help="let users other than root see the files (mode bits still apply)")
    parser.add_argument("--state-file", metavar="PATH", default=None,
                        help="keep the table and knob values across restarts in this JSON file")
    parser.add_argument("--state-interval", type=float, metavar="SECONDS",
                        default=statefile.DEFAULT_INTERVAL,
                        help="save the state file this often (default "
                             f"{statefile.DEFAULT_INTERVAL:g}; 0 = only when stopping)")
    parser.add_argument("--log-file", metavar="PATH", default=None,
                        help="log here (default: standard error in the foreground, "
                             "/run/procfs-ct/<mountpoint>.log as a daemon)")
    parser.add_argument("--pid-file", metavar="PATH", default=None,
                        help="write the daemon's pid here (default: /run/procfs-ct/<mountpoint>.pid)")
    parser.add_argument("--verbose", "-v", action="store_true", help="log debug messages")
    parser.add_argument("--rules", metavar="FILE", default=None,
                        help="iptables-restore file evaluated at the hooks for every packet; "
                             "adds net/ip_tables_names, _matches, _targets")
    parser.add_argument("--no-auto-unmount", action="store_true",
                        help="leave the mount behind if the daemon is killed (default: libfuse's "
                             "auto_unmount removes it)")


# -- checks made before anything starts ------------------------------------------------------
def check_mountpoint(path: str) -> str:
    """The absolute mountpoint; refuses a missing, busy or stale one with one clear line."""
    mnt = os.path.abspath(path)
    problem = daemon.stale_mount_error(mnt)
    if problem:
        raise UsageError(problem)
    if not os.path.isdir(mnt):
        raise UsageError(f"{mnt}: not a directory")
    if os.path.ismount(mnt):
        raise UsageError(f"{mnt}: already a mount point; unmount it first "
                         f"(`fusermount -u {mnt}` or ./mount.sh -u)")
    if os.listdir(mnt):
        # libfuse2 refuses too, but only after the daemon started; libfuse3 would hide them.
        raise UsageError(f"{mnt}: not empty; mount on an empty directory")
    return mnt


def check_numbers(args: argparse.Namespace) -> None:
    if args.max_entries is not None and args.max_entries < 0:
        raise UsageError(f"--max {args.max_entries}: out of range")
    if args.buckets is not None and args.buckets < 1:
        raise UsageError(f"--buckets {args.buckets}: out of range")
    if not math.isfinite(args.state_interval) or args.state_interval < 0:
        raise UsageError(f"--state-interval {args.state_interval:g}: must be a number of "
                         "seconds >= 0")


def open_frames(spec: str, seed: int) -> Iterator:
    """The source's frames (a bad SPEC raises UsageError here, before anything starts)."""
    from procfs_ct.sources import open_source
    return open_source(spec, seed)


def writable_file(option: str, path: str) -> str:
    """The absolute path of a file the daemon will write; one line if it cannot."""
    problem = daemon.check_writable(path)
    if problem:
        raise UsageError(f"{option} {problem}")
    return os.path.abspath(path)


def state_path(path: str) -> str:
    """The absolute state file path; one line if its directory cannot take it."""
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--state-file {path}: {exc.strerror}") from None
    if os.path.isdir(path):
        raise UsageError(f"--state-file {path}: is a directory")
    if not os.access(directory, os.W_OK):
        raise UsageError(f"--state-file {path}: cannot write in {directory}")
    return path


def restore_state(path: str, engine: Any,
                  keep: Set[str]) -> Tuple[Optional[statefile.Restored], Optional[str]]:
    """Restore the state file into the engine: (Restored or None, a refusal to report)."""
    try:
        return statefile.restore(path, engine, time.time(), keep), None
    except statefile.StateFileError as exc:
        try:
            aside = statefile.set_aside(path)
        except OSError as move:
            aside = f"(not set aside: {move.strerror})"
        return None, (f"--state-file {path}: {exc}; set aside as {aside}, "
                      "starting with an empty table")


# -- the command --------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    from engine.core import Engine

    mnt = check_mountpoint(args.mountpoint)
    check_numbers(args)
    rules = load_rules_file(args.rules) if args.rules else None
    frames = open_frames(args.source, args.seed)
    engine = Engine(profile=args.profile, max_entries=args.max_entries, buckets=args.buckets)
    # A live tap's frames carry interface indexes; its namespace's names are -i/-o's.
    engine.interface_lookup = getattr(frames, "interface_names", None)
    if rules is not None:
        # Without --rules the chains come with the first iptables command (the channel).
        attach_chains(engine, rules)
    state_file = state_path(args.state_file) if args.state_file else None
    pid_file = writable_file("--pid-file", args.pid_file or daemon.default_run_file(mnt, ".pid"))
    log_file = args.log_file
    if log_file is None and not args.foreground:
        log_file = daemon.default_run_file(mnt, ".log")    # a daemon keeps no terminal
    if log_file:
        log_file = writable_file("--log-file", log_file)

    restored, refusal = None, None
    if state_file:
        # Command-line options beat the file: --max keeps its value.
        keep = {"max"} if args.max_entries is not None else set()
        restored, refusal = restore_state(state_file, engine, keep)
        if refusal:
            print(f"procfs-ct mount: {refusal}", file=sys.stderr)

    report: daemon.Report = lambda message: None
    if not args.foreground:
        report = daemon.daemonise(log_file)
    daemon.setup_logging(log_file, args.verbose)
    try:
        daemon.write_pid_file(pid_file)
    except OSError as exc:
        report(f"cannot write the pid file {pid_file}: {exc.strerror}")
        raise
    try:
        return serve(args, mnt, engine, frames, state_file, restored, refusal, report)
    except BaseException as exc:
        # The waiting parent shows this instead of "did not mount in time".
        report(f"the daemon failed before mounting: {exc!r} (see {log_file or 'its log'})")
        raise
    finally:
        daemon.remove_file(pid_file)


def mount_driver(engine: Any, frames: Iterator, scheduled: bool = False) -> Any:
    """The EngineDriver a mount runs its engine thread with, and the process settings it
    runs under: GIL_SWITCH_INTERVAL, and the collector policy installed with its steps
    taken between the engine thread's holds.  bench/worker.py's tap tasks take it too, so
    they measure what a mount does (without the policy every frame's tuple brought full
    collections walking the whole table, a cost no mount has)."""
    from procfs_ct.driver import EngineDriver
    from procfs_ct.gcpolicy import FreezeAfterFullCollection
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    # Full collections walk only what came since the last one (a restored table is
    # collected and frozen here, before serving), in small steps: see gcpolicy.py.
    collector = FreezeAfterFullCollection()
    collector.install()
    return EngineDriver(engine, frames, scheduled=scheduled, between_holds=collector.step)


def serve(args: argparse.Namespace, mnt: str, engine: Any, frames: Iterator,
          state_file: Optional[str], restored: Optional[statefile.Restored],
          refusal: Optional[str], report: daemon.Report) -> int:
    """Mount and serve until unmounted; the exit status."""
    from procfs_ct.fs import ProcFs, SharedSnapshots, mount_options
    from procfs_ct.fuse_compat import FUSE, LIBFUSE_MAJOR, LIBRARY

    daemon.block_shutdown_signals()
    scheduled = args.source.partition(":")[0] in SCHEDULED_SOURCES
    driver = mount_driver(engine, frames, scheduled)
    saver = (statefile.StateSaver(state_file, engine, driver.engine_lock, driver.now,
                                  args.state_interval) if state_file else None)
    mounted, stopping = threading.Event(), threading.Event()
    auto_unmount = not args.no_auto_unmount

    def on_ready() -> None:
        if auto_unmount:
            daemon.watch_for_death(mnt)
        mounted.set()
        report("")

    def on_signal() -> None:
        stopping.set()
        driver.stop()

    # net/ip_tables_* are served when the mount starts with rules (a static tree cannot
    # make them appear at the first command, as loading ip_tables does in the kernel).
    tree = default_tree(RULES_VIEWS if engine.chains is not None else ())

    def control(node, request: bytes) -> bytes:
        with driver.engine_lock:
            return node.control(driver, request)

    operations = ProcFs(tree, engine.knobs,
                        SharedSnapshots(lambda node: driver.render_chunks(node.render)),
                        on_ready=on_ready, control=control)
    daemon.watch_signals(mnt, mounted, on_signal)
    driver.start()
    log.info("mounting %s (profile %s, source %s, %s on libfuse %d)", mnt, args.profile,
             args.source, LIBRARY, LIBFUSE_MAJOR)
    if refusal:
        log.error("%s", refusal)
    elif restored is not None and restored.saved_at is not None:
        log.info("restored %d entries from %s, saved %.1f s ago", restored.entries,
                 state_file, time.time() - restored.saved_at)
    elif state_file:
        log.info("no table in %s yet: starting empty", state_file)
    if saver:
        saver.start()
    status = 0
    try:
        FUSE(operations, mnt, **mount_options(args.allow_other, auto_unmount=auto_unmount))
    except RuntimeError as exc:
        if stopping.is_set():
            # fusepy raises when fuse_main returns non-zero, as it may after the lazy
            # unmount or connection abort of a shutdown with readers still inside.
            log.info("FUSE returned %r after the shutdown signal", exc)
        else:
            log.error("FUSE stopped: %r", exc)
            report(f"mounting {mnt} failed: {exc!r} (see the log)")
            status = 1
    except BaseException as exc:        # mount refused, or a callback's SystemExit (mfusepy)
        log.error("FUSE stopped: %r", exc)
        report(f"mounting {mnt} failed: {exc!r} (see the log)")
        status = 1
    finally:
        mounted.clear()
        driver.stop()
        if saver:
            saver.stop()
            try:
                # The engine thread has stopped, but a reader may still be rendering.
                count = saver.save_now()
                log.info("saved %d entries to %s", count, state_file)
            except (OSError, ValueError) as exc:
                log.error("could not save %s: %s", state_file, exc)
        stats = driver.stats
        log.info("stopped: %d packets, %d packet errors, %d source errors",
                 stats.packets, stats.packet_errors, stats.source_errors)
    return status
