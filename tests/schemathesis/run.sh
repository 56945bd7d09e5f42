#!/usr/bin/env bash
# Tries the HTTP API the way a machine would: schemathesis reads the OpenAPI
# document a running tally serves at /api/openapi.json, generates requests
# from it (valid and invalid), and fails on any 5xx or any answer the
# document does not describe. Prints how many cases ran.
#
#   tests/schemathesis/run.sh [TALLY_BIN]     (default: target/debug/tally)
#
# Installs schemathesis (requirements.txt) into target/schemathesis-venv.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${1:-$root/target/debug/tally}
venv=$root/target/schemathesis-venv
if [[ ! -x "$venv/bin/st" ]] || ! cmp -s "$here/requirements.txt" "$venv/requirements.txt"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$venv/requirements.txt"
fi
"$venv/bin/st" --version

work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
export TALLY_API_KEY=api-key-0123456789abcdef
export TALLY_ADMIN_TOKEN=admin-token-0123456789abcdef
# Every endpoint on (keys set, guest login on by default), limits off so the
# generated load is answered rather than rate-limited.
env -u RUST_LOG TALLY_NEW_NAME_LIMIT=0 TALLY_NEW_CONVERSATION_LIMIT=0 \
  "$bin" --addr 127.0.0.1:0 --database-url "sqlite://$work/tally.db" \
  --max-connections-per-ip 0 --click-limit 0 >"$work/log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  grep -q "listening on" "$work/log" && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
url=$(grep -o 'listening on http://[0-9.:]*' "$work/log" | head -1 | sed 's/listening on //')
[[ -n "$url" ]] || { cat "$work/log" >&2; echo "tally did not start" >&2; exit 1; }

cd "$here"
status=0
# A fixed seed: CI tries the same cases each run, so a failure is the
# code's, not the draw's, and can be replayed. Set TALLY_SCHEMATHESIS_SEED to
# explore other cases.
"$venv/bin/st" run "$url/api/openapi.json" --checks all --max-examples 100 \
  --seed "${TALLY_SCHEMATHESIS_SEED:-20261202}" \
  --no-color --report json --report-dir "$work/report" || status=$?
python3 - "$work/report" <<'PY'
import glob, json, sys
reports = glob.glob(f"{sys.argv[1]}/*.json")
if not reports:
    sys.exit("schemathesis wrote no report")
cases = json.load(open(reports[0]))["test_cases"]
print(f"schemathesis: {cases['generated']} cases, {cases['with_failures']} with failures, "
      f"{cases['errored']} errored")
PY
if ! kill -0 "$pid" 2>/dev/null; then
  cat "$work/log" >&2
  echo "tally died during the run" >&2
  exit 1
fi
exit "$status"
