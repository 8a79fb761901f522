# syntax=docker/dockerfile:1
# The dirsync operator image: `dirsync operator` (and the rest of the CLI) on distroless, non-root.
# The Graph emulator and the test harness are not in it.
#
#   docker build -t ghcr.io/dirsync/dirsync:0.1.0 .
#
# Build stage: the release binary from the committed Cargo.lock (--locked). rustls with ring
# throughout, so the binary needs only glibc (no OpenSSL), which distroless/cc provides.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin dirsync \
 && install -D -m 0755 target/release/dirsync /out/dirsync

# Runtime: no shell, no package manager; uid/gid 65532 ("nonroot").
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/dirsync /usr/local/bin/dirsync
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/dirsync"]
CMD ["operator"]
