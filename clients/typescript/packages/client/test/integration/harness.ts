/** Helpers for tests against the real server started by globalSetup.ts. */
import { createHmac, randomBytes } from "node:crypto";
import { inject, onTestFinished } from "vitest";
import WebSocket from "ws";
import { RosterClient, type RosterClientOptions } from "../../src/index.js";

export const server = inject("roster");
export const WS_URL = `ws://${server.addr}/ws`;
export const TENANT = "acme";

export interface Claims {
  sub: string;
  tenant?: string;
  exp?: number;
  roles?: string[];
  name?: string;
}

const b64url = (o: unknown) => Buffer.from(JSON.stringify(o)).toString("base64url");

/** An HS256 JWT, signed like the server expects (`sub`, `tenant`, `exp`, …). */
export function mintToken(claims: Claims, secret: string = server.secret): string {
  const body = { tenant: TENANT, exp: Math.floor(Date.now() / 1000) + 3600, ...claims };
  const head = `${b64url({ alg: "HS256", typ: "JWT" })}.${b64url(body)}`;
  return `${head}.${createHmac("sha256", secret).update(head).digest("base64url")}`;
}

export function adminToken(): string {
  return mintToken({ sub: "root", roles: ["admin"] });
}

/** A short unique suffix: tests share one server, so names must not collide. */
export function uid(prefix: string): string {
  return `${prefix}-${randomBytes(4).toString("hex")}`;
}

export interface TestClient {
  client: RosterClient;
  /** Every socket this client opened, in order. */
  sockets: WebSocket[];
  /** While true, new connections go to a closed port (the network is "down"). */
  block(on: boolean): void;
  /** Cuts the current TCP connection without a close frame. */
  dropConnection(): void;
}

/** A client on the `ws` package, closed after the test. */
export function testClient(userId: string, opts: Partial<RosterClientOptions> = {}): TestClient {
  const sockets: WebSocket[] = [];
  let blocked = false;
  class TrackedWebSocket extends WebSocket {
    constructor(url: string) {
      // Port 1 on loopback: refused at once, like a network that is down.
      super(blocked ? "ws://127.0.0.1:1/ws" : url);
      sockets.push(this);
    }
  }
  const client = new RosterClient({
    url: WS_URL,
    token: opts.getToken ? undefined : mintToken({ sub: userId, name: `${userId} name` }),
    device: "web",
    appVersion: "test",
    clientIdStorage: null,
    WebSocket: TrackedWebSocket,
    reconnect: { baseMs: 50, maxMs: 200 },
    ...opts,
  });
  onTestFinished(async () => {
    if (client.state !== "closed") await client.disconnect();
  });
  return {
    client,
    sockets,
    block(on: boolean) {
      blocked = on;
    },
    dropConnection() {
      const s = sockets.at(-1);
      if (!s) throw new Error("no socket");
      s.terminate();
    },
  };
}

/** Polls `check` until it returns a truthy value. */
export async function waitFor<T>(check: () => T | undefined | null | false, what: string, timeoutMs = 5000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = check();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** REST call with a bearer token. */
export async function rest(method: string, path: string, token: string, body?: unknown): Promise<{ status: number; json: unknown }> {
  const res = await fetch(`http://${server.addr}/api/v1${path}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body !== undefined ? { "content-type": "application/json" } : {}),
    },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  let json: unknown = text;
  try {
    json = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: res.status, json };
}
