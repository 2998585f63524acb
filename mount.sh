#!/usr/bin/env bash
# Set up procfs-ct and mount its /proc files.
#
#   ./mount.sh [MOUNTPOINT] [procfs-ct mount options]   install what is missing, mount (default ./mnt)
#   ./mount.sh -u [MOUNTPOINT]                           unmount and stop the daemon
#   ./mount.sh --setup                                   only install (Debian packages, .venv)
#
# Setting up means: the Debian packages fuse3 and libfuse2 (apt-get update only when
# something must be installed), and a virtual environment .venv/ at the repository root
# holding the package and its dependencies (reinstalled when pyproject.toml changes).
# Mounting clears a stale mount left by a killed daemon ("Transport endpoint is not
# connected"), starts the daemon, and waits until net/nf_conntrack answers.
# Running it twice neither stacks mounts nor starts a second daemon.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VENV="$REPO/.venv"
STAMP="$VENV/.procfs-ct-installed"
DEFAULT_MNT="$REPO/mnt"
READY_SECONDS=30

say() { printf '%s\n' "$*"; }
die() { printf 'mount.sh: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" = 0 ]; }

# -- setup --------------------------------------------------------------------------------
deb_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

apt_updated=
apt_install() {
    is_root || die "missing Debian packages ($*): run as root to install them"
    if [ -z "$apt_updated" ]; then
        say "Updating the package lists..."
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    say "Installing $*..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_packages() {
    command -v dpkg-query >/dev/null || return 0          # not Debian: trust the machine
    local missing=()
    deb_installed fuse3 || missing+=(fuse3)
    # libfuse2 is called libfuse2t64 from Debian 13 on.
    if ! deb_installed libfuse2 && ! deb_installed libfuse2t64; then
        if [ -z "$apt_updated" ] && is_root; then
            DEBIAN_FRONTEND=noninteractive apt-get update -qq; apt_updated=1
        fi
        if apt-cache show libfuse2t64 >/dev/null 2>&1; then missing+=(libfuse2t64); else missing+=(libfuse2); fi
    fi
    if ! command -v python3 >/dev/null; then
        missing+=(python3 python3-venv)
    elif ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        missing+=(python3-venv)
    fi
    if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
    [ -e /dev/fuse ] || die "/dev/fuse does not exist (load the fuse module: modprobe fuse)"
}

ensure_venv() {
    local want
    want=$(sha256sum < "$REPO/pyproject.toml" | cut -d' ' -f1)
    if [ -x "$VENV/bin/procfs-ct" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        say "Creating $VENV..."
        python3 -m venv "$VENV"
    fi
    say "Installing procfs-ct and its dependencies into .venv..."
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$REPO[test]"
    printf '%s\n' "$want" > "$STAMP"
}

setup() {
    ensure_packages
    ensure_venv
}

# -- mount state --------------------------------------------------------------------------
run_dir() {
    if is_root; then printf '/run/procfs-ct'; else printf '%s/procfs-ct' "${XDG_RUNTIME_DIR:-/tmp}"; fi
}
file_stem() { local name=${1#/}; name=${name//\//-}; printf '%s/%s' "$(run_dir)" "${name:-root}"; }

# none | ours (live procfs-ct) | stale (dead daemon) | other (someone else's mount)
mount_state() {
    local mnt=$1 fstype
    fstype=$(findmnt -n -o FSTYPE --mountpoint "$mnt" 2>/dev/null | tail -n 1 || true)
    if [ -z "$fstype" ]; then printf none; return; fi
    if ! stat "$mnt" >/dev/null 2>&1; then printf stale; return; fi
    if [ "$fstype" = fuse.procfs-ct ]; then printf ours; else printf other; fi
}

fuse_unmount() {   # fuse_unmount MNT: polite first, lazy if still busy
    local mnt=$1 tool=fusermount i
    command -v fusermount >/dev/null || tool=fusermount3
    for i in 1 2 3 4 5 6 7 8 9 10; do
        [ "$(mount_state "$mnt")" = none ] && return 0
        "$tool" -u "$mnt" 2>/dev/null && return 0
        sleep 0.2
    done
    "$tool" -uz "$mnt" 2>/dev/null || umount -l "$mnt"
}

daemon_pid() {     # daemon_pid PIDFILE: the pid it names, if that process is procfs-ct
    local pid
    pid=$(cat "$1" 2>/dev/null || true)
    if [ -n "$pid" ] && grep -qsa procfs-ct "/proc/$pid/cmdline"; then printf '%s' "$pid"; fi
}

stop_daemon() {    # stop_daemon PID PIDFILE: wait for the daemon to leave, then insist
    local pid=$1 pidfile=$2 i
    if [ -n "$pid" ]; then
        for i in $(seq 50); do daemon_gone "$pid" && break; sleep 0.1; done
        if ! daemon_gone "$pid"; then kill -TERM "$pid" 2>/dev/null || true; sleep 1; fi
        if ! daemon_gone "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    fi
    rm -f "$pidfile"
}

daemon_gone() {    # exited, or a zombie waiting to be reaped
    local state
    state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null || true)
    [ -z "$state" ] || [ "$state" = Z ]
}

# -- commands -----------------------------------------------------------------------------
do_unmount() {
    local mnt stem state pid
    mnt=$(realpath -m "${1:-$DEFAULT_MNT}")
    stem=$(file_stem "$mnt")
    state=$(mount_state "$mnt")
    pid=$(daemon_pid "$stem.pid")        # before unmounting: the daemon removes its pid file
    case $state in
        other) die "$mnt is not a procfs-ct mount (fstype $(findmnt -n -o FSTYPE --mountpoint "$mnt"))" ;;
        none) ;;
        *) fuse_unmount "$mnt" ;;
    esac
    stop_daemon "$pid" "$stem.pid"
    if [ "$state" = none ] && [ -z "$pid" ]; then say "$mnt: not mounted"; else say "Unmounted $mnt"; fi
}

show_usage() {     # show_usage SHOWN_MOUNTPOINT [MOUNTPOINT_ARGUMENT]
    local m=$1
    say "Try:"
    printf '  %-66s # %s\n' \
        "cat $m/net/ip_conntrack" "the tutorial's listing (2.4/2.6 format)" \
        "head $m/net/nf_conntrack" "the same table, modern format" \
        "cat $m/net/stat/nf_conntrack" "per-CPU statistics" \
        "cat $m/sys/net/ipv4/netfilter/ip_ct_tcp_timeout_established" "a knob (seconds)" \
        "echo 600 > $m/sys/net/ipv4/netfilter/ip_ct_tcp_timeout_established" "tune it" \
        "cat $m/sys/net/netfilter/nf_conntrack_tcp_timeout_established" "the same knob, modern name" \
        "echo abc > $m/sys/net/netfilter/nf_conntrack_max" "refused: Invalid argument" \
        "./mount.sh -u${2:+ $2}" "unmount"
}

do_mount() {
    local mnt=$DEFAULT_MNT given=
    if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then mnt=$1; given=$1; shift; fi
    mnt=$(realpath -m "$mnt")
    setup
    local stem shown=$mnt state
    stem=$(file_stem "$mnt")
    if [ "${mnt#"$PWD"/}" != "$mnt" ]; then shown=${mnt#"$PWD"/}; fi
    state=$(mount_state "$mnt")
    case $state in
        ours)
            say "procfs-ct is already mounted at $mnt (pid $(cat "$stem.pid" 2>/dev/null || echo '?'));" \
                "unmount with ./mount.sh -u${given:+ $given} to change its options."
            show_usage "$shown" "$given"; return 0 ;;
        other) die "$mnt already holds another mount (fstype $(findmnt -n -o FSTYPE --mountpoint "$mnt"))" ;;
        stale)
            say "Clearing a stale mount at $mnt (its daemon died)..."
            local pid
            pid=$(daemon_pid "$stem.pid")
            fuse_unmount "$mnt"
            stop_daemon "$pid" "$stem.pid" ;;
    esac
    mkdir -p "$mnt" "$(run_dir)"
    [ -z "$(ls -A "$mnt")" ] || die "$mnt is not empty"
    "$VENV/bin/procfs-ct" mount "$mnt" --pid-file "$stem.pid" --log-file "$stem.log" "$@" \
        || { tail -n 20 "$stem.log" 2>/dev/null >&2; die "mount failed (log: $stem.log)"; }
    local i
    for i in $(seq $((READY_SECONDS * 10))); do
        cat "$mnt/net/nf_conntrack" >/dev/null 2>&1 && break
        sleep 0.1
    done
    cat "$mnt/net/nf_conntrack" >/dev/null 2>&1 \
        || { tail -n 20 "$stem.log" >&2; die "$mnt/net/nf_conntrack does not answer (log: $stem.log)"; }
    say "procfs-ct is mounted at $mnt (pid $(cat "$stem.pid"), log $stem.log)."
    show_usage "$shown" "$given"
}

case ${1:-} in
    -u|--unmount) shift; do_unmount "$@" ;;
    --setup) setup; say "Set up: $VENV/bin/procfs-ct" ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) do_mount "$@" ;;
esac
