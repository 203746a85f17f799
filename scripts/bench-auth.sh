#!/usr/bin/env bash
# Token validations per second per core for pulse-auth (HS256, RS256, ES256,
# EdDSA), through the library and through gRPC, as a Markdown table.
# Usage: scripts/bench-auth.sh [--seconds N]   (N per measurement, default 3)
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet -p pulse-auth --example validate_bench

echo "date:    $(date)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo "rustc:   $(rustc --version)"
echo
exec target/release/examples/validate_bench "$@"
