"""What `ls -l`, `stat` and `--help` show of a real mount: the tree, modes, owners, sizes."""
from __future__ import annotations

import os
import stat
import subprocess

import pytest

from conftest import REPO, child_env, procfs_ct_command
from engine.knobs import KNOBS
from procfs_ct.tree import default_tree

pytestmark = pytest.mark.mount


def ls_l(mount, directory: str) -> dict:
    """name -> [mode, links, owner, group, size] from `ls -l`."""
    out = mount.sh(f"ls -l $MNT/{directory}", check=True).stdout
    return {line.split()[-1]: line.split()[:5] for line in out.splitlines()[1:]}


def test_ls_l_shows_proc_modes_root_owner_and_size_zero(idle_mount):
    """/proc/net on 6.18: `-r--r----- 1 root root 0 ... nf_conntrack`; stat/ is -r--r--r--."""
    net = ls_l(idle_mount, "net")
    for name in ("ip_conntrack", "ip_conntrack_expect", "nf_conntrack", "nf_conntrack_expect"):
        assert net[name] == ["-r--r-----", "1", "root", "root", "0"], name
    assert net["stat"][0] == "dr-xr-xr-x"
    assert ls_l(idle_mount, "net/stat")["nf_conntrack"] == ["-r--r--r--", "1", "root", "root", "0"]
    knobs = ls_l(idle_mount, "sys/net/netfilter")
    assert knobs["nf_conntrack_max"] == ["-rw-r--r--", "1", "root", "root", "0"]
    assert knobs["nf_conntrack_count"] == ["-r--r--r--", "1", "root", "root", "0"]


def test_stat_of_every_file_matches_the_table(idle_mount):
    """Every alias of every knob and every view exists; mode, owner and size 0 as in /proc."""
    tree = default_tree()
    for node in tree.files():
        st = os.stat(idle_mount.path(node.path))
        assert stat.S_ISREG(st.st_mode), node.path
        assert stat.S_IMODE(st.st_mode) == node.mode, node.path
        assert (st.st_uid, st.st_gid, st.st_size) == (0, 0, 0), node.path
    views = {"net/ip_conntrack", "net/ip_conntrack_expect", "net/nf_conntrack",
             "net/nf_conntrack_expect", "net/stat/ip_conntrack", "net/stat/nf_conntrack",
             "net/stat/procfs_ct_source"}
    channel = {"net/procfs_ct_iptables"}        # every mount takes iptables commands
    assert {n.path for n in tree.files()} == views | channel | {p for k in KNOBS for p in k.paths}


def test_stat_command_reports_size_zero_and_mode(idle_mount):
    out = idle_mount.sh('stat -c "%s %a %U:%G %F" $MNT/net/nf_conntrack '
                        '$MNT/sys/net/ipv4/netfilter/ip_ct_tcp_timeout_established $MNT/sys',
                        check=True).stdout.splitlines()
    assert out == ["0 440 root:root regular empty file", "0 644 root:root regular empty file",
                   "0 555 root:root directory"]


def test_directory_listings_are_the_table(idle_mount):
    tree = default_tree()
    for path, names in tree.children.items():
        assert sorted(os.listdir(idle_mount.path(path) if path else idle_mount.mnt)) == \
            sorted(names), path


def test_the_mount_is_fuse_procfs_ct_with_default_permissions(idle_mount):
    out = idle_mount.sh("findmnt -n -o FSTYPE,OPTIONS --mountpoint $MNT", check=True).stdout
    fstype, options = out.split()
    assert fstype == "fuse.procfs-ct"
    assert "default_permissions" in options.split(",")


def test_help_lists_every_file_served():
    """`procfs-ct mount --help` is derived from the same table as the mount."""
    out = subprocess.run(procfs_ct_command() + ["mount", "--help"], cwd=REPO, env=child_env(),
                         capture_output=True, text=True, check=True).stdout
    for node in default_tree().files():
        assert node.path in out
    for option in ("--source", "--profile", "--foreground", "--allow-other", "--seed",
                   "--max", "--buckets", "--log-file", "--state-file", "--state-interval"):
        assert option in out
