#!/usr/bin/env bash
# The benchmark gate of a change (docs/BENCHMARKS.md): the scenarios of
# scripts/bench.sh and of the Redis scale-out run against two server binaries,
# BEFORE and AFTER, interleaved (before, after, before, after, ...) so both see
# the same machine, then one table of medians. The load generator is the
# current roster-bench for both.
#
#   bash scripts/bench-gate.sh /path/to/roster-before /path/to/roster-after
#
# Build a "before" binary from a commit with, e.g.:
#   git worktree add /tmp/before <commit> && (cd /tmp/before && \
#     CARGO_TARGET_DIR=/tmp/before-target cargo build --release -p roster)
#
# Writes JSON reports into bench-results/gate/ (git-ignored, emptied first) and
# the table to stdout (not ROSTER_*: the servers inherit the environment and
# refuse variables that are no setting of theirs). BENCH_GATE_RUNS (default 3) runs of each scenario per
# binary; BENCH_GATE_ONLY (space-separated scenario names) runs a subset. Redis
# scenarios use the Redis at ROSTER_BENCH_REDIS_URL (default
# redis://127.0.0.1:6379) under a fresh key prefix each run. Takes about 15
# minutes with 3 runs and uses both cores: don't run it beside other work.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: $0 BEFORE_BIN AFTER_BIN" >&2; exit 2; }
before=$(realpath "$1")
after=$(realpath "$2")
runs=${BENCH_GATE_RUNS:-3}
redis_url=${ROSTER_BENCH_REDIS_URL:-redis://127.0.0.1:6379}
# The servers refuse ROSTER_* variables that are no setting of theirs.
unset ROSTER_BENCH_REDIS_URL
# Built together with the server, as scripts/bench.sh does (same features, so
# nothing is built twice).
cargo build --release --locked -p roster -p roster-bench
B=target/release/roster-bench
out=bench-results/gate
rm -rf "$out"
mkdir -p "$out"

declare -A SCEN=(
  [connect-2k]="connect --sessions 2000 --rooms 100 --settle 2s"
  [fanout-1k-w0]="fanout --members 1000 --updates-per-sec 20 --duration 10s --warmup 3s --diff-window 0ms"
  [fanout-100-w0]="fanout --members 100 --updates-per-sec 20 --duration 10s --warmup 3s --diff-window 0ms"
  [locks-50]="locks --sessions 50 --rounds 200"
  [churn-sqlite]="churn --sessions 2000 --rooms 50 --joins-per-sec 500 --duration 20s --warmup 3s"
  [redis1-fanout-1k]="fanout --members 1000 --updates-per-sec 20 --duration 10s --warmup 3s --diff-window 0ms --redis $redis_url"
  [redis3-fanout-1k]="fanout --members 1000 --updates-per-sec 20 --duration 10s --warmup 3s --diff-window 0ms --node-count 3 --redis $redis_url"
)
ORDER="connect-2k fanout-1k-w0 fanout-100-w0 locks-50 churn-sqlite redis1-fanout-1k redis3-fanout-1k"
only=${BENCH_GATE_ONLY:-$ORDER}

for i in $(seq 1 "$runs"); do
  for name in $ORDER; do
    [[ " $only " == *" $name "* ]] || continue
    for which in before after; do
      bin=$before
      [ "$which" = after ] && bin=$after
      extra=()
      if [[ $name == redis* ]]; then
        extra=(--server-env "ROSTER_ENGINE_URL=$redis_url" --server-env "ROSTER_ENGINE_PREFIX=gate-$name-$which-$i-$$")
      fi
      echo "== $name $which run $i" >&2
      # shellcheck disable=SC2086
      "$B" ${SCEN[$name]} "${extra[@]}" --server-bin "$bin" > "$out/$name-$which-$i.json" \
        || echo "   (failed; see $out/$name-$which-$i.json)" >&2
      if [[ $name == redis* ]] && command -v redis-cli >/dev/null; then
        redis-cli -u "$redis_url" --scan --pattern "gate-$name-$which-$i-$$*" \
          | xargs -r -n 500 redis-cli -u "$redis_url" del >/dev/null || true
      fi
    done
  done
done

python3 - "$out" <<'EOF'
import json, os, statistics, sys
out = sys.argv[1]
def get(d, path):
    for p in path.split("."):
        if isinstance(d, list):
            d = d[int(p)]
        elif isinstance(d, dict):
            d = d.get(p)
        else:
            return None
        if d is None:
            return None
    return d
def cpu(d):
    return None if d is None else round(d.get("user_s", 0) + d.get("sys_s", 0), 3)
FIGS = {
    "connect-2k": [("sessions/s", "connect.sessions_per_s", None),
                   ("RSS per idle connection (B)", "idle.server_rss_bytes_per_connection", None),
                   ("server CPU (s)", "server_cpu", cpu)],
    "fanout-1k-w0": [("delivery p50 (ms)", "latency_ms.p50", None),
                     ("delivery p99 (ms)", "latency_ms.p99", None),
                     ("server CPU during updates (s)", "server_cpu_during_run", cpu),
                     ("joins/s", "join_phase.joins_per_s", None)],
    "fanout-100-w0": [("delivery p50 (ms)", "latency_ms.p50", None),
                      ("delivery p99 (ms)", "latency_ms.p99", None),
                      ("server CPU during updates (s)", "server_cpu_during_run", cpu)],
    "locks-50": [("LOCK p99 (ms)", "lock_latency_ms.p99", None),
                 ("rounds with one winner", "rounds_with_exactly_one_winner", None),
                 ("server CPU (s)", "server_cpu_during_run", cpu)],
    "churn-sqlite": [("joins acked/s", "joins_acknowledged_per_s", None),
                     ("join p99 (ms)", "join_latency_ms.p99", None),
                     ("server CPU share", "server_cpu_in_window", lambda d: d if not isinstance(d, dict) else d.get("cores", d.get("share")))],
    "redis1-fanout-1k": [("delivery p50 (ms)", "latency_ms.p50", None),
                         ("delivery p99 (ms)", "latency_ms.p99", None),
                         ("joins/s", "join_phase.joins_per_s", None),
                         ("server CPU during updates (s)", "server_cpu_during_run", cpu)],
    "redis3-fanout-1k": [("delivery p50 (ms)", "latency_ms.p50", None),
                         ("delivery p99 (ms)", "latency_ms.p99", None),
                         ("joins/s", "join_phase.joins_per_s", None),
                         ("server CPU during updates, all nodes (s)", "server_cpu_during_run", cpu)],
}
print("| scenario | figure | before (median) | after (median) | runs |")
print("| --- | --- | --- | --- | --- |")
for name, figs in FIGS.items():
    for label, path, f in figs:
        cols = []
        n = 0
        for which in ("before", "after"):
            vals = []
            for fn in sorted(os.listdir(out)):
                if fn.startswith(f"{name}-{which}-") and fn.endswith(".json"):
                    try:
                        d = json.load(open(os.path.join(out, fn)))
                    except Exception:
                        continue
                    v = get(d, path)
                    v = f(v) if f else v
                    if isinstance(v, (int, float)):
                        vals.append(v)
            n = max(n, len(vals))
            cols.append(f"{statistics.median(vals):g} [{min(vals):g}–{max(vals):g}]" if vals else "—")
        if n:
            print(f"| {name} | {label} | {cols[0]} | {cols[1]} | {n} |")
EOF
