#!/usr/bin/env bash
# Presence events and webhooks (issue 17), each beside a floor measured in
# the same run, and the report's events block in BENCHMARKS.md (between
# <!-- bench:events:start --> and <!-- bench:events:end -->).
#
#   scripts/bench-events.sh              # everything, about 4 minutes after the build
#   WEBHOOK_DURATION=5s RESUME_SAMPLES=30 PRESENCE_CONNECTS=500 PRESENCE_RUNS=1 \
#     EVMEM_USERS=1000 BENCHMARKS=/tmp/b.md scripts/bench-events.sh     # a quick look
#   PRE17_BIN=/work/pre17/target/release scripts/bench-events.sh    # A/B of the Watch propagation
#
# (e1) webhooks: pulse-presence POSTs every kind of event to a receiver in
# pulse-bench (it checks each POST's signature) while pulse-bench makes
# WEBHOOK_RATE events/s for WEBHOOK_DURATION (registrations and
# unregistrations through pulse-presence's library: four events per user);
# each event timed from its change's acknowledgement to its arrival at the
# receiver, and (the floor) on a Watch stream.
# (e2) watch-resume: a Watch consumer of everyone leaves, RESUME_MISSED
# events are made, it reconnects with `since` (new gRPC channel + Watch):
# to its first event and to the last missed one; interleaved with its
# floors, a unary GetUser and a fresh Watch to its first live event, each
# on a new channel; RESUME_SAMPLES of each.
# (e3) event-memory: EVMEM_USERS users × (2 + 2 × EVMEM_CYCLES) events in a
# fresh namespace: MEMORY USAGE of the logs and the used_memory delta per
# event, beside as many bare XADDs of the same field sizes into one stream.
# (e4) presence propagation (the scenario of bench.sh's step f): a gateway
# and pulse-presence, PRESENCE_CONNECTS connects at 200/s, each timed to its
# `connected` on a Watch stream, PRESENCE_RUNS runs; with PRE17_BIN (the
# directory of pulse-gateway and pulse-presence built at 098c020, the commit
# before issue 17) the old build's runs alternate with this one's; and
# pulse-echo's handshake at the same rate, the floor.
#
# bench.sh runs it with SKIP_BUILD=1 and RESULTS set (its RESULT lines go
# to that file too). Uses REDIS_URL when set, else a private redis-server.
# Logs in target/bench-events/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
source scripts/bench-lib.sh

WEBHOOK_RATE=${WEBHOOK_RATE:-1000}
WEBHOOK_DURATION=${WEBHOOK_DURATION:-20s}
RESUME_SAMPLES=${RESUME_SAMPLES:-200}
RESUME_MISSED=${RESUME_MISSED:-10 100}
EVMEM_USERS=${EVMEM_USERS:-5000}
EVMEM_CYCLES=${EVMEM_CYCLES:-9}
PRESENCE_CONNECTS=${PRESENCE_CONNECTS:-2000}
PRESENCE_RUNS=${PRESENCE_RUNS:-2}
PRE17_BIN=${PRE17_BIN:-}
BENCHMARKS=${BENCHMARKS:-BENCHMARKS.md}
SECRET="bench-secret-0123456789abcdef0123456789abcdef"
WEBHOOK_SECRET="bench-webhook-secret-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export PULSE_WEBHOOK_SECRET=$WEBHOOK_SECRET
export PULSE_API_KEY="bench-api-key-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"

ulimit -n "$(ulimit -Hn)"
if [ -z "${SKIP_BUILD:-}" ]; then
  step "cargo build --release -p pulse-bench -p pulse-gateway -p pulse-presence"
  cargo build --release -p pulse-bench -p pulse-gateway -p pulse-presence
fi
target=${CARGO_TARGET_DIR:-target}
bin=$target/release
LOGS=$target/bench-events
rm -rf "$LOGS"
mkdir -p "$LOGS"
OUT=$LOGS/results.txt
: >"$OUT"

if [ -z "${REDIS_URL:-}" ]; then
  ensure_redis
  start_private_redis
fi
pids=()
stop_on_exit
REDIS_PORT=${REDIS_URL##*:}
REDIS_PORT=${REDIS_PORT%%/*}
REDIS_PID=$(redis-cli -p "$REDIS_PORT" info server 2>/dev/null | sed -n 's/^process_id:\([0-9]*\).*/\1/p' | tr -d '\r')

# bench NAME ARGS...: runs the load generator once the machine is quiet; its
# RESULT line goes to the results file.
bench() {
  local name=$1
  shift
  wait_quiet
  "$bin/pulse-bench" "$@" 2>&1 | tee "$LOGS/bench-$name.log" | grep -v '^RESULT ' || true
  grep '^RESULT ' "$LOGS/bench-$name.log" >>"$OUT" ||
    { echo "error: $name printed no result; see $LOGS/bench-$name.log" >&2; exit 1; }
}

# A free loopback port for the webhook receiver (pulse-presence must know
# it before the receiver starts).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# presence_server NAME BIN_DIR ARGS...: pulse-presence of that build in
# namespace $NAMESPACE; sets PRESENCE_PID and PRESENCE_ADDR.
presence_server() {
  local name=$1 dir=$2
  shift 2
  bin=$dir start "$name" pulse-presence --redis-url "$REDIS_URL" --redis-namespace "$NAMESPACE" \
    --metrics-listen 127.0.0.1:0 --http-listen off --api-key "$PULSE_API_KEY" "$@"
  PRESENCE_PID=$PID
  PRESENCE_ADDR=$ADDR
}

step "(e1) webhooks: $WEBHOOK_RATE events/s for $WEBHOOK_DURATION to a receiver, beside a Watch stream"
NAMESPACE=bench-hooks-$$
RECEIVER="127.0.0.1:$(free_port)"
cat >"$LOGS/webhooks.toml" <<EOF
[webhooks]
url = "http://$RECEIVER/pulse-events"
secret = "$WEBHOOK_SECRET"
events = ["connected", "disconnected", "online", "offline"]
EOF
presence_server presence-hooks "$bin" --config "$LOGS/webhooks.toml"
bench webhooks webhooks --label pulse --presence "$PRESENCE_ADDR" --redis-url "$REDIS_URL" \
  --redis-namespace "$NAMESPACE" --listen "$RECEIVER" --rate "$WEBHOOK_RATE" --duration "$WEBHOOK_DURATION" \
  --user-prefix "hooks-$$" --watch-pid "pulse-presence=$PRESENCE_PID" --watch-pid "redis=$REDIS_PID"
stop "$PRESENCE_PID"
# The writer renews its instance's lease as a gateway does; a reap would
# make events of its own and spoil the timings.
if grep -q 'reaped an instance' "$LOGS/presence-hooks.log"; then
  echo "warning: pulse-presence reaped the bench's instance during the webhooks run; see $LOGS/presence-hooks.log" >&2
fi

step "(e2) watch-resume: $RESUME_SAMPLES resumes after each of $RESUME_MISSED missed events, beside GetUser and a fresh Watch"
NAMESPACE=bench-resume-$$
presence_server presence-resume "$bin"
missed_args=()
for missed in $RESUME_MISSED; do missed_args+=(--missed "$missed"); done
bench watch-resume watch-resume --label pulse --presence "$PRESENCE_ADDR" --redis-url "$REDIS_URL" \
  --redis-namespace "$NAMESPACE" --samples "$RESUME_SAMPLES" "${missed_args[@]}" --user-prefix "resume-$$"
stop "$PRESENCE_PID"

step "(e3) event-memory: $EVMEM_USERS users × $((2 + 2 * EVMEM_CYCLES)) events, beside bare XADDs"
bench event-memory event-memory --label pulse --redis-url "$REDIS_URL" --redis-namespace "bench-evmem-$$" \
  --floor-key "bench-evmem-floor-$$" --users "$EVMEM_USERS" --cycles "$EVMEM_CYCLES" --user-prefix "evmem-$$"

step "(e4) Watch propagation: $PRESENCE_CONNECTS connects at 200/s, $PRESENCE_RUNS run(s)${PRE17_BIN:+ of this build and of $PRE17_BIN, alternately}; pulse-echo's handshake"
# propagation LABEL BIN_DIR RUN: a gateway and pulse-presence of that build.
propagation() {
  local label=$1 dir=$2 run=$3
  NAMESPACE=bench-prop-$label-$run-$$
  presence_server "presence-$label-$run" "$dir"
  bin=$dir SERVICE_LOG=info start "gateway-$label-$run" pulse-gateway --instance-id "gw-$label-$run" \
    --redis-url "$REDIS_URL" --redis-namespace "$NAMESPACE" --jwt-secret "$SECRET"
  local gateway_pid=$PID gateway_addr=$ADDR
  bench "presence-$label-$run" --threads 1 presence --label "$label" --server "$gateway_addr" \
    --presence "$PRESENCE_ADDR" --connects "$PRESENCE_CONNECTS" --rate 200 \
    --source-base "127.0.9$run.1" --user-prefix "prop-$label-$run-$$" --jwt-secret "$SECRET"
  stop "$gateway_pid" "$PRESENCE_PID"
}
for run in $(seq 1 "$PRESENCE_RUNS"); do
  propagation events-current "$bin" "$run"
  if [ -n "$PRE17_BIN" ]; then propagation events-pre17 "$PRE17_BIN" "$run"; fi
done
start echo-events pulse-echo
bench connect-echo --threads 1 connect --label events-echo --server "$ADDR" --server-pid "$PID" \
  --connections "$PRESENCE_CONNECTS" --rate 200 --idle-window 0s --settle 0s --source-base 127.0.99.1 \
  --jwt-secret "$SECRET"
stop "$PID"

if [ -n "${RESULTS:-}" ]; then cat "$OUT" >>"$RESULTS"; fi
if [ -z "${SKIP_REPORT:-}" ]; then
  step "writing the events block of $BENCHMARKS"
  cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
  memory=$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
  commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  dirty=""
  if [ -n "$(git status --porcelain 2>/dev/null)" ]; then dirty=" plus uncommitted changes in the tree"; fi
  "$bin/pulse-bench" report --only-events --results "$OUT" --benchmarks "$BENCHMARKS" \
    --command "${COMMAND:-scripts/bench-events.sh}" \
    --machine "$(nproc) cores ($cpu, $(uname -m)), $memory, load average at the start $(cut -d' ' -f1-3 /proc/loadavg)" \
    --date "$(date -u '+%Y-%m-%d %H:%M UTC')" \
    --setup "commit $commit$dirty; load generator on the same cores: pulse-bench, 1 tokio worker thread; events made through pulse-presence's library (the gateway's registration scripts); pulse-presence and gateways log at RUST_LOG=info with LOG_FORMAT=json; Redis $(redis-server --version | sed -n 's/.*v=\([0-9.]*\).*/\1/p') on loopback${PRE17_BIN:+; the build before issue 17: $PRE17_BIN}"
fi
step "done: results in $OUT"
