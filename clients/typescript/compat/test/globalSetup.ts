/**
 * Vitest `globalSetup` of the compatibility tests: the shared test server
 * (`../../test-support/globalSetup.ts`: built if stale, FAST_TIMINGS, a fresh
 * database, a random JWT secret), started with a config file holding three Pusher
 * apps of three tenants. `acme` is also the tenant of the native tokens that
 * `test-support/server.ts` mints, so native and Pusher clients of `acme` share rooms.
 *
 * `initech` has a `webhook_url`: a small HTTP receiver started here, before the
 * server, on 127.0.0.1:0. It keeps every POST (lower-case headers and the raw body)
 * and lists them at `GET /received` for the tests to poll (`inject("webhookReceiver")`).
 * The config also sets `[webhooks] allow_private = true` (a loopback URL is refused
 * otherwise): it is the file's form of `ROSTER_WEBHOOKS_ALLOW_PRIVATE=true`, and the
 * shared `startServer` drops every `ROSTER_*` variable of the environment but its own.
 */
import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { TestProject } from "vitest/node";
import { setupServer } from "../../test-support/globalSetup.js";

export interface PusherApp {
  tenant: string;
  appId: string;
  key: string;
  secret: string;
}

/** A POST the webhook receiver got. */
export interface ReceivedWebhook {
  /** Order of arrival, from 1. */
  seq: number;
  /** `Date.now()` at arrival. */
  at: number;
  path: string;
  /** Lower-case names, as `pusher.webhook({headers})` wants them. */
  headers: Record<string, string>;
  rawBody: string;
}

declare module "vitest" {
  export interface ProvidedContext {
    pusherApps: { acme: PusherApp; globex: PusherApp; initech: PusherApp };
    /** `url`: what `initech`'s `webhook_url` points at; `GET {origin}/received` lists the POSTs. */
    webhookReceiver: { origin: string; url: string };
  }
}

/** Keeps every POST; `GET /received` answers them all as JSON. */
async function startReceiver(): Promise<{ origin: string; close: () => Promise<void> }> {
  const received: ReceivedWebhook[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      if (req.method === "POST") {
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(req.headers)) headers[k.toLowerCase()] = Array.isArray(v) ? v.join(", ") : (v ?? "");
        received.push({
          seq: received.length + 1,
          at: Date.now(),
          path: req.url ?? "",
          headers,
          rawBody: Buffer.concat(chunks).toString("utf8"),
        });
        res.writeHead(200, { "content-type": "text/plain" }).end("ok");
      } else if (req.method === "GET" && req.url === "/received") {
        res.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" }).end(JSON.stringify(received));
      } else {
        res.writeHead(404).end();
      }
    });
  });
  await new Promise<void>((ok, fail) => {
    server.once("error", fail);
    server.listen(0, "127.0.0.1", ok);
  });
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((ok) => {
        server.closeAllConnections();
        server.close(() => ok());
      }),
  };
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const receiver = await startReceiver();
  const webhookUrl = `${receiver.origin}/pusher-hooks`;
  const apps = {
    acme: { tenant: "acme", appId: "1", key: "acme-key", secret: `acme-${randomBytes(12).toString("hex")}` },
    globex: { tenant: "globex", appId: "2", key: "globex-key", secret: `globex-${randomBytes(12).toString("hex")}` },
    initech: { tenant: "initech", appId: "3", key: "initech-key", secret: `initech-${randomBytes(12).toString("hex")}` },
  };
  const hooks: Partial<Record<keyof typeof apps, string>> = { initech: webhookUrl };
  const toml =
    "[webhooks]\nallow_private = true\n\n" +
    (Object.keys(apps) as (keyof typeof apps)[])
      .map((name) => {
        const a = apps[name];
        const hook = hooks[name] ? `webhook_url = "${hooks[name]}"\n` : "";
        return `[[pusher.apps]]\ntenant = "${a.tenant}"\napp_id = "${a.appId}"\nkey = "${a.key}"\nsecret = "${a.secret}"\n${hook}`;
      })
      .join("\n");
  let teardown: () => Promise<void>;
  try {
    teardown = await setupServer(project, { configToml: toml });
  } catch (e) {
    await receiver.close();
    throw e;
  }
  project.provide("pusherApps", apps);
  project.provide("webhookReceiver", { origin: receiver.origin, url: webhookUrl });
  return async () => {
    await teardown();
    await receiver.close();
  };
}
