#!/bin/sh
# Regenerate the rules engine's kernel reference data (tests/data/rules/) from the running
# kernel: the 20 traffic scenarios (rules_oracle.py) and the rule forms and command
# sequence (rules_forms.py). Needs root, iproute2, iptables (iptables-legacy), nftables and
# tcpdump. Namespaces are called pctr-*; the trap deletes any an interrupted run leaves.
#   tests/kernel/rules_regen.sh                all scenarios and the forms
#   tests/kernel/rules_regen.sh rc_firewall    just these scenarios
set -u
here=$(cd "$(dirname "$0")" && pwd)
cleanup() {
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^pctr-'); do
        ip netns del "$ns" 2>/dev/null
    done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
for tool in ip nft tcpdump iptables-legacy iptables-legacy-save iptables-legacy-restore; do
    command -v "$tool" >/dev/null || { echo "missing: $tool (apt-get install -y iproute2 nftables tcpdump iptables)" >&2; exit 2; }
done
python3 "$here/rules_oracle.py" "$@" || exit 1
[ "$#" -gt 0 ] || python3 "$here/rules_forms.py"
