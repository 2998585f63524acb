#!/bin/sh
# Regenerate the kernel reference data (tests/data/kernel/<scenario>/) from the running kernel.
# Needs root, iproute2, nftables and tcpdump. Every scenario runs in its own network namespace
# pct-<scenario>; the trap deletes any that an interrupted run leaves behind.
#   tests/kernel/regen.sh                 all scenarios
#   tests/kernel/regen.sh udp_stream ...  just these
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/regen_common.sh"
regen_setup pct- "iproute2 nftables tcpdump" ip nft tcpdump
python3 "$here/scenarios.py" "$@"
