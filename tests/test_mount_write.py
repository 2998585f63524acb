"""Writing knobs through a real mount the way people and scripts do, and getting the
kernel's answers (docs/spec/conntrack.md §3.4, docs/spec/fuse.md §6)."""
from __future__ import annotations

import errno
import os
import shutil

import pytest

pytestmark = pytest.mark.mount

TUTORIAL = "sys/net/ipv4/netfilter/ip_ct_tcp_timeout_established"
IPCT = "sys/net/ipv4/netfilter/ip_conntrack_tcp_timeout_established"
MODERN = "sys/net/netfilter/nf_conntrack_tcp_timeout_established"
MAX = "sys/net/netfilter/nf_conntrack_max"
COUNT = "sys/net/netfilter/nf_conntrack_count"


def test_echo_sets_the_value_that_every_alias_reads(idle_mount):
    """DESIGN: every alias of a knob reads and writes the same value."""
    idle_mount.sh(f"echo 600 > $MNT/{TUTORIAL}", check=True)
    assert [idle_mount.read(p) for p in (TUTORIAL, IPCT, MODERN)] == ["600\n"] * 3


@pytest.mark.parametrize("command, value", [
    ("printf 301 > $MNT/{k}", "301"),
    ("echo -n 302 > $MNT/{k}", "302"),
    ("echo 303 >> $MNT/{k}", "303"),
    ("printf ' 305 \\n' > $MNT/{k}", "305"),                # blanks skipped
    ("echo 0x10 > $MNT/{k}", "16"),                          # base 16, like strtoul(.., 0)
    ("echo 010 > $MNT/{k}", "8"),                            # base 8
    ("printf '304\\n' | dd of=$MNT/{k} bs=1 status=none", "3"),  # later bytes at offset > 0
])
def test_shell_writes_parse_as_the_kernel_does(idle_mount, command, value):
    """docs/spec/conntrack.md §3.4 rows; `dd bs=1` stores only the first digit, as procfs does."""
    idle_mount.sh(command.format(k=MODERN), check=True)
    assert idle_mount.read(TUTORIAL) == value + "\n"


def test_python_write_and_a_sysctl_style_single_write(idle_mount):
    """procps sysctl -w: openat(O_WRONLY|O_TRUNC) and one write("v\\n") (docs/spec/fuse.md §6)."""
    with open(idle_mount.path(MAX), "w") as f:
        f.write("306\n")
    assert idle_mount.read(MAX) == "306\n"
    fd = os.open(idle_mount.path(MAX), os.O_WRONLY | os.O_TRUNC)
    try:
        assert os.write(fd, b"1234\n") == 5
    finally:
        os.close(fd)
    assert idle_mount.read("sys/net/ipv4/ip_conntrack_max") == "1234\n"


def test_sysctl_through_a_bind_mount_over_proc_sys(idle_mount):
    """docs/spec/fuse.md §8: `mount --bind MNT/sys /proc/sys` in a private namespace makes procps
    sysctl read and write the emulated knobs, errors included."""
    if not (shutil.which("unshare") and shutil.which("sysctl")):
        pytest.skip("needs unshare and procps sysctl")
    out = idle_mount.sh(
        "unshare --mount --propagation private sh -c '"
        "mount --bind $MNT/sys /proc/sys && "
        "sysctl net.ipv4.netfilter.ip_conntrack_max=4321 && "
        "sysctl net.ipv4.netfilter.ip_ct_udp_timeout && "
        "sysctl -w net.netfilter.nf_conntrack_udp_timeout=abc; "
        "sysctl -n net.netfilter.nf_conntrack_max'")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["net.ipv4.netfilter.ip_conntrack_max = 4321",
                                       "net.ipv4.netfilter.ip_ct_udp_timeout = 30", "4321"]
    assert "Invalid argument" in out.stderr
    assert idle_mount.read(MAX) == "4321\n"


@pytest.mark.parametrize("bad", ["abc", "1.5", "42abc", "+5", "", "99999999999999999999999",
                                 "8589935"])
def test_a_bad_value_is_einval_and_keeps_the_old_value(idle_mount, bad):
    """docs/spec/conntrack.md §3.4: garbage, overflow, an empty line and a jiffies value past
    INT_MAX/HZ are EINVAL; bash prints "echo: write error: Invalid argument"; nothing changes."""
    out = idle_mount.sh(f"echo '{bad}' > $MNT/{MODERN}")
    assert out.returncode == 1
    assert "write error: Invalid argument" in out.stderr
    assert idle_mount.read(MODERN) == "432000\n"


def test_the_linux_profile_range_checks_booleans(mount_factory):
    """docs/spec/conntrack.md §3.3: modern tcp_loose is u8 0..1; `2` is EINVAL."""
    mount = mount_factory("--source", "none", "--profile", "linux")
    loose = "sys/net/netfilter/nf_conntrack_tcp_loose"
    out = mount.sh(f"echo 2 > $MNT/{loose}")
    assert out.returncode == 1 and "Invalid argument" in out.stderr
    mount.sh(f"echo 0 > $MNT/{loose}", check=True)
    assert mount.read(loose) == "0\n"


def test_a_second_number_is_left_unconsumed_and_the_first_kept(idle_mount):
    """docs/spec/conntrack.md §3.4: `42 43` is a partial write of 3 bytes; the shell's retry at
    offset 3 is ignored, so `echo` reports success and the value is 42."""
    idle_mount.sh(f"echo '42 43' > $MNT/{MODERN}", check=True)
    assert idle_mount.read(MODERN) == "42\n"
    fd = os.open(idle_mount.path(MODERN), os.O_WRONLY)
    try:
        assert os.write(fd, b"44 abc") == 3
        assert os.write(fd, b"abc") == 3                   # offset 3: ignored
    finally:
        os.close(fd)
    assert idle_mount.read(MODERN) == "44\n"


def test_a_write_at_a_nonzero_offset_is_ignored(idle_mount):
    """sysctl_writes_strict=1: reported as written, value unchanged."""
    fd = os.open(idle_mount.path(MODERN), os.O_WRONLY)
    try:
        assert os.pwrite(fd, b"77\n", 5) == 3
    finally:
        os.close(fd)
    assert idle_mount.read(MODERN) == "432000\n"


def test_writing_a_read_only_file_is_eacces_even_for_root(idle_mount):
    """docs/spec/fuse.md §6, and observed here: `echo 1 > /proc/net/stat/nf_conntrack` as root is
    "Permission denied"; default_permissions lets root past the mode bits, the daemon does not."""
    for path in (COUNT, "sys/net/ipv4/netfilter/ip_conntrack_buckets", "net/nf_conntrack",
                 "net/stat/nf_conntrack"):
        out = idle_mount.sh(f"echo 1 > $MNT/{path}")
        assert out.returncode == 1 and "Permission denied" in out.stderr, path
        with pytest.raises(PermissionError) as caught:
            open(idle_mount.path(path), "r+")
        assert caught.value.errno == errno.EACCES
    assert idle_mount.read(COUNT) == "0\n"


def test_truncate_is_a_no_op_on_writable_knobs_and_eacces_on_read_only_ones(idle_mount):
    """docs/spec/fuse.md §6: `truncate -s 0` of a writable knob succeeds and changes nothing."""
    idle_mount.sh(f"truncate -s 0 $MNT/{MODERN}", check=True)
    assert idle_mount.read(MODERN) == "432000\n"
    out = idle_mount.sh(f"truncate -s 0 $MNT/{COUNT}")
    assert out.returncode == 1 and "Permission denied" in out.stderr


def test_an_empty_write_changes_nothing(idle_mount):
    """docs/spec/fuse.md §6: `printf '' > f` writes nothing; the value stays."""
    idle_mount.sh(f"printf '' > $MNT/{MODERN}", check=True)
    assert idle_mount.read(MODERN) == "432000\n"


def test_cached_names_and_attributes_never_hide_a_write(idle_mount):
    """The kernel keeps the tree's lookups and attributes for STATIC_TREE_TIMEOUT (a knob
    write is then OPEN and WRITE only), but contents are never cached: each `cat` right
    after each `echo`, through every alias, shows the value just written, and `stat` of a
    knob grown by a write still says size 0, as /proc does."""
    values = [str(1000 + n) for n in range(6)]
    script = "; ".join(f"echo {v} > $MNT/{path} && cat $MNT/{TUTORIAL} $MNT/{IPCT} $MNT/{MODERN}"
                       for v, path in zip(values, (TUTORIAL, IPCT, MODERN) * 2))
    out = idle_mount.sh(script, check=True)
    assert out.stdout.split() == [v for v in values for _ in range(3)]
    before = os.stat(idle_mount.path(MODERN))
    for value in (b"2001\n", b"2002\n"):
        # FUSE offers an O_APPEND write the cached size, which the previous write grew;
        # procfs writes at the descriptor's position (0 here).
        fd = os.open(idle_mount.path(MODERN), os.O_WRONLY | os.O_APPEND)
        try:
            assert os.write(fd, value) == 5
        finally:
            os.close(fd)
        assert idle_mount.read(IPCT) == value.decode()
    after = os.stat(idle_mount.path(MODERN))
    assert (after.st_size, after.st_mode, after.st_mtime_ns) == (0, before.st_mode,
                                                                  before.st_mtime_ns)
    refused = idle_mount.sh(f"echo abc > $MNT/{TUTORIAL}")
    assert refused.returncode == 1 and "Invalid argument" in refused.stderr
    assert idle_mount.read(MODERN) == "2002\n"
