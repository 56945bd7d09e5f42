#!/usr/bin/env bash
# Seeds a tally database with N users (default 1,000,000) named u0 … u{N-1},
# with Zipf-like counts (user i has about 1,000,000 / (i + 1) clicks, at least
# 1), and sets the global total to the sum of their counts. For measuring
# tally with a popular counter's user table: start-up time and memory, rank
# lookups, leaderboard reads, flushes.
#
#   bench/seed-users.sh sqlite:///tmp/big.db [N]
#   bench/seed-users.sh postgres://postgres@127.0.0.1:5432/big [N]
#   bench/seed-users.sh mysql://root@127.0.0.1:3306/big [N]
#
# The database must exist (SQLite files are created); tally's migrations are
# applied first by starting the release build once against it. Needs the
# backend's command-line client: sqlite3, psql or mysql. Replaces any users
# the database had.
set -euo pipefail
cd "$(dirname "$0")/.."
url=${1:?usage: bench/seed-users.sh DATABASE_URL [N]}
n=${2:-1000000}

cargo build --release --locked --bin tally >&2
# Migrate: start tally on the database, wait until it listens, stop it.
log=$(mktemp)
target/release/tally --addr 127.0.0.1:0 --database-url "$url" >"$log" 2>&1 &
pid=$!
for _ in $(seq 300); do grep -q 'listening on' "$log" && break; sleep 0.1; done
kill "$pid"; wait "$pid" || true
grep -q 'listening on' "$log" || { cat "$log" >&2; exit 1; }
rm -f "$log"

count='GREATEST(1, 1000000 / (i + 1))'
case $url in
  sqlite:*)
    file=${url#sqlite://}
    sqlite3 "$file" <<SQL
BEGIN;
DELETE FROM users;
WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < $n)
INSERT INTO users (username, user_count) SELECT 'u' || i, MAX(1, 1000000 / (i + 1)) FROM seq;
INSERT INTO counters (name, value) VALUES ('global', (SELECT SUM(user_count) FROM users))
  ON CONFLICT (name) DO UPDATE SET value = excluded.value;
COMMIT;
SQL
    ;;
  postgres:* | postgresql:*)
    psql "$url" -v ON_ERROR_STOP=1 -q <<SQL
BEGIN;
TRUNCATE users;
INSERT INTO users (username, user_count)
  SELECT 'u' || i, $count FROM generate_series(0, $n - 1) AS i;
INSERT INTO counters (name, value) VALUES ('global', (SELECT SUM(user_count) FROM users))
  ON CONFLICT (name) DO UPDATE SET value = excluded.value;
COMMIT;
ANALYZE users;
SQL
    ;;
  mysql:*)
    # mysql://USER[:PASS]@HOST:PORT/DB
    rest=${url#mysql://}; creds=${rest%%@*}; hostpart=${rest#*@}
    user=${creds%%:*}; pass=; [[ $creds == *:* ]] && pass=${creds#*:}
    host=${hostpart%%/*}; db=${hostpart#*/}; port=${host##*:}; host=${host%%:*}
    mysql_() { MYSQL_PWD=$pass mysql -u"$user" -h"$host" -P"$port" "$db" "$@"; }
    # The recursion limit is named differently in MariaDB and MySQL.
    if mysql_ -Nse 'SELECT VERSION()' | grep -qi mariadb; then
      limit='SET SESSION max_recursive_iterations = 100000000;'
    else
      limit='SET SESSION cte_max_recursion_depth = 100000000;'
    fi
    mysql_ <<SQL
$limit
BEGIN;
DELETE FROM users;
INSERT INTO users (username, user_count)
  WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < $n)
  SELECT CONCAT('u', i), GREATEST(1, 1000000 DIV (i + 1)) FROM seq;
INSERT INTO counters (name, value) SELECT 'global', SUM(user_count) FROM users
  ON DUPLICATE KEY UPDATE value = VALUES(value);
COMMIT;
SQL
    ;;
  *) echo "unsupported database URL: $url" >&2; exit 2 ;;
esac
echo "seeded $n users into ${url/\/\/*@/\/\/***@}" >&2
