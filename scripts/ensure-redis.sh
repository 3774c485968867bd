#!/usr/bin/env bash
# Makes sure Redis answers on 127.0.0.1:6379 (the Redis engine's tests): starts the
# installed redis-server (no persistence) if it is not running. Fails loudly otherwise.
set -euo pipefail
ready() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
if ! ready; then
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "redis-server is not installed (Debian package redis-server)" >&2
    exit 1
  fi
  echo "starting redis-server on 127.0.0.1:6379" >&2
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir "$(mktemp -d)" --logfile "${TMPDIR:-/tmp}/roster-redis.log"
  for _ in $(seq 1 30); do ready && break; sleep 0.2; done
fi
if ! ready; then
  echo "Redis is not reachable at 127.0.0.1:6379 and could not be started" >&2
  exit 1
fi
