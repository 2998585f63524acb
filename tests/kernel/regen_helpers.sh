#!/bin/sh
# Regenerate the helper reference data (tests/data/kernel_helpers/<scenario>/): FTP, TFTP and
# IRC DCC with the kernel's helpers attached by nft `ct helper`, in namespaces pcth-<scenario>.
#   tests/kernel/regen_helpers.sh                 all scenarios
#   tests/kernel/regen_helpers.sh ftp_active_port ...  just these
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/regen_common.sh"
regen_setup pcth- "iproute2 nftables tcpdump" ip nft tcpdump
PCT_NS_PREFIX=pcth- python3 "$here/helper_scenarios.py" "$@"
