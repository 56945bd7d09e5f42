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
# $OUT/crowd.svg. Loads go to 127.0.0.1 only.
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
ncpu=$(nproc)
if (( ncpu >= 2 )); then
  half=$((ncpu / 2))
  : "${SERVER_CPUS:=0-$((half - 1))}" "${TOOL_CPUS:=$half-$((ncpu - 1))}"
  SERVER_CPUS=${SERVER_CPUS/#0-0/0}; TOOL_CPUS=${TOOL_CPUS/#1-1/1}
else
  SERVER_CPUS=0 TOOL_CPUS=0
fi
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

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
redis_port=$(free_port)
redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no >"$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
psql "$PG/test" -qc "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null
psql "$PG/test" -qc "CREATE DATABASE $database" >/dev/null

urls=()
node_pids=()
for i in $(seq "$NODES"); do
  port=$(free_port)
  # Limits off: the load opens thousands of connections from a few
  # addresses and clicks far faster than people.
  TALLY_REDIS_URL="redis://127.0.0.1:$redis_port" TALLY_DATABASE_URL="$PG/$database" TALLY_FLUSH_INTERVAL="$FLUSH" \
    TALLY_CLICK_LIMIT=0 TALLY_MAX_CONNECTIONS_PER_IP=0 \
    taskset -c "$SERVER_CPUS" "$bin/tally" --addr "127.0.0.1:$port" >"$work/node$i.log" 2>&1 &
  pids+=($!); node_pids+=($!)
  urls+=("http://127.0.0.1:$port")
done
for url in "${urls[@]}"; do
  for _ in $(seq 100); do curl -fs "$url/readyz" >/dev/null && break; sleep 0.1; done
  curl -fs "$url/readyz" >/dev/null || { echo "a node did not start:" >&2; cat "$work"/node*.log >&2; exit 1; }
done

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

machine="$(nproc) × $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(free -g | awk '/^Mem:/ { print $2 }') GiB, $(uname -sr)"
node -e '
  const [line, commit, started, machine, rustc, redis, pg, command, serverCpus, toolCpus, flush] = process.argv.slice(1);
  console.log(JSON.stringify({ commit, measured_at: started, machine, versions: `${rustc}; ${redis}; ${pg}`, command,
    server_cpus: serverCpus, tool_cpus: toolCpus, flush_interval: flush, ...JSON.parse(line) }));
' "$line" "$commit" "$started" "$machine" "$(rustc --version)" "$(redis-server --version | cut -d' ' -f1-3)" \
  "$(psql "$PG/test" -Atc 'SHOW server_version' | sed 's/^/PostgreSQL /')" "$command" "$SERVER_CPUS" "$TOOL_CPUS" "$FLUSH" >"$OUT/crowd.jsonl"
node bench/crowd-report.mjs "$OUT/crowd.jsonl" "$OUT"
