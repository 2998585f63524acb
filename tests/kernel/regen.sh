#!/bin/sh
# Regenerate the kernel reference data (tests/data/kernel/<scenario>/) from the running kernel.
# Needs root, iproute2, nftables and tcpdump. Every scenario runs in its own network namespace
# pct-<scenario>; the trap deletes any that an interrupted run leaves behind.
#   tests/kernel/regen.sh                 all scenarios
#   tests/kernel/regen.sh udp_stream ...  just these
set -u
here=$(cd "$(dirname "$0")" && pwd)
cleanup() {
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^pct-'); do
        ip netns del "$ns" 2>/dev/null
    done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
for tool in ip nft tcpdump; do
    command -v "$tool" >/dev/null || { echo "missing: $tool (apt-get install -y iproute2 nftables tcpdump)" >&2; exit 2; }
done
python3 "$here/scenarios.py" "$@"
