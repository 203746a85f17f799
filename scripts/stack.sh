#!/usr/bin/env bash
# Runs the whole stack locally: a private redis-server, pulse-auth,
# pulse-presence and two gateway instances, with the dev login on, and the
# demo page (examples/web, with the TypeScript SDK built) on DEMO_PORT when
# Node.js is installed. Ctrl-C stops everything.
#
#   GATEWAY_PORTS="3000 3001" AUTH_PORT=50051 PRESENCE_PORT=50052 HTTP_API_PORT=8052 DEMO_PORT=8080 API_KEY=... scripts/stack.sh
#
# Channel namespaces (and webhooks) come from PULSE_CONFIG, deploy/pulse.toml
# by default: a copy with a [webhooks] section sends presence events to a
# receiver (README, "Webhooks").
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

GATEWAY_PORTS=${GATEWAY_PORTS:-"3000 3001"}
AUTH_PORT=${AUTH_PORT:-50051}
PRESENCE_PORT=${PRESENCE_PORT:-50052}
HTTP_API_PORT=${HTTP_API_PORT:-8052}
DEMO_PORT=${DEMO_PORT:-8080}
export JWT_SECRET=${JWT_SECRET:-dev-secret}
# The internal API's key: internal services (and grpcurl) send
# `authorization: Bearer $API_KEY` to pulse-presence.
API_KEY=${API_KEY:-dev-api-key-change-me-0001}
PULSE_CONFIG=${PULSE_CONFIG:-deploy/pulse.toml}

ensure_redis
step "cargo build --workspace --bins"
cargo build --workspace --bins
bin=${CARGO_TARGET_DIR:-target}/debug

pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  stop_private_redis
}
start_private_redis
trap cleanup EXIT INT TERM

"$bin/pulse-auth" --listen "127.0.0.1:$AUTH_PORT" &
pids+=($!)
"$bin/pulse-presence" --listen "127.0.0.1:$PRESENCE_PORT" --redis-url "$REDIS_URL" \
  --metrics-listen 127.0.0.1:9092 --http-listen "127.0.0.1:$HTTP_API_PORT" \
  --api-key "$API_KEY" --config "$PULSE_CONFIG" &
pids+=($!)
n=0
for port in $GATEWAY_PORTS; do
  n=$((n + 1))
  "$bin/pulse-gateway" --listen "127.0.0.1:$port" --instance-id "gateway-$n" \
    --auth-url "http://127.0.0.1:$AUTH_PORT" --redis-url "$REDIS_URL" \
    --dev-users deploy/dev-users.json --config "$PULSE_CONFIG" &
  pids+=($!)
done

demo=""
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  step "building the TypeScript SDK for the demo page"
  if [ ! -d clients/typescript/node_modules ]; then
    (cd clients/typescript && npm ci --no-audit --no-fund --loglevel=error)
  fi
  (cd clients/typescript && node build.mjs)
  first_port=${GATEWAY_PORTS%% *}
  node examples/web/serve.mjs --port "$DEMO_PORT" --gateway "http://127.0.0.1:$first_port" \
    --api "http://127.0.0.1:$HTTP_API_PORT" &
  pids+=($!)
  demo=", demo page http://127.0.0.1:$DEMO_PORT/"
else
  echo "no Node.js here: the demo page (examples/web) is not served" >&2
fi

step "stack up: gateways on ports $GATEWAY_PORTS, pulse-auth :$AUTH_PORT, pulse-presence :$PRESENCE_PORT (HTTP API :$HTTP_API_PORT, API key: $API_KEY), $REDIS_URL$demo (Ctrl-C stops)"
wait -n "${pids[@]}" || true
echo "a process exited; stopping the stack" >&2
