/**
 * Vitest `globalSetup` of the dashboard's end-to-end tests: the shared test
 * server (`../../test-support/globalSetup.ts`: built if stale — its sources
 * include crates/roster/dashboard, the files the binary embeds — FAST_TIMINGS, a
 * fresh database, a random JWT secret), started with a config file that makes
 * alerts evaluate and the live stream push every 200 ms, so a capacity rule
 * fires within a fraction of a second. The config file is the way in: the
 * shared `startServer` drops every `ROSTER_*` variable of the environment but
 * its own. `../../test-support/server.ts` (tokens, REST, polling) works
 * unchanged.
 */
import type { TestProject } from "vitest/node";
import { setupServer } from "../../test-support/globalSetup.js";

/** `alerts.eval_interval` and `dashboard.update_interval` of the test server. */
export const DASHBOARD_CONFIG = `[alerts]
eval_interval = "200ms"

[dashboard]
update_interval = "200ms"
`;

export default function setup(project: TestProject): Promise<() => Promise<void>> {
  return setupServer(project, { configToml: DASHBOARD_CONFIG });
}
