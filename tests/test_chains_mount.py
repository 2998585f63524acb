"""`procfs-ct mount MNT --rules FILE`, mounted: every packet of the source goes through the
chains, and the mount serves net/ip_tables_names, _matches and _targets as /proc does."""
from __future__ import annotations

import stat
import subprocess

from conftest import child_env, procfs_ct_command, wait_until

# Sent DNS over UDP and IPv4 is dropped in OUTPUT: its entries are never confirmed (IPv6's
# passes: ip6tables is not emulated, as if its chains were empty).  The tables are
# made filter first, so raw is the newest and listed first.
RULES = ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
         "-A OUTPUT -p udp --dport 53 -j LOG --log-prefix \"dns out: \"\n"
         "-A OUTPUT -p udp --dport 53 -j DROP\nCOMMIT\n"
         "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n")
FILES = ("net/ip_tables_names", "net/ip_tables_matches", "net/ip_tables_targets")


def _udp_dns(listing: str) -> list[str]:
    """IPv4 UDP entries whose original direction goes to port 53 (the ones OUTPUT drops)."""
    return [line for line in listing.splitlines() if line.startswith("ipv4 ")
            and " udp " in line and " dport=53 " in line.split(" src=")[1] + " "]


def test_mount_with_rules_drops_and_serves_the_iptables_files(mount_factory, capture_file,
                                                              tmp_path):
    rules = tmp_path / "dns.rules"
    rules.write_text(RULES)
    rules.chmod(0o644)
    plain = mount_factory("--source", f"pcap:{capture_file}@0", "--profile", "linux")
    ruled = mount_factory("--source", f"pcap:{capture_file}@0", "--profile", "linux",
                          "--rules", str(rules))
    for mount in (plain, ruled):
        assert wait_until(lambda: int(mount.read("sys/net/netfilter/nf_conntrack_count")) > 50,
                          10), mount.log_text()
    assert _udp_dns(plain.read("net/nf_conntrack")), "the capture has DNS over UDP"
    assert wait_until(lambda: " udp " in ruled.read("net/nf_conntrack"), 10)
    assert _udp_dns(ruled.read("net/nf_conntrack")) == []
    names = subprocess.run(["cat", str(ruled.path("net/ip_tables_names"))], capture_output=True,
                           text=True, check=True).stdout
    assert names == "raw\nfilter\n"
    matches = ruled.read("net/ip_tables_matches").splitlines()
    targets = ruled.read("net/ip_tables_targets").splitlines()
    assert {"udp", "tcp", "icmp", "state", "conntrack", "limit"} <= set(matches)
    assert matches.count("conntrack") == 3 and matches[-3:] == ["udplite", "udp", "tcp"]
    assert {"REJECT", "LOG", "NOTRACK", "ERROR", "MARK", "CONNMARK"} <= set(targets)
    # LOG (level 4, warning) writes the kernel's line to the daemon's log.
    assert wait_until(lambda: "dns out: IN= OUT= SRC=" in ruled.log_text(), 10), ruled.log_text()
    for rel in FILES:
        assert stat.S_IMODE(ruled.path(rel).stat().st_mode) == 0o440      # -r--r----- as /proc
        assert not plain.path(rel).exists()           # without --rules: no ip_tables files


def test_mount_refuses_a_bad_ruleset_in_one_line(tmp_path):
    rules = tmp_path / "bad.rules"
    rules.write_text("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(procfs_ct_command() + ["mount", str(mnt), "--source", "none",
                                                 "--rules", str(rules)],
                          capture_output=True, text=True, env=child_env(), timeout=60)
    assert done.returncode == 2
    assert done.stderr == f"procfs-ct mount: --rules {rules}: line 1: nat is not emulated\n"
