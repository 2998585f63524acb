"""The tables, their built-in chains, hooks and priorities, as the kernel registers them."""
from __future__ import annotations

PREROUTING = "PREROUTING"
INPUT = "INPUT"
FORWARD = "FORWARD"
OUTPUT = "OUTPUT"
POSTROUTING = "POSTROUTING"
HOOKS = (PREROUTING, INPUT, FORWARD, OUTPUT, POSTROUTING)

# Hook priorities (<linux/netfilter_ipv4.h>): raw before conntrack, mangle after it.
RAW_PRIORITY = -300
CONNTRACK_PRIORITY = -200
MANGLE_PRIORITY = -150
FILTER_PRIORITY = 0

# table -> (priority, built-in chains in the order iptables-save prints them)
TABLES: dict[str, tuple[int, tuple[str, ...]]] = {
    "raw": (RAW_PRIORITY, (PREROUTING, OUTPUT)),
    "mangle": (MANGLE_PRIORITY, (PREROUTING, INPUT, FORWARD, OUTPUT, POSTROUTING)),
    "filter": (FILTER_PRIORITY, (INPUT, FORWARD, OUTPUT)),
}
# The order iptables-save prints the tables in (the kernel's /proc/net/ip_tables_names order
# after a restore of all three, checked on the reference machine).
SAVE_ORDER = ("raw", "mangle", "filter")
NOT_EMULATED = {"nat": "nat is not emulated", "security": "security is not emulated"}

# Hooks a packet can have arrived on (-i allowed) or be leaving by (-o allowed).
HOOKS_WITH_IN = frozenset({PREROUTING, INPUT, FORWARD})
HOOKS_WITH_OUT = frozenset({FORWARD, OUTPUT, POSTROUTING})

ACCEPT = "ACCEPT"
DROP = "DROP"
RETURN = "RETURN"
POLICIES = (ACCEPT, DROP)
STANDARD_TARGETS = (ACCEPT, DROP, RETURN, "QUEUE")

MAX_CHAIN_NAME = 28          # XT_EXTENSION_MAXNAMELEN - 1 ("must be under 29 chars")


# hook -> (priority, table) of every emulated table with a chain there, in hook order.
TABLES_AT: dict[str, tuple[tuple[int, str], ...]] = {
    hook: tuple(sorted((prio, name) for name, (prio, chains) in TABLES.items() if hook in chains))
    for hook in HOOKS}


def tables_at(hook: str) -> tuple[tuple[int, str], ...]:
    """(priority, table) of every emulated table with a chain at `hook`, in hook order."""
    return TABLES_AT[hook]
