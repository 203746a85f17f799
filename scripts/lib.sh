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
  local pid waited
  if [ -n "${REDIS_DIR:-}" ] && [ -f "$REDIS_DIR/redis.pid" ]; then
    pid=$(cat "$REDIS_DIR/redis.pid")
    kill "$pid" 2>/dev/null || true
    # It logs as it exits: removing its directory before then can fail
    # ("Directory not empty"), which made a green run exit 1.
    for waited in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  if [ -n "${REDIS_DIR:-}" ]; then rm -rf "$REDIS_DIR" || true; fi
  return 0
}

# Starts a throwaway three-master Redis Cluster on free loopback ports (each
# node in its own directory, its cluster bus port +10000 free too), joins it
# with redis-cli --cluster create, waits for cluster_state:ok on every node,
# exports REDIS_CLUSTER_URLS (comma-separated node URLs), and stops it when
# the calling script exits. Call after start_private_redis, whose EXIT trap
# this one extends.
start_private_cluster() {
  CLUSTER_DIR=$(mktemp -d)
  CLUSTER_PORTS=()
  local port node urls="" addresses=()
  trap 'stop_private_cluster; stop_private_redis' EXIT
  local attempt waited
  for attempt in $(seq 1 30); do
    [ "${#CLUSTER_PORTS[@]}" -lt 3 ] || break
    port=$((20000 + RANDOM % 30000))
    # A port (or its bus port) that accepts a connection is taken.
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then continue; fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$((port + 10000))") 2>/dev/null; then continue; fi
    node="$CLUSTER_DIR/$port"
    mkdir -p "$node"
    redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-config-file nodes.conf --save "" --appendonly no --dir "$node" \
      --daemonize yes --pidfile "$node/redis.pid" --logfile "$node/redis.log" >/dev/null || true
    for waited in $(seq 1 50); do
      if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then
        CLUSTER_PORTS+=("$port")
        addresses+=("127.0.0.1:$port")
        urls="${urls:+$urls,}redis://127.0.0.1:$port"
        continue 2
      fi
      sleep 0.1
    done
    # It never answered (a port taken meanwhile): stop it, try another.
    [ -f "$node/redis.pid" ] && kill "$(cat "$node/redis.pid")" 2>/dev/null || true
  done
  if [ "${#CLUSTER_PORTS[@]}" -lt 3 ]; then
    echo "error: could not start three redis cluster nodes" >&2
    exit 1
  fi
  if ! redis-cli --cluster create "${addresses[@]}" --cluster-replicas 0 --cluster-yes >"$CLUSTER_DIR/create.log" 2>&1; then
    cat "$CLUSTER_DIR/create.log" >&2
    echo "error: could not form a private redis cluster" >&2
    exit 1
  fi
  for port in "${CLUSTER_PORTS[@]}"; do
    for waited in $(seq 1 100); do
      redis-cli -p "$port" cluster info 2>/dev/null | grep -q "cluster_state:ok" && break
      sleep 0.1
    done
    if ! redis-cli -p "$port" cluster info 2>/dev/null | grep -q "cluster_state:ok"; then
      echo "error: redis cluster node $port is not ok" >&2
      exit 1
    fi
  done
  export REDIS_CLUSTER_URLS="$urls"
  step "private redis cluster on ${addresses[*]}"
}

stop_private_cluster() {
  local file pids=() pid waited
  if [ -n "${CLUSTER_DIR:-}" ]; then
    for file in "$CLUSTER_DIR"/*/redis.pid; do
      [ -f "$file" ] && pids+=("$(cat "$file")")
    done
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    # A node writes nodes.conf as it exits; remove its directory after.
    for pid in "${pids[@]}"; do
      for waited in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
    done
    rm -rf "$CLUSTER_DIR" || true
  fi
  return 0
}
