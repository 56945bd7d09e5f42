#!/usr/bin/env bash
# One node and three nodes of tally on this machine, same workloads, one
# run: a redis-server of this script's own (a free port), a fresh
# PostgreSQL database, the nodes pinned to the server CPUs and tally-bench
# to the tool CPUs (core 0 and core 1 on 2 cores), one configuration at a
# time. Writes the raw lines to $OUT/cluster.jsonl and the report to
# $OUT/benchmarks-cluster.md, which bench/report.mjs includes in
# docs/benchmarks.md. Loads go to 127.0.0.1 only.
#
# Knobs (environment): PG (postgres://postgres@127.0.0.1:5432), N (1000
# connections), FANOUT_RATE (1000 clicks/s), FLOOD_RATE (1000 clicks/s),
# CHAT_RATE (50 messages/s), DURATION (10s), FLUSH (100ms, the nodes'
# --flush-interval), OUT (docs), QUICK=1 for a seconds-long smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${QUICK:-}" == 1 ]]; then
  : "${N:=30}" "${FANOUT_RATE:=50}" "${FLOOD_RATE:=100}" "${CHAT_RATE:=10}" "${DURATION:=1s}"
fi
: "${PG:=postgres://postgres@127.0.0.1:5432}" "${N:=1000}" "${FANOUT_RATE:=1000}" "${FLOOD_RATE:=1000}"
: "${CHAT_RATE:=50}" "${DURATION:=10s}" "${FLUSH:=100ms}" "${OUT:=docs}"
mkdir -p "$OUT"
source bench/lib.sh

cargo build --release --locked -p tally -p tally-bench >&2
bin=target/release
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql "$PG/test" -qc "DROP DATABASE IF EXISTS tally_cluster_bench WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

start_redis
db="$PG/tally_cluster_bench"
commits() { psql "$PG/test" -Atc "SELECT xact_commit FROM pg_stat_database WHERE datname = 'tally_cluster_bench'"; }

raw="$OUT/cluster.jsonl"
: >"$raw"
commit=$(git rev-parse --short HEAD)
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')

for nodes in 1 3; do
  psql "$PG/test" -qc "DROP DATABASE IF EXISTS tally_cluster_bench WITH (FORCE)" >/dev/null
  psql "$PG/test" -qc "CREATE DATABASE tally_cluster_bench" >/dev/null
  redis-cli -p "$redis_port" flushall >/dev/null
  start_nodes "$nodes" "$db" "node$nodes"
  list=$(IFS=,; echo "${urls[*]}")
  for workload in fanout flood chat; do
    case $workload in
      fanout) args=(fanout --connections "$N" --rate "$FANOUT_RATE" --duration "$DURATION") ;;
      flood) args=(flood --connections "$N" --rate "$FLOOD_RATE" --duration "$DURATION" --users u) ;;
      chat) args=(chat --connections "$N" --rate "$CHAT_RATE" --duration "$DURATION" --conversation "bench-$nodes") ;;
    esac
    before=$(commits)
    started=$(date +%s.%N)
    line=$(taskset -c "$TOOL_CPUS" "$bin/tally-bench" --quiet --source-addrs 4 --url "$list" "${args[@]}")
    elapsed=$(echo "$(date +%s.%N) - $started" | bc)
    after=$(commits)
    rss=0
    for pid in "${node_pids[@]}"; do rss=$((rss + $(awk '/VmRSS/ {print $2}' "/proc/$pid/status"))); done
    node -e '
      const [line, nodes, workload, before, after, elapsed, rss, commit, cpu] = process.argv.slice(1);
      const r = JSON.parse(line);
      Object.assign(r, { nodes: +nodes, workload, commit, cpu, measured_at: new Date().toISOString(),
        db_commits_per_s: (after - before) / elapsed, db_commits_per_s_per_node: (after - before) / elapsed / nodes,
        nodes_rss_kib: +rss });
      console.log(JSON.stringify(r));
    ' "$line" "$nodes" "$workload" "$before" "$after" "$elapsed" "$rss" "$commit" "$cpu" >>"$raw"
    echo "$nodes node(s), $workload: done" >&2
  done
  for pid in "${node_pids[@]}"; do kill "$pid"; done
  wait "${node_pids[@]}" 2>/dev/null || true
done

node - "$raw" "$OUT/benchmarks-cluster.md" "$SERVER_CPUS" "$TOOL_CPUS" "$N" "$FANOUT_RATE" "$FLOOD_RATE" "$CHAT_RATE" "$DURATION" "$FLUSH" <<'EOF'
const fs = require('fs');
const [raw, out, serverCpus, toolCpus, n, fanoutRate, floodRate, chatRate, duration, flush] = process.argv.slice(2);
const rows = fs.readFileSync(raw, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
const get = (nodes, workload) => rows.find((r) => r.nodes === nodes && r.workload === workload);
const ms = (l) => (l ? `${l.p50_ms.toFixed(1)} / ${l.p99_ms.toFixed(1)}` : '–');
const first = rows[0] ?? {};
let md = `## Cluster: 1 node and 3 nodes on one machine (bench/cluster.sh)\n\n`;
md += `One run of \`bench/cluster.sh\` at commit ${first.commit}, measured ${first.measured_at ?? 'at an unrecorded time'}, on ${first.cpu}: the nodes share core(s) ${serverCpus} `;
md += `(\`taskset\`), tally-bench has core(s) ${toolCpus}; one PostgreSQL database and one Redis shared by the nodes; `;
md += `limits off (\`--click-limit 0 --max-connections-per-ip 0\` and the other event limits); \`--flush-interval ${flush}\`. `;
md += `${n} connections spread over the nodes (connection i on node i mod n), the clicker and chat's first sender on the first node. `;
md += `Latencies are p50 / p99 in ms. With 3 nodes on the same cores as 1, this measures what the cluster costs, not what it adds: `;
md += `three processes share what one had.\n\n`;
md += `| workload | nodes | result | all clients | clients on other nodes | converged / lost | DB transactions/s (per node; reads included) | RSS of all nodes |\n|---|---:|---|---:|---:|---|---:|---:|\n`;
for (const nodes of [1, 3]) {
  const f = get(nodes, 'fanout');
  if (f) md += `| fanout, ${fanoutRate} clicks/s | ${nodes} | click → every listener | ${ms(f.delivery)} | ${ms(f.delivery_other_nodes)} | ${f.missed_updates} missed, ${f.listeners_missing_final_total} not on the final total | ${f.db_commits_per_s.toFixed(1)} (${f.db_commits_per_s_per_node.toFixed(1)}) | ${(f.nodes_rss_kib / 1024).toFixed(0)} MiB |\n`;
  const fl = get(nodes, 'flood');
  if (fl) md += `| flood, ${floodRate} clicks/s from all clients | ${nodes} | ack; visible at the last node* | ${ms(fl.ack)}; ${ms(fl.visible)} | – | ${fl.converged ? 'converged exactly' : 'NOT converged'}, ${fl.unacked} unacked, ${fl.achieved_rate_per_s.toFixed(0)} clicks/s | ${fl.db_commits_per_s.toFixed(1)} (${fl.db_commits_per_s_per_node.toFixed(1)}) | ${(fl.nodes_rss_kib / 1024).toFixed(0)} MiB |\n`;
  const c = get(nodes, 'chat');
  if (c) md += `| chat, ${chatRate} messages/s, one conversation | ${nodes} | message → every member | ${ms(c.delivery)} | ${ms(c.delivery_other_nodes)} | ${c.lost} lost, ${c.refused} refused | ${c.db_commits_per_s.toFixed(1)} (${c.db_commits_per_s_per_node.toFixed(1)}) | ${(c.nodes_rss_kib / 1024).toFixed(0)} MiB |\n`;
}
md += `\n\\* With several nodes a flood click's total is the one its own node acknowledged, which may not count other nodes' latest clicks yet, so the flood's "visible" is a lower bound there; fanout's "clients on other nodes" (one clicker, so its totals are exact) is the cross-node figure.\n`;
md += `\nTargets (issue #26): fanout to ${n} clients over 3 nodes at ${fanoutRate} clicks/s, p99 click → visible on other nodes under 250 ms: `;
const f3 = get(3, 'fanout');
md += f3 ? `${f3.delivery_other_nodes.p99_ms.toFixed(1)} ms, ${f3.missed_updates === 0 && f3.listeners_missing_final_total === 0 ? 'exact' : 'NOT exact'} — ${f3.delivery_other_nodes.p99_ms < 250 && f3.missed_updates === 0 ? 'met' : 'missed'}` : 'not run';
const c3 = get(3, 'chat');
md += `; a message to ${n} members over 3 nodes at ${chatRate}/s, p99 under 100 ms: `;
md += c3 ? `${c3.delivery.p99_ms.toFixed(1)} ms, ${c3.lost} lost — ${c3.delivery.p99_ms < 100 && c3.lost === 0 ? 'met' : 'missed'}` : 'not run';
md += `.\n`;
fs.writeFileSync(out, md);
console.log(`wrote ${out}`);
EOF
