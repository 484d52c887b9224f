# syntax=docker/dockerfile:1.7
# cluster-agent: the `mapper` (Deployment) and `node` (DaemonSet) roles of charts/cluster-agent.
#   docker build -f images/cluster-agent.Dockerfile -t <registry>/intentmap/cluster-agent:<tag> .
# from the repository root (the workspace is the build context; .dockerignore trims it).
#
# The eBPF programs are compiled during `cargo build` against the *build machine's* kernel BTF
# (/sys/kernel/btf/vmlinux, read by cluster-agent/build.rs; there is no override). BuildKit's
# RUN steps see the host's /sys read-only, so build on a Linux host (or VM) whose kernel has
# CONFIG_DEBUG_INFO_BTF=y. The objects are CO-RE: aya relocates them to whatever kernel the
# node runs, so the build kernel need not match the nodes'.

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang llvm libbpf-dev bpftool \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,id=intentmap-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=intentmap-target,target=/src/target,sharing=locked \
    test -r /sys/kernel/btf/vmlinux \
      || { echo "/sys/kernel/btf/vmlinux is not readable: build on a Linux kernel with BTF (CONFIG_DEBUG_INFO_BTF=y)" >&2; exit 1; } \
 && cargo build --release --locked -p cluster-agent --bin cluster-agent \
 && install -D -m 0755 target/release/cluster-agent /out/cluster-agent

# glibc and libgcc only (no libbpf at run time: aya is pure Rust). The image's user is nonroot
# (65532), which the mapper runs as; the node agent's pod runs it as uid 0 with a handful of
# capabilities (see charts/README.md), because Kubernetes grants added capabilities to root only.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/cluster-agent /usr/local/bin/cluster-agent
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/cluster-agent"]
