#!/usr/bin/env bash
# Scale-out on Redis (issue 7; docs/BENCHMARKS.md, "Scale-out on Redis"): the fan-out
# scenario's 1,000-member room — join rate, update delivery latency, and what Redis
# does per operation — on 1 node with the memory engine, 1 node on Redis and
# 3 nodes on Redis (members round-robin over the nodes, the senders on node 1),
# each with diff_window 0 and with the default (50 ms); then a 100-member room
# (diff_window 0) on the same three set-ups.
#
# Writes into bench-results/redis/ (git-ignored, emptied first): one JSON report per
# run (the bench's own per-phase Redis figures are in its "redis" field), Redis's
# `INFO commandstats` and `INFO cpu` after each run (stats reset with CONFIG
# RESETSTAT before it), each node's log, and meta.txt (commit, dirty files, load).
#
# Redis: by default a private redis-server (no persistence) on a free loopback port,
# stopped at the end, so nothing else's commands are counted. To use a running one
# instead: ROSTER_BENCH_REDIS_URL=redis://127.0.0.1:6379 (its stats are reset).
# Every run uses its own ROSTER_ENGINE_PREFIX, whose keys are deleted afterwards.
#
# Other knobs (environment): ROSTER_BENCH_SERVER_BIN (a roster binary to use instead
# of building target/release/roster), ROSTER_BENCH_MEMBERS (1000),
# ROSTER_BENCH_DURATION (10s), ROSTER_BENCH_WARMUP (3s), ROSTER_BENCH_UPS (20),
# ROSTER_BENCH_JOIN_CONCURRENCY (20), ROSTER_BENCH_RUNS (names of the runs to do,
# space-separated; default all nine).
# Takes about 4 minutes and uses both cores: don't run it beside other work.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in redis-cli redis-server; do
  command -v "$tool" >/dev/null || { echo "$tool is needed (Debian package redis-server)" >&2; exit 1; }
done
if [ -n "${ROSTER_BENCH_SERVER_BIN:-}" ]; then
  cargo build --release --locked -p roster-bench
  S=$(realpath "$ROSTER_BENCH_SERVER_BIN")
else
  cargo build --release --locked -p roster -p roster-bench
  S=$(realpath target/release/roster)
fi
B=$(realpath target/release/roster-bench)
out=bench-results/redis
rm -rf "$out"
mkdir -p "$out"
members=${ROSTER_BENCH_MEMBERS:-1000}
duration=${ROSTER_BENCH_DURATION:-10s}
warmup=${ROSTER_BENCH_WARMUP:-3s}
ups=${ROSTER_BENCH_UPS:-20}
# Joins in flight (all nodes together). At 100 the Redis engine's join scripts for a
# room of ~1,000 queue for over a second on a node's one Redis connection (see
# docs/BENCHMARKS.md); 20 keeps every configuration comparable and working.
join_concurrency=${ROSTER_BENCH_JOIN_CONCURRENCY:-20}
secret="roster-bench-$$-$RANDOM"
work=$(mktemp -d "${TMPDIR:-/tmp}/roster-bench-redis.XXXXXX")

REDIS_PID=""
NODE_PIDS=()
NODE_URLS=()
NODE_DIRS=()
RUN_NAME=""
cleanup() {
  stop_nodes
  if [ -n "$REDIS_PID" ]; then
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# ---- Redis -------------------------------------------------------------------------
if [ -n "${ROSTER_BENCH_REDIS_URL:-}" ]; then
  REDIS_URL=$ROSTER_BENCH_REDIS_URL
else
  for _ in 1 2 3 4 5; do
    port=$((32768 + RANDOM % 28000))
    ss -ltn "sport = :$port" | grep -q LISTEN && continue
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
      --dir "$work" --logfile "$work/redis.log" &
    REDIS_PID=$!
    for _ in $(seq 1 50); do
      redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break
      sleep 0.1
    done
    if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then
      break
    fi
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
    REDIS_PID=""
  done
  [ -n "$REDIS_PID" ] || { echo "could not start a private redis-server" >&2; exit 1; }
  REDIS_URL="redis://127.0.0.1:$port"
fi
rcli() { redis-cli -u "$REDIS_URL" "$@"; }
rcli ping | grep -q PONG || { echo "Redis at $REDIS_URL does not answer" >&2; exit 1; }
redis_cpu() { # used_cpu_user + used_cpu_sys, seconds
  rcli INFO cpu | tr -d '\r' | awk -F: '$1=="used_cpu_user"||$1=="used_cpu_sys"{s+=$2} END{printf "%.3f", s}'
}

{
  echo "date: $(date -u +%FT%TZ)"
  echo "commit of this tree: $(git rev-parse HEAD)"
  if [ -n "${ROSTER_BENCH_SERVER_BIN:-}" ]; then
    echo "server binary: $S (given by ROSTER_BENCH_SERVER_BIN: not built from this tree)"
  else
    echo "server binary: $S, built from this tree; uncommitted changes under crates/roster:"
    git status --porcelain crates/roster || true
  fi
  echo "redis: $REDIS_URL ($(rcli INFO server | tr -d '\r' | grep '^redis_version'))"
  echo "nproc: $(nproc); loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$out/meta.txt"

# ---- nodes -------------------------------------------------------------------------
unset_roster=()
for v in $(compgen -e | grep '^ROSTER_' || true); do unset_roster+=(-u "$v"); done
start_nodes() { # count engine(memory|redis) diff_window(0ms|default) prefix
  local count=$1 engine=$2 window=$3 prefix=$4 i d pid addr
  NODE_PIDS=()
  NODE_URLS=()
  NODE_DIRS=()
  for i in $(seq 1 "$count"); do
    d="$work/node-$prefix-$i"
    mkdir -p "$d"
    : >"$d/log"
    local env=(NO_COLOR=1 ROSTER_LISTEN=127.0.0.1:0 ROSTER_AUTH_JWT_SECRET="$secret"
      ROSTER_DATABASE_URL="sqlite://$d/roster.db")
    [ "$window" = default ] || env+=(ROSTER_TIMING_DIFF_WINDOW="$window")
    [ "$engine" = redis ] && env+=(ROSTER_ENGINE_URL="$REDIS_URL" ROSTER_ENGINE_PREFIX="$prefix")
    # The server refuses unknown ROSTER_* variables (this script's own knobs): a
    # node sees only the settings given here.
    (cd "$d" && exec env "${unset_roster[@]}" "${env[@]}" "$S" serve >/dev/null 2>"$d/log") &
    pid=$!
    NODE_PIDS+=("$pid")
    NODE_DIRS+=("$d")
    addr=""
    for _ in $(seq 1 300); do
      addr=$(sed -n 's|.*roster listening on http://\([0-9.]*:[0-9]*\).*|\1|p' "$d/log" | head -n 1 || true)
      [ -n "$addr" ] && break
      kill -0 "$pid" 2>/dev/null || { echo "node $i exited:" >&2; tail -n 20 "$d/log" >&2; exit 1; }
      sleep 0.1
    done
    [ -n "$addr" ] || { echo "node $i did not say where it listens" >&2; exit 1; }
    NODE_URLS+=("ws://$addr/ws")
  done
}

stop_nodes() { # SIGTERM each node we started (graceful: leaves are sent), then wait
  local pid i=0 d
  for pid in "${NODE_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${NODE_PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  for d in "${NODE_DIRS[@]}"; do # keep each node's log next to the report
    i=$((i + 1))
    if [ -n "$RUN_NAME" ]; then cp "$d/log" "$out/$RUN_NAME.node-$i.log" 2>/dev/null || true; fi
  done
  NODE_PIDS=()
  NODE_URLS=()
  NODE_DIRS=()
}

run() { # name count engine diff_window [members]
  local name=$1 count=$2 engine=$3 window=$4 m=${5:-$members}
  if [ -n "${ROSTER_BENCH_RUNS:-}" ] && [[ " $ROSTER_BENCH_RUNS " != *" $name "* ]]; then
    return 0
  fi
  local prefix="rbench-$$-$name"
  RUN_NAME=$name
  local args=(fanout --members "$m" --updates-per-sec "$ups" --duration "$duration"
    --warmup "$warmup" --join-concurrency "$join_concurrency" --token-secret "$secret")
  [ "$window" = default ] || args+=(--diff-window "$window")
  [ "$engine" = redis ] && args+=(--redis "$REDIS_URL")
  start_nodes "$count" "$engine" "$window" "$prefix"
  args+=(--nodes "$(IFS=,; echo "${NODE_URLS[*]}")" --server-pids "$(IFS=,; echo "${NODE_PIDS[*]}")")
  echo "== $name: roster-bench ${args[*]}" >&2
  rcli CONFIG RESETSTAT >/dev/null
  local cpu0 t0 cpu1 t1 status=0
  cpu0=$(redis_cpu)
  t0=$(date +%s.%N)
  "$B" "${args[@]}" >"$out/$name.json" || status=$?
  t1=$(date +%s.%N)
  cpu1=$(redis_cpu)
  {
    rcli INFO commandstats | tr -d '\r'
    awk -v c0="$cpu0" -v c1="$cpu1" -v t0="$t0" -v t1="$t1" 'BEGIN {
      printf "# whole run: redis used_cpu_user+sys %.3f s over %.3f s wall\n", c1 - c0, t1 - t0
      printf "redis_cpu_cores: %.4f\n", (c1 - c0) / (t1 - t0) }'
  } >"$out/$name.redis.txt"
  stop_nodes
  RUN_NAME=""
  if [ "$engine" = redis ]; then
    rcli --scan --pattern "$prefix:*" | xargs -r -n 500 redis-cli -u "$REDIS_URL" del >/dev/null
  fi
  [ "$status" = 0 ] || { echo "$name failed (exit $status)" >&2; exit "$status"; }
}

run mem-1node-w0      1 memory 0ms
run redis-1node-w0    1 redis  0ms
run redis-3nodes-w0   3 redis  0ms
run mem-1node-w50     1 memory default
run redis-1node-w50   1 redis  default
run redis-3nodes-w50  3 redis  default
# 100 members: the walk over the members no longer dominates, the engine's hop shows.
run mem-1node-100     1 memory 0ms 100
run redis-1node-100   1 redis  0ms 100
run redis-3nodes-100  3 redis  0ms 100

# One line per run: joins/s, delivery p50/p99 (all, and on the other nodes), the
# share of updates delivered, seq errors (gaps, regressions, an update in diffs of
# different seq, a diff before the snapshot: all must be 0), Redis per update.
printf '%-18s %8s %9s %9s %9s %9s %8s %11s %11s %9s\n' run joins/s p50_ms p99_ms p99_other \
  ratio seq_errs evalsha/upd calls/upd redis_cpu >&2
for f in mem-1node-w0 redis-1node-w0 redis-3nodes-w0 mem-1node-w50 redis-1node-w50 \
  redis-3nodes-w50 mem-1node-100 redis-1node-100 redis-3nodes-100; do
  [ -f "$out/$f.json" ] || continue
  jq -r --arg n "$f" '[$n, .join_phase.joins_per_s, .latency_ms.p50, .latency_ms.p99,
      (.latency_ms_other_nodes.p99 // "-"), .delivery_ratio,
      (.seq_gaps + .seq_regressions + .update_seq_mismatches + .diffs_before_snapshot),
      (.redis.updates.script_calls_per_update // "-"), (.redis.updates.calls_per_update // "-"),
      (.redis.updates.cpu_cores // "-")] | @tsv' "$out/$f.json" |
    awk -F'\t' '{printf "%-18s %8s %9s %9s %9s %9s %8s %11s %11s %9s\n", $1,$2,$3,$4,$5,$6,$7,$8,$9,$10}' >&2
done
warns=$(cat "$out"/*.node-*.log 2>/dev/null | grep -c -E ' (WARN|ERROR) ' || true)
echo "node log lines at WARN or ERROR, all runs: $warns" >&2
echo "reports in $out/" >&2
