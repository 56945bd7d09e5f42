#!/usr/bin/env bash
# Measures tally on a database with many users (seed it first with
# bench/seed-users.sh): start-up time, RSS, rank lookups and leaderboard reads
# while users click, and how long flushes of many distinct users take.
#
#   bench/users.sh sqlite:///tmp/big.db
#
# The server runs on core 0 and the load (tally-bench and the HTTP probe) on
# core 1 when the machine has two cores or more. Knobs (environment):
# SEEDED (1000000: how many users the database holds, as given to
# seed-users.sh), CLIENTS (10000 users u0…, clicking), RATE (10000 clicks/s in all),
# DURATION (10s), REQUESTS (2000 HTTP reads of each kind), PIN (1; 0 lets
# both share every core). Loads go to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
url=${1:?usage: bench/users.sh DATABASE_URL}
: "${SEEDED:=1000000}" "${CLIENTS:=10000}" "${RATE:=10000}" "${DURATION:=10s}" "${REQUESTS:=2000}"
server_cpu=; tool_cpu=
if [[ ${PIN:-1} == 1 ]] && (( $(nproc) >= 2 )) && command -v taskset >/dev/null; then server_cpu="taskset -c 0"; tool_cpu="taskset -c 1"; fi
ulimit -n "$(ulimit -Hn)"

cargo build --release --locked --workspace --bins >&2
log=$(mktemp)
trap 'kill "$pid" 2>/dev/null; rm -f "$log"' EXIT
started=$(date +%s.%N)
# Limits off: the load tool connects 1,000 users from one address.
$server_cpu target/release/tally --addr 127.0.0.1:0 --database-url "$url" \
  --click-limit 0 --new-name-limit 0 --max-connections-per-ip 0 \
  --log warn,tally::serve=info,tally::counter::flush=debug >"$log" 2>&1 &
pid=$!
for _ in $(seq 3000); do grep -q 'listening on' "$log" && break; sleep 0.01; done
ready=$(date +%s.%N)
addr=$(grep -o 'http://[0-9.:]*' "$log" | head -1)
[[ -n "$addr" ]] || { cat "$log" >&2; exit 1; }
rss() { awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$pid/status"; }
echo "database: ${url/\/\/*@/\/\/***@}"
echo "start-up: $(awk -v a="$started" -v b="$ready" 'BEGIN { printf "%.2f", b - a }') s until listening; RSS $(rss) MiB"

# Users click while the HTTP probe reads ranks and the leaderboard.
$tool_cpu target/release/tally-bench --quiet --url "$addr" --users u \
  flood --connections "$CLIENTS" --rate "$RATE" --duration "$DURATION" >"$log.flood" &
flood=$!
# Let the clients connect before probing, so the reads overlap the clicks.
for _ in $(seq 600); do
  [[ $(curl -s "$addr/healthz" | grep -o '"connections":[0-9]*' | cut -d: -f2) -ge $CLIENTS ]] && break
  sleep 0.1
done
$tool_cpu python3 - "$addr" "$REQUESTS" "$SEEDED" <<'PY'
import random, sys, time, http.client, urllib.parse
addr, n, seeded = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
host = urllib.parse.urlparse(addr).netloc
conn = http.client.HTTPConnection(host)
def probe(label, paths):
    lat = []
    for path in paths:
        t = time.perf_counter()
        conn.request("GET", path)
        r = conn.getresponse(); r.read()
        assert r.status == 200, (path, r.status)
        lat.append((time.perf_counter() - t) * 1000)
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(len(lat) * p))]
    print(f"{label}: p50 {q(0.5):.2f} ms, p99 {q(0.99):.2f} ms, max {lat[-1]:.2f} ms ({len(lat)} requests, one connection, during the clicks)")
probe("GET /api/users/{name}", [f"/api/users/u{random.randrange(seeded)}" for _ in range(n)])
probe("GET /api/leaderboard?limit=100", ["/api/leaderboard?limit=100"] * n)
PY
wait "$flood"
python3 - "$log.flood" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"clicks: {r['clicks']} by {r['clients']} users at {r['achieved_rate_per_s']:.0f}/s, converged {r['converged']}")
PY
echo "RSS after the load: $(rss) MiB"
kill "$pid"; wait "$pid" || true
# The flusher logs each batch at debug level: users (counters − 1) and time.
python3 - "$log" <<'PY'
import re, sys
rows = [(int(m.group(1)) - 1, float(m.group(2))) for m in
        re.finditer(r'counters=(\d+) elapsed_ms=([\d.]+)', open(sys.argv[1]).read())]
big = sorted(ms for users, ms in rows if users >= 1000)
if big:
    print(f"flushes of 1,000+ users: {len(big)}, users per flush up to {max(u for u, _ in rows)}, "
          f"time p50 {big[len(big)//2]:.0f} ms, max {big[-1]:.0f} ms")
else:
    print("no flush of 1,000+ users was logged")
PY
rm -f "$log.flood"
