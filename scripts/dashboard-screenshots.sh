#!/usr/bin/env bash
# Writes docs/dashboard-light.png and docs/dashboard-dark.png (1280×800): the
# operator dashboard (/dashboard) of a seeded demo — declared rooms of several
# types and capacities, ~30 native clients with different devices, OSes and app
# versions held open, a field lock, a stale entity, a capacity alert firing,
# some activity — in headless Chromium (Debian's /usr/bin/chromium, driven by
# playwright-core). The work is done by clients/typescript/dashboard/scripts/screenshots.mjs.
#
#   scripts/dashboard-screenshots.sh            # builds target/release/roster when needed
#   ROSTER_BIN=/path/to/roster scripts/dashboard-screenshots.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

bin="${ROSTER_BIN:-$root/target/release/roster}"
if [ -z "${ROSTER_BIN:-}" ]; then
  # Rebuild when the binary is missing or older than its sources, the dashboard's
  # files (embedded at build time) included.
  if [ ! -x "$bin" ] || [ -n "$(find crates/roster/src crates/roster/dashboard crates/roster/migrations \
      crates/roster/Cargo.toml crates/roster/build.rs Cargo.toml Cargo.lock -newer "$bin" -print -quit 2>/dev/null)" ]; then
    echo "[dashboard-screenshots] cargo build --release -p roster" >&2
    cargo build --release --locked -p roster --bin roster
  fi
fi

bash scripts/ensure-chromium.sh
cd clients/typescript
if [ ! -d node_modules/playwright-core ] || [ ! -d node_modules/ws ]; then
  npm ci --no-audit --no-fund
fi
node dashboard/scripts/screenshots.mjs --bin "$bin" --out "$root/docs"
