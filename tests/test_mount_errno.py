"""Changing the tree through a real mount: each attempt gets the errno /proc gives.

Reference: docs/spec/fuse.md §6, re-observed on this machine's 6.18 /proc as root:
  touch /proc/net/newf, mkdir, ln -s, ln, mv onto a new name  -> ENOENT
  rm /proc/sys/net/netfilter/nf_conntrack_count              -> EACCES
  rm /proc/net/dev, mv onto an existing /proc/net file        -> EPERM
  chmod/chown of a /proc/sys file                             -> EPERM
  touch of an existing file                                   -> success
  fsync -> EINVAL; get/set/removexattr -> EOPNOTSUPP; listxattr -> []; readlink -> EINVAL
"""
from __future__ import annotations

import errno
import os

import pytest

pytestmark = pytest.mark.mount

KNOB = "sys/net/netfilter/nf_conntrack_max"
OTHER_KNOB = "sys/net/netfilter/nf_conntrack_count"


def errno_of(call, *args) -> int:
    with pytest.raises(OSError) as caught:
        call(*args)
    return caught.value.errno


@pytest.mark.parametrize("what, call, expected", [
    ("create in sys", lambda m: os.open(m / "sys/net/netfilter/new", os.O_CREAT | os.O_WRONLY),
     errno.ENOENT),
    ("create in net", lambda m: os.open(m / "net/new", os.O_CREAT | os.O_WRONLY), errno.ENOENT),
    ("mkdir", lambda m: os.mkdir(m / "net/newdir"), errno.ENOENT),
    ("mknod", lambda m: os.mknod(m / "sys/newnode"), errno.ENOENT),
    ("symlink", lambda m: os.symlink("nf_conntrack", m / "net/link"), errno.ENOENT),
    ("hard link", lambda m: os.link(m / "net/nf_conntrack", m / "net/hard"), errno.ENOENT),
    ("unlink in sys", lambda m: os.unlink(m / KNOB), errno.EACCES),
    ("unlink in net", lambda m: os.unlink(m / "net/nf_conntrack"), errno.EPERM),
    ("rmdir in sys", lambda m: os.rmdir(m / "sys/net/netfilter"), errno.EACCES),
    ("rmdir in net", lambda m: os.rmdir(m / "net/stat"), errno.EPERM),
    ("rename to a new name", lambda m: os.rename(m / KNOB, m / "sys/net/netfilter/x"),
     errno.ENOENT),
    ("rename onto a sys file", lambda m: os.rename(m / KNOB, m / OTHER_KNOB), errno.EACCES),
    ("rename onto a net file",
     lambda m: os.rename(m / "net/nf_conntrack", m / "net/ip_conntrack"), errno.EPERM),
    ("chmod", lambda m: os.chmod(m / KNOB, 0o600), errno.EPERM),
    ("chown", lambda m: os.chown(m / "net/nf_conntrack", 65534, 65534), errno.EPERM),
    ("setxattr", lambda m: os.setxattr(m / KNOB, "user.x", b"1"), errno.EOPNOTSUPP),
    ("getxattr", lambda m: os.getxattr(m / KNOB, "user.x"), errno.EOPNOTSUPP),
    ("removexattr", lambda m: os.removexattr(m / KNOB, "user.x"), errno.EOPNOTSUPP),
    ("readlink", lambda m: os.readlink(m / KNOB), errno.EINVAL),
    ("open a missing file", lambda m: open(m / "net/ip_conntrack_nope"), errno.ENOENT),
])
def test_changes_are_refused_with_the_proc_errno(idle_mount, what, call, expected):
    assert errno_of(call, idle_mount.mnt) == expected, what


def test_fsync_is_einval_as_on_proc(idle_mount):
    fd = os.open(idle_mount.path(KNOB), os.O_RDONLY)
    try:
        assert errno_of(os.fsync, fd) == errno.EINVAL
    finally:
        os.close(fd)


def test_touch_of_an_existing_file_succeeds_and_listxattr_is_empty(idle_mount):
    idle_mount.sh(f"touch $MNT/{KNOB} $MNT/net/nf_conntrack", check=True)
    assert os.listxattr(idle_mount.path(KNOB)) == []


def test_shell_messages_match_proc(idle_mount):
    """The messages a user sees are the ones /proc gives (observed, C locale)."""
    out = idle_mount.sh("touch $MNT/sys/new; rm $MNT/" + OTHER_KNOB + "; rm $MNT/net/nf_conntrack;"
                        " chmod 600 $MNT/" + KNOB + "; mkdir $MNT/net/x")
    assert out.stderr.splitlines() == [
        f"touch: cannot touch '{idle_mount.mnt}/sys/new': No such file or directory",
        f"rm: cannot remove '{idle_mount.mnt}/{OTHER_KNOB}': Permission denied",
        f"rm: cannot remove '{idle_mount.mnt}/net/nf_conntrack': Operation not permitted",
        f"chmod: changing permissions of '{idle_mount.mnt}/{KNOB}': Operation not permitted",
        f"mkdir: cannot create directory '{idle_mount.mnt}/net/x': No such file or directory",
    ]
    assert sorted(os.listdir(idle_mount.mnt / "sys")) == ["net"]
