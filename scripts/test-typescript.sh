#!/usr/bin/env bash
# Builds, type-checks and tests the TypeScript client packages (clients/typescript):
# @roster/client's unit tests and integration tests against the real `roster`
# server, and @roster/react's hook and component tests (jsdom), also against the
# real server; then the example app (examples/order-editor) end to end in real
# headless Chromium (Debian's /usr/bin/chromium, installed by ensure-chromium.sh,
# driven by playwright-core), also against the real server; then the operator
# dashboard served by the binary (/dashboard) end to end in Chromium too
# (clients/typescript/dashboard, a server of its own with short alert and
# stream intervals). The shared test setup (clients/typescript/test-support) builds
# target/release/roster with cargo itself when it is missing or older than its
# sources (ROSTER_BIN=/path/to/roster uses a given binary instead).
set -euo pipefail
cd "$(dirname "$0")/../clients/typescript"

export npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false
if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund
else
  npm install --no-audit --no-fund
fi

# Reports of an earlier run must not be counted if this one stops before its tests.
rm -f packages/*/test-results/vitest.json examples/*/test-results/vitest.json compat/test-results/vitest.json \
  dashboard/test-results/vitest.json
status=0
# Build (tsup, vite), type-check, then the packages' tests…
if npm run build && npm run typecheck; then
  npm run test:packages || status=$?
  # …then the end-to-end tests, in Chromium (installed here when missing).
  if bash ../../scripts/ensure-chromium.sh; then
    npm run test -w examples/order-editor || status=$?
    npm run test -w dashboard || status=$?
  else
    echo "test-typescript: cannot install chromium: end-to-end tests not run" >&2
    status=1
  fi
else
  status=1
fi

# One closing line for tools that read the summary ("N passed, N failed"), summed
# over the Vitest reports of the packages and of the examples' end-to-end tests
# (packages/*/test-results/vitest.json, compat/test-results/vitest.json — the
# Pusher compatibility tests, one in Chromium — and the end-to-end ones:
# examples/*/test-results/vitest.json and dashboard/test-results/vitest.json).
node -e '
  const fs = require("fs"), path = require("path");
  let passed = 0, failed = 0, skipped = 0, found = 0, e2ePassed = 0, e2eFailed = 0, e2eFound = 0;
  for (const dir of ["packages", "examples", "."]) {
    if (!fs.existsSync(dir)) continue;
    const names = dir === "." ? ["compat", "dashboard"] : fs.readdirSync(dir).sort();
    for (const p of names) {
      const f = path.resolve(dir, p, "test-results", "vitest.json");
      if (!fs.existsSync(f)) continue;
      const r = JSON.parse(fs.readFileSync(f, "utf8"));
      found++;
      passed += r.numPassedTests || 0;
      failed += r.numFailedTests || 0;
      skipped += (r.numPendingTests || 0) + (r.numTodoTests || 0);
      if (dir === "examples" || p === "dashboard") {
        e2eFound++;
        e2ePassed += r.numPassedTests || 0;
        e2eFailed += r.numFailedTests || 0;
      }
    }
  }
  const e2e = e2eFound ? `e2e in Chromium: ${e2ePassed} of ${e2ePassed + e2eFailed} passed` : "e2e in Chromium: not run";
  if (found) console.log(`typescript: ${passed} passed, ${failed} failed` + (skipped ? `, ${skipped} skipped` : "") + ` (${e2e})`);
'
exit "$status"
