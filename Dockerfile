# syntax=docker/dockerfile:1
#
# canary-gate container image: `make image` builds it (it passes the build args below).
#
# Builder: the official Rust image (Debian bookworm, glibc 2.36) at the toolchain this repo is
# built and tested with. The binary is built by `make static`, the same target CI and
# scripts/check-static.sh use: statically linked glibc (x86_64-unknown-linux-gnu with
# +crt-static; the musl target is not used), so it needs no loader and no shared library.
#
# Name resolution in a static glibc binary: glibc >= 2.34 has the `files` and `dns` NSS
# modules built in, so getaddrinfo reads /etc/hosts and queries the nameservers of
# /etc/resolv.conf (which the kubelet mounts into every container, search domains and ndots
# included) without any libnss_*.so. Only other modules an nsswitch.conf might name
# (myhostname, mdns, resolve, ...) would need shared libraries, and the image has none, so they
# are skipped. scripts/check-static.sh proves the /etc/hosts path in an empty chroot.
#
# Final stage: distroless static (CA certificates, /etc/passwd with `nonroot`, tzdata; no
# shell, no libc) holding only the binary. It writes nothing to the root filesystem (logs go
# to stderr, the serving certificate is read from the /tls Secret mount), so the chart runs it
# with readOnlyRootFilesystem: true.

ARG RUST_VERSION=1.95

FROM --platform=linux/amd64 rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
# Only what the build reads: a change to the chart, docs or tests does not rebuild the binary.
COPY Cargo.toml Cargo.lock Makefile ./
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    make static \
    && install -D -m 0755 target/static/canary-gate /out/canary-gate

FROM --platform=linux/amd64 gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=1970-01-01T00:00:00Z
ARG SOURCE=https://github.com/canary-gate/canary-gate
LABEL org.opencontainers.image.title="canary-gate" \
      org.opencontainers.image.description="Admission webhook + analyzer that turns every kubectl apply of a Deployment into a canary release on Istio, gated by PromQL" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
COPY --from=builder /out/canary-gate /canary-gate
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["/canary-gate"]
CMD ["serve"]
