#!/usr/bin/env bash
# 100,000 connections on this machine: NODES nodes of tally sharing one
# Redis (a redis-server of this script's own, on a free port) and one fresh
# PostgreSQL database, and `tally-bench crowd` split over PROCESSES shard
# processes, since no process here may hold more than 20,000 descriptors.
# The nodes are pinned to the server CPUs and the tool to the tool CPUs
# (core 0 and core 1 on 2 cores). One run: the connections held in STEPS,
# at each the sum of the nodes' RSS after connecting and after traffic,
# clicks that must reach every connection, a flood from FLOOD_CLIENTS of
# them at FLOOD_RATE clicks/s with every connection ending on the exact
# total, and each node's /healthz all the while. Writes the raw line to
# $OUT/crowd.jsonl and the report to $OUT/benchmarks-crowd.md with the chart
# $OUT/crowd.svg; a run that stopped before its last step leaves those alone,
# writes $OUT/crowd-stopped.jsonl and $OUT/benchmarks-crowd-stopped.md
# instead, and exits 1. Loads go to 127.0.0.1 only.
#
# Knobs (environment): PG (postgres://postgres@127.0.0.1:5432), NODES (6),
# PROCESSES (6), STEPS (20000,50000,100000), FLOOD_CLIENTS (1000),
# FLOOD_RATE (1000), FLOOD_DURATION (10s), CLICKS (5), CONNECT_RATE (3000
# per second), SOURCES (8 loopback source addresses), FLUSH (100ms, the
# nodes' --flush-interval), OUT (docs), QUICK=1 for a seconds-long smoke run
# (2 nodes, 3 processes, a few hundred connections), LOGS (a directory that
# keeps the nodes' logs; by default they go with the scratch directory).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${QUICK:-}" == 1 ]]; then
  : "${NODES:=2}" "${PROCESSES:=3}" "${STEPS:=60,150}" "${FLOOD_CLIENTS:=20}" "${FLOOD_RATE:=100}"
  : "${FLOOD_DURATION:=1s}" "${CLICKS:=2}" "${CONNECT_RATE:=500}" "${OUT:=$(mktemp -d)}"
fi
: "${PG:=postgres://postgres@127.0.0.1:5432}" "${NODES:=6}" "${PROCESSES:=6}" "${STEPS:=20000,50000,100000}"
: "${FLOOD_CLIENTS:=1000}" "${FLOOD_RATE:=1000}" "${FLOOD_DURATION:=10s}" "${CLICKS:=5}"
: "${CONNECT_RATE:=3000}" "${SOURCES:=8}" "${FLUSH:=100ms}" "${OUT:=docs}"
mkdir -p "$OUT"
source bench/lib.sh
ulimit -n "$(ulimit -Hn)"

cargo build --release --locked -p tally -p tally-bench >&2
bin=target/release
work=$(mktemp -d)
database=tally_crowd_bench
pids=()
cleanup() {
  [[ -z "${LOGS:-}" ]] || { mkdir -p "$LOGS" && cp "$work"/*.log "$LOGS/" 2>/dev/null || true; }
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql "$PG/test" -qc "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

start_redis
psql "$PG/test" -qc "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null
psql "$PG/test" -qc "CREATE DATABASE $database" >/dev/null

start_nodes "$NODES" "$PG/$database" node

commit=$(git rev-parse --short HEAD)
[[ -z "$(git status --porcelain -- src bench/tally-bench Cargo.toml Cargo.lock)" ]] || commit="$commit+changes"
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
command="taskset -c $TOOL_CPUS tally-bench --source-addrs $SOURCES --connect-rate $CONNECT_RATE --url <$NODES nodes> --server-pid <their pids> crowd --processes $PROCESSES --steps $STEPS --clicks $CLICKS --flood-clients $FLOOD_CLIENTS --flood-rate $FLOOD_RATE --flood-duration $FLOOD_DURATION"
line=$(taskset -c "$TOOL_CPUS" "$bin/tally-bench" --quiet --source-addrs "$SOURCES" --connect-rate "$CONNECT_RATE" \
  --url "$(IFS=,; echo "${urls[*]}")" --server-pid "$(IFS=,; echo "${node_pids[*]}")" \
  crowd --processes "$PROCESSES" --steps "$STEPS" --clicks "$CLICKS" \
  --flood-clients "$FLOOD_CLIENTS" --flood-rate "$FLOOD_RATE" --flood-duration "$FLOOD_DURATION")
for pid in "${node_pids[@]}"; do
  kill -0 "$pid" 2>/dev/null || { echo "a node died during the run:" >&2; tail -5 "$work"/node*.log >&2; exit 1; }
done

machine=$(machine_line)
node -e '
  const [line, commit, started, machine, rustc, redis, pg, command, serverCpus, toolCpus, flush] = process.argv.slice(1);
  console.log(JSON.stringify({ commit, measured_at: started, machine, versions: `${rustc}; ${redis}; ${pg}`, command,
    server_cpus: serverCpus, tool_cpus: toolCpus, flush_interval: flush, ...JSON.parse(line) }));
' "$line" "$commit" "$started" "$machine" "$(rustc --version)" "$(redis-server --version | cut -d' ' -f1-3)" \
  "$(psql "$PG/test" -Atc 'SHOW server_version' | sed 's/^/PostgreSQL /')" "$command" "$SERVER_CPUS" "$TOOL_CPUS" "$FLUSH" >"$work/crowd.jsonl"

# The report is rendered in scratch first, so a renderer that fails leaves
# the published one alone; a run that stopped before its last step is kept
# beside it, not published in its place.
mkdir -p "$work/report"
node bench/crowd-report.mjs "$work/crowd.jsonl" "$work/report"
stopped=$(node -e 'const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); if (r.stopped) console.log(r.stopped)' "$work/crowd.jsonl")
if [[ -n "$stopped" ]]; then
  cp "$work/crowd.jsonl" "$OUT/crowd-stopped.jsonl"
  cp "$work/report/benchmarks-crowd.md" "$OUT/benchmarks-crowd-stopped.md"
  echo "the run stopped before its last step ($stopped): its line and report are in $OUT/crowd-stopped.jsonl and $OUT/benchmarks-crowd-stopped.md; $OUT/benchmarks-crowd.md is unchanged" >&2
  exit 1
fi
cp "$work/crowd.jsonl" "$OUT/crowd.jsonl"
cp "$work/report/benchmarks-crowd.md" "$work/report/crowd.svg" "$OUT/"
echo "wrote $OUT/crowd.jsonl, $OUT/benchmarks-crowd.md and $OUT/crowd.svg" >&2
