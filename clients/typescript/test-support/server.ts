/**
 * Helpers for tests against the real server started by `./globalSetup.ts`
 * (shared by `packages/client` and `packages/react`): its address, HS256 tokens
 * signed with its secret, unique names, polling, and REST calls.
 */
import type { ChildProcess } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inject } from "vitest";
import { startServer } from "./globalSetup.js";

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

/** A server of one test's own (the shared one must never stop): see {@link ownServer}. */
export interface OwnServer {
  /** `127.0.0.1:PORT`, the same across restarts. */
  readonly addr: string;
  readonly wsUrl: string;
  /** A token this server accepts (same claims as {@link mintToken}). */
  token(claims: Claims): string;
  /** SIGTERM, and resolves once the process has exited. */
  stop(): Promise<void>;
  /** Starts the binary again on the same port, with the same secret and database. */
  start(): Promise<void>;
  /** Stops it (if running) and removes its files. */
  close(): Promise<void>;
}

/** Starts the roster binary for one test: a server it may stop and start again. */
export async function ownServer(): Promise<OwnServer> {
  const dir = mkdtempSync(join(tmpdir(), "roster-own-"));
  const secret = randomBytes(24).toString("hex");
  let running: ChildProcess | null = null;
  let addr = "127.0.0.1:0";
  const launch = async () => {
    const s = await startServer(server.bin, dir, secret, addr);
    running = s.child;
    addr = s.addr;
    s.child.removeAllListeners("exit");
    s.child.on("exit", () => {
      if (running === s.child) running = null;
    });
  };
  const stop = async () => {
    const child = running;
    if (!child) return;
    const exited = new Promise<void>((r) => child.once("exit", () => r()));
    child.kill("SIGTERM");
    const kill = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(kill);
  };
  await launch();
  return {
    get addr() {
      return addr;
    },
    get wsUrl() {
      return `ws://${addr}/ws`;
    },
    token: (claims) => mintToken(claims, secret),
    stop,
    start: launch,
    close: async () => {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
