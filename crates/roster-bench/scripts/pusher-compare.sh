#!/usr/bin/env bash
# Runs the three Pusher scenarios against Roster and Sockudo, interleaved
# (roster, sockudo, roster, sockudo, …), ROUNDS times each, one fresh server per
# run, one JSON report per run in OUT, then prints the medians
# (docs/BENCHMARKS.md, "Pusher protocol: Roster and Sockudo side by side").
#
#   bash crates/roster-bench/scripts/pusher-compare.sh [OUT] [ROUNDS]
#
# Needs target/release/roster-bench and target/release/roster (cargo build
# --release -p roster -p roster-bench) and `sockudo` on PATH (or SOCKUDO=path):
# cargo install sockudo --version 5.2.0 --locked (needs Debian's protobuf-compiler).
# Without Sockudo (SOCKUDO=none) only Roster runs.
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT=${1:-bench-results/pusher}
ROUNDS=${2:-3}
B=${BENCH:-target/release/roster-bench}
S=${ROSTER:-target/release/roster}
SOCKUDO=${SOCKUDO:-sockudo}
mkdir -p "$OUT"
targets=(roster)
if [ "$SOCKUDO" != none ]; then targets+=(sockudo); fi

run() { # scenario target round args...
  local scenario=$1 target=$2 round=$3; shift 3
  local file="$OUT/$scenario-$target-$round.json"
  echo "== $scenario $target round $round" >&2
  "$B" "$scenario" --target "$target" --server-bin "$S" --sockudo-bin "$SOCKUDO" "$@" >"$file" \
    || echo "   (exit $?, see $file)" >&2
  sleep 2 # the previous server's sockets leave TIME_WAIT behind; let the machine settle
}

for round in $(seq 1 "$ROUNDS"); do
  for t in "${targets[@]}"; do
    run pusher-joinstorm "$t" "$round" --clients 1000 --rate 500 --wait 20s
  done
  for t in "${targets[@]}"; do
    run pusher-fanout "$t" "$round" --members 1000 --senders 4 --events-per-sec 20 \
      --duration 10s --warmup 3s --drain 2s --settle 3s
  done
  for t in "${targets[@]}"; do
    run pusher-idle "$t" "$round" --connections 10000 --group 10 --settle 5s
  done
done

python3 - "$OUT" "${targets[@]}" <<'PY'
import json, statistics, sys, glob, os
out, targets = sys.argv[1], sys.argv[2:]
def get(d, path):
    for p in path.split("."):
        d = d.get(p) if isinstance(d, dict) else None
    return d
rows = [
    ("pusher-joinstorm", "achieved.subscriptions_per_s", "joins/s achieved (500/s offered)"),
    ("pusher-joinstorm", "views.all_complete_after_s", "every view complete after (s)"),
    ("pusher-joinstorm", "views.all_complete_after_last_subscribed_ms", "… after the last join (ms)"),
    ("pusher-joinstorm", "member_added.duplicates", "duplicate member_added"),
    ("pusher-joinstorm", "member_added.before_own_snapshot", "member_added before own snapshot"),
    ("pusher-joinstorm", "subscribe_latency_ms.p99", "subscribe → succeeded p99 (ms)"),
    ("pusher-fanout", "latency_to_last_member_ms.p50", "client event to last member p50 (ms)"),
    ("pusher-fanout", "latency_to_last_member_ms.p99", "client event to last member p99 (ms)"),
    ("pusher-fanout", "latency_per_delivery_ms.p99", "per delivery p99 (ms)"),
    ("pusher-fanout", "deliveries_missing", "deliveries missing"),
    ("pusher-fanout", "server_cpu_in_window.us_per_delivery", "server CPU per delivery (µs)"),
    ("pusher-fanout", "server_cpu_in_window.cores", "server cores in window"),
    ("pusher-idle", "server_bytes_per_connection", "server RSS per idle connection (B)"),
    ("pusher-idle", "opens_per_s", "openings/s (100 in flight)"),
]
print(f"{'figure':45} " + " ".join(f"{t:>28}" for t in targets))
for scenario, path, label in rows:
    cells = []
    for t in targets:
        vals = []
        for f in sorted(glob.glob(os.path.join(out, f"{scenario}-{t}-*.json"))):
            try:
                v = get(json.load(open(f)), path)
            except Exception:
                v = None
            vals.append(v)
        nums = [v for v in vals if isinstance(v, (int, float))]
        med = statistics.median(nums) if nums else None
        cells.append(f"{med!s:>10} {str(nums):>17}")
    print(f"{label:45} " + " ".join(cells))
PY
