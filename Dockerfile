# One image with Pulse's three binaries (pulse-gateway, pulse-auth,
# pulse-presence) in /usr/local/bin; compose and Kubernetes choose the one to
# run with `command`. Without one the image runs pulse-gateway.
#
#   docker build -t pulse:0.1.0 .
#
# Dependencies are built in a layer of their own (cargo-chef), so a change to
# Pulse's code rebuilds only Pulse's crates; the layer is rebuilt when a
# Cargo.toml or Cargo.lock changes. protoc comes vendored with the build
# (protoc-bin-vendored), so the builder installs nothing.

ARG RUST_VERSION=1
ARG CARGO_CHEF_VERSION=0.1.78

FROM rust:${RUST_VERSION}-bookworm AS chef
ARG CARGO_CHEF_VERSION
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

# The recipe: the workspace's manifests and lock file. It only changes when
# they do, which keeps the `cook` layer below cached.
FROM chef AS planner
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY tests tests
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# The three binaries' packages are named rather than the whole workspace
# (`--workspace --bins`): the whole-system tests' crate turns on
# pulse-presence's `testing` feature, and feature unification across the
# workspace would build that test support into the release binaries.
RUN cargo chef cook --release --locked --recipe-path recipe.json \
        -p pulse-gateway -p pulse-auth -p pulse-presence
COPY Cargo.toml Cargo.lock ./
COPY proto proto
COPY crates crates
COPY tests tests
RUN cargo build --release --locked --bins \
        -p pulse-gateway -p pulse-auth -p pulse-presence \
    && mkdir -p /out \
    && cp target/release/pulse-gateway target/release/pulse-auth \
        target/release/pulse-presence /out/

# The same Debian release as the builder, so the glibc the binaries were
# linked against is the one they run on.
FROM debian:bookworm-slim
# Versions are not pinned: bookworm's security updates replace them.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 pulse \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin pulse
COPY --from=builder /out/ /usr/local/bin/
LABEL org.opencontainers.image.title="pulse" \
      org.opencontainers.image.description="Pulse realtime WebSocket gateway: pulse-gateway, pulse-auth, pulse-presence" \
      org.opencontainers.image.licenses="Apache-2.0"
# Numeric, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001
# pulse-gateway (HTTP and /ws), pulse-auth (gRPC), pulse-presence (gRPC).
EXPOSE 3000 50051 50052
CMD ["pulse-gateway"]
