/**
 * Vitest `globalSetup` of the compatibility tests: the shared test server
 * (`../../test-support/globalSetup.ts`: built if stale, FAST_TIMINGS, a fresh
 * database, a random JWT secret), started with a config file holding two Pusher
 * apps of two tenants. `acme` is also the tenant of the native tokens that
 * `test-support/server.ts` mints, so native and Pusher clients of `acme` share rooms.
 */
import { randomBytes } from "node:crypto";
import type { TestProject } from "vitest/node";
import { setupServer } from "../../test-support/globalSetup.js";

export interface PusherApp {
  tenant: string;
  appId: string;
  key: string;
  secret: string;
}

declare module "vitest" {
  export interface ProvidedContext {
    pusherApps: { acme: PusherApp; globex: PusherApp };
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const apps = {
    acme: { tenant: "acme", appId: "1", key: "acme-key", secret: `acme-${randomBytes(12).toString("hex")}` },
    globex: { tenant: "globex", appId: "2", key: "globex-key", secret: `globex-${randomBytes(12).toString("hex")}` },
  };
  const toml = Object.values(apps)
    .map(
      (a) =>
        `[[pusher.apps]]\ntenant = "${a.tenant}"\napp_id = "${a.appId}"\nkey = "${a.key}"\nsecret = "${a.secret}"\n`,
    )
    .join("\n");
  const teardown = await setupServer(project, { configToml: toml });
  project.provide("pusherApps", apps);
  return teardown;
}
