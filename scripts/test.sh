#!/usr/bin/env bash
# Runs every test of the project: lint, unit and integration tests (the
# integration tests start the real `roster` binary on 127.0.0.1:0).
set -euo pipefail
cd "$(dirname "$0")/.."

# The store tests need PostgreSQL at 127.0.0.1:5432 (database `test`, trust auth);
# this machine kind installs it but it may have stopped.
bash scripts/ensure-postgres.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
status=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast || status=$?
else
  cargo test --workspace --locked --no-fail-fast || status=$?
fi

# The TypeScript client (clients/typescript): unit tests, and integration tests
# against the `roster` binary the Rust tests just built.
ROSTER_BIN="$PWD/target/debug/roster" bash scripts/test-typescript.sh || status=$?
exit "$status"
