#!/usr/bin/env bash
# Makes sure a three-master Redis Cluster answers on 127.0.0.1:37001-37003 (the Redis
# engine's conformance run on a cluster): starts the nodes (no persistence, state in
# a temporary directory) and creates the cluster if needed. Prints the engine URL.
set -euo pipefail
PORTS=(37001 37002 37003)
DIR="${TMPDIR:-/tmp}/roster-redis-cluster"
up() { redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null | grep -q PONG; }
ok() { redis-cli -h 127.0.0.1 -p "${PORTS[0]}" cluster info 2>/dev/null | grep -q "cluster_state:ok"; }
if ! ok; then
  for p in "${PORTS[@]}"; do
    if ! up "$p"; then
      rm -rf "$DIR/$p" && mkdir -p "$DIR/$p"
      redis-server --daemonize yes --bind 127.0.0.1 --port "$p" --cluster-enabled yes \
        --cluster-config-file "$DIR/$p/nodes.conf" --cluster-node-timeout 5000 \
        --save "" --appendonly no --dir "$DIR/$p" --logfile "$DIR/$p/redis.log" >&2
    fi
  done
  for p in "${PORTS[@]}"; do
    for _ in $(seq 1 50); do up "$p" && break; sleep 0.1; done
  done
  if ! redis-cli -h 127.0.0.1 -p "${PORTS[0]}" cluster info | grep -q "cluster_slots_assigned:16384"; then
    # Nodes left over from an earlier run with a half-made cluster: start clean.
    for p in "${PORTS[@]}"; do
      redis-cli -h 127.0.0.1 -p "$p" flushall >/dev/null 2>&1 || true
      redis-cli -h 127.0.0.1 -p "$p" cluster reset hard >/dev/null 2>&1 || true
    done
    redis-cli --cluster create 127.0.0.1:37001 127.0.0.1:37002 127.0.0.1:37003 \
      --cluster-replicas 0 --cluster-yes >&2
  fi
  for _ in $(seq 1 100); do ok && break; sleep 0.1; done
fi
if ! ok; then
  echo "Redis Cluster on 127.0.0.1:${PORTS[0]}-${PORTS[2]} is not healthy" >&2
  exit 1
fi
echo "redis-cluster://127.0.0.1:37001,127.0.0.1:37002,127.0.0.1:37003"
