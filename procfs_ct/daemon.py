"""Running a FUSE filesystem as a daemon: detaching, readiness, signals, unmounting.

Nothing here knows what is served: `procfs-ct mount` uses it for the /proc files, and
a command that runs a program under a mount can use it the same way.

  * daemonise() double-forks before any thread exists; the original process waits on a
    pipe until the daemon says "mounted" (or why not) and exits 0 or 1.  The daemon's
    standard streams are /dev/null and its log file from the start, so a caller that
    captures the command's output ($(procfs-ct mount ...)) is not held open.
  * block_shutdown_signals() before any thread starts, then watch_signals() in a thread:
    libfuse's own handlers cannot stop a daemon with a callback in flight, and Python
    handlers never run while the main thread is inside fuse_main (docs/spec/fuse.md §9).
  * unmount(): fusermount -u, retried while busy, then lazy, then an abort of the
    connection if files are still held open.
  * watch_for_death(): a small process that unmounts the mount if the daemon dies
    without doing so, where libfuse's auto_unmount helper can miss it.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, List, Optional, Tuple

log = logging.getLogger("procfs_ct")

SHUTDOWN_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
READY_TIMEOUT = 30.0          # seconds the daemonising parent waits for the mount
UNMOUNT_RETRIES = 10          # x 0.1 s of `fusermount -u` (EBUSY) before a lazy unmount
OPEN_FILES_GRACE = 2.0        # seconds open files keep working after the lazy unmount
TOOL_TIMEOUT = 2.0            # seconds an unmount tool may take before it is given up on
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
    log_fd = os.open(log_file or os.devnull, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
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


# -- auto_unmount, made certain -------------------------------------------------------------------
def watch_for_death(mnt: str) -> None:
    """Start a process that unmounts `mnt` if this daemon dies without unmounting it.

    libfuse's auto_unmount helper does that too, but it decides once, at the moment its
    socket to the dead daemon closes: it unmounts only if opening the mountpoint then
    fails with ENOTCONN.  The kernel releases the dead daemon's files in an order of
    its own; when the socket goes first, the connection is still up, the helper's open()
    fails with ECONNABORTED instead, and the mount stays ("Transport endpoint is not
    connected": measured 3 times in 100 kill -9).  This watcher waits for the daemon's
    end of a pipe to close, then checks again until the mount is gone or answers
    ENOTCONN, and unmounts it then.  It holds nothing of the mount, and a clean
    unmount leaves it nothing to do.
    """
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, False)
    try:
        watcher = subprocess.Popen([sys.executable, "-m", "procfs_ct.daemon", "watch", mnt, str(read_end)],
                         pass_fds=(read_end,), start_new_session=True, cwd="/",
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    finally:
        os.close(read_end)
    # The write end stays open, unused, until this process ends.
    _WATCHERS.append((watcher, write_end))


_WATCHERS: List[Tuple[subprocess.Popen, int]] = []   # each with its pipe's write end, for life
WATCH_SECONDS = 5.0            # how long after the daemon's death the watcher keeps checking
WATCH_STEP = 0.05


def unmount_when_dead(mnt: str, fd: int) -> int:
    """The watcher (see watch_for_death): wait for EOF on `fd`, then unmount a dead mount."""
    while os.read(fd, 1):
        pass
    deadline = time.monotonic() + WATCH_SECONDS
    while time.monotonic() < deadline:
        if mount_device(mnt) is None:
            return 0                    # unmounted cleanly, or by libfuse's helper
        if connection_lost(mnt):
            lazy_unmount(mnt)
            return 0
        time.sleep(WATCH_STEP)
    return 0


def connection_lost(mnt: str) -> bool:
    """The FUSE mount at `mnt` answers ENOTCONN: its daemon is gone.

    Asked with statfs, which the kernel always passes to the daemon: a stat may be
    answered from the attributes the kernel keeps for the mount's lifetime-long attribute
    timeout (fs.STATIC_TREE_TIMEOUT), even after the daemon's death."""
    try:
        os.statvfs(mnt)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def lazy_unmount(mnt: str) -> None:
    tool = shutil.which("fusermount") or shutil.which("fusermount3")
    _run_bounded([tool, "-uz", mnt] if tool else ["umount", "-l", mnt])


def _run_bounded(command: List[str]) -> None:
    """Run an unmount tool, giving up on it after TOOL_TIMEOUT seconds."""
    try:
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=TOOL_TIMEOUT)
    except subprocess.TimeoutExpired:
        log.warning("%s did not return within %g s", " ".join(command), TOOL_TIMEOUT)


# -- unmounting -----------------------------------------------------------------------------------
def unmount(mnt: str, mounted: threading.Event) -> None:
    """fusermount -u, retried while busy; then a lazy unmount; then, if files are still
    held open after a grace period, abort the connection so the daemon can exit
    (docs/spec/fuse.md §9)."""
    tool = shutil.which("fusermount") or shutil.which("fusermount3")
    plain = [tool, "-u", mnt] if tool else ["umount", mnt]
    lazy = [tool, "-uz", mnt] if tool else ["umount", "-l", mnt]
    for _ in range(UNMOUNT_RETRIES):
        if not mounted.is_set():
            return
        try:
            done = subprocess.run(plain, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  timeout=TOOL_TIMEOUT)
        except subprocess.TimeoutExpired:
            log.warning("%s did not return within %g s", " ".join(plain), TOOL_TIMEOUT)
            break
        if done.returncode == 0:
            return
        log.info("unmount busy (%s); retrying", done.stderr.decode(errors="replace").strip())
        time.sleep(0.1)
    if not mounted.is_set():
        return
    device = mount_device(mnt)         # read it now: a lazy unmount hides the mount
    log.warning("still busy after %.1f s: lazy unmount", UNMOUNT_RETRIES * 0.1)
    _run_bounded(lazy)
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
        _run_bounded(["mount", "-t", "fusectl", "fusectl", connections])
    try:
        with open(os.path.join(connections, str(minor), "abort"), "w") as f:
            f.write("1")
    except OSError as exc:
        log.error("cannot abort FUSE connection %d: %s", minor, exc)


def stale_mount_error(mnt: str) -> Optional[str]:
    """Why `mnt` cannot be mounted on, or None: a mount answering ENOTCONN is a dead
    daemon's (see connection_lost)."""
    if connection_lost(mnt):
        return (f"{mnt}: stale mount of a dead daemon (Transport endpoint is not "
                f"connected); clear it with `fusermount -uz {mnt}` or ./mount.sh -u")
    try:
        os.stat(mnt)
    except OSError as exc:
        return f"{mnt}: {exc.strerror}"
    return None


if __name__ == "__main__":
    # python -m procfs_ct.daemon watch MNT FD: the watcher of watch_for_death().
    if len(sys.argv) == 4 and sys.argv[1] == "watch":
        sys.exit(unmount_when_dead(sys.argv[2], int(sys.argv[3])))
    sys.exit("usage: python -m procfs_ct.daemon watch MOUNTPOINT FD")
