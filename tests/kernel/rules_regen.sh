#!/bin/sh
# Regenerate the rules engine's kernel reference data (tests/data/rules/) from the running
# kernel: the 20 traffic scenarios (rules_oracle.py) and the rule forms and command
# sequence (rules_forms.py). Needs root, iproute2, iptables (iptables-legacy), nftables and
# tcpdump. Namespaces are called pctr-*; the trap deletes any an interrupted run leaves.
#   tests/kernel/rules_regen.sh                all scenarios and the forms
#   tests/kernel/rules_regen.sh rc_firewall    just these scenarios
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/regen_common.sh"
regen_setup pctr- "iproute2 nftables tcpdump iptables" ip nft tcpdump iptables-legacy iptables-legacy-save iptables-legacy-restore
python3 "$here/rules_oracle.py" "$@" || exit 1
[ "$#" -gt 0 ] || python3 "$here/rules_forms.py"
