"""Act as another user in one thread only: the /proc view opens real /proc files as its caller.

The kernel guards much of /proc/<pid>/ beyond the mode bits (maps and smaps are 0444 but
need ptrace access, exe and fd/ the same): the only faithful answer for a non-root caller
is the kernel's own, to the caller's credentials.  Linux keeps credentials per thread,
but glibc's setresuid() changes every thread of the process, which would break the other
FUSE workers; the raw system calls change the calling thread alone.  The saved IDs stay 0
so the thread can take root back; while its effective uid is not 0 it has no effective
capabilities (CAP_DAC_OVERRIDE, CAP_SYS_PTRACE), exactly what the kernel checks.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import platform
from typing import Iterator, Optional, Sequence

# (setgroups, setresuid, setresgid) system call numbers per architecture (the 32-bit-uid ones).
SYSCALLS = {"x86_64": (116, 117, 119), "aarch64": (159, 147, 149), "arm64": (159, 147, 149)}
KEEP = -1                     # setres*id: leave this ID as it is

_numbers: Optional[tuple] = SYSCALLS.get(platform.machine())
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def available() -> bool:
    """Whether this machine's system call numbers are known (otherwise: callers check modes)."""
    return _numbers is not None and os.geteuid() == 0


def _call(number: int, *args: int) -> None:
    if _libc.syscall(ctypes.c_long(number), *(ctypes.c_long(a) for a in args)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _setgroups(groups: Sequence[int]) -> None:
    array = (ctypes.c_uint * max(1, len(groups)))(*groups)
    if _libc.syscall(ctypes.c_long(_numbers[0]), ctypes.c_long(len(groups)), array) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def as_user(uid: int, gid: int, groups: Sequence[int]) -> Iterator[None]:
    """Run the body with this thread's real and effective IDs set to the caller's."""
    setgroups, setresuid, setresgid = _numbers
    own_groups = os.getgroups()
    _setgroups(groups)
    try:
        _call(setresgid, gid, gid, KEEP)
        try:
            _call(setresuid, uid, uid, KEEP)
            try:
                yield
            finally:
                _call(setresuid, 0, 0, KEEP)
        finally:
            _call(setresgid, 0, 0, KEEP)
    finally:
        _setgroups(own_groups)
