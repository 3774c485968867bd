#!/usr/bin/env bash
# Builds, type-checks and tests the TypeScript client packages (clients/typescript):
# unit tests and integration tests against the real `roster` server. The test
# setup builds target/release/roster with cargo itself when it is missing or older
# than its sources (ROSTER_BIN=/path/to/roster uses a given binary instead).
set -euo pipefail
cd "$(dirname "$0")/../clients/typescript"

export npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false
if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund
else
  npm install --no-audit --no-fund
fi

status=0
npm test || status=$?

# One closing line for tools that read the summary ("N passed, N failed").
report=packages/client/test-results/vitest.json
if [ -f "$report" ]; then
  node -e '
    const r = require(process.argv[1]);
    const skipped = (r.numPendingTests || 0) + (r.numTodoTests || 0);
    console.log(`typescript: ${r.numPassedTests} passed, ${r.numFailedTests} failed` + (skipped ? `, ${skipped} skipped` : ""));
  ' "$PWD/$report"
fi
exit "$status"
