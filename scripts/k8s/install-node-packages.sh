#!/usr/bin/env bash
# The node runtime of the real test cluster (testkit::cluster), from Debian's packages:
# containerd, runc, the CNI plugins (bridge, host-local, portmap, loopback) and iptables; and what
# scripts/k8s/build.sh packs into images: busybox-static (the traffic image) and a static libc
# (gcc, libc6-dev: the pause program). Installs what is missing, says nothing when all is there.
set -euo pipefail
missing=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
have containerd || missing+=(containerd)
have runc || missing+=(runc)
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] && [ -x /usr/lib/cni/portmap ] && [ -x /usr/lib/cni/loopback ] ||
    missing+=(containernetworking-plugins)
have iptables || missing+=(iptables)
# The image needs busybox linked statically (Debian's plain `busybox` is dynamic).
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || missing+=(busybox-static)
have gcc || missing+=(gcc)
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || [ -f /usr/lib/libc.a ] || missing+=(libc6-dev)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "missing for the test cluster: ${missing[*]}; run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
echo "installing for the test cluster: ${missing[*]}..."
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
