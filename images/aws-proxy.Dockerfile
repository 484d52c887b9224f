# syntax=docker/dockerfile:1.7
# aws-proxy: AWS visibility (proxy, DNS server, admission webhook) in charts/cluster-agent.
#   docker build -f images/aws-proxy.Dockerfile -t <registry>/intentmap/aws-proxy:<tag> .

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,id=intentmap-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=intentmap-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p aws-proxy --bin aws-proxy \
 && install -D -m 0755 target/release/aws-proxy /out/aws-proxy

# distroless/cc carries /etc/ssl/certs/ca-certificates.crt, which the webhook appends to the
# proxy's CA in the bundle it hands to patched pods (--system-roots). The chart's pod listens on
# unprivileged ports only, so the image's nonroot user needs no capability.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/aws-proxy /usr/local/bin/aws-proxy
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/aws-proxy"]
