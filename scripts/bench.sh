#!/usr/bin/env bash
# Runs the benchmark suite of docs/BENCHMARKS.md against a release build and
# writes one JSON report per scenario into bench-results/ (git-ignored).
# Takes a few minutes and uses both cores: don't run it beside other work.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p roster -p roster-bench
B=target/release/roster-bench
S=target/release/roster
out=bench-results
mkdir -p "$out"
run() { # name, args...
  local name=$1; shift
  echo "== $name: roster-bench $*" >&2
  "$B" "$@" --server-bin "$S" > "$out/$name.json"
}
run connect-2k       connect --sessions 2000 --rooms 100 --settle 2s
run connect-18k      connect --sessions 18000 --rooms 180 --procs 2 --settle 10s
run fanout-1k-w0-5   fanout --members 1000 --updates-per-sec 5 --duration 10s --warmup 3s --diff-window 0ms
run fanout-1k-w0-20  fanout --members 1000 --updates-per-sec 20 --duration 10s --warmup 3s --diff-window 0ms
run fanout-1k-w50-20 fanout --members 1000 --updates-per-sec 20 --duration 10s --warmup 3s
run fanout-100-w0-20 fanout --members 100 --updates-per-sec 20 --duration 10s --warmup 3s --diff-window 0ms
run locks-50         locks --sessions 50 --rounds 200
# Activity logging under churn: SQLite (in the server's scratch dir) with logging on
# and off, then PostgreSQL (a fresh schema per run, dropped afterwards).
churn="churn --sessions 2000 --rooms 50 --joins-per-sec 500 --duration 20s --warmup 3s"
probe="churn --sessions 5000 --rooms 500 --joins-per-sec 2500 --hold 500ms --duration 10s --warmup 3s"
run churn-sqlite       $churn
run churn-sqlite-nolog $churn --server-env ROSTER_DATABASE_LOG_ACTIVITY=false
run churn-sqlite-2500  $probe
pg=${ROSTER_BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/test}
if pg_isready -q -h 127.0.0.1 -p 5432 && command -v psql >/dev/null; then
  run churn-postgres      $churn --database-url "$pg"
  run churn-postgres-2500 $probe --database-url "$pg"
else
  echo "== churn-postgres: skipped (no PostgreSQL at 127.0.0.1:5432, or no psql)" >&2
fi
echo "reports in $out/" >&2
