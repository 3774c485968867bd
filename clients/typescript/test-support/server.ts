/**
 * Helpers for tests against the real server started by `./globalSetup.ts`
 * (shared by `packages/client` and `packages/react`): its address, HS256 tokens
 * signed with its secret, unique names, polling, and REST calls.
 */
import { createHmac, randomBytes } from "node:crypto";
import { inject } from "vitest";

export const server = inject("roster");
export const WS_URL = `ws://${server.addr}/ws`;
export const TENANT = "acme";

export interface Claims {
  sub: string;
  tenant?: string;
  exp?: number;
  roles?: string[];
  name?: string;
  /** Free-form member info shown to the others (`avatarUrl`, …). */
  info?: Record<string, unknown>;
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

/** A backend's token: may post lifecycle events (`POST /lifecycle`). */
export function serviceToken(): string {
  return mintToken({ sub: "backend", roles: ["service"] });
}

/** A short unique suffix: tests share one server, so names must not collide. */
export function uid(prefix: string): string {
  return `${prefix}-${randomBytes(4).toString("hex")}`;
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
