# Sourced by the regen scripts: delete the namespaces a run (or an interrupted one) leaves
# behind, and refuse to start without the tools the scenarios need.
#   regen_setup NAMESPACE_PREFIX "DEBIAN PACKAGES" TOOL...
regen_setup() {
    regen_prefix=$1
    regen_packages=$2
    shift 2
    trap regen_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    for tool in "$@"; do
        command -v "$tool" >/dev/null || {
            echo "missing: $tool (apt-get install -y $regen_packages)" >&2; exit 2; }
    done
}

regen_cleanup() {
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$regen_prefix"); do
        ip netns del "$ns" 2>/dev/null
    done
}
