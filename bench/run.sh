#!/usr/bin/env bash
# Runs the same workloads against tally (coalesced broadcasts, the default),
# tally with --broadcast-interval 0, and the Node socket.io reference server,
# one server at a time on this machine, and writes docs/benchmarks.md and
# docs/ramp.svg. Loads go to 127.0.0.1 only. Takes about 10 minutes.
#
# Knobs (environment): IDLE_N (10000), FANOUT_N (1000), FLOOD_N (1000),
# FLOOD_RATE (5000), BIG_N (10000), BIG_RATE (10000), RAMP_N (1000),
# STEP (5s), QUICK=1 for a seconds-long smoke run with tiny numbers.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${QUICK:-}" == 1 ]]; then
  : "${IDLE_N:=50}" "${FANOUT_N:=20}" "${FLOOD_N:=20}" "${FLOOD_RATE:=200}" "${BIG_N:=50}" "${BIG_RATE:=200}" "${RAMP_N:=20}" "${STEP:=500ms}" "${DURATION:=1s}" "${RAMP_MAX:=400}"
fi
: "${IDLE_N:=10000}" "${FANOUT_N:=1000}" "${FLOOD_N:=1000}" "${FLOOD_RATE:=5000}" "${BIG_N:=10000}" "${BIG_RATE:=10000}" "${RAMP_N:=1000}" "${STEP:=5s}" "${DURATION:=10s}" "${RAMP_MAX:=200000}"
OUT=${OUT:-docs}

step() { printf '\n==> %s\n' "$*" >&2; }

step "build"
cargo build --release --locked --bins >&2
(cd bench/node && { [[ node_modules/.package-lock.json -nt package-lock.json ]] || npm ci --no-audit --no-fund >&2; })

results=$(mktemp -d)
server_pid=
stop_server() { [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null; server_pid=; }
trap stop_server EXIT

# Starts a server (the command in "$@"), sets $server_pid and $url.
start_server() {
  local log="$results/server.log"
  "$@" >"$log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do
    url=$(grep -o 'listening on http://[0-9.:]*' "$log" | head -1 | cut -d' ' -f3 || true)
    [[ -n "$url" ]] && return 0
    sleep 0.1
  done
  echo "server did not start: $(cat "$log")" >&2
  return 1
}

bench() { target/release/tally-bench --url "$url" "$@"; }

# One server's workloads; each writes one JSON line into $results/<name>.jsonl.
run_all() {
  local name=$1; shift
  local file="$results/$name.jsonl"
  for workload in idle fanout flood big ramp; do
    local db; db=$(mktemp -d)
    step "$name: $workload"
    start_server "$@" --database-url "sqlite://$db/t.db"
    case $workload in
      idle) bench idle --connections "$IDLE_N" --hold 5s --server-pid "$server_pid" ;;
      fanout) bench fanout --connections "$FANOUT_N" --rate 50 --duration "$DURATION" ;;
      flood) bench flood --connections "$FLOOD_N" --rate "$FLOOD_RATE" --duration "$DURATION" ;;
      big) bench flood --connections "$BIG_N" --rate "$BIG_RATE" --duration "$DURATION" ;;
      ramp) bench ramp --connections "$RAMP_N" --start-rate 250 --max-rate "$RAMP_MAX" --step "$STEP" --bound 100ms ;;
    esac | sed "s/^{/{\"server\":\"$name\",\"workload\":\"$workload\",/" >>"$file"
    stop_server
    rm -rf "$db"
  done
}

# The Node server takes no --database-url; a wrapper drops it.
node_server() { while [[ $# -gt 0 && $1 != --database-url ]]; do shift; done; exec node bench/node/server.js; }
export -f node_server

run_all tally target/release/tally serve --addr 127.0.0.1:0
run_all tally-interval-0 target/release/tally serve --addr 127.0.0.1:0 --broadcast-interval 0
run_all node bash -c 'node_server "$@"' node_server

step "report"
cat "$results"/*.jsonl >"$results/all.jsonl"
node bench/report.mjs "$results/all.jsonl" "$OUT"
