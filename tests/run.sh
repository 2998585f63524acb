#!/usr/bin/env bash
# Set up as ./mount.sh does (Debian packages, .venv) and run the whole test suite.
#   tests/run.sh [pytest arguments]      e.g. tests/run.sh -m mount -x
# pytest's "no tests ran" (exit 5) is a failure here, never a silent success.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
./mount.sh --setup >&2
# The kernel differential and tap tests also need tcpdump and nft (Debian packages).
missing=()
command -v tcpdump >/dev/null || missing+=(tcpdump)
command -v nft >/dev/null || missing+=(nftables)
# The live firewall tests compare with the kernel's own legacy iptables in a namespace.
command -v iptables-legacy >/dev/null || missing+=(iptables)
# The live rc.firewall test pings through the emulated chains.
command -v ping >/dev/null || missing+=(iputils-ping)
# The live wire scenario turns a veth's checksum offload off to send bad checksums.
command -v ethtool >/dev/null || missing+=(ethtool)
# test_thread_state compiles a tiny C caller: a pthread Python did not start, as libfuse's are.
command -v cc >/dev/null || missing+=(gcc libc6-dev)
# A real third-party program that hard-codes /proc/net/ip_conntrack, run under procfs-ct exec.
[ -e /usr/share/munin/plugins/fw_conntrack ] || missing+=(munin-plugins-core)
if [ "${#missing[@]}" -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "tests/run.sh: installing ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
status=0
.venv/bin/python -m pytest -q tests "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "tests/run.sh: pytest collected no tests: failing" >&2
fi
exit "$status"
