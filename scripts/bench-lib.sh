# Sourced by the benchmark scripts (after lib.sh): starting and stopping the
# services under test, and waiting for a quiet machine. The caller sets `bin` (the binaries' directory),
# `LOGS` (where each service's log goes) and the array `pids` (what its
# cleanup stops).

# start NAME BINARY ARGS...: starts a service with JSON logs on 127.0.0.1:0 and
# waits for its `listening` line; sets PID and ADDR.
start() {
  local name=$1 binary=$2
  shift 2
  local log="$LOGS/$name.log"
  LOG_FORMAT=json RUST_LOG=${SERVICE_LOG:-info} "$bin/$binary" --listen 127.0.0.1:0 "$@" >"$log" 2>&1 &
  PID=$!
  pids+=("$PID")
  ADDR=""
  local attempt
  for attempt in $(seq 1 100); do
    ADDR=$(grep -m1 'listening' "$log" | sed -n 's/.*"addr":"\([^"]*\)".*/\1/p' || true)
    if [ -n "$ADDR" ]; then return; fi
    if ! kill -0 "$PID" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "error: $name did not report its address; see $log" >&2
  cat "$log" >&2
  exit 1
}

# stop PID...: SIGTERM, then waits (the gateway drains; 30 s at most).
stop() {
  local pid
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    local waited
    for waited in $(seq 1 300); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}

# stop_on_exit: when the script ends (or is interrupted), SIGTERM every
# service in `pids`, wait for them, and stop the private Redis if one was
# started.
stop_on_exit() { trap stop_everything EXIT INT TERM; }
stop_everything() {
  trap - EXIT INT TERM
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  stop_private_redis
}

# Other people's builds on this machine skew a run: wait (30 s at most) for
# the machine to be quiet, under 15 % of a core busy over one second.
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
wait_quiet() {
  local attempt before after
  for attempt in $(seq 1 15); do
    before=$(busy_ticks)
    sleep 1
    after=$(busy_ticks)
    # Ticks are hundredths of a second: 15 ticks in one second is 15 % of a core.
    if [ $((after - before)) -lt 15 ]; then return; fi
    if [ "$attempt" = 1 ]; then echo "waiting for a quiet machine ($((after - before)) % of a core busy)"; fi
    sleep 1
  done
  echo "warning: the machine is still busy; measuring anyway (see \"others\" in the tables)"
}
