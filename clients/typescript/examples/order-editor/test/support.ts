/**
 * End-to-end support: the built app (dist/) on a tiny static server on
 * 127.0.0.1:0, and Debian's Chromium (/usr/bin/chromium, installed by
 * scripts/ensure-chromium.sh) driven headless by playwright-core.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { dirname, extname, join, normalize, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { WS_URL, mintToken } from "../../../test-support/server.js";

export const APP_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const DIST = join(APP_DIR, "dist");
export const RESULTS = join(APP_DIR, "test-results");
export const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".json": "application/json",
  ".ico": "image/x-icon",
};

function newestMtime(path: string): number {
  if (!existsSync(path)) return 0;
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  return Math.max(st.mtimeMs, ...readdirSync(path).map((e) => newestMtime(join(path, e))));
}

/**
 * Builds dist/ when it is missing or older than the app's sources (`npm test` at
 * the workspace root builds it first anyway).
 */
export function ensureBuilt(): void {
  const built = newestMtime(join(DIST, "index.html"));
  const sources = ["src", "index.html", "vite.config.ts", "package.json"].map((p) => newestMtime(join(APP_DIR, p)));
  if (built > 0 && built >= Math.max(...sources)) return;
  // Vitest sets NODE_ENV=test, which would bundle React's development build.
  const r = spawnSync("npm", ["run", "build"], { cwd: APP_DIR, stdio: "inherit", env: { ...process.env, NODE_ENV: "production" } });
  if (r.status !== 0) throw new Error(`vite build failed (${r.status ?? r.signal})`);
}

/** Serves dist/ on 127.0.0.1:0; resolves with the origin and a close function. */
export async function serveDist(): Promise<{ origin: string; close: () => Promise<void> }> {
  const server: Server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
    let file = normalize(join(DIST, path));
    if (!file.startsWith(DIST)) {
      res.writeHead(403).end();
      return;
    }
    if (!existsSync(file) || statSync(file).isDirectory()) file = join(DIST, "index.html");
    res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream", "cache-control": "no-store" });
    res.end(readFileSync(file));
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

export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: run scripts/ensure-chromium.sh`);
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

export interface Visitor {
  userId: string;
  context: BrowserContext;
  page: Page;
  /** uncaught page errors and console errors, for the assertions and failure messages */
  errors: string[];
}

/** A browser context (own sessionStorage, so its own clientId) of a user, with the app open. */
export async function openApp(
  browser: Browser,
  origin: string,
  opts: { userId: string; name: string; order: string; friends: string[] },
): Promise<Visitor> {
  const context = await browser.newContext({ viewport: { width: 900, height: 760 } });
  const page = await context.newPage();
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`console: ${m.text()}`);
  });
  const token = mintToken({ sub: opts.userId, name: opts.name });
  const q = new URLSearchParams({ token, url: WS_URL, order: opts.order, friends: opts.friends.join(",") });
  await page.goto(`${origin}/?${q}`);
  return { userId: opts.userId, context, page, errors };
}

/** Waits (in the page, on every animation frame) until the room is joined. */
export async function joined(v: Visitor, timeout = 10_000): Promise<void> {
  await v.page.waitForFunction(() => document.querySelector("main")?.getAttribute("data-room-status") === "joined", undefined, {
    timeout,
  });
}

/** Waits until the page lists exactly these others (user ids, any order). */
export async function shows(v: Visitor, others: string[], timeout = 10_000): Promise<void> {
  const want = [...others].sort().join(",");
  await v.page.waitForFunction(
    (want) =>
      [...document.querySelectorAll("[data-testid=present-users] [data-user-id]")]
        .map((li) => li.getAttribute("data-user-id"))
        .sort()
        .join(",") === want,
    want,
    { timeout },
  );
}

export interface PresenceRecord {
  others: string[];
  history: { t: number; others: string[] }[];
  joinedAt: number | null;
}

export function record(v: Visitor): Promise<PresenceRecord> {
  return v.page.evaluate(() => JSON.parse(JSON.stringify(window.__presence ?? null)) as PresenceRecord);
}

export async function screenshot(v: Visitor, name: string): Promise<void> {
  mkdirSync(join(RESULTS, "screenshots"), { recursive: true });
  await v.page.screenshot({ path: join(RESULTS, "screenshots", `${name}.png`), fullPage: true });
}

declare global {
  interface Window {
    __presence?: PresenceRecord;
    __removed?: { t: number; userId: string }[];
  }
}
