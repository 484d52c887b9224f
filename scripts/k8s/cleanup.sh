#!/usr/bin/env bash
# Removes everything a test cluster of testkit::cluster made, given its run directory
# (/var/lib/intentmap-test/k8s/c<pid>): its processes (by the pid files in pids/), every process
# left in the pods' cgroups and the containerd shims of its socket, the pods' cgroups, every
# mount under the run directory (volumes, network namespaces, container root filesystems), the
# CNI bridge and the node's link, the iptables and ip6tables chains KUBE-* and CNI-* (and the
# rules jumping to them), IPv6 forwarding as it was before, what containerd keeps outside its
# folders (CNI results, shim sockets), and the run directory itself.
#
# testkit runs it when a cluster is stopped or dropped, its watchdog runs it when the test
# process is gone, and a start runs it for a run directory whose owner died. Safe to run twice,
# and keeps going past what is already gone.
#
# Usage: scripts/k8s/cleanup.sh RUN_DIR
# No `set -e`: every step runs even when an earlier one found nothing to remove. Signals are left
# at their defaults: an interrupted clean-up is finished by running it again.
set -uo pipefail
dir=${1:?usage: scripts/k8s/cleanup.sh RUN_DIR}
dir=${dir%/}
[ -d "$dir" ] || exit 0
case "$dir" in
/var/lib/intentmap-test/k8s/c[0-9]*) ;;
*) [ -f "$dir/intentmap-test-cluster" ] || {
    echo "cleanup.sh: $dir is not a test cluster's run directory (no intentmap-test-cluster marker); refusing" >&2
    exit 2
} ;;
esac
# The names testkit gives the node's links (kept in sync with testkit/src/cluster/mod.rs).
bridge=$(cat "$dir/bridge" 2>/dev/null || echo imk8s-br0)
node_link=$(cat "$dir/node-link" 2>/dev/null || echo imk8s0)

# The pid of a component, if that process still is ours (every component's command line names
# the run directory: a pid reused by another process since is left alone).
pid_of() {
    local pid
    pid=$(cat "$dir/pids/$1.pid" 2>/dev/null) || return 1
    { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF -- "$dir/" && echo "$pid"
}

# stop SIGNAL NAME...: signal the components, wait up to 5 s for them all to go, then SIGKILL
# what is left (a zombie, not yet reaped by its parent, counts as gone).
stop() {
    local signal=$1 pid pids=() left
    shift
    for name in "$@"; do
        pid=$(pid_of "$name") && kill -"$signal" "$pid" 2>/dev/null && pids+=("$pid")
    done
    for _ in $(seq 50); do
        left=()
        for pid in ${pids[@]+"${pids[@]}"}; do
            kill -0 "$pid" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] && left+=("$pid")
        done
        [ ${#left[@]} -eq 0 ] && return 0
        sleep 0.1
    done
    kill -KILL "${left[@]}" 2>/dev/null
}

# 1. The node first, so nothing restarts what is being removed.
stop KILL kubelet
stop TERM kube-proxy

# 2. Every process of every pod (pause and containers), found by cgroup, and our shims.
pod_cgroups=$(find /sys/fs/cgroup -maxdepth 2 -name kubepods -type d 2>/dev/null)
for _ in 1 2 3; do
    pids=$(for cg in $pod_cgroups; do find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null; done | sort -u)
    [ -n "$pids" ] || break
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null
    sleep 0.3
done
for proc in /proc/[0-9]*; do
    if { tr '\0' ' ' <"$proc/cmdline"; } 2>/dev/null | grep -qF -- "-address $dir/containerd.sock"; then
        kill -KILL "${proc#/proc/}" 2>/dev/null
    fi
done

# 3. The control plane and containerd.
stop TERM containerd kube-scheduler kube-controller-manager kube-apiserver
stop TERM etcd
# Anything else this cluster started (a component testkit added later).
for f in "$dir"/pids/*.pid; do
    [ -f "$f" ] && pid=$(pid_of "$(basename "$f" .pid)") && kill -KILL "$pid" 2>/dev/null
done

# 4. The pods' cgroups, deepest first (empty now).
for cg in $pod_cgroups; do find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null; done

# 5. Every mount under the run directory, deepest first.
for _ in 1 2 3; do
    mounts=$(awk -v d="$dir/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r)
    [ -n "$mounts" ] || break
    for m in $mounts; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
done

# 6. The network: links, then iptables chains and the rules that jump to them.
ip link del "$bridge" 2>/dev/null
ip link del "$node_link" 2>/dev/null
if [ -f "$dir/ipv6-forwarding" ]; then
    cat "$dir/ipv6-forwarding" >/proc/sys/net/ipv6/conf/all/forwarding 2>/dev/null
fi
clean_iptables() {
    local save=$1 restore=$2 table rules script chains
    command -v "$save" >/dev/null || return 0
    for table in filter nat mangle raw; do
        rules=$("$save" -t "$table" 2>/dev/null) || continue
        chains=$(printf '%s\n' "$rules" | sed -n 's/^:\(\(KUBE\|CNI\)-[^ ]*\) .*/\1/p')
        script=$(
            echo "*$table"
            # Rules in other chains that jump to ours (ours are flushed below).
            printf '%s\n' "$rules" | grep -E '^-A ' | grep -Ev '^-A (KUBE|CNI)-' | grep -E -- '-j (KUBE|CNI)-' | sed 's/^-A /-D /'
            for c in $chains; do echo "-F $c"; done
            for c in $chains; do echo "-X $c"; done
            echo COMMIT
        )
        [ "$(printf '%s\n' "$script" | wc -l)" -gt 2 ] || continue
        printf '%s\n' "$script" | "$restore" --noflush 2>/dev/null || echo "cleanup.sh: could not remove the $table table's KUBE-*/CNI-* chains with $restore; see: $save -t $table" >&2
    done
}
clean_iptables iptables-save iptables-restore
clean_iptables ip6tables-save ip6tables-restore

# 7. What containerd keeps outside its folders for our pods and containers (CNI results cached
#    by libcni, shim sockets named by a hash of our socket, namespace and id), and the run
#    directory.
rm -f /var/lib/cni/results/"$(cat "$dir/cni-network" 2>/dev/null || echo imk8s)"-* 2>/dev/null
for id in $(ls "$dir/containerd/root/io.containerd.grpc.v1.cri/sandboxes" "$dir/containerd/root/io.containerd.grpc.v1.cri/containers" \
    "$dir/containerd/state/io.containerd.runtime.v2.task/k8s.io" 2>/dev/null | grep -E '^[0-9a-f]{64}$' | sort -u); do
    rm -f "/var/lib/cni/results/cni-loopback-$id-lo"
    rm -f "/run/containerd/s/$(printf '%s' "$dir/containerd.sock/k8s.io/$id" | sha256sum | cut -d' ' -f1)"
done
# --one-file-system: never into a mount that would not go.
rm -rf --one-file-system "$dir" 2>/dev/null || {
    sleep 1
    rm -rf --one-file-system "$dir"
}
exit 0
