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
# Unmounting finishes within 10 seconds whatever the daemon's state (running, stopped,
# hung with readers inside, dead): it never stats the mountpoint, only reads the mount
# table; it unmounts politely, then aborts the FUSE connection and unmounts lazily, then
# stops the daemon it started (its pid file): SIGTERM, then SIGKILL.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VENV="$REPO/.venv"
STAMP="$VENV/.procfs-ct-installed"
DEFAULT_MNT="$REPO/mnt"
READY_SECONDS=30
LONG_STEM=160          # a derived file name longer than this is cut and hashed (daemon.py)
HASH_CHARS=16

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
file_stem() {      # file_stem ABSPATH: RUN_DIR/<path with - for />, hashed if too long
    local name=${1#/} digest
    name=${name//\//-}
    if [ "$(LC_ALL=C; printf '%s' "${#name}")" -gt "$LONG_STEM" ]; then
        digest=$(printf '%s' "$1" | sha256sum | cut -c1-"$HASH_CHARS")
        name="$(LC_ALL=C; printf '%s' "${name:0:$((LONG_STEM - HASH_CHARS - 1))}")-$digest"
    fi
    printf '%s/%s' "$(run_dir)" "${name:-root}"
}

# The mountpoint's absolute path without touching it: only its parent is resolved (a
# stat of a mount whose daemon is stopped or hung would block).
abs_mountpoint() {
    local path=${1%/}
    [ -n "$path" ] || path=/
    case $path in /*) ;; *) path=$PWD/$path ;; esac
    [ "$path" = / ] && { printf /; return; }
    printf '%s/%s' "$(realpath -m "$(dirname "$path")")" "$(basename "$path")"
}

# mount_line MNT: the /proc/self/mountinfo line of the last mount exactly at MNT (mount
# points there have octal escapes such as \040 for a space).
mount_line() {
    local mnt=$1 id parent dev root point rest found=
    while read -r id parent dev root point rest; do
        [ "$(printf '%b' "$point")" = "$mnt" ] && found="$id $parent $dev $root $point $rest"
    done < /proc/self/mountinfo
    [ -n "$found" ] && printf '%s\n' "$found"
}
mount_fstype() { local line; line=$(mount_line "$1"); [ -n "$line" ] && printf '%s' "${line#* - }" | cut -d' ' -f1; }
mount_minor() { local line; line=$(mount_line "$1"); [ -n "$line" ] && printf '%s' "$line" | cut -d' ' -f3 | cut -d: -f2; }

# none | ours (live procfs-ct) | stale (dead daemon) | other (someone else's mount)
mount_state() {
    local mnt=$1 fstype failure
    fstype=$(mount_fstype "$mnt" || true)
    if [ -z "$fstype" ]; then printf none; return; fi
    # statfs (stat -f) always reaches the daemon; a plain stat may be answered from the
    # kernel's attribute cache after the daemon died (fs.py STATIC_TREE_TIMEOUT).  One that
    # hangs (stopped daemon) is killed after 2 s: FUSE waits are killable.
    failure=$(LC_ALL=C timeout -s KILL 2 stat -f "$mnt" 2>&1 >/dev/null || true)
    case $failure in *"not connected"*) printf stale; return ;; esac
    if [ "$fstype" = fuse.procfs-ct ]; then printf ours; else printf other; fi
}

abort_connection() {   # abort_connection MNT: echo 1 > /sys/fs/fuse/connections/MINOR/abort
    local minor dir=/sys/fs/fuse/connections
    minor=$(mount_minor "$1" || true)
    [ -n "$minor" ] || return 0
    [ -d "$dir/$minor" ] || mount -t fusectl fusectl "$dir" 2>/dev/null || true
    [ -w "$dir/$minor/abort" ] && echo 1 > "$dir/$minor/abort" 2>/dev/null || true
}

fuse_unmount() {   # fuse_unmount MNT: polite while it works, then abort and lazy; never blocks
    local mnt=$1 tool=fusermount i
    command -v fusermount >/dev/null || tool=fusermount3
    for i in 1 2 3 4 5; do
        [ -z "$(mount_fstype "$mnt")" ] && return 0
        timeout -s KILL 0.5 "$tool" -u "$mnt" 2>/dev/null && return 0
        sleep 0.1
    done
    # Busy (readers inside) or the daemon does not answer: cut the connection, so blocked
    # readers get an error, then detach the mount.
    abort_connection "$mnt"
    timeout -s KILL 2 "$tool" -uz "$mnt" 2>/dev/null || timeout -s KILL 2 umount -l "$mnt" 2>/dev/null || true
    [ -z "$(mount_fstype "$mnt")" ]
}

daemon_pid() {     # daemon_pid PIDFILE: the pid it names, if that process is procfs-ct
    local pid
    pid=$(cat "$1" 2>/dev/null || true)
    if [ -n "$pid" ] && grep -qsa procfs-ct "/proc/$pid/cmdline"; then printf '%s' "$pid"; fi
}

stop_daemon() {    # stop_daemon PID PIDFILE: let the daemon leave, then insist
    local pid=$1 pidfile=$2 i
    if [ -n "$pid" ]; then
        for i in $(seq 15); do daemon_gone "$pid" && break; sleep 0.1; done
        if ! daemon_gone "$pid"; then
            # A stopped daemon handles SIGTERM (saving its state file) once continued.
            kill -TERM "$pid" 2>/dev/null || true; kill -CONT "$pid" 2>/dev/null || true
            for i in $(seq 20); do daemon_gone "$pid" && break; sleep 0.1; done
        fi
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
    local mnt stem fstype pid
    mnt=$(abs_mountpoint "${1:-$DEFAULT_MNT}")
    stem=$(file_stem "$mnt")
    fstype=$(mount_fstype "$mnt" || true)      # the mount table only: never stat the mount
    pid=$(daemon_pid "$stem.pid")        # before unmounting: the daemon removes its pid file
    case $fstype in
        '') ;;
        fuse.procfs-ct) fuse_unmount "$mnt" || say "mount.sh: $mnt: still mounted" >&2 ;;
        *) die "$mnt is not a procfs-ct mount (fstype $fstype)" ;;
    esac
    stop_daemon "$pid" "$stem.pid"
    if [ -z "$fstype" ] && [ -z "$pid" ]; then say "$mnt: not mounted"; else say "Unmounted $mnt"; fi
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
    mnt=$(abs_mountpoint "$mnt")
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
        other) die "$mnt already holds another mount (fstype $(mount_fstype "$mnt"))" ;;
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
