#!/usr/bin/env bash
# Two builds of the gateway side by side, for a change that must leave speed
# and memory as they were (a refactor): bench.sh's connect burst (b) and ping
# RTT (d) against each, alternating A B, B A, ... on one private Redis, with
# one load generator (A's pulse-bench), so that a slow minute of a shared
# machine falls on both. Prints every run and the medians.
#
#   scripts/bench-ab.sh 5c60a00 b32aa5e            # 4 rounds, about 4 minutes after the builds
#   ROUNDS=2 CONNECTIONS=5000 scripts/bench-ab.sh HEAD~1 HEAD
#
# Each commit is checked out in a worktree under target/ab/ and built there
# (release, one shared target directory, so the second build reuses the
# first's dependencies); the binaries are kept in target/ab/<commit>/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
source scripts/bench-lib.sh

if [ $# -ne 2 ]; then
  echo "usage: scripts/bench-ab.sh COMMIT_A COMMIT_B" >&2
  exit 2
fi
ROUNDS=${ROUNDS:-4}
CONNECTIONS=${CONNECTIONS:-19500}
RATE=${RATE:-20000}
SECRET="bench-secret-0123456789abcdef0123456789abcdef"
root=$(pwd)
AB=${CARGO_TARGET_DIR:-$root/target}/ab
mkdir -p "$AB"
LOGS=$AB/logs
rm -rf "$LOGS"
mkdir -p "$LOGS"
RESULTS=$LOGS/results.txt
: >"$RESULTS"

# build COMMIT: its pulse-gateway and pulse-bench in $AB/<sha>/.
build() {
  local sha
  sha=$(git rev-parse --short=12 "$1^{commit}")
  if [ ! -x "$AB/$sha/pulse-gateway" ]; then
    step "building $1 ($sha)"
    rm -rf "$AB/tree"
    git worktree prune
    git worktree add --quiet --detach "$AB/tree" "$sha"
    (cd "$AB/tree" && CARGO_TARGET_DIR="$AB/build" cargo build --release --quiet -p pulse-gateway -p pulse-bench)
    mkdir -p "$AB/$sha"
    cp "$AB/build/release/pulse-gateway" "$AB/build/release/pulse-bench" "$AB/$sha/"
    git worktree remove --force "$AB/tree"
  fi
  BUILT=$sha
}
build "$1"
A=$BUILT
build "$2"
B=$BUILT

ulimit -n "$(ulimit -Hn)"
ensure_redis
start_private_redis
REDIS_PID=$(cat "$REDIS_DIR/redis.pid")
pids=()
stop_on_exit

# bench NAME ARGS...: A's load generator, its RESULT line into the results.
bench() {
  local name=$1
  shift
  wait_quiet
  "$AB/$A/pulse-bench" --threads 1 "$@" --client fws --jwt-secret "$SECRET" >"$LOGS/bench-$name.log" 2>&1 ||
    { echo "error: $name failed; see $LOGS/bench-$name.log" >&2; exit 1; }
  grep '^RESULT ' "$LOGS/bench-$name.log" >>"$RESULTS"
}

n=0
for round in $(seq 1 "$ROUNDS"); do
  order="$A $B"
  if [ $((round % 2)) = 0 ]; then order="$B $A"; fi
  for sha in $order; do
    n=$((n + 1))
    bin=$AB/$sha
    start "gateway-$sha-$round" pulse-gateway --instance-id "ab-$sha-$round" --redis-url "$REDIS_URL" \
      --redis-namespace "ab-$sha-$round" --heartbeat-interval 30s --jwt-secret "$SECRET"
    bench "connect-$sha-$round" connect --label "$sha" --server "$ADDR" --server-pid "$PID" \
      --watch-pid "redis=$REDIS_PID" --rate "$RATE" --idle-window 0s --connections "$CONNECTIONS" \
      --sources 8 --max-inflight 128 --source-base "127.0.$((100 + n)).1" --user-prefix "ab-$sha-$round"
    stop "$PID"
    start "gateway-ping-$sha-$round" pulse-gateway --instance-id "ab-ping-$sha-$round" \
      --redis-url "$REDIS_URL" --redis-namespace "ab-ping-$sha-$round" --jwt-secret "$SECRET"
    bench "ping-$sha-$round" ping --label "$sha" --server "$ADDR" --rate 1000 --duration 10s \
      --source-base "127.0.$((150 + n)).1"
    stop "$PID"
    echo "round $round: $sha measured"
  done
done

step "results ($RESULTS), every run and the median"
python3 - "$RESULTS" "$A" "$B" <<'EOF'
import json, statistics, sys
path, a, b = sys.argv[1:]
rows = [json.loads(line[len("RESULT "):]) for line in open(path)]
def column(label, scenario, get):
    return [get(r) for r in rows if r["label"] == label and r["scenario"] == scenario]
metrics = [
    ("connects/s achieved", "connect", lambda r: r["rate_achieved"]),
    ("gateway CPU per connection (µs)", "connect", lambda r: r["server_cpu_us_per_connection"]),
    ("gateway RSS per connection (KiB)", "connect", lambda r: r["server_rss_per_connection_kib"]),
    ("handshake p99 (ms)", "connect", lambda r: r["handshake"]["p99_ms"]),
    ("ping RTT p50 (ms)", "ping", lambda r: r["rtt"]["p50_ms"]),
    ("ping RTT p99 (ms)", "ping", lambda r: r["rtt"]["p99_ms"]),
]
print(f"| figure | {a}: runs | median | {b}: runs | median | B ÷ A |")
print("| --- | --- | --- | --- | --- | --- |")
for name, scenario, get in metrics:
    xs, ys = column(a, scenario, get), column(b, scenario, get)
    ma, mb = statistics.median(xs), statistics.median(ys)
    fmt = lambda v: f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3f}".rstrip("0").rstrip(".")
    print(f"| {name} | {', '.join(map(fmt, xs))} | {fmt(ma)} | {', '.join(map(fmt, ys))} | {fmt(mb)} | {mb / ma:.2f}× |")
EOF
