#!/usr/bin/env bash
# Runs the same workloads against tally (limits off, coalesced broadcasts, the
# default) and the Node socket.io reference server twice (throttled to one
# broadcast per 10 ms window like tally's default, the fair peer; and
# broadcasting after every click, the design's baseline), one server at a
# time on this machine, and writes docs/benchmarks.md, docs/ramp.svg and
# docs/scale.svg from the raw lines of this one invocation (kept in
# bench/results.jsonl). Loads go to 127.0.0.1 only. Takes 15–35 minutes.
#
# Workloads: the capacity ladder (`ramp`: three runs at each rate of
# RATES, judged by their median), idle memory, fanout, flood, chat and, for
# tally only, a big flood and many connections (scale). IDLE, CHAT and FANOUT
# run ROUNDS times (3), the servers taking turns within each round, so a
# slow spell of the machine does not land on one server only.
#
# Knobs (environment): IDLE_N (10000), FANOUT_N (1000), FLOOD_N (1000),
# FLOOD_RATE (3000), BIG_N (10000), BIG_RATE (10000), RAMP_N (1000), RATES
# (the ladder, 100 to 40,000 clicks/s), RUNS (3 per rate), STEP (3s),
# DURATION (10s), CHAT_N (1000), CHAT_RATE (50), SCALE_STEPS
# (5000,10000,19000, or less when the open-file limit is lower), ROUNDS (3),
# OUT (docs), QUICK=1 for a seconds-long smoke run with tiny numbers,
# COOLDOWN (5s; 0 with QUICK) between workloads, SERVER_CPUS / TOOL_CPUS (see
# below), SERVERS and WORKLOADS (see below).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${QUICK:-}" == 1 ]]; then
  : "${COOLDOWN:=0}"
  : "${SCALE_STEPS:=20,40}" "${SCALE_FLOOD_N:=10}" "${IDLE_N:=50}" "${FANOUT_N:=20}" "${FLOOD_N:=20}" "${FLOOD_RATE:=200}" "${BIG_N:=50}" "${BIG_RATE:=200}" "${RAMP_N:=20}" "${CHAT_N:=20}" "${CHAT_RATE:=20}" "${STEP:=500ms}" "${DURATION:=1s}" "${RATES:=50,100,200,400}" "${RUNS:=2}" "${ROUNDS:=2}"
fi
: "${CHAT_N:=1000}" "${CHAT_RATE:=50}" "${IDLE_N:=10000}" "${FANOUT_N:=1000}" "${FLOOD_N:=1000}" "${FLOOD_RATE:=3000}" "${BIG_N:=10000}" "${BIG_RATE:=10000}" "${RAMP_N:=1000}" "${STEP:=3s}" "${DURATION:=10s}" "${RUNS:=3}" "${ROUNDS:=3}"
# The ladder's rates include 3,000 and 10,000 clicks/s, which the comparison
# reads its p99 figures from.
: "${RATES:=100,200,500,1000,2000,3000,5000,7000,10000,14000,20000,28000,40000}"
OUT=${OUT:-docs}
mkdir -p "$OUT"
# Time for the machine to settle between workloads, so one server's load
# (and the last one's exit) does not spill into the next measurement.
: "${COOLDOWN:=5}"

# The server and the load tool get separate cores, so the comparison
# measures the servers and not their fight with the load generator over the
# same CPUs: the first half of the cores for the server, the rest for the
# tool (on 2 cores: core 0 and core 1). Both are recorded in every raw line.
ncpu=$(nproc)
if (( ncpu >= 2 )) && command -v taskset >/dev/null; then
  half=$((ncpu / 2))
  cpu_range() { if (( $1 == $2 )); then echo "$1"; else echo "$1-$2"; fi; }
  : "${SERVER_CPUS:=$(cpu_range 0 $((half - 1)))}" "${TOOL_CPUS:=$(cpu_range "$half" $((ncpu - 1)))}"
fi
: "${SERVER_CPUS:=}" "${TOOL_CPUS:=}"
# Runs "$@" on the CPUs in $1 (all of them when $1 is empty).
pinned() { local cpus=$1; shift; if [[ -n "$cpus" ]]; then taskset -c "$cpus" "$@"; else "$@"; fi; }
# Only SERVERS (a space-separated subset of "tally node-throttled node") and
# WORKLOADS (of "ramp idle fanout flood chat big scale") are run when set:
# the report then has only those, since it is made from one invocation's
# lines and never merges them with an earlier run's. REPEATED workloads run
# in every round; the others in the first only; TALLY_ONLY ones for tally
# only.
: "${SERVERS:=tally node-throttled node}" "${WORKLOADS:=ramp idle fanout flood chat big scale}"
: "${REPEATED:=idle fanout chat}" "${TALLY_ONLY:=big scale}"

# One descriptor per connection, on both ends of 10,000 connections.
ulimit -n "$(ulimit -Hn)"
# The scale workload's last step is as many connections as both ends can
# hold, up to 19,000 (on this machine every process's hard limit is 20,000).
: "${SCALE_FLOOD_N:=1000}"
if [[ -z "${SCALE_STEPS:-}" ]]; then
  most=$(( $(ulimit -n) - 1000 ))
  (( most > 19000 )) && most=19000
  if (( most > 10000 )); then SCALE_STEPS="5000,10000,$most"; else SCALE_STEPS="$(( most / 2 )),$most"; fi
fi
if [[ "$OUT" == docs ]]; then RAW=${RAW:-bench/results.jsonl}; else RAW=${RAW:-$OUT/benchmarks.jsonl}; fi

step() { printf '\n==> %s\n' "$*" >&2; }

step "build"
cargo build --release --locked --workspace --bins >&2
(cd bench/node && { [[ node_modules/.package-lock.json -nt package-lock.json ]] || npm ci --no-audit --no-fund >&2; })

# Each raw line records the commit it measured; the report refuses lines of
# more than one commit or machine.
commit=$(git rev-parse --short HEAD)
[[ -z "$(git status --porcelain -- src bench/tally-bench Cargo.toml Cargo.lock)" ]] || commit="$commit+changes"
# What measured, recorded in every raw line: a report regenerated elsewhere
# still names the machine and versions of each measurement.
machine="$(nproc) × $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(free -g | awk '/^Mem:/ { print $2 }') GiB, $(uname -sr)"
versions="$(rustc --version); node $(node --version); socket.io $(node -p "require('./bench/node/node_modules/socket.io/package.json').version")"
export machine versions SERVER_CPUS TOOL_CPUS

results=$(mktemp -d)
server_pid=
stop_server() { [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null; server_pid=; }
trap 'stop_server; rm -rf "$results"' EXIT

# Starts a server (the command in "$@"), sets $server_pid and $url.
start_server() {
  local log="$results/server.log"
  # Started directly (not through a shell function, which would fork a
  # subshell) so that $! is the server's own pid: taskset execs it.
  if [[ -n "$SERVER_CPUS" ]]; then
    taskset -c "$SERVER_CPUS" "$@" >"$log" 2>&1 &
  else
    "$@" >"$log" 2>&1 &
  fi
  server_pid=$!
  for _ in $(seq 100); do
    url=$(grep -o 'listening on http://[0-9.:]*' "$log" | head -1 | cut -d' ' -f3 || true)
    [[ -n "$url" ]] && return 0
    sleep 0.1
  done
  echo "server did not start: $(cat "$log")" >&2
  return 1
}

# Every run is bounded: a wedged server or tool costs at most WORKLOAD_TIMEOUT.
bench() { pinned "$TOOL_CPUS" timeout "${WORKLOAD_TIMEOUT:-420}" target/release/tally-bench --quiet --url "$url" "$@"; }

run_workload() {
  case $1 in
    idle) bench --server-pid "$server_pid" idle --connections "$IDLE_N" --hold 5s ;;
    fanout) bench fanout --connections "$FANOUT_N" --rate 50 --duration "$DURATION" ;;
    flood) bench flood --connections "$FLOOD_N" --rate "$FLOOD_RATE" --duration "$DURATION" ;;
    big) bench flood --connections "$BIG_N" --rate "$BIG_RATE" --duration "$DURATION" ;;
    # The capacity ladder (kept under the workload name `ramp`, which the
    # raw lines of earlier runs use): three runs per rate judged by their
    # median, on past one failed rate, stopping after two in a row.
    ramp) bench --server-pid "$server_pid" capacity --connections "$RAMP_N" --rates "$RATES" --step "$STEP" --bound 100ms --runs "$RUNS" ;;
    chat) bench chat --connections "$CHAT_N" --rate "$CHAT_RATE" --duration "$DURATION" ;;
    # Four source addresses, so the tool's ephemeral ports never run short.
    scale) bench --source-addrs 4 --server-pid "$server_pid" scale --steps "$SCALE_STEPS" --flood-clients "$SCALE_FLOOD_N" --flood-rate 1000 --flood-duration "$DURATION" ;;
  esac
}

# CPU seconds (user + system) a process has used so far.
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }

# One server's workloads; each adds one JSON line to $results/new.jsonl,
# tagged with the server, the workload, the server's CPU time during the
# load, and the load average before it (to spot a busy machine).
run_all() {
  local name=$1; shift
  [[ " $SERVERS " == *" $name "* ]] || return 0
  for workload in $WORKLOADS; do
    (( round == 1 )) || [[ " $REPEATED " == *" $workload "* ]] || continue
    [[ $name == tally ]] || [[ " $TALLY_ONLY " != *" $workload "* ]] || continue
    local db; db=$(mktemp -d)
    step "$name: $workload"
    sleep "$COOLDOWN"
    start_server "$@" --database-url "sqlite://$db/t.db"
    local load cpu0 line
    load=$(cut -d' ' -f1 /proc/loadavg)
    cpu0=$(cpu_seconds "$server_pid")
    # A workload that fails (a server that drops connections, say) is
    # recorded with its error instead of stopping the whole comparison.
    if ! line=$(run_workload "$workload" 2>"$results/bench.err"); then
      cat "$results/bench.err" >&2
      line=$(node -e 'console.log(JSON.stringify({ error: process.argv[1] }))' "$(tail -1 "$results/bench.err")")
    fi
    local cpu; cpu=$(awk -v a="$cpu0" -v b="$(cpu_seconds "$server_pid")" 'BEGIN { printf "%.2f", b - a }')
    # The measurement's own fields come after the tags, in one JSON object.
    node -e '
      const [line, server, workload, commit, cpu, load, round] = process.argv.slice(1);
      const e = process.env;
      console.log(JSON.stringify({
        server, workload, commit, round: Number(round), measured_at: new Date().toISOString(),
        machine: e.machine, versions: e.versions,
        server_cpus: e.SERVER_CPUS || "all", tool_cpus: e.TOOL_CPUS || "all",
        server_cpu_s: Number(cpu), loadavg_before: Number(load),
        ...JSON.parse(line),
      }));
    ' "$line" "$name" "$workload" "$commit" "$cpu" "$load" "$round" >>"$results/new.jsonl"
    stop_server
    rm -rf "$db"
  done
}

# The Node server takes no --database-url; a wrapper drops it.
node_server() { while [[ $# -gt 0 && $1 != --database-url ]]; do shift; done; exec node bench/node/server.js; }
export -f node_server

# The load tool opens thousands of connections from one address and clicks
# and chats far faster than a person: tally's rate limits and connection
# caps are switched off for it (they would refuse the load, not measure it).
NO_LIMITS=(--click-limit 0 --message-limit 0 --typing-limit 0 --join-limit 0 --refresh-limit 0 --new-name-limit 0 --new-conversation-limit 0 --max-connections-per-ip 0)
for round in $(seq "$ROUNDS"); do
  (( ROUNDS == 1 )) || step "round $round of $ROUNDS"
  run_all tally target/release/tally serve --addr 127.0.0.1:0 "${NO_LIMITS[@]}"
  run_all node-throttled env THROTTLE_MS=10 bash -c 'node_server "$@"' node_server
  run_all node bash -c 'node_server "$@"' node_server
done

step "report"
touch "$results/new.jsonl"
# The report is written first, to a scratch directory: if it fails, the raw
# lines and the report in $OUT stay as they were, in step with each other,
# and this run's lines are kept beside them, so a fixed report can take
# them without measuring again (node bench/report.mjs LINES OUTDIR).
mkdir -p "$results/report"
if ! node bench/report.mjs "$results/new.jsonl" "$results/report"; then
  cp "$results/new.jsonl" "$RAW.failed-report"
  echo "the report failed; this run's raw lines are in $RAW.failed-report" >&2
  exit 1
fi
cp "$results/report/benchmarks.md" "$results/report/ramp.svg" "$OUT/"
[[ ! -f "$results/report/scale.svg" ]] || cp "$results/report/scale.svg" "$OUT/"
cp "$results/new.jsonl" "$RAW"
echo "wrote $OUT/benchmarks.md, $OUT/ramp.svg and $RAW" >&2
