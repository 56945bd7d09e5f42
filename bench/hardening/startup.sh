#!/usr/bin/env bash
# Start-up time until listening and RSS after start-up, three runs:
#   bench/hardening/startup.sh path/to/tally DATABASE_URL
bin=$1; url=$2
for run in 1 2 3; do
  log=$(mktemp)
  start=$(date +%s.%N)
  $bin --addr 127.0.0.1:0 --database-url "$url" >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 3000); do grep -q 'listening on' "$log" && break; sleep 0.005; done
  ready=$(date +%s.%N)
  sleep 0.5
  rss=$(awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' /proc/$pid/status)
  kill $pid; wait $pid 2>/dev/null
  echo "run $run: $(awk -v a=$start -v b=$ready 'BEGIN { printf "%.2f", b - a }') s until listening, RSS $rss MiB"
  rm -f "$log"
done
