#!/usr/bin/env bash
# What the dashboard's server side costs at 1,000 rooms and 10,000 sessions
# (docs/BENCHMARKS.md, "Dashboard and alerts"): a release server with
# roster-bench holding 10,000 idle sessions in 1,000 rooms, then
#   * the first `rooms` event of /api/v1/stream: time and size;
#   * GET /api/v1/rooms?limit=1000 and GET /api/v1/sessions?room=…: time;
#   * server CPU (from /proc) over a quiet spell with 0, 1 and 5 streams open,
#     and with 3 alert rules evaluated every second.
# Not part of the test command. SESSIONS=… ROOMS=… SPELL=… override the sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
SESSIONS=${SESSIONS:-10000}
ROOMS=${ROOMS:-1000}
SPELL=${SPELL:-15}
cargo build --release --locked -p roster -p roster-bench >&2
bin=$PWD/target/release/roster
bench=$PWD/target/release/roster-bench
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export ROSTER_AUTH_JWT_SECRET=roster-bench-secret
( cd "$work" && ROSTER_ALERTS_EVAL_INTERVAL=1s ROSTER_LIMITS_REST_REQUESTS_PER_SECOND=100000 \
    exec "$bin" serve --listen "127.0.0.1:$port" > "$work/server.log" 2>&1 ) &
server=$!; pids+=("$server")
base="http://127.0.0.1:$port"
for _ in $(seq 100); do curl -fs "$base/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
token=$("$bin" token --user ops --tenant bench --roles admin)
"$bench" connect --url "ws://127.0.0.1:$port/ws" --server-pid "$server" --sessions "$SESSIONS" \
  --rooms "$ROOMS" --settle 2s --hold 1h > "$work/bench.json" 2> "$work/bench.log" &
pids+=("$!")
echo "waiting for $SESSIONS sessions…" >&2
for _ in $(seq 600); do
  n=$(curl -s "$base/metrics" | awk '$1=="roster_sessions"{print $2}')
  [ "${n%.*}" -ge "$SESSIONS" ] 2>/dev/null && break
  sleep 0.5
done
sleep 3
python3 - "$base" "$token" "$server" "$SPELL" <<'PY'
import json, os, sys, threading, time, urllib.request
base, token, pid, spell = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
hz = os.sysconf("SC_CLK_TCK")
def cpu():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / hz
def req(path, method="GET", body=None):
    r = urllib.request.Request(base + path, method=method, data=body and json.dumps(body).encode(),
                               headers={"Authorization": "Bearer " + token, "content-type": "application/json"})
    t = time.perf_counter()
    with urllib.request.urlopen(r) as resp:
        data = resp.read()
    return (time.perf_counter() - t) * 1000, len(data), data
def first_rooms():
    r = urllib.request.Request(base + "/api/v1/stream", headers={"Authorization": "Bearer " + token})
    t = time.perf_counter()
    resp = urllib.request.urlopen(r)
    size, name = 0, None
    for line in resp:
        size += len(line)
        if line.startswith(b"event:"):
            name = line[6:].strip()
        if line.startswith(b"data:") and name == b"rooms":
            n = len(json.loads(line[5:])["rooms"])
            return (time.perf_counter() - t) * 1000, size, n, resp
streams = []
def hold(n):
    for _ in range(n):
        streams.append(first_rooms()[3])
def spell_cpu():
    c0 = cpu(); time.sleep(spell); return (cpu() - c0) / spell * 100
rows = []
ms, size, n, s0 = first_rooms()
s0.close()
rows.append(("stream: first `rooms` event (all rooms)", f"{ms:.0f} ms, {n} rooms, {size/1024:.0f} KiB"))
ms, size, _ = req("/api/v1/rooms?limit=1000")
rows.append(("GET /api/v1/rooms?limit=1000", f"{ms:.0f} ms, {size/1024:.0f} KiB"))
ms, size, _ = req("/api/v1/sessions?room=bench:conn:0")
rows.append(("GET /api/v1/sessions?room=…", f"{ms:.0f} ms, {size/1024:.1f} KiB"))
rows.append(("server CPU, no stream, no rule", f"{spell_cpu():.1f} % of a core"))
hold(1)
rows.append(("server CPU, 1 stream", f"{spell_cpu():.1f} % of a core"))
hold(4)
rows.append(("server CPU, 5 streams", f"{spell_cpu():.1f} % of a core"))
for s in streams: s.close()
streams.clear()
for rule in [{"name": "full", "kind": "capacity", "threshold": 90},
             {"name": "slow", "kind": "latency", "threshold": 500, "window": "1m"},
             {"name": "drop", "kind": "online_drop", "threshold": 30, "window": "1m"}]:
    req("/api/v1/alert-rules", "POST", rule)
time.sleep(2)
rows.append(("server CPU, 3 rules every 1 s, no stream", f"{spell_cpu():.1f} % of a core"))
print("| what | figure |\n| --- | --- |")
for a, b in rows:
    print(f"| {a} | {b} |")
PY
