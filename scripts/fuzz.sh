#!/usr/bin/env bash
# Runs each cargo-fuzz target in fuzz/ for a bounded time and fails on a crash
# (a panic, a failed assertion, a hang past 10 s on one input, or memory past
# libFuzzer's limit). Not part of scripts/test.sh: it takes minutes.
#
#   scripts/fuzz.sh            60 s per target
#   scripts/fuzz.sh 300        300 s per target
#   scripts/fuzz.sh 60 token   only the targets named
#
# Targets: client_message (pulse_protocol::ClientMessage::decode), token
# (pulse_auth::Validator::validate with a fixed HS256 key) and frame
# (pulse_gateway::frame::parse, the gateway's RFC 6455 frame parser).
#
# libFuzzer through cargo-fuzz (installed from crates.io when missing). With
# a nightly toolchain the targets are built with AddressSanitizer; without
# one, on stable with `--sanitizer none` (the code under test is safe Rust,
# so the sanitizer matters less than the coverage, the panics and the
# overflow checks, which are on). FUZZ_TOOLCHAIN=stable|nightly forces one.
#
# The corpus grows in fuzz/corpus/<target> (kept between runs, not in git),
# seeded from fuzz/seeds/<target>; a crashing input is saved in
# fuzz/artifacts/<target>/ and the failure prints how to replay it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

SECONDS_EACH=${1:-60}
shift || true
TARGETS=("$@")
if [ "${#TARGETS[@]}" -eq 0 ]; then TARGETS=(client_message token frame); fi
CARGO_FUZZ_VERSION=0.13.2

case "$SECONDS_EACH" in
  '' | *[!0-9]*)
    echo "usage: scripts/fuzz.sh [seconds per target] [target...]" >&2
    exit 2
    ;;
esac

if ! cargo fuzz --version >/dev/null 2>&1; then
  step "installing cargo-fuzz $CARGO_FUZZ_VERSION (crates.io)"
  cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

toolchain=${FUZZ_TOOLCHAIN:-}
if [ -z "$toolchain" ]; then
  if rustup run nightly rustc --version >/dev/null 2>&1; then
    toolchain=nightly
  else
    toolchain=stable
  fi
fi
sanitizer=address
if [ "$toolchain" != nightly ]; then sanitizer=none; fi
fuzz=(cargo "+$toolchain" fuzz)
# The default build: optimised, with debug assertions and overflow checks.
flags=(--sanitizer "$sanitizer")

cd fuzz
step "building ${TARGETS[*]} ($toolchain, sanitizer $sanitizer)"
for target in "${TARGETS[@]}"; do
  "${fuzz[@]}" build "${flags[@]}" "$target"
done

failed=()
for target in "${TARGETS[@]}"; do
  step "fuzzing $target for ${SECONDS_EACH}s"
  mkdir -p "corpus/$target"
  dirs=("corpus/$target")
  if [ -d "seeds/$target" ]; then dirs+=("seeds/$target"); fi
  log=$(mktemp)
  if "${fuzz[@]}" run "${flags[@]}" "$target" "${dirs[@]}" -- \
    -max_total_time="$SECONDS_EACH" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
    echo "ok: $target, no crash in ${SECONDS_EACH}s ($(find "corpus/$target" -type f | wc -l) inputs in its corpus)"
  else
    tail -n 40 "$log"
    artifact=$(find "artifacts/$target" -type f -newer "$log" 2>/dev/null | head -n 1)
    echo "FAILED: $target crashed on fuzz/${artifact:-artifacts/$target/}; replay with:"
    echo "  cd fuzz && cargo +$toolchain fuzz run ${flags[*]} $target ${artifact:-artifacts/$target/<file>}"
    failed+=("$target")
  fi
  rm -f "$log"
done

echo "$((${#TARGETS[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
[ "${#failed[@]}" -eq 0 ]
