# syntax=docker/dockerfile:1.7
# intentmap: the people's CLI (list, export, visualize, reset), for CI jobs and `kubectl run`.
#   docker build -f images/intentmap.Dockerfile -t <registry>/intentmap/intentmap:<tag> .
#   docker run --rm --network host -v "$PWD:/work" <image> visualize -o graph.png

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,id=intentmap-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=intentmap-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p intentmap --bin intentmap \
 && install -D -m 0755 target/release/intentmap /out/intentmap

# glibc and libgcc only: `visualize -o x.png` draws its labels with the font built into the
# binary (Noto Sans), so the image needs no system fonts.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/intentmap /usr/local/bin/intentmap
USER 65532:65532
WORKDIR /work
ENTRYPOINT ["/usr/local/bin/intentmap"]
