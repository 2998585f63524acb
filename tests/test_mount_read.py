"""Reading through a real mount with the tools scripts use: cat, head, tail, wc, dd,
shell `read`, Python; a poller that seeks back to 0; a reader that is not root."""
from __future__ import annotations

import os
import re

import pytest

pytestmark = pytest.mark.mount

KNOB = "sys/net/ipv4/netfilter/ip_ct_tcp_timeout_established"
STAT = "net/stat/ip_conntrack"
STAT_HEADER = ("entries  searched found new invalid ignore delete delete_list insert "
               "insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete")
IP_CT_LINE = re.compile(r"^(tcp|udp|icmp|unknown) +\d+ \d+ .*\buse=\d+$")
NF_CT_LINE = re.compile(r"^ipv4 +2 (tcp|udp|icmp|unknown) +\d+ \d+ .*\bzone=\d+ use=\d+$")


def assert_whole_lines(text: str, pattern: re.Pattern) -> int:
    """Every line is one complete entry: it matches, and holds exactly two tuples."""
    assert text.endswith("\n"), text[-200:]
    lines = text.splitlines()
    for line in lines:
        assert pattern.match(line) and line.count(" src=") == 2, line
    return len(lines)


def test_cat_of_a_size_zero_file_is_not_empty(idle_mount):
    """docs/spec/fuse.md §3: with direct_io and st_size 0, cat reads everything (LXCFS #448)."""
    out = idle_mount.sh(f"cat $MNT/{STAT}; cat $MNT/{KNOB}", check=True).stdout
    lines = out.splitlines()
    assert lines[0] == STAT_HEADER
    assert lines[-1] == "432000"          # tutorial default of tcp_timeout_established


def test_cat_of_a_busy_listing_gives_whole_lines(busy_mount):
    out = busy_mount.sh("cat $MNT/net/ip_conntrack", check=True).stdout
    assert assert_whole_lines(out, IP_CT_LINE) > 50
    out = busy_mount.sh("cat $MNT/net/nf_conntrack", check=True).stdout
    assert assert_whole_lines(out, NF_CT_LINE) > 50


def test_head_tail_and_grep_read_the_listing(busy_mount):
    out = busy_mount.sh("head -n 3 $MNT/net/nf_conntrack", check=True).stdout
    assert assert_whole_lines(out, NF_CT_LINE) == 3
    out = busy_mount.sh("tail -n 2 $MNT/net/ip_conntrack", check=True).stdout
    assert assert_whole_lines(out, IP_CT_LINE) == 2
    out = busy_mount.sh("grep -c ' src=' $MNT/net/ip_conntrack", check=True).stdout
    assert int(out) > 50


def test_tail_and_wc_read_size_zero_files_in_full(idle_mount):
    """docs/spec/fuse.md §3: wc -c and tail would trust a non-zero st_size; with 0 they read."""
    full = idle_mount.read(STAT)
    out = idle_mount.sh(f"wc -c < $MNT/{STAT}; tail -n 1 $MNT/{STAT}", check=True).stdout
    count, last = out.splitlines()
    assert int(count) == len(full.encode())
    assert last == full.splitlines()[-1]


def test_dd_with_one_byte_blocks_reads_one_consistent_snapshot(busy_mount):
    """Reads at offsets > 0 come from the handle's snapshot (docs/spec/fuse.md §4): even one
    byte per read(2) reassembles whole lines while the table changes."""
    out = busy_mount.sh("dd if=$MNT/net/nf_conntrack bs=1 status=none", check=True,
                        timeout=120).stdout
    assert assert_whole_lines(out, NF_CT_LINE) > 50


def test_dd_skip_starts_at_the_offset(idle_mount):
    """A first read at offset N > 0 takes the snapshot on that read (docs/spec/fuse.md §4)."""
    out = idle_mount.sh(f"dd if=$MNT/{STAT} bs=7 skip=3 count=2 status=none", check=True).stdout
    assert out == STAT_HEADER[21:35]


def test_shell_read_loop_sees_whole_lines(busy_mount):
    """bash reads 4 KiB and seeks back after each newline (docs/spec/fuse.md §3): no torn line."""
    out = busy_mount.sh('while IFS= read -r line; do printf "%s\\n" "$line"; '
                        'done < $MNT/net/ip_conntrack', check=True).stdout
    assert assert_whole_lines(out, IP_CT_LINE) > 50
    knob = busy_mount.sh(f'read -r value < $MNT/{KNOB}; echo "[$value]"', check=True).stdout
    assert knob == "[432000]\n"


def test_python_readers(busy_mount):
    with open(busy_mount.path("net/ip_conntrack")) as f:
        assert assert_whole_lines(f.read(), IP_CT_LINE) > 50
    with open(busy_mount.path("net/nf_conntrack")) as f:
        first = f.readline()
        assert NF_CT_LINE.match(first.rstrip("\n"))
    assert busy_mount.path(KNOB).read_bytes() == b"432000\n"


def test_poller_that_seeks_back_to_zero_sees_the_new_value(idle_mount):
    """docs/spec/fuse.md §4: a snapshot taken only at open() would stay stale forever."""
    fd = os.open(idle_mount.path(KNOB), os.O_RDONLY)
    try:
        assert os.read(fd, 100) == b"432000\n"
        idle_mount.write("sys/net/netfilter/nf_conntrack_tcp_timeout_established", "600\n")
        os.lseek(fd, 0, os.SEEK_SET)
        assert os.read(fd, 100) == b"600\n"
    finally:
        os.close(fd)


def test_mmap_is_refused_as_on_proc(idle_mount):
    """docs/spec/fuse.md §11.6: mmap of a size-0 file is refused, as with /proc."""
    import mmap
    with open(idle_mount.path(STAT), "rb") as f:
        with pytest.raises((ValueError, OSError)):
            mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def test_non_root_reader_with_allow_other(mount_factory):
    """docs/spec/fuse.md §7 (allow_other,default_permissions): nobody reads 0444/0644 files, the
    kernel refuses 0440 listings and knob writes by the mode bits."""
    mount = mount_factory("--source", "none", "--allow-other")
    ok = mount.sh(f"cat $MNT/{KNOB} && head -n 1 $MNT/{STAT} && ls $MNT/net",
                  as_nobody=True)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[:2] == ["432000", STAT_HEADER]
    denied = mount.sh("cat $MNT/net/nf_conntrack", as_nobody=True)
    assert denied.returncode == 1 and "Permission denied" in denied.stderr
    denied = mount.sh(f"echo 5 > $MNT/{KNOB}", as_nobody=True)
    assert denied.returncode == 1 and "Permission denied" in denied.stderr
    assert mount.read(KNOB) == "432000\n"


def test_without_allow_other_other_users_see_nothing(idle_mount):
    """docs/spec/fuse.md §7: with no allow_other, FUSE refuses every other user (even ls)."""
    denied = idle_mount.sh("ls $MNT", as_nobody=True)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
