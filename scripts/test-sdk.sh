#!/usr/bin/env bash
# The TypeScript SDK's tests (scripts/test.sh runs this as its last step):
# the build and its size budget, unit tests on a fake clock, integration
# tests in Node against the real binaries, and the demo page in headless
# Chromium. Needs Rust, Node 20+ and apt; installs Debian's chromium and
# redis-server where missing, builds the binaries where missing, and runs a
# private redis-server, pulse-auth, pulse-presence (with an API key) and two
# pulse-gateways on free ports, all stopped on exit.
#
#   scripts/test-sdk.sh            # everything
#   SDK_TESTS="unit" scripts/test-sdk.sh   # a subset: unit, integration, browser
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
source scripts/lib.sh

SDK_TESTS=${SDK_TESTS:-"unit integration browser"}
sdk=clients/typescript
started=$SECONDS

# --- What the tests need on the machine ---------------------------------

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "error: the SDK tests need Node.js 20+ and npm" >&2
  exit 1
fi
if [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  echo "error: the SDK tests need Node.js 20+ (found $(node --version))" >&2
  exit 1
fi
case " $SDK_TESTS " in *" browser "*)
  if [ ! -x /usr/bin/chromium ]; then
    step "installing chromium (Debian package)"
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
  fi ;;
esac

step "npm ci and build ($sdk)"
(cd "$sdk" && npm ci --no-audit --no-fund --loglevel=error && node build.mjs)
read -r gzipped budget < <(node -p "const s = require('./$sdk/dist/size.json'); s.gzipped + ' ' + s.budget")
if [ "$gzipped" -gt "$budget" ]; then
  echo "error: dist/pulse.min.js is $gzipped bytes gzipped, over the budget of $budget" >&2
  exit 1
fi
echo "size: $gzipped bytes min+gzip, within the budget of $budget"
step "type check of the public API as an application uses it (test/types)"
(cd "$sdk" && node_modules/.bin/tsc -p test/types)

if [ "$SDK_TESTS" = "unit" ]; then
  step "SDK unit tests (node --test, fake clock)"
  (cd "$sdk" && node --test test/unit/)
  echo "SDK tests took $((SECONDS - started)) s"
  exit 0
fi

# --- The stack ----------------------------------------------------------

ensure_redis
# The same build as scripts/test.sh's and stack.sh's (a no-op after them):
# a build of fewer packages would unify features differently and recompile.
step "cargo build --workspace --bins"
cargo build --workspace --bins
bin=$(cd "${CARGO_TARGET_DIR:-target}/debug" && pwd)

# start_private_redis sets an EXIT trap of its own: ours, set after it,
# replaces it and stops Redis too.
start_private_redis
STATE=$(mktemp -d)
export PULSE_SDK_STATE=$STATE
failed=1
cleanup() {
  trap - EXIT INT TERM
  local file pid
  # Every service's pid is in a file: the tests restart gateways and
  # write the new pid there.
  for file in "$STATE"/*.pid; do
    [ -f "$file" ] || continue
    pid=$(cat "$file")
    kill -TERM "$pid" 2>/dev/null || true
  done
  for file in "$STATE"/*.pid; do
    [ -f "$file" ] || continue
    pid=$(cat "$file")
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [ "$failed" = 1 ]; then
    for file in "$STATE"/*.log; do
      [ -f "$file" ] || continue
      echo "--- last lines of $(basename "$file")" >&2
      tail -n 30 "$file" >&2
    done
  fi
  rm -rf "$STATE"
  stop_private_redis
}
trap cleanup EXIT INT TERM

# A free loopback port (one that refuses a connection now), below the
# kernel's ephemeral range, so that no outgoing connection of another
# process is given it before our server binds it.
free_port() {
  local low port
  low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  if [ "$low" -le 11000 ]; then low=32768; fi
  while :; do
    port=$((10000 + RANDOM % (low - 10000)))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
}

# Polls a command until it succeeds, for at most $1 seconds; the process
# named by pid file $2 must stay up meanwhile.
wait_for() {
  local deadline=$((SECONDS + $1)) pidfile=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then return 2; fi
    if [ "$SECONDS" -ge "$deadline" ]; then return 1; fi
    sleep 0.1
  done
}

# Starts a service from its launcher script $STATE/$1.sh, pid in $STATE/$1.pid.
start() {
  bash "$STATE/$1.sh" >>"$STATE/$1.log" 2>&1 &
  echo $! >"$STATE/$1.pid"
}

# Writes a launcher that execs the command, so that its pid is the service's.
launcher() {
  local name=$1
  shift
  printf 'exec' >"$STATE/$name.sh"
  printf ' %q' "$@" >>"$STATE/$name.sh"
  printf '\n' >>"$STATE/$name.sh"
}

# The namespaces: `room:` as in deploy/pulse.toml (presence, join/leave,
# clients publish), `feed:` (clients publish) and `order:` (a subscription
# token per channel). With history where this
# build of Pulse has it: $1 for both namespaces, $2 for personal channels.
write_config() {
  local keep=$'history_size = 1000\nhistory_ttl = "10m"' named="" personal=""
  if [ "$1" = 1 ]; then named=$keep; fi
  if [ "$2" = 1 ]; then personal=$keep; fi
  cat >"$3" <<EOF
[personal]
$personal
[namespaces.room]
authorize = "any"
allow_publish = true
presence = true
join_leave = true
$named
[namespaces.feed]
authorize = "any"
allow_publish = true
$named
[namespaces.order]
authorize = "token"
EOF
}

# Read by pulse-auth, the gateways (the dev login signs with it) and
# `pulse-auth mint` in the tests. No leeway, so that a token expires when
# its exp says and the refresh test means something.
JWT_SECRET=$(head -c 32 /dev/urandom | base64 | tr -d '/+=')
export JWT_SECRET JWT_LEEWAY=0s
API_KEYS=$(head -c 32 /dev/urandom | base64 | tr -d '/+=')
export API_KEYS # read by pulse-presence; the tests read PULSE_API_KEY. Never printed.
auth_port=$(free_port)
grpc_port=$(free_port)
http_port=$(free_port)

launcher auth "$bin/pulse-auth" --listen "127.0.0.1:$auth_port" --metrics-listen 127.0.0.1:0
start auth

# pulse-presence with history in the config; a build that refuses a
# history at start (one line naming history_size) runs without that one,
# and the tests that need it say so.
history=1
personal_history=1
for attempt in 1 2 3; do
  write_config "$history" "$personal_history" "$STATE/pulse.toml"
  : >"$STATE/presence.log"
  launcher presence "$bin/pulse-presence" --listen "127.0.0.1:$grpc_port" \
    --redis-url "$REDIS_URL" --metrics-listen 127.0.0.1:0 \
    --http-listen "127.0.0.1:$http_port" --config "$STATE/pulse.toml"
  start presence
  if wait_for 30 "$STATE/presence.pid" curl -s -o /dev/null "http://127.0.0.1:$http_port/"; then
    break
  fi
  if grep -q "Address already in use" "$STATE/presence.log" && [ "$attempt" != 3 ]; then
    # Taken between the pick and the bind: pick again.
    grpc_port=$(free_port)
    http_port=$(free_port)
    continue
  fi
  refused=$(grep -m1 "history_size" "$STATE/presence.log" || true)
  if [ "$attempt" = 3 ] || [ -z "$refused" ]; then
    echo "error: pulse-presence did not start" >&2
    exit 1
  fi
  echo "this build refuses a history: $refused"
  case "$refused" in
    *personal.history_size*) personal_history=0 ;;
    *) history=0 ;;
  esac
done

gateways=()
for n in 1 2; do
  port=$(free_port)
  launcher "gateway-$n" "$bin/pulse-gateway" --listen "127.0.0.1:$port" --instance-id "sdk-gateway-$n" \
    --auth-url "http://127.0.0.1:$auth_port" --redis-url "$REDIS_URL" --config "$STATE/pulse.toml" \
    --dev-users "$root/deploy/dev-users.json" \
    --drain-spread 200ms --drain-timeout 5s
  start "gateway-$n"
  echo "$port" >"$STATE/gateway-$n.port"
  gateways+=("ws://127.0.0.1:$port/ws")
done
for n in 1 2; do
  if ! wait_for 30 "$STATE/gateway-$n.pid" curl -sf "http://127.0.0.1:$(cat "$STATE/gateway-$n.port")/readyz"; then
    echo "error: gateway $n did not become ready" >&2
    exit 1
  fi
done

demo_port=$(free_port)
launcher demo node "$root/examples/web/serve.mjs" --port "$demo_port" \
  --gateway "http://127.0.0.1:$(cat "$STATE/gateway-1.port")" --api "http://127.0.0.1:$http_port"
start demo
if ! wait_for 30 "$STATE/demo.pid" curl -sf "http://127.0.0.1:$demo_port/"; then
  echo "error: the demo page's server did not start" >&2
  exit 1
fi

export PULSE_GATEWAYS="${gateways[*]}" PULSE_HTTP_API="http://127.0.0.1:$http_port"
export PULSE_GRPC="127.0.0.1:$grpc_port" PULSE_API_KEY=$API_KEYS PULSE_AUTH_BIN="$bin/pulse-auth"
export PULSE_DEMO_URL="http://127.0.0.1:$demo_port/" PULSE_HISTORY=$history PULSE_PERSONAL_HISTORY=$personal_history
step "stack up: gateways ${gateways[*]}, HTTP API :$http_port, demo page $PULSE_DEMO_URL (history: namespaces $history, personal channels $personal_history)"

# --- The tests ----------------------------------------------------------

# One run of Node's test runner over every suite, so that its summary
# counts them all.
suites=()
for suite in $SDK_TESTS; do
  case "$suite" in
    unit | integration | browser) suites+=("test/$suite/") ;;
    *) echo "error: unknown suite $suite (unit, integration, browser)" >&2; exit 1 ;;
  esac
done
step "SDK tests: ${suites[*]} (node --test)"
(cd "$sdk" && node --test --test-concurrency=1 --test-timeout=120000 "${suites[@]}")
failed=0
echo "SDK tests took $((SECONDS - started)) s"
