# Shared shell helpers for scripts/: sourced, not run.

step() { printf '\n==> %s\n' "$*"; }

# Installs Debian's redis-server where it is missing.
ensure_redis() {
  if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
    return
  fi
  step "installing redis-server (Debian package)"
  local sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
}

# Starts a throwaway redis-server on a free loopback port, exports REDIS_URL,
# and stops it when the calling script exits.
start_private_redis() {
  REDIS_DIR=$(mktemp -d)
  local attempt port
  for attempt in $(seq 1 20); do
    port=$((20000 + RANDOM % 30000))
    # A port that accepts a connection is taken.
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then continue; fi
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
      --dir "$REDIS_DIR" --daemonize yes --pidfile "$REDIS_DIR/redis.pid" \
      --logfile "$REDIS_DIR/redis.log" >/dev/null
    local waited
    for waited in $(seq 1 50); do
      if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then
        export REDIS_URL="redis://127.0.0.1:$port"
        trap stop_private_redis EXIT
        step "private redis-server on 127.0.0.1:$port"
        return
      fi
      sleep 0.1
    done
    stop_private_redis
    REDIS_DIR=$(mktemp -d)
  done
  echo "error: could not start a private redis-server" >&2
  exit 1
}

stop_private_redis() {
  if [ -n "${REDIS_DIR:-}" ] && [ -f "$REDIS_DIR/redis.pid" ]; then
    kill "$(cat "$REDIS_DIR/redis.pid")" 2>/dev/null || true
  fi
  [ -n "${REDIS_DIR:-}" ] && rm -rf "$REDIS_DIR"
  return 0
}
