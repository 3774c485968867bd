#!/usr/bin/env bash
# Runs every test of the project: lint, unit and integration tests (the
# integration tests start the real `roster` binary on 127.0.0.1:0).
set -euo pipefail
cd "$(dirname "$0")/.."

# The store tests need PostgreSQL at 127.0.0.1:5432 (database `test`, trust auth);
# this machine kind installs it but it may have stopped.
bash scripts/ensure-postgres.sh
# The Redis engine's tests (multi-node, and the conformance run below) need Redis
# at 127.0.0.1:6379.
bash scripts/ensure-redis.sh
# ... and a three-master Redis Cluster on 127.0.0.1:37001-37003 (started here).
CLUSTER_URL=$(bash scripts/ensure-redis-cluster.sh)
# ... and tansu, a Kafka-protocol broker, for tests/kafka_broker.rs (installed
# from crates.io the first time; the other Kafka tests use librdkafka's mock).
TANSU_BIN=$(bash scripts/ensure-tansu.sh)
export TANSU_BIN

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
status=0
# Conformance: the behaviour tests of the core run a second time, unchanged,
# with every server on the Redis engine (tests/common picks ROSTER_TEST_ENGINE).
CONFORMANCE=(presence liveness locks errors rooms watch lifecycle tenancy rest client durable transitions events kafka room_events pusher stomp alerts)
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast || status=$?
  filter=""
  for t in "${CONFORMANCE[@]}"; do filter="${filter:+$filter | }binary(=$t)"; done
  ROSTER_TEST_ENGINE=redis://127.0.0.1:6379 \
    cargo nextest run -p roster --locked --no-fail-fast -E "$filter" || status=$?
  # Once more on the Redis Cluster (sharded pub/sub), with the multi-node tests;
  # the 1,000-session soak runs on the two engines above only (CI time).
  ROSTER_TEST_ENGINE="$CLUSTER_URL" ROSTER_TEST_REDIS="$CLUSTER_URL" \
    cargo nextest run -p roster --locked --no-fail-fast \
    -E "($filter | binary(=cluster) | binary(=engine_model)) & not test(a_thousand_sessions)" || status=$?
else
  cargo test --workspace --locked --no-fail-fast || status=$?
  args=()
  for t in "${CONFORMANCE[@]}"; do args+=(--test "$t"); done
  ROSTER_TEST_ENGINE=redis://127.0.0.1:6379 \
    cargo test -p roster --locked --no-fail-fast "${args[@]}" || status=$?
  ROSTER_TEST_ENGINE="$CLUSTER_URL" ROSTER_TEST_REDIS="$CLUSTER_URL" \
    cargo test -p roster --locked --no-fail-fast "${args[@]}" --test cluster --test engine_model || status=$?
fi

# The REST API as a contract: docs/openapi.json is valid OpenAPI 3.1, and
# schemathesis checks the real binary's answers against it (bounded here; see
# the script for a longer run).
ROSTER_BIN="$PWD/target/debug/roster" bash scripts/test-api-contract.sh || status=$?

# The TypeScript clients (clients/typescript): unit tests, and integration tests
# against the `roster` binary the Rust tests just built (@roster/rest's types are
# generated from docs/openapi.json).
ROSTER_BIN="$PWD/target/debug/roster" bash scripts/test-typescript.sh || status=$?
exit "$status"
