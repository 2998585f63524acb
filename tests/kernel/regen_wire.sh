#!/bin/sh
# Regenerate the wire reference data (tests/data/wire/<scenario>/) from the running kernel.
# Needs root, iproute2, nftables, tcpdump and ethtool. Every scenario runs in two network
# namespaces pctw-<scenario>-c (client) and pctw-<scenario>-s (server, the observed host)
# joined by a veth pair; the trap deletes any that an interrupted run leaves behind.
#   tests/kernel/regen_wire.sh                       all scenarios
#   tests/kernel/regen_wire.sh wire_udp_stream ...   just these
set -u
here=$(cd "$(dirname "$0")" && pwd)
cleanup() {
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^pctw-'); do
        ip netns del "$ns" 2>/dev/null
    done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
for tool in ip nft tcpdump ethtool; do
    command -v "$tool" >/dev/null || { echo "missing: $tool (apt-get install -y iproute2 nftables tcpdump ethtool)" >&2; exit 2; }
done
python3 "$here/wire_scenarios.py" "$@"
