#!/usr/bin/env bash
# Everything this project needs on a fresh Debian machine, installed once (idempotent, quiet when
# all is there): PostgreSQL for the cloud and the tests; clang, llvm, libbpf-dev and bpftool to
# build the eBPF programs; iproute2 and dnsmasq for the network-namespace tests; dig (dnsutils) for
# the DNS tests; chromium for the access-graph page's browser test; java 17 and maven for the real
# Kafka broker's tests (scripts/kafka.sh fetches Kafka from Maven Central); boto3 and moto (PyPI, in
# target/pytools) for the AWS proxy tests; containerd, runc, the CNI plugins, iptables and
# busybox-static for the real test cluster (scripts/k8s/install-node-packages.sh; its
# Kubernetes binaries are built by scripts/k8s/build.sh when a test first starts it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-postgres.sh
missing=()
for tool in clang:clang llc:llvm bpftool:bpftool ip:iproute2 dnsmasq:dnsmasq-base dig:dnsutils chromium:chromium curl:curl java:openjdk-17-jre-headless mvn:maven; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${tool%%:*}" ] || missing+=("${tool##*:}")
done
[ -f /usr/include/bpf/bpf_helpers.h ] || missing+=(libbpf-dev)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing: ${missing[*]}; run: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "installing ${missing[*]}..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
bash scripts/ensure-python-tools.sh
bash scripts/k8s/install-node-packages.sh
echo "build tools: $(clang --version | head -n 1), $(bpftool version 2>/dev/null | head -n 1)"
