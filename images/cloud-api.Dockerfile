# syntax=docker/dockerfile:1.7
# cloud-api: charts/cloud-api (`serve`, and `migrate` in its init container).
#   docker build -f images/cloud-api.Dockerfile -t <registry>/intentmap/cloud-api:<tag> .

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,id=intentmap-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=intentmap-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p cloud-api --bin cloud-api \
 && install -D -m 0755 target/release/cloud-api /out/cloud-api

# migrations/ is compiled in (sqlx::migrate!) and so is the web page (include_str!): the binary
# is the whole application.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/cloud-api /usr/local/bin/cloud-api
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/cloud-api"]
CMD ["serve"]
