"""The few Linux system calls `procfs-ct exec` needs, through ctypes: unshare, mount, umount2, prctl.

Called directly rather than through mount(8): once the /proc view is mounted, every
libmount call would read /proc/self/mountinfo through it, and the supervisor must
keep working whatever state the view is in.
"""
from __future__ import annotations

import ctypes
import os
from typing import Optional

CLONE_NEWNS = 0x00020000
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 0x2
PR_SET_CHILD_SUBREAPER = 36

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _b(text: Optional[str]) -> Optional[bytes]:
    return None if text is None else os.fsencode(text)


def private_mount_namespace() -> None:
    """A mount namespace of our own, where no mount or unmount propagates to the host."""
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")


def mount(source: str, target: str, fstype: Optional[str], flags: int = 0,
          data: Optional[str] = None) -> None:
    _check(_libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)),
           f"mount {fstype or 'bind'} {source} on {target}")


def bind(source: str, target: str) -> None:
    mount(source, target, None, MS_BIND)


def umount_lazy(target: str) -> None:
    _check(_libc.umount2(_b(target), MNT_DETACH), f"umount -l {target}")


def become_subreaper() -> None:
    """Orphans of our descendants become our children (not init's): we can reap them."""
    _check(_libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "prctl(PR_SET_CHILD_SUBREAPER)")
