#!/usr/bin/env bash
# A gateway's memory beside the rest of the fleet (issue 15): its RSS with
# OWN connections of its own held, when other gateway instances hold no
# connection, and when they hold OTHERS. The others are registered in the
# gateway's Redis namespace by `pulse-bench fleet` through pulse-presence's
# own library, as their gateways would register them (the same script, the
# same events on the bus): a second gateway holding 50,000 real sockets
# would need more file descriptors than this machine allows a process. Each
# run gets a fresh gateway and namespace; the two settings alternate.
#
#   scripts/bench-fleet.sh                    # 10,000 own; 0 and 50,000 others; 2 runs each
#   OWN=5000 OTHERS=20000 FLEET_REPEATS=1 scripts/bench-fleet.sh
#   GATEWAY=/path/to/another/pulse-gateway scripts/bench-fleet.sh   # A/B against another build
#
# bench.sh runs it with RESULTS set, to put its RESULT lines in the report.
# Uses REDIS_URL when set, else a private redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

OWN=${OWN:-10000}
OTHERS=${OTHERS:-50000}
REPEATS=${FLEET_REPEATS:-2}
SECRET="bench-secret-0123456789abcdef0123456789abcdef"

ulimit -n "$(ulimit -Hn)"
if [ -z "${REDIS_URL:-}" ]; then
  ensure_redis
  start_private_redis
fi
if [ -z "${SKIP_BUILD:-}" ]; then
  step "cargo build --release -p pulse-bench -p pulse-gateway"
  cargo build --release -p pulse-bench -p pulse-gateway
fi
target=${CARGO_TARGET_DIR:-target}
bin=$target/release
GATEWAY=${GATEWAY:-$bin/pulse-gateway}
LOGS=$target/bench-fleet
rm -rf "$LOGS"
mkdir -p "$LOGS"
OUT=$LOGS/results.txt
: >"$OUT"

GATEWAY_PID=""
cleanup() {
  if [ -n "$GATEWAY_PID" ]; then kill -TERM "$GATEWAY_PID" 2>/dev/null || true; fi
}
trap 'cleanup; stop_private_redis' EXIT

# A gateway with JSON logs on a free port, in its own namespace; sets
# GATEWAY_PID and GATEWAY_ADDR once it logged the address it bound.
start_gateway() {
  local name=$1 log="$LOGS/$1.log" attempt
  LOG_FORMAT=json RUST_LOG=${GATEWAY_LOG:-info} "$GATEWAY" --listen 127.0.0.1:0 \
    --instance-id "$name" --jwt-secret "$SECRET" --redis-url "$REDIS_URL" \
    --redis-namespace "$name" >"$log" 2>&1 &
  GATEWAY_PID=$!
  GATEWAY_ADDR=""
  for attempt in $(seq 1 100); do
    GATEWAY_ADDR=$(grep -m1 'listening' "$log" | sed -n 's/.*"addr":"\([^"]*\)".*/\1/p' || true)
    if [ -n "$GATEWAY_ADDR" ]; then return; fi
    kill -0 "$GATEWAY_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "error: $name did not report its address; see $log" >&2
  exit 1
}

stop_gateway() {
  local waited
  kill -TERM "$GATEWAY_PID" 2>/dev/null || true
  for waited in $(seq 1 300); do
    kill -0 "$GATEWAY_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$GATEWAY_PID" 2>/dev/null || true
  wait "$GATEWAY_PID" 2>/dev/null || true
  GATEWAY_PID=""
}

# A figure of a RESULT line: field NAME's number.
field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p"; }

step "a gateway with $OWN connections of its own; other instances holding 0, then $OTHERS; $REPEATS runs each"
for run in $(seq 1 "$REPEATS"); do
  for others in 0 "$OTHERS"; do
    if [ "$others" = 0 ]; then label=pulse-fleet-alone; else label=pulse-fleet-crowded; fi
    name="bench-fleet-$$-$run-$others"
    start_gateway "$name"
    "$bin/pulse-bench" fleet --label "$label" --server "$GATEWAY_ADDR" --server-pid "$GATEWAY_PID" \
      --redis-url "$REDIS_URL" --redis-namespace "$name" --others "$others" \
      --connections "$OWN" --rate 5000 --source-base "127.0.8$run.1" --user-prefix "$name" \
      --jwt-secret "$SECRET" 2>&1 | tee "$LOGS/$name.bench.log" | grep -v '^RESULT ' || true
    grep '^RESULT ' "$LOGS/$name.bench.log" >>"$OUT" ||
      { echo "error: $name printed no result; see $LOGS/$name.bench.log" >&2; exit 1; }
    stop_gateway
  done
done

step "gateway RSS with its $OWN connections held (KiB)"
while read -r line; do
  label=$(echo "$line" | sed -n 's/.*"label":"\([^"]*\)".*/\1/p')
  others=$(echo "$line" | field other_instances_connections)
  connected=$(echo "$line" | field connected)
  before=$(echo "$line" | field server_rss_before_kib)
  after=$(echo "$line" | field server_rss_after_kib)
  echo "$label: others ${others:-0}, own $connected, RSS before its own $before KiB, with them $after KiB"
done <"$OUT"
if [ -n "${RESULTS:-}" ]; then cat "$OUT" >>"$RESULTS"; fi
