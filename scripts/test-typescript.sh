#!/usr/bin/env bash
# Builds, type-checks and tests the TypeScript client packages (clients/typescript):
# @roster/client's unit tests and integration tests against the real `roster`
# server, and @roster/react's hook and component tests (jsdom), also against the
# real server. The shared test setup (clients/typescript/test-support) builds
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
rm -f packages/*/test-results/vitest.json
status=0
npm test || status=$?

# One closing line for tools that read the summary ("N passed, N failed"), summed
# over the packages' Vitest reports (packages/*/test-results/vitest.json).
node -e '
  const fs = require("fs"), path = require("path");
  let passed = 0, failed = 0, skipped = 0, found = 0;
  for (const p of fs.readdirSync("packages").sort()) {
    const f = path.resolve("packages", p, "test-results", "vitest.json");
    if (!fs.existsSync(f)) continue;
    const r = JSON.parse(fs.readFileSync(f, "utf8"));
    found++;
    passed += r.numPassedTests || 0;
    failed += r.numFailedTests || 0;
    skipped += (r.numPendingTests || 0) + (r.numTodoTests || 0);
  }
  if (found) console.log(`typescript: ${passed} passed, ${failed} failed` + (skipped ? `, ${skipped} skipped` : ""));
'
exit "$status"
