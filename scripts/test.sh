#!/usr/bin/env bash
# The one test command (README and .ci/run call it): format, unused
# dependencies, lint, the deploy files, docs, and every test of the workspace against a private
# redis-server on a free port and a private three-master Redis Cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_redis
start_private_redis   # exports REDIS_URL; stopped on exit
start_private_cluster # exports REDIS_CLUSTER_URLS; stopped on exit

step "cargo fmt --all --check"
cargo fmt --all --check

step "cargo machete (no unused dependency)"
if ! command -v cargo-machete >/dev/null 2>&1; then
  cargo install cargo-machete --locked --version 0.9.2 --quiet
fi
cargo machete

step "cargo clippy --workspace --all-targets --all-features -- -D warnings"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "deploy files (Dockerfile, deploy/compose.yaml, deploy/k8s)"
bash scripts/validate-deploy.sh

step "cargo doc --workspace --no-deps (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features --quiet

# The whole-system tests start the real binaries, so build them first.
step "cargo build --workspace --bins"
cargo build --workspace --bins

step "cargo test --workspace --all-features (REDIS_URL=$REDIS_URL, REDIS_CLUSTER_URLS=$REDIS_CLUSTER_URLS)"
cargo test --workspace --all-features

step "TypeScript SDK: build, size, unit, integration and browser tests (scripts/test-sdk.sh)"
bash scripts/test-sdk.sh
