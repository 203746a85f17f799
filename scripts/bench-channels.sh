#!/usr/bin/env bash
# Channels (issue 12), side by side with the fan-out floor in the same run,
# and the report's "Channels" block in BENCHMARKS.md (between
# <!-- bench:channels:start --> and <!-- bench:channels:end -->).
#
#   scripts/bench-channels.sh          # everything, about 8 minutes after the build
#   HISTORY_ONLY=1 scripts/bench-channels.sh   # issue 13's figures alone, about 3 minutes
#   FANOUT_BIG=2000 FANOUT_DURATION=5s SAT_DURATION=3s SPREAD_CHANNELS=2000 SPREAD_DURATION=3s \
#     SUBSCRIBES=500 MEM_CONNECTIONS=1000 BENCHMARKS=/tmp/b.md scripts/bench-channels.sh   # a quick look
#
# (k1) the floor, pulse-fanout (crates/bench/src/fanout_floor.rs: a bare
# hyper + fastwebsockets server that encodes a publication once and writes
# the same frame to every subscriber, one write per frame): one channel with
# FANOUT_BIG subscribers, RATE_BIG publications/s for FANOUT_DURATION, then
# saturation (SAT_WINDOW publications in flight, SAT_WARMUP then
# SAT_DURATION measured, PROBE_RATE subscribes/s to fresh channels timed
# meanwhile); FANOUT_SMALL subscribers at RATE_SMALL/s;
# SPREAD_CHANNELS channels with one subscriber each at SPREAD_RATE/s.
# (k2) the coalescing floor (pulse-fanout --coalesce: every frame waiting for
# a socket in one write) and the direct floor (pulse-fanout --direct: the
# publisher writes to a socket with nothing waiting itself, no task woken),
# saturation only. (k3) the same runs against one
# pulse-gateway with Redis, publishing through pulse-presence's gRPC API.
# (k4) SPREAD_CHANNELS channels with one subscriber each over two gateways,
# SPREAD_RATE publications/s through gRPC. (k5) subscribe round trips,
# SUBSCRIBES at SUBSCRIBE_RATE/s, an open namespace and a token namespace.
# (k6) gateway RSS per subscription: MEM_CONNECTIONS connections with none,
# then MEM_SUBSCRIPTIONS each, to shared channels and to a channel each,
# each on a fresh gateway.
#
# History and recovery (issue 13), in a namespace that keeps HISTORY_SIZE
# publications (`benchhist`), each beside its floor in the same run:
# (h1) right after (k4), the same spread run with history; (h2) recover:
# RECOVER_SAMPLES clients take a position on gateway A, miss RECOVER_MISSED
# publications of HISTORY_DATA bytes, reconnect to gateway B with `since`,
# interleaved with as many plain subscribes, RECOVER_RATE/s in all;
# (h3) publish calls through gRPC at PUBLISH_RATE/s for PUBLISH_DURATION to
# PUBLISH_CHANNELS channels, with history, with history and an idempotency
# key per call (`pulse-history-keyed`), without (`bench`), and Redis alone
# (RPUSH + LTRIM + SPUBLISH pipelined); (h4) Redis memory per stored
# publication: HISTMEM_CHANNELS channels × HISTMEM_PER_CHANNEL
# publications (plus i % HISTORY_SIZE for channel i, so that the trimmed
# lists are caught at every point of their cycle) of each size in
# HISTMEM_SIZES, after gateway A stopped, then each size again with
# `list-max-listpack-size` HISTMEM_NODE (32 KiB list nodes, README's
# advice for publications over 512 B; skipped where Redis refuses CONFIG).
# (h5) on a private three-master Redis Cluster (HISTORY_CLUSTER=0 skips it):
# pulse-presence and two gateways with --redis-cluster, the spread run
# without history then with it, recovery as in (h2), and publish calls as in
# (h3) with and without history (labels `pulse-cluster`,
# `pulse-history-cluster`).
# HISTORY_ONLY=1 runs (k4) and (h1)-(h5) alone and writes only the history
# block (between <!-- bench:history:start --> and <!-- bench:history:end -->).
#
# bench.sh runs it as its step (k) with RESULTS set and SKIP_REPORT=1, to
# put its RESULT lines in its own report. Uses REDIS_URL when set, else a
# private redis-server. Logs in target/bench/channels/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
source scripts/bench-lib.sh

FANOUT_BIG=${FANOUT_BIG:-10000}
RATE_BIG=${RATE_BIG:-10}
FANOUT_SMALL=${FANOUT_SMALL:-1000}
RATE_SMALL=${RATE_SMALL:-50}
FANOUT_DURATION=${FANOUT_DURATION:-20s}
SAT_WINDOW=${SAT_WINDOW:-8}
SAT_WARMUP=${SAT_WARMUP:-2s}
SAT_DURATION=${SAT_DURATION:-10s}
PROBE_RATE=${PROBE_RATE:-20}
SPREAD_CHANNELS=${SPREAD_CHANNELS:-10000}
SPREAD_RATE=${SPREAD_RATE:-5000}
SPREAD_DURATION=${SPREAD_DURATION:-10s}
SUBSCRIBES=${SUBSCRIBES:-2000}
SUBSCRIBE_RATE=${SUBSCRIBE_RATE:-500}
MEM_CONNECTIONS=${MEM_CONNECTIONS:-10000}
MEM_SUBSCRIPTIONS=${MEM_SUBSCRIPTIONS:-10}
HISTORY_SIZE=${HISTORY_SIZE:-100}
HISTORY_DATA=${HISTORY_DATA:-100}
RECOVER_SAMPLES=${RECOVER_SAMPLES:-1000}
RECOVER_MISSED=${RECOVER_MISSED:-100}
RECOVER_RATE=${RECOVER_RATE:-200}
PUBLISH_RATE=${PUBLISH_RATE:-1000}
PUBLISH_DURATION=${PUBLISH_DURATION:-10s}
PUBLISH_CHANNELS=${PUBLISH_CHANNELS:-1000}
HISTMEM_CHANNELS=${HISTMEM_CHANNELS:-200}
HISTMEM_PER_CHANNEL=${HISTMEM_PER_CHANNEL:-200}
HISTMEM_SIZES=${HISTMEM_SIZES:-100 1024}
HISTMEM_NODE=${HISTMEM_NODE:--4}
HISTORY_ONLY=${HISTORY_ONLY:-}
HISTORY_CLUSTER=${HISTORY_CLUSTER:-1}
SOURCES=${SOURCES:-8}
BENCH_THREADS=${BENCH_THREADS:-1}
CLIENT=${CLIENT:-fws}
GATEWAY_LOG=${GATEWAY_LOG:-info}
BENCHMARKS=${BENCHMARKS:-BENCHMARKS.md}
SECRET="bench-secret-0123456789abcdef0123456789abcdef"

ulimit -n "$(ulimit -Hn)"
if [ -z "${REDIS_URL:-}" ]; then
  ensure_redis
  start_private_redis
fi
if [ -z "${SKIP_BUILD:-}" ]; then
  step "cargo build --release -p pulse-bench -p pulse-gateway -p pulse-presence"
  cargo build --release -p pulse-bench -p pulse-gateway -p pulse-presence
fi
target=${CARGO_TARGET_DIR:-target}
bin=$target/release
LOGS=$target/bench/channels
rm -rf "$LOGS"
mkdir -p "$LOGS"
OUT=$LOGS/results.txt
: >"$OUT"
REDIS_PID=$(redis-cli -u "$REDIS_URL" info server | sed -n 's/^process_id:\([0-9]*\).*/\1/p')

# The namespaces of the runs: open ones without presence (so that no
# join/leave frame mixes with the publications), and one that needs a
# subscription token. The gateways and pulse-presence read the same file.
CONFIG=$LOGS/channels.toml
cat >"$CONFIG" <<TOML
[namespaces.bench]
authorize = "any"
[namespaces.benchtok]
authorize = "token"
[namespaces.benchhist]
authorize = "any"
history_size = $HISTORY_SIZE
history_ttl = "1h"
TOML

pids=()
stop_on_exit

# gateway NAME: a gateway with Redis presence in namespace $NAMESPACE and
# the channel namespaces above; sets PID and ADDR.
gateway() {
  SERVICE_LOG=$GATEWAY_LOG start "$1" pulse-gateway --instance-id "$1" \
    --redis-url "$REDIS_URL" --redis-namespace "$NAMESPACE" --config "$CONFIG" \
    --jwt-secret "$SECRET"
}

# bench NAME ARGS...: runs the load generator; its output goes to the log
# and its RESULT lines to the results file.
bench() {
  local name=$1
  shift
  wait_quiet
  "$bin/pulse-bench" --threads "$BENCH_THREADS" "$@" --client "$CLIENT" --sources "$SOURCES" \
    --jwt-secret "$SECRET" 2>&1 | tee "$LOGS/bench-$name.log" | grep -v '^RESULT ' || true
  grep '^RESULT ' "$LOGS/bench-$name.log" >>"$OUT" ||
    { echo "error: $name printed no result; see $LOGS/bench-$name.log" >&2; exit 1; }
}

big=(--channels 1 --subscribers "$FANOUT_BIG" --rate "$RATE_BIG" --duration "$FANOUT_DURATION"
  --saturate "$SAT_DURATION" --window "$SAT_WINDOW" --warmup "$SAT_WARMUP" --probe-rate "$PROBE_RATE")
small=(--channels 1 --subscribers "$FANOUT_SMALL" --rate "$RATE_SMALL" --duration "$FANOUT_DURATION")
spread=(--channels "$SPREAD_CHANNELS" --subscribers 1 --rate "$SPREAD_RATE" --duration "$SPREAD_DURATION")
saturation=(--channels 1 --subscribers "$FANOUT_BIG" --rate 0 --saturate "$SAT_DURATION"
  --window "$SAT_WINDOW" --warmup "$SAT_WARMUP" --probe-rate "$PROBE_RATE")

if [ -z "$HISTORY_ONLY" ]; then
step "(k1) floor: pulse-fanout; one channel, $FANOUT_BIG subscribers at $RATE_BIG/s then saturated; $FANOUT_SMALL at $RATE_SMALL/s; $SPREAD_CHANNELS channels at $SPREAD_RATE/s"
start floor pulse-fanout
bench floor-big fanout --label floor --server "$ADDR" --server-pid "$PID" --floor "${big[@]}" \
  --channel-prefix bench:big- --source-base 127.0.90.1 --user-prefix floor-big
bench floor-small fanout --label floor --server "$ADDR" --server-pid "$PID" --floor "${small[@]}" \
  --channel-prefix bench:small- --source-base 127.0.91.1 --user-prefix floor-small
bench floor-spread fanout --label floor --server "$ADDR" --server-pid "$PID" --floor "${spread[@]}" \
  --channel-prefix bench:spread- --source-base 127.0.92.1 --user-prefix floor-spread
stop "$PID"

step "(k2) coalescing floor (pulse-fanout --coalesce), then direct floor (--direct); one channel, $FANOUT_BIG subscribers, saturated"
start floor-coalesce pulse-fanout --coalesce
bench floor-coalesce fanout --label floor-coalesce --server "$ADDR" --server-pid "$PID" --floor \
  "${saturation[@]}" --channel-prefix bench:big- --source-base 127.0.93.1 --user-prefix floor-coalesce
stop "$PID"
start floor-direct pulse-fanout --direct
bench floor-direct fanout --label floor-direct --server "$ADDR" --server-pid "$PID" --floor \
  "${saturation[@]}" --channel-prefix bench:big- --source-base 127.0.100.1 --user-prefix floor-direct
stop "$PID"
fi

step "(k3) pulse-gateway (Redis) and pulse-presence's gRPC API${HISTORY_ONLY:+ (history only: no one-channel runs)}"
NAMESPACE=bench-channels-$$
# The internal API takes keys; the bench calls it with this one.
export PULSE_API_KEY="bench-api-key-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
start presence pulse-presence --redis-url "$REDIS_URL" --redis-namespace "$NAMESPACE" \
  --metrics-listen 127.0.0.1:0 --http-listen off --api-key "$PULSE_API_KEY" --config "$CONFIG"
PRESENCE_PID=$PID
PRESENCE_ADDR=$ADDR
gateway bench-channels-a
A_PID=$PID
A_ADDR=$ADDR
watch=(--watch-pid "redis=$REDIS_PID" --watch-pid "pulse-presence=$PRESENCE_PID")
if [ -z "$HISTORY_ONLY" ]; then
bench pulse-big fanout --label pulse --server "$A_ADDR" --server-pid "$A_PID" --presence "$PRESENCE_ADDR" \
  "${watch[@]}" "${big[@]}" --channel-prefix bench:big- --source-base 127.0.94.1 --user-prefix pulse-big
bench pulse-small fanout --label pulse --server "$A_ADDR" --server-pid "$A_PID" --presence "$PRESENCE_ADDR" \
  "${watch[@]}" "${small[@]}" --channel-prefix bench:small- --source-base 127.0.95.1 --user-prefix pulse-small
fi

step "(k4) $SPREAD_CHANNELS channels with one subscriber each over two gateways, $SPREAD_RATE/s through gRPC"
gateway bench-channels-b
B_PID=$PID
B_ADDR=$ADDR
bench pulse-spread fanout --label pulse --server "$A_ADDR" --server "$B_ADDR" --server-pid "$A_PID" \
  --server-pid "$B_PID" --presence "$PRESENCE_ADDR" "${watch[@]}" "${spread[@]}" \
  --channel-prefix bench:spread- --source-base 127.0.96.1 --user-prefix pulse-spread

step "(h1) the same with history ($HISTORY_SIZE kept per channel)"
bench pulse-history-spread fanout --label pulse-history --server "$A_ADDR" --server "$B_ADDR" \
  --server-pid "$A_PID" --server-pid "$B_PID" --presence "$PRESENCE_ADDR" "${watch[@]}" "${spread[@]}" \
  --channel-prefix benchhist:spread- --source-base 127.0.101.1 --user-prefix pulse-history-spread

step "(h2) recovery: $RECOVER_SAMPLES reconnections from gateway A to B, each recovering $RECOVER_MISSED publications, beside as many plain subscribes, $RECOVER_RATE/s"
bench recover recover --label pulse --first "$A_ADDR" --second "$B_ADDR" --server-pid "$B_PID" \
  --presence "$PRESENCE_ADDR" --watch-pid "redis=$REDIS_PID" --watch-pid "pulse-presence=$PRESENCE_PID" \
  --samples "$RECOVER_SAMPLES" --missed "$RECOVER_MISSED" --data-bytes "$HISTORY_DATA" --rate "$RECOVER_RATE" \
  --channel-prefix benchhist:rec- --source-base 127.0.102.1 --user-prefix pulse-recover
stop "$B_PID"

if [ -z "$HISTORY_ONLY" ]; then
step "(k5) subscribe round trip: $SUBSCRIBES at $SUBSCRIBE_RATE/s, an open namespace, then with subscription tokens"
bench subscribe-open subscribe --label pulse --server "$A_ADDR" --server-pid "$A_PID" \
  --watch-pid "redis=$REDIS_PID" --subscribes "$SUBSCRIBES" --rate "$SUBSCRIBE_RATE" \
  --channel-prefix bench:sub- --source-base 127.0.97.1 --user-prefix pulse-sub-open
bench subscribe-token subscribe --label pulse --server "$A_ADDR" --server-pid "$A_PID" \
  --watch-pid "redis=$REDIS_PID" --subscribes "$SUBSCRIBES" --rate "$SUBSCRIBE_RATE" --token \
  --channel-prefix benchtok:sub- --source-base 127.0.98.1 --user-prefix pulse-sub-token
fi

step "(h3) publish calls, $PUBLISH_RATE/s for $PUBLISH_DURATION to $PUBLISH_CHANNELS channels: with history, with history and idempotency keys, without, Redis alone"
# No client flags: these runs open no WebSocket.
bench_calls() {
  local name=$1
  shift
  wait_quiet
  "$bin/pulse-bench" --threads "$BENCH_THREADS" "$@" 2>&1 | tee "$LOGS/bench-$name.log" | grep -v '^RESULT ' || true
  grep '^RESULT ' "$LOGS/bench-$name.log" >>"$OUT" ||
    { echo "error: $name printed no result; see $LOGS/bench-$name.log" >&2; exit 1; }
}
publish_run=(--rate "$PUBLISH_RATE" --duration "$PUBLISH_DURATION" --channels "$PUBLISH_CHANNELS"
  --data-bytes "$HISTORY_DATA")
bench_calls publish-history publish --label pulse-history --presence "$PRESENCE_ADDR" "${watch[@]}" \
  "${publish_run[@]}" --channel-prefix benchhist:pub-
bench_calls publish-idempotent publish --label pulse-history-keyed --presence "$PRESENCE_ADDR" \
  "${watch[@]}" "${publish_run[@]}" --channel-prefix benchhist:pubkey- --idempotency-keys
bench_calls publish-plain publish --label pulse --presence "$PRESENCE_ADDR" "${watch[@]}" \
  "${publish_run[@]}" --channel-prefix bench:pub-
bench_calls publish-redis publish --label redis --redis-url "$REDIS_URL" --redis-namespace "bench-floor-$$" \
  --history-size "$HISTORY_SIZE" --watch-pid "redis=$REDIS_PID" "${publish_run[@]}" --channel-prefix benchhist:pub-
stop "$A_PID"

step "(h4) Redis memory per stored publication: $HISTMEM_CHANNELS channels × $HISTMEM_PER_CHANNEL publications of $HISTMEM_SIZES bytes"
history_memory() {
  bench_calls "history-memory-$1$2" history-memory --label pulse --presence "$PRESENCE_ADDR" \
    --redis-url "$REDIS_URL" --redis-namespace "$NAMESPACE" --channels "$HISTMEM_CHANNELS" \
    --per-channel "$HISTMEM_PER_CHANNEL" --stagger "$HISTORY_SIZE" --data-bytes "$1" \
    --channel-prefix "benchhist:mem$1$2-"
}
for size in $HISTMEM_SIZES; do
  history_memory "$size" ""
done
# Each again with the list node README recommends (the setting read back
# into the result), then Redis as it was.
node_was=$(redis-cli -u "$REDIS_URL" config get list-max-listpack-size | sed -n 2p)
if [ -n "$node_was" ] && [ "$node_was" != "$HISTMEM_NODE" ]; then
  redis-cli -u "$REDIS_URL" config set list-max-listpack-size "$HISTMEM_NODE" >/dev/null
  for size in $HISTMEM_SIZES; do
    history_memory "$size" "node"
  done
  redis-cli -u "$REDIS_URL" config set list-max-listpack-size "$node_was" >/dev/null
fi
stop "$PRESENCE_PID"

if [ "$HISTORY_CLUSTER" != 0 ]; then
  step "(h5) the same on a private three-master Redis Cluster: spread without and with history, recovery, publish calls"
  start_private_cluster
  # start_private_cluster set its own EXIT trap; stop the services too.
  trap 'stop_private_cluster; stop_everything' EXIT INT TERM
  NAMESPACE=bench-channels-cluster-$$
  SERVICE_LOG=$GATEWAY_LOG start presence-cluster pulse-presence --redis-url "$REDIS_CLUSTER_URLS" --redis-cluster \
    --redis-namespace "$NAMESPACE" --metrics-listen 127.0.0.1:0 --http-listen off --api-key "$PULSE_API_KEY" \
    --config "$CONFIG"
  PRESENCE_PID=$PID
  PRESENCE_ADDR=$ADDR
  cluster_gateway() {
    SERVICE_LOG=$GATEWAY_LOG start "$1" pulse-gateway --instance-id "$1" \
      --redis-url "$REDIS_CLUSTER_URLS" --redis-cluster --redis-namespace "$NAMESPACE" --config "$CONFIG" \
      --jwt-secret "$SECRET"
  }
  cluster_gateway bench-channels-cluster-a
  A_PID=$PID
  A_ADDR=$ADDR
  cluster_gateway bench-channels-cluster-b
  B_PID=$PID
  B_ADDR=$ADDR
  watch=(--watch-pid "pulse-presence=$PRESENCE_PID")
  n=0
  for file in "$CLUSTER_DIR"/*/redis.pid; do
    n=$((n + 1))
    watch+=(--watch-pid "redis-$n=$(cat "$file")")
  done
  bench cluster-spread fanout --label pulse-cluster --server "$A_ADDR" --server "$B_ADDR" --server-pid "$A_PID" \
    --server-pid "$B_PID" --presence "$PRESENCE_ADDR" "${watch[@]}" "${spread[@]}" \
    --channel-prefix bench:cspread- --source-base 127.0.103.1 --user-prefix pulse-cluster-spread
  bench cluster-history-spread fanout --label pulse-history-cluster --server "$A_ADDR" --server "$B_ADDR" \
    --server-pid "$A_PID" --server-pid "$B_PID" --presence "$PRESENCE_ADDR" "${watch[@]}" "${spread[@]}" \
    --channel-prefix benchhist:cspread- --source-base 127.0.104.1 --user-prefix pulse-history-cluster-spread
  bench cluster-recover recover --label pulse-cluster --first "$A_ADDR" --second "$B_ADDR" --server-pid "$B_PID" \
    --presence "$PRESENCE_ADDR" "${watch[@]}" --samples "$RECOVER_SAMPLES" --missed "$RECOVER_MISSED" \
    --data-bytes "$HISTORY_DATA" --rate "$RECOVER_RATE" --channel-prefix benchhist:crec- \
    --source-base 127.0.105.1 --user-prefix pulse-cluster-recover
  stop "$A_PID" "$B_PID"
  bench_calls cluster-publish-history publish --label pulse-history-cluster --presence "$PRESENCE_ADDR" \
    "${watch[@]}" "${publish_run[@]}" --channel-prefix benchhist:cpub-
  bench_calls cluster-publish-plain publish --label pulse-cluster --presence "$PRESENCE_ADDR" "${watch[@]}" \
    "${publish_run[@]}" --channel-prefix bench:cpub-
  stop "$PRESENCE_PID"
  stop_private_cluster
  stop_on_exit
fi

if [ -z "$HISTORY_ONLY" ]; then
step "(k6) gateway memory: $MEM_CONNECTIONS connections, then $MEM_SUBSCRIPTIONS subscriptions each (shared channels, then a channel each)"
for mode in shared distinct; do
  NAMESPACE=bench-channels-mem-$mode-$$
  gateway "bench-channels-mem-$mode"
  flag=()
  if [ "$mode" = distinct ]; then flag=(--distinct); fi
  bench "memory-$mode" subscriptions --label pulse --server "$ADDR" --server-pid "$PID" \
    --connections "$MEM_CONNECTIONS" --per-connection "$MEM_SUBSCRIPTIONS" "${flag[@]}" \
    --channel-prefix bench:mem- --source-base "127.0.99.1" --user-prefix "pulse-mem-$mode"
  stop "$PID"
done
fi

# What the services logged that a table does not show: a gateway too busy
# to renew its presence lease is reaped (every connection gets a false
# `disconnected`, every membership a false `leave`) and re-syncs.
step "incidents in the services' logs (also in $LOGS/incidents.txt)"
{
  echo "leases reaped by pulse-presence: $(grep -c 'reaped an instance whose lease expired' "$LOGS/presence.log" || true)"
  grep -h 'reaped an instance whose lease expired' "$LOGS/presence.log" | sed -n 's/.*"timestamp":"\([^"]*\)".*"instance_id":"\([^"]*\)","connections":\([0-9]*\).*/  \1 \2: \3 connections reaped/p' || true
  echo "gateway re-syncs after a lost lease: $(cat "$LOGS"/bench-channels-*.log | grep -c '"lease_was_held":false' || true)"
  echo "gateway warnings: $(cat "$LOGS"/bench-channels-*.log | grep -c '"level":"WARN"' || true)"
  echo "slow consumers closed: $(cat "$LOGS"/bench-channels-*.log | grep -c 'slow consumer' || true)"
} | tee "$LOGS/incidents.txt"

if [ -n "${RESULTS:-}" ]; then cat "$OUT" >>"$RESULTS"; fi
if [ -z "${SKIP_REPORT:-}" ]; then
  step "writing the Channels and History blocks of $BENCHMARKS${HISTORY_ONLY:+ (the History block only)}"
  cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
  memory=$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
  commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  dirty=""
  if [ -n "$(git status --porcelain 2>/dev/null)" ]; then dirty=" plus uncommitted changes in the tree"; fi
  only=()
  command="scripts/bench-channels.sh"
  if [ -n "$HISTORY_ONLY" ]; then
    only=(--only-history)
    command="HISTORY_ONLY=1 scripts/bench-channels.sh"
  fi
  "$bin/pulse-bench" report --results "$OUT" --benchmarks "$BENCHMARKS" "${only[@]}" \
    --command "$command" \
    --machine "$(nproc) cores ($cpu, $(uname -m)), $memory, open files $(ulimit -n)" \
    --date "$(date -u '+%Y-%m-%d %H:%M UTC')" \
    --setup "commit $commit$dirty; load generator on the same cores: pulse-bench, $BENCH_THREADS tokio worker thread(s) and the publish calls on a thread of their own, client $CLIENT, $SOURCES source addresses; gateways log at RUST_LOG=$GATEWAY_LOG with LOG_FORMAT=json; Redis $(redis-server --version | sed -n 's/.*v=\([0-9.]*\).*/\1/p') on loopback; $SAT_WINDOW publications in flight at saturation; history: $HISTORY_SIZE kept per channel, $HISTORY_DATA B of data; machine shared with other people's builds and tests (\"others' CPU\" in the tables)"
fi
step "done: logs in $LOGS"
