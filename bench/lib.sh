# Shell helpers shared by the multi-node benchmark scripts (cluster.sh,
# crowd.sh). Sourced, not run: it defines functions and sets SERVER_CPUS and
# TOOL_CPUS (the first half of the cores for the servers, the rest for the
# load tool; core 0 and core 1 on 2 cores) unless they are set already.
# The caller keeps the processes it starts in the array `pids` and its
# scratch files in `$work`.

ncpu=$(nproc)
if (( ncpu >= 2 )); then
  half=$((ncpu / 2))
  cpu_range() { if (( $1 == $2 )); then echo "$1"; else echo "$1-$2"; fi; }
  : "${SERVER_CPUS:=$(cpu_range 0 $((half - 1)))}" "${TOOL_CPUS:=$(cpu_range "$half" $((ncpu - 1)))}"
else
  : "${SERVER_CPUS:=0}" "${TOOL_CPUS:=0}"
fi

# A TCP port on 127.0.0.1 that nothing listens on now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts a redis-server of the script's own on a free port (nothing kept on
# disk), waits until it answers, and sets `redis_port`.
start_redis() {
  redis_port=$(free_port)
  redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no >"$work/redis.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "redis-server did not start:" >&2
  cat "$work/redis.log" >&2
  return 1
}

# Starts $1 nodes of tally ($bin/tally) on free ports, pinned to
# SERVER_CPUS, sharing Redis on `redis_port` and the database URL $2, with
# every limit off (the load opens thousands of connections from a few
# addresses and clicks far faster than people) and --flush-interval $FLUSH.
# Logs go to $work/<$3>-<i>.log. Waits until each is ready and sets `urls`
# and `node_pids`.
start_nodes() {
  local count=$1 database=$2 name=$3 i port
  urls=()
  node_pids=()
  for i in $(seq "$count"); do
    port=$(free_port)
    TALLY_REDIS_URL="redis://127.0.0.1:$redis_port" TALLY_DATABASE_URL="$database" TALLY_FLUSH_INTERVAL="$FLUSH" \
      TALLY_CLICK_LIMIT=0 TALLY_MESSAGE_LIMIT=0 TALLY_JOIN_LIMIT=0 TALLY_TYPING_LIMIT=0 TALLY_REFRESH_LIMIT=0 \
      TALLY_NEW_NAME_LIMIT=0 TALLY_NEW_CONVERSATION_LIMIT=0 TALLY_MAX_CONNECTIONS_PER_IP=0 \
      taskset -c "$SERVER_CPUS" "$bin/tally" --addr "127.0.0.1:$port" >"$work/$name-$i.log" 2>&1 &
    pids+=($!)
    node_pids+=($!)
    urls+=("http://127.0.0.1:$port")
  done
  local url
  for url in "${urls[@]}"; do
    for _ in $(seq 100); do curl -fs "$url/readyz" >/dev/null && break; sleep 0.1; done
    curl -fs "$url/readyz" >/dev/null || { echo "a node did not start:" >&2; tail -5 "$work/$name"-*.log >&2; return 1; }
  done
}

# The machine, as the reports print it.
machine_line() {
  echo "$(nproc) × $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(free -g | awk '/^Mem:/ { print $2 }') GiB, $(uname -sr)"
}
