"""`procfs-ct mount MOUNTPOINT`: serve the engine's /proc files over FUSE.

Order of events, and why:
  1. check everything that can be checked (mountpoint, source spec, engine options)
     while errors can still be printed as one line;
  2. daemonise unless --foreground (double fork, before any thread exists); the
     parent waits until the kernel has mounted the filesystem and exits 0, or 1;
  3. block SIGTERM/SIGINT/SIGHUP in every thread and let one watcher thread sigwait()
     for them: libfuse's own handlers cannot stop a daemon with a callback in flight,
     and Python handlers never run while the main thread is inside fuse_main
     (spec/fuse.md §9);
  4. start the engine thread, then FUSE() in the main thread until unmounted.
"""
from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Iterator, Optional

from engine.knobs import KNOBS, PROFILES
from procfs_ct.tree import default_tree, describe

log = logging.getLogger("procfs_ct")

HELP = "Mount the emulated /proc files (net/*, sys/*) at MOUNTPOINT over FUSE."
SOURCES = ("synthetic[:PACKETS_PER_SECOND] (default) | pcap:FILE[@SPEED] | tap:IFACE[,IFACE...] "
           "| sockets[:SECONDS] | none")
SHUTDOWN_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
READY_TIMEOUT = 30.0          # seconds the daemonising parent waits for the mount
UNMOUNT_RETRIES = 10          # x 0.1 s of `fusermount -u` (EBUSY) before a lazy unmount
OPEN_FILES_GRACE = 2.0        # seconds open files keep working after the lazy unmount


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
    parser.add_argument("--log-file", metavar="PATH", default=None,
                        help="log here instead of standard error")
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
def _usage_error(message: str) -> Exception:
    from procfs_ct.cli import UsageError
    return UsageError(message)


def check_mountpoint(path: str) -> str:
    """The absolute mountpoint; refuses a missing, busy or stale one with one clear line."""
    mnt = os.path.abspath(path)
    try:
        os.stat(mnt)
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise _usage_error(f"{mnt}: stale mount of a dead daemon (Transport endpoint is not "
                               f"connected); clear it with `fusermount -uz {mnt}` "
                               f"or ./mount.sh -u") from None
        raise _usage_error(f"{mnt}: {exc.strerror}") from None
    if not os.path.isdir(mnt):
        raise _usage_error(f"{mnt}: not a directory")
    if os.path.ismount(mnt):
        raise _usage_error(f"{mnt}: already a mount point; unmount it first "
                           f"(`fusermount -u {mnt}` or ./mount.sh -u)")
    if os.listdir(mnt):
        # libfuse2 refuses too, but only after the daemon started; libfuse3 would hide them.
        raise _usage_error(f"{mnt}: not empty; mount on an empty directory")
    return mnt


def open_frames(spec: str, seed: int) -> Iterator:
    """The source's frames (a bad SPEC raises UsageError here, before anything starts)."""
    from procfs_ct.sources import open_source
    return open_source(spec, seed)


def default_pid_file(mnt: str) -> str:
    name = mnt.strip("/").replace("/", "-") or "root"
    run_dir = "/run/procfs-ct"
    try:
        os.makedirs(run_dir, exist_ok=True)
        if os.access(run_dir, os.W_OK):
            return os.path.join(run_dir, name + ".pid")
    except OSError:
        pass
    parent, base = os.path.split(mnt)
    return os.path.join(parent, f".{base}.procfs-ct.pid")


def setup_logging(log_file: Optional[str], verbose: bool) -> None:
    handler: logging.Handler
    if log_file:
        handler = logging.FileHandler(log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s procfs-ct[%(process)d] %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # The bindings log every refused operation (ENOENT, EACCES, ...) at debug level.
    for name in ("fuse", "mfusepy"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)


# -- the state file: knob values and the table ---------------------------------------------------
def load_state(path: str, engine: Any, now: float) -> int:
    """Restore the table and the writable knobs saved in `path`; returns entries restored.

    A missing file is a fresh start.  A file that is not JSON, of an unknown format
    version or of the other profile is refused with one UsageError line.  A file holding
    only {"knobs": ...} (written before the table was kept) restores the knobs alone.
    """
    try:
        with open(path) as f:
            saved = json.load(f)
    except FileNotFoundError:
        return 0
    except (OSError, ValueError, RecursionError) as exc:
        raise _usage_error(f"--state-file {path}: {exc}") from None
    if not isinstance(saved, dict):
        raise _usage_error(f"--state-file {path}: not a procfs-ct state file")
    knobs = saved.get("knobs", {})
    if not isinstance(knobs, dict):
        raise _usage_error(f"--state-file {path}: knobs: not an object")
    restored = 0
    if "format" in saved or set(saved) - {"knobs"}:
        try:
            restored = engine.import_state(saved, now)
        except ValueError as exc:
            raise _usage_error(f"--state-file {path}: {exc}") from None
    writable = {k.name for k in KNOBS if not k.readonly}
    for name, value in knobs.items():
        if name in writable and isinstance(value, int):
            engine.knobs.set(name, value)
    return restored


def state_document(engine: Any, now: float) -> dict:
    """What the state file holds: the engine's table (with format version and profile)
    and the writable knob values.  The caller holds the engine lock."""
    document = engine.export_state(now)
    document["knobs"] = {k.name: engine.knobs[k.name] for k in KNOBS if not k.readonly}
    return document


def write_state(path: str, document: dict) -> None:
    """Replace `path` atomically: a crash leaves the old file or the new one, never half."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            json.dump(document, f, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    try:                                # make the rename itself durable
        dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def save_state(path: str, engine: Any, now: float) -> None:
    write_state(path, state_document(engine, now))


# -- daemon -------------------------------------------------------------------------------------
def daemonise(log_file: Optional[str]) -> Callable[[str], None]:
    """Double fork.  Returns (in the daemon) a function that reports to the waiting parent:
    "" once mounted, or an error message.  The original process never returns.

    The daemon's stdout goes to /dev/null and, with a log file, its stderr (where
    libfuse itself complains) to that file: a caller's pipe is never held open."""
    read_end, write_end = os.pipe()
    first = os.fork()
    if first > 0:
        os.close(write_end)
        os.waitpid(first, 0)
        sys.exit(_wait_for_daemon(read_end))
    os.close(read_end)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    if log_file:
        log_fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(log_fd, 2)
        os.close(log_fd)
    reported = []

    def report(message: str) -> None:
        if reported:
            return
        reported.append(message)
        try:
            os.write(write_end, (f"ok {os.getpid()}" if not message else message).encode() + b"\n")
        finally:
            os.close(write_end)
    return report


def _wait_for_daemon(read_end: int) -> int:
    import select
    deadline = time.monotonic() + READY_TIMEOUT
    chunks = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([read_end], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(read_end, 4096)
        if not chunk:
            break
        chunks += chunk
    text = chunks.decode(errors="replace").strip()
    if text.startswith("ok "):
        print(f"procfs-ct: mounted (daemon pid {text[3:]})")
        return 0
    print(f"procfs-ct mount: {text or 'the daemon did not mount in time; see its log'}",
          file=sys.stderr)
    return 1


def unmount(mnt: str, mounted: threading.Event) -> None:
    """fusermount -u, retried while busy; then a lazy unmount; then, if files are still
    held open after a grace period, abort the connection so the daemon can exit
    (spec/fuse.md §9)."""
    tool = shutil.which("fusermount") or shutil.which("fusermount3")
    plain = [tool, "-u", mnt] if tool else ["umount", mnt]
    lazy = [tool, "-uz", mnt] if tool else ["umount", "-l", mnt]
    for _ in range(UNMOUNT_RETRIES):
        if not mounted.is_set():
            return
        done = subprocess.run(plain, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if done.returncode == 0:
            return
        log.info("unmount busy (%s); retrying", done.stderr.decode(errors="replace").strip())
        time.sleep(0.1)
    if not mounted.is_set():
        return
    device = mount_device(mnt)         # read it now: a lazy unmount hides the mount
    log.warning("still busy after %.1f s: lazy unmount", UNMOUNT_RETRIES * 0.1)
    subprocess.run(lazy, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + OPEN_FILES_GRACE
    while mounted.is_set() and time.monotonic() < deadline:
        time.sleep(0.1)
    if mounted.is_set() and device is not None:
        log.warning("files still open after %.1f s: aborting the FUSE connection",
                    OPEN_FILES_GRACE)
        abort_connection(device)


def mount_device(mnt: str) -> Optional[int]:
    """The minor device number of our FUSE mount at mnt (its fusectl directory name)."""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                point = fields[4].encode().decode("unicode_escape")
                if point == mnt and fields[fields.index("-") + 1].startswith("fuse"):
                    return int(fields[2].split(":")[1])
    except (OSError, ValueError, IndexError):
        log.exception("cannot read the mount table")
    return None


def abort_connection(minor: int) -> None:
    """echo 1 > /sys/fs/fuse/connections/MINOR/abort, mounting fusectl first if needed."""
    connections = "/sys/fs/fuse/connections"
    if not os.path.isdir(os.path.join(connections, str(minor))):
        subprocess.run(["mount", "-t", "fusectl", "fusectl", connections],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with open(os.path.join(connections, str(minor), "abort"), "w") as f:
            f.write("1")
    except OSError as exc:
        log.error("cannot abort FUSE connection %d: %s", minor, exc)


def watch_signals(mnt: str, mounted: threading.Event, on_signal: Callable[[], None]) -> None:
    sig = signal.sigwait(SHUTDOWN_SIGNALS)
    log.info("%s: unmounting %s", signal.Signals(sig).name, mnt)
    on_signal()
    unmount(mnt, mounted)


# -- the command --------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    from engine.core import Engine
    from procfs_ct.driver import EngineDriver
    from procfs_ct.fs import ProcFs, SharedSnapshots, mount_options
    from procfs_ct.fuse_compat import FUSE, LIBFUSE_MAJOR, LIBRARY

    mnt = check_mountpoint(args.mountpoint)
    for name in ("max_entries", "buckets"):
        value = getattr(args, name)
        if value is not None and value < (1 if name == "buckets" else 0):
            raise _usage_error(f"--{name.split('_')[0]} {value}: out of range")
    rules = None
    if args.rules:
        from procfs_ct.rulesfile import load_rules_file
        rules = load_rules_file(args.rules)
    frames = open_frames(args.source, args.seed)
    engine = Engine(profile=args.profile, max_entries=args.max_entries, buckets=args.buckets)
    views, tree = None, default_tree()
    if rules is not None:
        # The chains in front of conntrack (engine/chains.py) and the iptables files.
        from engine.chains import Chains
        from procfs_ct.tree import build_tree
        from procfs_ct.views import ENGINE_VIEWS, RULES_VIEWS
        from procfs_ct.rulesfile import log_sink
        Chains(engine, rules, log_sink=log_sink(logging.getLogger("procfs_ct.LOG")))
        views = {**ENGINE_VIEWS, **RULES_VIEWS}
        tree = build_tree(tuple(n.path for n in tree.files() if n.view) + tuple(RULES_VIEWS))
    restored = load_state(args.state_file, engine, time.time()) if args.state_file else 0
    for path in (args.log_file, args.pid_file, args.state_file):
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    log_file = os.path.abspath(args.log_file) if args.log_file else None
    pid_file = os.path.abspath(args.pid_file) if args.pid_file else default_pid_file(mnt)
    state_file = os.path.abspath(args.state_file) if args.state_file else None

    report: Callable[[str], None] = lambda message: None
    if not args.foreground:
        report = daemonise(log_file)
    setup_logging(log_file, args.verbose)
    with open(pid_file, "w") as f:
        f.write(f"{os.getpid()}\n")

    # Block before any thread starts: every thread, libfuse's included, inherits the mask.
    signal.pthread_sigmask(signal.SIG_BLOCK, SHUTDOWN_SIGNALS)
    driver = EngineDriver(engine, frames, views=views)
    mounted = threading.Event()

    def on_ready() -> None:
        mounted.set()
        report("")

    operations = ProcFs(tree, engine.knobs, SharedSnapshots(driver.render_chunks), on_ready=on_ready)
    stopping = threading.Event()

    def on_signal() -> None:
        stopping.set()
        driver.stop()

    threading.Thread(target=watch_signals, args=(mnt, mounted, on_signal),
                     name="procfs-ct-signals", daemon=True).start()
    driver.start()
    log.info("mounting %s (profile %s, source %s, %s on libfuse %d)", mnt, args.profile,
             args.source, LIBRARY, LIBFUSE_MAJOR)
    if state_file:
        log.info("restored %d entries from %s", restored, state_file)
    status = 0
    try:
        FUSE(operations, mnt, **mount_options(args.allow_other,
                                              auto_unmount=not args.no_auto_unmount))
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
        if state_file:
            try:
                # The engine thread has stopped, but a reader may still be rendering.
                with driver.engine_lock:
                    document = state_document(engine, driver.now())
                write_state(state_file, document)
                log.info("saved %d entries to %s", len(document["entries"]), state_file)
            except (OSError, ValueError) as exc:
                log.error("could not save %s: %s", state_file, exc)
        _remove(pid_file)
        stats = driver.stats
        log.info("stopped: %d packets, %d packet errors, %d source errors",
                 stats.packets, stats.packet_errors, stats.source_errors)
    return status


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
