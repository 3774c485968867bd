#!/usr/bin/env bash
# The REST API as a contract (issue 12), against the real binary:
#   1. docs/openapi.json is valid OpenAPI 3.1 (openapi-spec-validator);
#   2. schemathesis, driven by the document the server serves, sends generated
#      requests to every operation (seeded tenant, admin token, two live
#      sessions) and checks each answer: no 5xx, the status code, the content
#      type and the body are the ones the document gives.
# Bounded for the test command (API_CONTRACT_EXAMPLES per operation, default
# 25); a longer run: API_CONTRACT_EXAMPLES=500 bash scripts/test-api-contract.sh
# The tools come from PyPI into .venv-api/ (scripts/ensure-api-tools.sh).
# ROSTER_BIN picks the server binary (default target/debug/roster, built here
# when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
bin_dir=$(bash scripts/ensure-api-tools.sh)
examples=${API_CONTRACT_EXAMPLES:-25}
roster=${ROSTER_BIN:-$PWD/target/debug/roster}
# The server refuses ROSTER_* variables that are no setting of its own.
unset ROSTER_BIN
[ -x "$roster" ] || cargo build --locked -p roster --bin roster
roster=$(realpath "$roster")

"$bin_dir/openapi-spec-validator" docs/openapi.json

work=$(mktemp -d)
server_pid=""
seed_pid=""
cleanup() {
  [ -n "$seed_pid" ] && kill "$seed_pid" 2>/dev/null || true
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$("$bin_dir/python" -c 'import socket
for p in range(41000, 60999, 7):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); s.close(); print(p); break
    except OSError:
        pass')
base="http://127.0.0.1:$port"
secret=contract-secret
export ROSTER_AUTH_JWT_SECRET=$secret
(
  cd "$work"
  ROSTER_LIMITS_REST_REQUESTS_PER_SECOND=100000 NO_COLOR=1 \
    exec "$roster" serve --listen "127.0.0.1:$port" > "$work/server.log" 2>&1
) &
server_pid=$!
for _ in $(seq 1 100); do
  curl -fs "$base/healthz" > /dev/null 2>&1 && break
  sleep 0.1
done
if ! curl -fs "$base/healthz" > /dev/null 2>&1; then
  echo "test-api-contract: the server did not start:" >&2
  cat "$work/server.log" >&2
  exit 1
fi
token() { "$roster" token --tenant acme --ttl 2h "$@"; }
admin=$(token --user root --roles admin)
"$bin_dir/python" scripts/api-contract/seed.py "$base" "$admin" \
  "$(token --user alice --name Alice)" "$(token --user bob)" > "$work/seed.out" 2>&1 &
seed_pid=$!
for _ in $(seq 1 100); do
  grep -q seeded "$work/seed.out" 2>/dev/null && break
  if ! kill -0 "$seed_pid" 2>/dev/null; then cat "$work/seed.out" >&2; exit 1; fi
  sleep 0.1
done

status=0
# The live stream (openStream) is left out: it never ends, so no answer can be
# checked; tests/alerts.rs reads it.
"$bin_dir/schemathesis" run "$base/api/v1/openapi.json" \
  --url "$base" \
  --exclude-operation-id openStream \
  -H "Authorization: Bearer $admin" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "$examples" \
  --seed 1 \
  --workers 1 \
  --suppress-health-check all \
  --warnings off \
  --no-color || status=$?
if [ "$status" != 0 ]; then
  echo "--- server log (tail)" >&2
  tail -n 40 "$work/server.log" >&2
fi
exit "$status"
