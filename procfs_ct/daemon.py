"""Running a FUSE filesystem as a daemon: detaching, readiness, signals, unmounting.

Nothing here knows what is served: `procfs-ct mount` uses it for the /proc files, and
a command that runs a program under a mount can use it the same way.

  * daemonise() double-forks before any thread exists; the original process waits on a
    pipe until the daemon says "mounted" (or why not) and exits 0 or 1.  The daemon's
    standard streams are /dev/null and its log file from the start, so a caller that
    captures the command's output ($(procfs-ct mount ...)) is not held open.
  * block_shutdown_signals() before any thread starts, then watch_signals() in a thread:
    libfuse's own handlers cannot stop a daemon with a callback in flight, and Python
    handlers never run while the main thread is inside fuse_main (spec/fuse.md §9).
  * unmount(): fusermount -u, retried while busy, then lazy, then an abort of the
    connection if files are still held open.
  * auto_unmount_after_fuse(): with libfuse's auto_unmount, the fusermount helper
    unmounts after the daemon dies only if opening the mountpoint then fails with
    ENOTCONN; the daemon's end of the helper's socket must therefore close after
    /dev/fuse, which the kernel's exit does in fd order.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Callable, Optional, Set

log = logging.getLogger("procfs_ct")

SHUTDOWN_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
READY_TIMEOUT = 30.0          # seconds the daemonising parent waits for the mount
UNMOUNT_RETRIES = 10          # x 0.1 s of `fusermount -u` (EBUSY) before a lazy unmount
OPEN_FILES_GRACE = 2.0        # seconds open files keep working after the lazy unmount
RUN_DIR = "/run/procfs-ct"    # default home of pid and log files (root)
NAME_MAX = 255                # longest file name (ext4, tmpfs)
LONG_STEM = 160               # a derived name longer than this is cut and hashed
HASH_CHARS = 16

Report = Callable[[str], None]


# -- files named after the mountpoint ---------------------------------------------------------
def file_stem(mnt: str) -> str:
    """A file name (without suffix) naming the mountpoint: its path with '-' for '/'; a
    path too long for one name is cut and made unique with a hash of the whole path.
    mount.sh's file_stem derives the same names."""
    name = mnt.strip("/").replace("/", "-") or "root"
    if len(name.encode()) > LONG_STEM:
        digest = hashlib.sha256(mnt.encode()).hexdigest()[:HASH_CHARS]
        name = name.encode()[:LONG_STEM - HASH_CHARS - 1].decode(errors="ignore") + "-" + digest
    return name


def default_run_file(mnt: str, suffix: str) -> str:
    """RUN_DIR/<stem><suffix>, or beside the mountpoint if RUN_DIR cannot be written."""
    try:
        os.makedirs(RUN_DIR, exist_ok=True)
        if os.access(RUN_DIR, os.W_OK):
            return os.path.join(RUN_DIR, file_stem(mnt) + suffix)
    except OSError:
        pass
    parent, base = os.path.split(mnt)
    return os.path.join(parent, f".{base[:NAME_MAX - 30]}.procfs-ct{suffix}")


def check_writable(path: str) -> Optional[str]:
    """None if `path` can be created or appended to, else why not (one line)."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.close(fd)
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    return None


def write_pid_file(path: str) -> None:
    with open(path, "w") as f:
        f.write(f"{os.getpid()}\n")


def remove_file(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# -- detaching ----------------------------------------------------------------------------------
def daemonise(log_file: str) -> Report:
    """Double fork.  Returns (in the daemon) a function that reports to the waiting parent:
    "" once mounted, or an error message.  The original process never returns.

    The daemon's stdin and stdout are /dev/null and its stderr (where libfuse itself
    complains) is the log file: no pipe of the caller's is held open."""
    read_end, write_end = os.pipe()
    first = os.fork()
    if first > 0:
        os.close(write_end)
        os.waitpid(first, 0)
        sys.exit(wait_for_daemon(read_end, log_file))
    os.close(read_end)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
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


def wait_for_daemon(read_end: int, log_file: str) -> int:
    """In the original process: print what the daemon reported; the exit status."""
    deadline = time.monotonic() + READY_TIMEOUT
    chunks = b""
    closed = False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([read_end], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(read_end, 4096)
        if not chunk:
            closed = True
            break
        chunks += chunk
    text = chunks.decode(errors="replace").strip()
    if text.startswith("ok "):
        print(f"procfs-ct: mounted (daemon pid {text[3:]})")
        return 0
    if not text:
        text = (f"the daemon exited before mounting; see {log_file}" if closed
                else f"the daemon did not mount within {READY_TIMEOUT:g} s; see {log_file}")
    print(f"procfs-ct mount: {text}", file=sys.stderr)
    return 1


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


# -- signals --------------------------------------------------------------------------------------
def block_shutdown_signals() -> None:
    """Call before any thread starts: every thread, libfuse's included, inherits the mask."""
    signal.pthread_sigmask(signal.SIG_BLOCK, SHUTDOWN_SIGNALS)


def watch_signals(mnt: str, mounted: threading.Event, on_signal: Callable[[], None]) -> None:
    """Start a thread that waits for a shutdown signal, calls on_signal(), and unmounts."""
    def watch() -> None:
        sig = signal.sigwait(SHUTDOWN_SIGNALS)
        log.info("%s: unmounting %s", signal.Signals(sig).name, mnt)
        on_signal()
        unmount(mnt, mounted)
    threading.Thread(target=watch, name="procfs-ct-signals", daemon=True).start()


# -- auto_unmount ---------------------------------------------------------------------------------
def socket_fds() -> Set[int]:
    """This process's open socket descriptors."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                found.add(int(name))
        except OSError:
            continue
    return found


def _fuse_fds() -> Set[int]:
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "/dev/fuse":
                found.add(int(name))
        except OSError:
            continue
    return found


def auto_unmount_after_fuse(sockets_before: Set[int]) -> None:
    """Move the daemon's end of the auto_unmount helper's socket above /dev/fuse.

    libfuse leaves that end open for the daemon's lifetime; the helper unmounts when it
    closes, but only if opening the mountpoint then fails with ENOTCONN.  A process that
    dies closes its descriptors in number order, and the socket was made before
    /dev/fuse was opened: the helper woke while the connection was still up, its open()
    failed with ECONNABORTED instead, and the mount stayed ("Transport endpoint is not
    connected", about 1 kill -9 in 20).  With the socket numbered above /dev/fuse, the
    connection is gone first.  Call once mounted, with socket_fds() from before the mount.
    """
    fuse = _fuse_fds()
    if not fuse:
        return
    for fd in sorted(socket_fds() - sockets_before):
        if fd > max(fuse):
            continue
        try:
            probe = socket.socket(fileno=fd)
            unix = probe.family == socket.AF_UNIX
            probe.detach()
        except OSError:
            continue
        if unix:
            moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, max(fuse) + 1)
            os.close(fd)
            log.debug("auto_unmount socket moved from fd %d to %d (above /dev/fuse)", fd, moved)


# -- unmounting -----------------------------------------------------------------------------------
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
    """The minor device number of the FUSE mount at mnt (its fusectl directory name)."""
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


def stale_mount_error(mnt: str) -> Optional[str]:
    """Why `mnt` cannot be mounted on, or None: a stat that says ENOTCONN is a dead
    daemon's mount."""
    try:
        os.stat(mnt)
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            return (f"{mnt}: stale mount of a dead daemon (Transport endpoint is not "
                    f"connected); clear it with `fusermount -uz {mnt}` or ./mount.sh -u")
        return f"{mnt}: {exc.strerror}"
    return None
