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
echo "reports in $out/" >&2
