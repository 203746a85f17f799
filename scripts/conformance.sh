#!/usr/bin/env bash
# WebSocket conformance: runs the Autobahn|Testsuite fuzzing client (the real
# `wstest -m fuzzingclient` and its case files, on a Python 2.7 interpreter)
# against the gateway's own framing, mounted as an unauthenticated echo with
# `--echo-path /echo`, and prints a summary of passed and failed cases.
#
#   scripts/conformance.sh            every case but 12.* and 13.*
#   scripts/conformance.sh 7.* 9.1.*  only the cases named (Autobahn's patterns)
#
# Cases 12.* and 13.* (permessage-deflate) are excluded: Pulse does not
# negotiate compression. A case passes when Autobahn's verdict on the exchange
# is OK, NON-STRICT or INFORMATIONAL and its verdict on the closing handshake
# is OK or INFORMATIONAL; anything else (FAILED, WRONG CODE, UNCLEAN,
# FAILED BY CLIENT, UNIMPLEMENTED) fails the run. The HTML and JSON reports
# are left in target/autobahn/reports.
#
# The `autobahntestsuite` package is Python 2.7 code. The interpreter is
# $PYTHON2 when set, else a python2.7 on PATH, else pyenv's 2.7 (the machines
# this was written on carry ~/.pyenv/versions/2.7.18), else Debian's python2.7
# where the release still packages it (bookworm does not). The suite and its pinned dependencies are
# installed from PyPI with that interpreter's pip into
# ~/.cache/pulse/autobahn (PULSE_AUTOBAHN overrides), so a second run
# installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

SUITE=${PULSE_AUTOBAHN:-${XDG_CACHE_HOME:-$HOME/.cache}/pulse/autobahn}
# autobahntestsuite 25.10.1 pins Autobahn 0.10.9 and Twisted 19.10.0; the rest
# is what pip resolved for Python 2.7 when this script was written, pinned so
# that a later release of a dependency cannot change the run.
PINS="autobahntestsuite==25.10.1 autobahn==0.10.9 Twisted==19.10.0 txaio==2.1.0
wsaccel==0.6.6 ujson==2.0.3 zope.interface==4.6.0 Automat==22.10.0
PyHamcrest==1.10.1 attrs==21.4.0 constantly==15.1.0 hyperlink==21.0.0
idna==2.10 incremental==16.10.1 typing==3.10.0.0 six==1.16.0
setuptools==44.0.0 Werkzeug==1.0.1 klein==17.10.0 jinja2==2.11.3
markupsafe==1.1.1 pyOpenSSL==19.1.0 cryptography==3.3.2 cffi==1.15.1
pycparser==2.21 enum34==1.1.10 ipaddress==1.0.23 pyasn1==0.5.1
pyasn1-modules==0.3.0 service-identity==18.1.0 unittest2==1.1.0
argparse==1.4.0 linecache2==1.0.0 traceback2==1.4.0"
CASE_TIMEOUT=${CONFORMANCE_TIMEOUT:-900}

is_python27() {
  [ -n "$1" ] && "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' >/dev/null 2>&1
}

find_python2() {
  local candidate
  for candidate in "${PYTHON2:-}" "$(command -v python2.7 || true)" \
    "$(command -v python2 || true)"; do
    if is_python27 "$candidate"; then echo "$candidate"; return; fi
  done
  local root
  root=$( (command -v pyenv >/dev/null && pyenv root) || echo "$HOME/.pyenv")
  for candidate in "$root"/versions/2.7*/bin/python2.7; do
    if is_python27 "$candidate"; then echo "$candidate"; return; fi
  done
  if apt-cache policy python2.7 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    step "installing python2.7 (Debian package)" >&2
    local sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python2.7 >/dev/null
    if is_python27 /usr/bin/python2.7; then echo /usr/bin/python2.7; return; fi
  fi
  return 1
}

if ! PYTHON2=$(find_python2); then
  cat >&2 <<'EOF'
error: no Python 2.7 interpreter found, and Autobahn|Testsuite needs one.
Set PYTHON2=/path/to/python2.7, or install one (pyenv's 2.7.18, or Debian's
python2.7 on a release that still has it), then run this script again.
EOF
  exit 2
fi

# One line per pin, sorted, so the marker compares equal whatever the wrapping.
# shellcheck disable=SC2086 # the list is word-split on purpose
wanted=$(printf '%s\n' "$PYTHON2" $PINS | sort)
if [ "$(cat "$SUITE/.installed" 2>/dev/null)" != "$wanted" ]; then
  step "installing Autobahn|Testsuite (PyPI) for $PYTHON2 into $SUITE"
  rm -rf "$SUITE"
  mkdir -p "$SUITE"
  # shellcheck disable=SC2086 # the list is word-split on purpose
  PIP_NO_PYTHON_VERSION_WARNING=1 "$PYTHON2" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --target "$SUITE/site" $PINS
  echo "$wanted" >"$SUITE/.installed"
fi

# `--target` leaves zope's namespace .pth file unprocessed on PYTHONPATH;
# site.addsitedir reads it.
cat >"$SUITE/wstest.py" <<EOF
import site, sys
site.addsitedir("$SUITE/site")
sys.argv[0] = "wstest"
from autobahntestsuite.wstest import run
run()
EOF

step "building pulse-gateway"
cargo build --quiet -p pulse-gateway --bin pulse-gateway
gateway=$(cargo metadata --format-version 1 --no-deps |
  "$PYTHON2" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/debug/pulse-gateway

out=target/autobahn
rm -rf "$out"
mkdir -p "$out"
gateway_pid=""
stop_gateway() {
  if [ -n "$gateway_pid" ]; then kill "$gateway_pid" 2>/dev/null || true; fi
}
trap stop_gateway EXIT

# Port 0, then the address the gateway reports in its `listening` line: no race
# for a free port.
LOG_FORMAT=json RUST_LOG=warn,pulse_gateway=info "$gateway" \
  --echo-path /echo --max-message-bytes 16777216 --max-messages-per-second 0 \
  --jwt-secret x --listen 127.0.0.1:0 >"$out/gateway.log" 2>&1 &
gateway_pid=$!
addr=""
for _ in $(seq 1 300); do
  addr=$(sed -n 's/.*"message":"pulse-gateway listening","addr":"\([^"]*\)".*/\1/p' "$out/gateway.log" | head -n 1)
  if [ -n "$addr" ]; then break; fi
  if ! kill -0 "$gateway_pid" 2>/dev/null; then
    cat "$out/gateway.log" >&2
    echo "error: pulse-gateway exited at start" >&2
    exit 1
  fi
  sleep 0.1
done
if [ -z "$addr" ]; then
  echo "error: pulse-gateway did not report its address within 30 s" >&2
  exit 1
fi
step "$("$gateway" --version) echoing at ws://$addr/echo"

cases='"*"'
if [ "$#" -gt 0 ]; then
  cases=$(printf '"%s",' "$@")
  cases=${cases%,}
fi
cat >"$out/fuzzingclient.json" <<EOF
{
  "outdir": "$out/reports",
  "servers": [{"agent": "pulse-gateway", "url": "ws://$addr/echo"}],
  "cases": [$cases],
  "exclude-cases": ["12.*", "13.*"],
  "exclude-agent-cases": {}
}
EOF

step "Autobahn|Testsuite 25.10.1 fuzzing client on $("$PYTHON2" --version 2>&1)"
if ! timeout "$CASE_TIMEOUT" "$PYTHON2" "$SUITE/wstest.py" -m fuzzingclient \
  -s "$out/fuzzingclient.json" >"$out/wstest.log" 2>&1; then
  tail -n 30 "$out/wstest.log" >&2
  echo "error: the fuzzing client did not finish (log: $out/wstest.log)" >&2
  exit 1
fi

alive=yes
if ! kill -0 "$gateway_pid" 2>/dev/null; then alive=no; fi

step "summary (reports: $out/reports/index.html)"
"$PYTHON2" - "$out/reports/index.json" "$alive" <<'EOF'
import collections, json, sys

PASS = {"OK", "NON-STRICT", "INFORMATIONAL"}
PASS_CLOSE = {"OK", "INFORMATIONAL"}

def key(case):
    return [int(part) for part in case.split(".")]

index = json.load(open(sys.argv[1]))
results = index["pulse-gateway"]
counts = collections.Counter()
failed, notes = [], []
for case in sorted(results, key=key):
    result = results[case]
    behavior, close = result["behavior"], result["behaviorClose"]
    counts[behavior] += 1
    if behavior not in PASS or close not in PASS_CLOSE:
        failed.append((case, behavior, close, result.get("remoteCloseCode")))
    elif behavior != "OK":
        notes.append((case, behavior))

print("cases run: %d (12.* and 13.* excluded)" % len(results))
for behavior, count in sorted(counts.items()):
    print("  %-14s %d" % (behavior, count))
for case, behavior in notes:
    print("  %-8s %s (counts as passing)" % (case, behavior))
for case, behavior, close, code in failed:
    print("  %-8s FAILED: behavior %s, close %s, close code %s" % (case, behavior, close, code))
print("%d passed, %d failed" % (len(results) - len(failed), len(failed)))
if sys.argv[2] != "yes":
    print("error: pulse-gateway died during the run")
    sys.exit(1)
sys.exit(1 if failed else 0)
EOF
