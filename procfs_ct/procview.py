"""A whole /proc over FUSE: the real procfs passed through, procfs-ct's files laid over it.

`procfs-ct exec` mounts this over /proc inside a private mount namespace, so programs
that hard-code /proc paths see the emulation without being changed:

  * <pid>/net/X and <pid>/task/<tid>/net/X, for every X the emulated mount serves under
    net/ (nf_conntrack, ip_conntrack, stat/nf_conntrack, ...), come from that mount;
    /proc/net itself is the real symlink "self/net", so it lands there too;
  * sys/... comes from the emulated mount where it has the file (every conntrack knob
    of every generation), from the real procfs otherwise; directories present in both
    are listed merged;
  * `self` and `thread-self` are answered per caller (FUSE says which thread asks);
  * fd, ns and map_files directories are symlinks into the private real procfs: their
    entries are "magic" links (a pipe, a namespace) that only procfs itself can open,
    and bash's <(...), /dev/stdin and `ip netns` need them to open;
  * everything else is the real procfs, read and written through file descriptors the
    daemon holds (pread/pwrite, so seq_file offsets and knob writes behave as there).

Permissions: the mount is made without default_permissions, because the kernel would
then let root pass W_OK on a read-only knob (CAP_DAC_OVERRIDE) where /proc refuses it;
this daemon decides instead, for open() and access() alike: root gets what the real
procfs gives root (or, for an emulated file, what its owner bits allow: a read-only
knob refuses even root); another user's opens of real files are made by the serving
thread with that user's credentials (threadcreds), so the kernel applies its own rules
(ptrace access to maps, exe, environ...); emulated files get the mode bits.  Emulated listings are
served readable by everyone (the kernel's are 0440), so that a program that drops
privileges before reading them works.
"""
from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import stat
import threading
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from procfs_ct import threadcreds
from procfs_ct.fuse_compat import FuseOSError, Operations, fuse_get_context

log = logging.getLogger(__name__)

# Directories of a process whose entries are magic links (see the module docstring).
MAGIC_LINK_DIRS = frozenset({"fd", "ns", "map_files"})
# Emulated listings are readable by everyone here (the kernel's are 0440 root:root).
EMULATED_READ_BITS = 0o444
# Open flags forwarded to the real file; creation flags are never honoured in /proc.
FORWARDED_OPEN_FLAGS = os.O_ACCMODE | os.O_TRUNC | os.O_APPEND | os.O_NONBLOCK
SELF_LINK, THREAD_SELF_LINK, MAGIC_DIR_LINK = "self", "thread-self", "magic"


def _errno(exc: OSError) -> FuseOSError:
    return FuseOSError(exc.errno or errno.EIO)


def guarded(method: Callable) -> Callable:
    """OSError becomes its errno; anything else is logged and answered EIO (never EINVAL,
    which a sysctl user would read as "bad value")."""
    def callback(self: "ProcView", *args: Any) -> Any:
        try:
            return method(self, *args)
        except FuseOSError:
            raise
        except OSError as exc:
            raise _errno(exc) from None
        except BaseException:                       # noqa: B902 - nothing may escape
            log.exception("FUSE %s%r failed; answering EIO", method.__name__, args[:2])
            raise FuseOSError(errno.EIO)
    callback.__name__ = method.__name__
    callback.__doc__ = method.__doc__
    return callback


def _is_id(name: str) -> bool:
    return name.isdigit()


class Target:
    """Where a path of the view leads: a real file, an emulated file, or a link we make."""

    __slots__ = ("path", "emulated", "link", "merge")

    def __init__(self, path: str, emulated: bool = False, link: Optional[str] = None,
                 merge: Optional[str] = None) -> None:
        self.path = path            # the file to stat/open (for a link: what lstat shows)
        self.emulated = emulated    # under the emulated mount
        self.link = link            # SELF_LINK / THREAD_SELF_LINK / MAGIC_DIR_LINK, or None
        self.merge = merge          # a directory: the emulated directory listed with it


class ProcView(Operations):
    """Operations of the /proc view: `real` is a private procfs mount, `emulated` a
    procfs-ct mount (its net/ and sys/ trees)."""

    use_ns = True

    def __init__(self, real: str, emulated: str,
                 on_ready: Optional[Callable[[], None]] = None) -> None:
        self._real = os.path.abspath(real)
        self._emu = os.path.abspath(emulated)
        self._on_ready = on_ready
        self._emu_dirs, self._emu_files = _walk(self._emu)
        self._fds: Dict[int, int] = {}
        self._fds_mu = threading.Lock()
        self._fh_counter = itertools.count(1)

    # -- routing -----------------------------------------------------------------------------
    def _emulated_rel(self, parts: List[str]) -> Optional[str]:
        """The path under the emulated mount that stands for these /proc parts, if any."""
        if parts and parts[0] == "sys":
            return "/".join(parts)
        if len(parts) >= 2 and _is_id(parts[0]) and parts[1] == "net":
            return "/".join(["net"] + parts[2:])
        if (len(parts) >= 4 and _is_id(parts[0]) and parts[1] == "task" and _is_id(parts[2])
                and parts[3] == "net"):
            return "/".join(["net"] + parts[4:])
        return None

    def _route(self, path: str) -> Target:
        parts = [p for p in path.split("/") if p]
        real = os.path.join(self._real, *parts)
        if len(parts) == 1 and parts[0] in (SELF_LINK, THREAD_SELF_LINK):
            return Target(real, link=parts[0])
        if ((len(parts) == 2 and _is_id(parts[0]) and parts[1] in MAGIC_LINK_DIRS)
                or (len(parts) == 4 and _is_id(parts[0]) and parts[1] == "task"
                    and _is_id(parts[2]) and parts[3] in MAGIC_LINK_DIRS)):
            return Target(real, link=MAGIC_DIR_LINK)
        rel = self._emulated_rel(parts)
        if rel is not None:
            emu = os.path.join(self._emu, rel)
            if rel in self._emu_files:
                return Target(emu, emulated=True)
            if rel in self._emu_dirs:
                if os.path.lexists(real):
                    return Target(real, merge=emu)
                return Target(emu, emulated=True, merge=emu)
        return Target(real)

    def _caller_tgid(self, tid: int) -> int:
        """FUSE reports the calling thread; /proc/self names its thread group leader."""
        try:
            with open(os.path.join(self._real, str(tid), "status")) as f:
                for line in f:
                    if line.startswith("Tgid:"):
                        return int(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass
        return tid

    def _caller_groups(self, pid: int) -> Set[int]:
        try:
            with open(os.path.join(self._real, str(pid), "status")) as f:
                for line in f:
                    if line.startswith("Groups:"):
                        return {int(g) for g in line.split()[1:]}
        except (OSError, ValueError):
            pass
        return set()

    # -- permissions -------------------------------------------------------------------------
    def _mode(self, target: Target, st: os.stat_result) -> int:
        if target.emulated and stat.S_ISREG(st.st_mode):
            return st.st_mode | EMULATED_READ_BITS      # listings are 0440 underneath
        return st.st_mode

    def _allowed(self, target: Target, want: int) -> bool:
        """May the caller open `target` for `want` (os.R_OK | os.W_OK | os.X_OK)?"""
        uid, gid, pid = fuse_get_context()
        st = os.lstat(target.path)
        mode = self._mode(target, st)
        if uid == 0:
            if target.emulated:
                if stat.S_ISDIR(mode):
                    return not want & os.W_OK
                # /proc/sys checks root against the owner bits: a 0444 knob refuses root.
                return (mode >> 6) & want == want
            return os.access(target.path, want)     # the kernel's own answer for root
        if st.st_uid == uid:
            bits = (mode >> 6) & 0o7
        elif st.st_gid == gid or st.st_gid in self._caller_groups(pid):
            bits = (mode >> 3) & 0o7
        else:
            bits = mode & 0o7
        return bits & want == want

    def _check(self, target: Target, want: int) -> None:
        if want and not self._allowed(target, want):
            raise FuseOSError(errno.EACCES)

    def _as_caller(self, target: Target) -> Optional[contextlib.AbstractContextManager]:
        """For a non-root caller and a real /proc file: this thread acting as the caller
        (threadcreds), so that the kernel applies every rule of its own (ptrace access,
        hidepid) at open.  None when the daemon decides (root, emulated files)."""
        uid, gid, pid = fuse_get_context()
        if uid == 0 or target.emulated or target.link or not threadcreds.available():
            return None
        return threadcreds.as_user(uid, gid, sorted(self._caller_groups(pid) | {gid}))

    # -- lifecycle ---------------------------------------------------------------------------
    @guarded
    def init(self, path: str) -> None:
        if self._on_ready is not None:
            self._on_ready()

    # -- metadata ----------------------------------------------------------------------------
    @guarded
    def getattr(self, path: str, fh: Any = None) -> Dict[str, int]:
        target = self._route(path)
        st = os.lstat(target.path)
        mode = self._mode(target, st)
        size = st.st_size
        if target.link == MAGIC_DIR_LINK:
            mode = stat.S_IFLNK | 0o777
            size = len(target.path)
        return {"st_mode": mode, "st_ino": st.st_ino, "st_nlink": st.st_nlink,
                "st_uid": st.st_uid, "st_gid": st.st_gid, "st_size": size,
                "st_blocks": st.st_blocks, "st_blksize": st.st_blksize,
                "st_atime": st.st_atime_ns, "st_mtime": st.st_mtime_ns,
                "st_ctime": st.st_ctime_ns}

    @guarded
    def readlink(self, path: str) -> str:
        target = self._route(path)
        if target.link == SELF_LINK:
            return str(self._caller_tgid(fuse_get_context()[2]))
        if target.link == THREAD_SELF_LINK:
            tid = fuse_get_context()[2]
            return f"{self._caller_tgid(tid)}/task/{tid}"
        if target.link == MAGIC_DIR_LINK:
            return target.path
        caller = self._as_caller(target)
        if caller is None:
            return os.readlink(target.path)
        with caller:                            # /proc/<pid>/exe of another user: EACCES
            return os.readlink(target.path)

    @guarded
    def access(self, path: str, amode: int) -> int:
        target = self._route(path)
        if amode == os.F_OK:
            os.lstat(target.path)
            return 0
        want = amode & (os.R_OK | os.W_OK | os.X_OK)
        caller = self._as_caller(target)
        if caller is None:
            self._check(target, want)
            return 0
        with caller:
            allowed = os.access(target.path, want)
        if not allowed:
            raise FuseOSError(errno.EACCES)
        return 0

    @guarded
    def statfs(self, path: str) -> Dict[str, int]:
        sv = os.statvfs(self._real)
        return {key: getattr(sv, key) for key in (
            "f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree",
            "f_favail", "f_flag", "f_namemax")}

    # -- directories -------------------------------------------------------------------------
    @guarded
    def opendir(self, path: str) -> int:
        target = self._route(path)
        if not stat.S_ISDIR(os.lstat(target.path).st_mode):
            raise FuseOSError(errno.ENOTDIR)
        caller = self._as_caller(target)
        if caller is None:
            self._check(target, os.R_OK)
            return 0
        with caller:
            os.close(os.open(target.path, os.O_RDONLY | os.O_DIRECTORY))
        return 0

    @guarded
    def readdir(self, path: str, fh: Any) -> list:
        target = self._route(path)
        names = [".", ".."]
        seen = set()
        with os.scandir(target.path) as it:
            for entry in it:
                seen.add(entry.name)
                names.append(entry.name)
        if target.merge and target.merge != target.path:
            for name in sorted(os.listdir(target.merge)):
                if name not in seen:
                    names.append(name)
        return names

    @guarded
    def releasedir(self, path: str, fh: Any) -> int:
        return 0

    # -- files -------------------------------------------------------------------------------
    @guarded
    def open(self, path: str, flags: int) -> int:
        target = self._route(path)
        accmode = flags & os.O_ACCMODE
        want = 0
        if accmode in (os.O_RDONLY, os.O_RDWR):
            want |= os.R_OK
        if accmode in (os.O_WRONLY, os.O_RDWR) or flags & os.O_TRUNC:
            want |= os.W_OK
        caller = self._as_caller(target)
        if caller is None:
            self._check(target, want)
            fd = os.open(target.path, flags & FORWARDED_OPEN_FLAGS)
        else:
            with caller:                        # the kernel's own checks, for the caller
                fd = os.open(target.path, flags & FORWARDED_OPEN_FLAGS)
        fh = next(self._fh_counter)
        with self._fds_mu:
            self._fds[fh] = fd
        return fh

    def _fd(self, fh: Any) -> int:
        with self._fds_mu:
            fd = self._fds.get(fh)
        if fd is None:
            raise FuseOSError(errno.EBADF)
        return fd

    @guarded
    def read(self, path: str, size: int, offset: int, fh: Any) -> bytes:
        return _at_offset(os.pread, os.read, self._fd(fh), size, offset)

    @guarded
    def write(self, path: str, data: bytes, offset: int, fh: Any) -> int:
        return _at_offset(os.pwrite, os.write, self._fd(fh), data, offset)

    @guarded
    def truncate(self, path: str, length: int, fh: Any = None) -> int:
        # libfuse2 sends the O_TRUNC of `echo N > knob` as a separate truncate.
        target = self._route(path)
        caller = self._as_caller(target)
        if caller is not None:
            with caller:
                os.truncate(target.path, length)
            return 0
        self._check(target, os.W_OK)
        if fh is not None and fh in self._fds:
            os.ftruncate(self._fd(fh), length)
        else:
            os.truncate(target.path, length)
        return 0

    @guarded
    def flush(self, path: str, fh: Any) -> int:
        return 0

    @guarded
    def release(self, path: str, fh: Any) -> int:
        with self._fds_mu:
            fd = self._fds.pop(fh, None)
        if fd is not None:
            os.close(fd)
        return 0

    @guarded
    def fsync(self, path: str, datasync: int, fh: Any) -> int:
        os.fsync(self._fd(fh))
        return 0

    # -- changes: whatever the file underneath answers (procfs refuses nearly all) ---------
    def _change(self, path: str, action: Callable, *args: Any, **kwargs: Any) -> int:
        """Root's change made on the file underneath (it answers); others get EPERM."""
        if fuse_get_context()[0] != 0:
            raise FuseOSError(errno.EPERM)
        action(self._route(path).path, *args, **kwargs)
        return 0

    @guarded
    def chmod(self, path: str, mode: int) -> int:
        return self._change(path, os.chmod, mode)

    @guarded
    def chown(self, path: str, uid: int, gid: int) -> int:
        return self._change(path, os.lchown, uid, gid)

    @guarded
    def utimens(self, path: str, times: Any = None) -> int:
        return self._change(path, os.utime, ns=times, follow_symlinks=False)

    @guarded
    def create(self, path: str, mode: int, fi: Any = None) -> int:
        target = self._route(path)
        raise FuseOSError(errno.EEXIST if os.path.lexists(target.path) else errno.ENOENT)

    @guarded
    def mkdir(self, path: str, mode: int) -> int:
        return self._change(path, os.mkdir, mode)

    @guarded
    def unlink(self, path: str) -> int:
        return self._change(path, os.unlink)

    @guarded
    def rmdir(self, path: str) -> int:
        return self._change(path, os.rmdir)

    @guarded
    def rename(self, old: str, new: str) -> int:
        return self._change(old, os.rename, self._route(new).path)


def _at_offset(positioned: Callable, sequential: Callable, fd: int, arg: Any, offset: int) -> Any:
    """pread/pwrite at the kernel's offset; a file without offsets (ESPIPE: a stream)
    goes on where it is."""
    try:
        return positioned(fd, arg, offset)
    except OSError as exc:
        if exc.errno != errno.ESPIPE:
            raise
        return sequential(fd, arg)


def _walk(root: str) -> Tuple[Set[str], Set[str]]:
    """Every directory and file under the emulated mount, as relative paths (its tree is
    fixed for the life of the mount: looked up once, not at every /proc access)."""
    dirs: Set[str] = set()
    files: Set[str] = set()
    for base, subdirs, names in os.walk(root):
        rel = os.path.relpath(base, root)
        rel = "" if rel == "." else rel
        if rel:
            dirs.add(rel)
        for name in names:
            files.add(f"{rel}/{name}" if rel else name)
    return dirs, files


def view_mount_options() -> Dict[str, Any]:
    """Keyword options for FUSE() when mounting the view over /proc."""
    from procfs_ct.fuse_compat import LIBFUSE_MAJOR
    options: Dict[str, Any] = {
        "foreground": True,
        "direct_io": True,          # /proc files have size 0: reads must reach us
        "allow_other": True,        # programs that drop privileges read /proc too
        "fsname": "proc",
        "subtype": "procfs-ct-view",
    }
    if LIBFUSE_MAJOR == 2:
        options["nonempty"] = True  # libfuse2 refuses to mount over a non-empty /proc
    return options
