#!/bin/sh
# Regenerate the wire reference data (tests/data/wire/<scenario>/) from the running kernel.
# Needs root, iproute2, nftables, tcpdump and ethtool. Every scenario runs in two network
# namespaces pctw-<scenario>-c (client) and pctw-<scenario>-s (server, the observed host)
# joined by a veth pair; the trap deletes any that an interrupted run leaves behind.
#   tests/kernel/regen_wire.sh                       all scenarios
#   tests/kernel/regen_wire.sh wire_udp_stream ...   just these
#   PCT_WIRE_NS_PREFIX=pctu- tests/kernel/regen_wire.sh ...   namespaces (and the cleanup) under
#                                                   another prefix, beside a parallel run
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/regen_common.sh"
regen_setup "${PCT_WIRE_NS_PREFIX:-pctw-}" "iproute2 nftables tcpdump ethtool" ip nft tcpdump ethtool
python3 "$here/wire_scenarios.py" "$@"
