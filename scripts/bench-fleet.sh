#!/usr/bin/env bash
# The rest of the fleet (issue 15), two measurements:
#
# 1. A gateway's memory beside the rest of the fleet: its RSS with OWN
#    connections of its own held, when other gateway instances hold no
#    connection, and when they hold OTHERS. The others are registered in the
#    gateway's Redis namespace by `pulse-bench fleet` through pulse-presence's
#    own library, as their gateways would register them (the same script,
#    the same events on the bus): a second gateway holding 50,000 real
#    sockets would need more file descriptors than this machine allows a
#    process. Each run gets a fresh gateway and namespace; the two settings
#    alternate.
# 2. The per-user connection limit across gateways at the same moment:
#    three real gateways on one namespace with --max-connections-per-user
#    LIMIT; `pulse-bench user-limit` runs LIMIT_TRIALS trials, each a new
#    user opening LIMIT_CONNECTS sockets at once, round robin over the three
#    (TCP first, then every upgrade together behind a barrier). Exactly
#    LIMIT must go live in every trial, the rest be refused 4429
#    `too_many_connections`, and presence hold exactly the live ones. Then
#    the same with LIMIT_USERS_AT_ONCE users' trials at a time (load), and
#    the control: LIMIT sockets at once, as many users at a time, none
#    refused.
#
#   scripts/bench-fleet.sh                    # 10,000 own; 0 and 50,000 others; 2 runs each; limit 5, 12 at once, 200 trials
#   OWN=5000 OTHERS=20000 FLEET_REPEATS=1 LIMIT_TRIALS=20 BENCHMARKS=/tmp/b.md scripts/bench-fleet.sh   # a quick look
#   LIMIT_ONLY=1 scripts/bench-fleet.sh       # the limit alone
#   LIMIT_TRIALS=0 scripts/bench-fleet.sh     # the memory alone
#   GATEWAY=/path/to/another/pulse-gateway scripts/bench-fleet.sh   # A/B against another build
#
# Writes the fleet block of BENCHMARKS.md (between <!-- bench:fleet:start -->
# and <!-- bench:fleet:end -->) unless SKIP_REPORT is set; bench.sh runs it
# with SKIP_REPORT and RESULTS set, to put its RESULT lines in its report.
# Uses REDIS_URL when set, else a private redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

OWN=${OWN:-10000}
OTHERS=${OTHERS:-50000}
REPEATS=${FLEET_REPEATS:-2}
LIMIT=${LIMIT:-5}
LIMIT_CONNECTS=${LIMIT_CONNECTS:-12}
LIMIT_TRIALS=${LIMIT_TRIALS:-200}
LIMIT_USERS_AT_ONCE=${LIMIT_USERS_AT_ONCE:-8}
BENCHMARKS=${BENCHMARKS:-BENCHMARKS.md}
SECRET="bench-secret-0123456789abcdef0123456789abcdef"

ulimit -n "$(ulimit -Hn)"
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
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

GATEWAY_PIDS=()
cleanup() {
  local pid
  for pid in "${GATEWAY_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
}
trap 'cleanup; stop_private_redis' EXIT

# start_gateway NAME [NAMESPACE [ARGS...]]: a gateway with JSON logs on a free
# port, in NAMESPACE (its own, NAME, when not given), with ARGS added; sets
# GATEWAY_PID and GATEWAY_ADDR once it logged the address it bound.
start_gateway() {
  local name=$1 namespace=${2:-$1} log="$LOGS/$1.log" attempt
  shift
  if [ $# -gt 0 ]; then shift; fi
  LOG_FORMAT=json RUST_LOG=${GATEWAY_LOG:-info} "$GATEWAY" --listen 127.0.0.1:0 \
    --instance-id "$name" --jwt-secret "$SECRET" --redis-url "$REDIS_URL" \
    --redis-namespace "$namespace" "$@" >"$log" 2>&1 &
  GATEWAY_PID=$!
  GATEWAY_PIDS+=("$GATEWAY_PID")
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

# Stops every gateway started (SIGTERM, then waits: they drain; 30 s at most).
stop_gateways() {
  local pid waited
  for pid in "${GATEWAY_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${GATEWAY_PIDS[@]}"; do
    for waited in $(seq 1 300); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  GATEWAY_PIDS=()
}

# A figure of a RESULT line: field NAME's number.
field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p"; }

if [ -z "${LIMIT_ONLY:-}" ]; then
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
    stop_gateways
  done
done

step "gateway RSS with its $OWN connections held (KiB)"
grep '"scenario":"connect"' "$OUT" | while read -r line; do
  label=$(echo "$line" | sed -n 's/.*"label":"\([^"]*\)".*/\1/p')
  others=$(echo "$line" | field other_instances_connections)
  connected=$(echo "$line" | field connected)
  before=$(echo "$line" | field server_rss_before_kib)
  after=$(echo "$line" | field server_rss_after_kib)
  echo "$label: others ${others:-0}, own $connected, RSS before its own $before KiB, with them $after KiB"
done
fi

if [ "$LIMIT_TRIALS" -gt 0 ]; then
  step "the per-user limit across three gateways at once: limit $LIMIT, $LIMIT_CONNECTS sockets of one user at once, one user at a time then $LIMIT_USERS_AT_ONCE; then $LIMIT sockets (the control); $LIMIT_TRIALS trials each"
  namespace="bench-limit-$$"
  gateways=()
  for instance in a b c; do
    start_gateway "$namespace-$instance" "$namespace" --max-connections-per-user "$LIMIT"
    gateways+=(--gateway "$GATEWAY_ADDR")
  done
  for setting in over loaded control; do
    case $setting in
      over) label=pulse-user-limit connects=$LIMIT_CONNECTS users=1 source=127.0.91.1 ;;
      loaded) label=pulse-user-limit-loaded connects=$LIMIT_CONNECTS users=$LIMIT_USERS_AT_ONCE source=127.0.92.1 ;;
      control) label=pulse-user-limit-control connects=$LIMIT users=$LIMIT_USERS_AT_ONCE source=127.0.93.1 ;;
    esac
    "$bin/pulse-bench" --time-limit 15m user-limit --label "$label" "${gateways[@]}" \
      --redis-url "$REDIS_URL" --redis-namespace "$namespace" --limit "$LIMIT" \
      --connects "$connects" --trials "$LIMIT_TRIALS" --concurrent-users "$users" --source-base "$source" \
      --user-prefix "$namespace-$setting" --jwt-secret "$SECRET" 2>&1 |
      tee "$LOGS/$namespace-$setting.bench.log" | grep -v '^RESULT ' || true
    grep '^RESULT ' "$LOGS/$namespace-$setting.bench.log" >>"$OUT" ||
      { echo "error: user-limit ($setting) printed no result; see $LOGS/$namespace-$setting.bench.log" >&2; exit 1; }
  done
  stop_gateways
  step "the per-user limit: trials exact"
  grep '"scenario":"user_limit"' "$OUT" | while read -r line; do
    label=$(echo "$line" | sed -n 's/.*"label":"\([^"]*\)".*/\1/p')
    trials=$(echo "$line" | field trials)
    exact=$(echo "$line" | field exact_trials)
    verdict=PASS
    if [ "$exact" != "$trials" ] || ! echo "$line" | grep -q '"others":{}' ||
      ! echo "$line" | grep -q '"presence_mismatches":0'; then verdict=FAIL; fi
    echo "$label: $exact/$trials trials exact: $verdict"
  done
fi

if [ -n "${RESULTS:-}" ]; then cat "$OUT" >>"$RESULTS"; fi
if [ -z "${SKIP_REPORT:-}" ]; then
  step "writing the fleet block of $BENCHMARKS"
  cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
  memory=$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
  commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  dirty=""
  if [ -n "$(git status --porcelain 2>/dev/null)" ]; then dirty=" plus uncommitted changes in the tree"; fi
  memory_setup="memory: $OWN own connections, others 0 and $OTHERS, $REPEATS runs each"
  if [ -n "${LIMIT_ONLY:-}" ]; then memory_setup="memory: not run (LIMIT_ONLY)"; fi
  "$bin/pulse-bench" report --only-fleet --results "$OUT" --benchmarks "$BENCHMARKS" \
    --command "${COMMAND:-scripts/bench-fleet.sh}" \
    --machine "$(nproc) cores ($cpu, $(uname -m)), $memory, open files $(ulimit -n), load average at the start $LOAD_AT_START" \
    --date "$(date -u '+%Y-%m-%d %H:%M UTC')" \
    --setup "commit $commit$dirty; load generator on the same cores: pulse-bench, 1 tokio worker thread, client fws; $memory_setup; limit: 3 gateways on one namespace, --max-connections-per-user $LIMIT, $LIMIT_CONNECTS sockets of a user at once (one user at a time, then $LIMIT_USERS_AT_ONCE), then $LIMIT (the control), $LIMIT_TRIALS trials each, TCP opened first and every upgrade written together; gateways log at RUST_LOG=${GATEWAY_LOG:-info} with LOG_FORMAT=json; Redis $(redis-server --version | sed -n 's/.*v=\([0-9.]*\).*/\1/p') on loopback"
fi
step "done: results in $OUT"
