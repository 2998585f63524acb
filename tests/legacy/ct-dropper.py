#!/usr/bin/env python3
"""ct-dropper.py - a collector that starts as root, drops to nobody, then reads conntrack.

Daemons of the era (and munin/collectd plugins today) give up root before reading /proc.
Prints the uid it runs as, the number of entries, nf_conntrack_count and nf_conntrack_max.
"""
import os
import pwd

nobody = pwd.getpwnam("nobody")
os.setgroups([])
os.setgid(nobody.pw_gid)
os.setuid(nobody.pw_uid)

with open("/proc/net/nf_conntrack") as f:
    entries = sum(1 for _ in f)
with open("/proc/sys/net/netfilter/nf_conntrack_count") as f:
    count = int(f.read())
with open("/proc/sys/net/netfilter/nf_conntrack_max") as f:
    maximum = int(f.read())
print(f"uid={os.getuid()} entries={entries} count={count} max={maximum}")
