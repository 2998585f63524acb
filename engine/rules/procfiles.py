"""What /proc/net/ip_tables_names, ip_tables_matches and ip_tables_targets hold.

ip_tables_names lists the namespace's tables, the newest first (the order iptables-save
prints them in).  The other two list every match and target registered with x_tables
for IPv4, one line per registered revision, the latest registered first: what a kernel
shows with the modules of the extensions this engine implements loaded.  The order is the
relative order of those names on the reference machine (kernel 6.18, the modules loaded
by the rules scenarios and more); a kernel that loaded its modules in another order lists
them in another order.
"""
from __future__ import annotations

from .ruleset import Ruleset

# xt_state, xt_limit, xt_conntrack (revisions 1-3), xt_comment, xt_connmark, xt_mark,
# xt_multiport, ip_tables' icmp, xt_tcpudp (udplite, udp, tcp).
MATCHES = ("state", "limit", "conntrack", "conntrack", "conntrack", "comment", "connmark",
           "mark", "multiport", "icmp", "udplite", "udp", "tcp")
# ipt_REJECT, ip_tables' ERROR, xt_LOG, xt_CT (revisions 0-2), NOTRACK, xt_connmark's
# CONNMARK (revisions 1-2), xt_mark's MARK.
TARGETS = ("REJECT", "ERROR", "LOG", "CT", "CT", "CT", "NOTRACK", "CONNMARK", "CONNMARK",
           "MARK")


def _lines(names) -> str:
    return "".join(f"{name}\n" for name in names)


def tables_names_text(ruleset: Ruleset) -> str:
    return _lines(ruleset.save_order())


def matches_text() -> str:
    return _lines(MATCHES)


def targets_text() -> str:
    return _lines(TARGETS)
