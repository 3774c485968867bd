/**
 * End-to-end support for the dashboard: Debian's Chromium (/usr/bin/chromium,
 * installed by scripts/ensure-chromium.sh) driven headless by playwright-core,
 * opening /dashboard on the real server of ./globalSetup.ts; native-protocol
 * clients (docs/PROTOCOL.md) over `ws` that join rooms as users would.
 */
import { mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import WebSocket from "ws";
import { mintToken, server, waitFor, type Claims } from "../../test-support/server.js";

export const APP_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const RESULTS = join(APP_DIR, "test-results");
export const SCREENSHOTS = join(RESULTS, "screenshots");
export const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
export const DASHBOARD_URL = `http://${server.addr}/dashboard`;

export async function launchChromium(): Promise<Browser> {
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

/** A monitor's token (tenant `acme`, as every token of test-support). */
export function monitorToken(sub = "ops"): string {
  return mintToken({ sub, roles: ["monitor"] });
}

export function adminToken(): string {
  return mintToken({ sub: "root", roles: ["admin"] });
}

export interface Dash {
  context: BrowserContext;
  page: Page;
  /** uncaught page errors and console errors */
  errors: string[];
}

/** A fresh browser context (own sessionStorage) with /dashboard open, not signed in. */
export async function openDashboard(
  browser: Browser,
  opts: { colorScheme?: "light" | "dark"; viewport?: { width: number; height: number } } = {},
): Promise<Dash> {
  const context = await browser.newContext({
    viewport: opts.viewport ?? { width: 1280, height: 800 },
    colorScheme: opts.colorScheme ?? "light",
  });
  const page = await context.newPage();
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`console: ${m.text()}`);
  });
  await page.goto(DASHBOARD_URL);
  return { context, page, errors };
}

/** Signs in through the form; resolves once the dashboard shows and the stream is live. */
export async function signIn(d: Dash, token = monitorToken()): Promise<void> {
  await d.page.getByTestId("login-token").fill(token);
  await d.page.getByTestId("login-submit").click();
  await d.page.locator("#dashboard").waitFor({ state: "visible", timeout: 10_000 });
  await waitLive(d);
}

export async function waitLive(d: Dash, timeout = 10_000): Promise<void> {
  await d.page.waitForFunction(() => document.querySelector("[data-testid=stream-status]")?.getAttribute("data-state") === "connected", undefined, {
    timeout,
  });
}

/** Types into the rooms filter (so that a room is on the first page whatever else exists). */
export async function filterRooms(d: Dash, text: string): Promise<void> {
  await d.page.getByTestId("rooms-filter").fill(text);
}

export function roomRow(d: Dash, key: string) {
  return d.page.locator(`[data-testid=room-row][data-key="${key}"]`);
}

/** Number shown by a totals card (`total-users` …), or NaN before the first `totals` event. */
export async function total(d: Dash, which: "users" | "sessions" | "rooms"): Promise<number> {
  const t = (await d.page.getByTestId(`total-${which}`).textContent()) ?? "";
  return Number(t.replace(/[^\d]/g, "")) || (t.trim() === "0" ? 0 : NaN);
}

export async function screenshot(d: Dash, name: string, fullPage = false): Promise<void> {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await d.page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage });
}

/** A client of the native protocol (docs/PROTOCOL.md) over `ws`: HELLO, then SUB. */
export class NativeClient {
  readonly frames: any[] = [];
  closeCode: number | undefined;
  private ref = 1;
  static readonly open = new Set<NativeClient>();

  private constructor(readonly ws: WebSocket) {
    ws.on("message", (raw) => this.frames.push(JSON.parse(raw.toString())));
    ws.on("close", (code) => (this.closeCode = code));
    NativeClient.open.add(this);
  }

  /** Opens a connection, sends HELLO (token of `claims`, tenant `acme`, and the device fields), waits for WELCOME. */
  static async connect(
    claims: Claims,
    device: { device?: string; os?: string; appVersion?: string } = {},
    wsUrl = `ws://${server.addr}/ws`,
    token = mintToken(claims),
  ): Promise<NativeClient> {
    const ws = new WebSocket(wsUrl);
    const c = new NativeClient(ws);
    await new Promise<void>((ok, fail) => {
      ws.once("open", () => ok());
      ws.once("error", fail);
    });
    c.send({ type: "HELLO", token, ...device });
    const w = await c.next((f) => f.type === "WELCOME" || f.type === "ERROR", "WELCOME");
    if (w.type !== "WELCOME") throw new Error(`HELLO refused: ${JSON.stringify(w)}`);
    return c;
  }

  send(msg: Record<string, unknown>): void {
    this.ws.send(JSON.stringify({ ref: this.ref++, ...msg }));
  }

  /** SUB (list mode); resolves with the PRESENCE answer (throws on ERROR). */
  async sub(room: string): Promise<any> {
    const ref = this.ref;
    this.send({ type: "SUB", room });
    const f = await this.next((f) => (f.type === "PRESENCE" || f.type === "PRESENCE_COUNT" || f.type === "ERROR") && f.ref === ref, `PRESENCE of ${room}`);
    if (f.type === "ERROR") throw new Error(`SUB ${room} refused: ${JSON.stringify(f)}`);
    return f;
  }

  next(pred: (f: any) => boolean, what: string, timeoutMs = 5000): Promise<any> {
    return waitFor(() => this.frames.find(pred), what, timeoutMs);
  }

  /** BYE: the session ends at once (no leave grace). */
  async bye(): Promise<void> {
    if (this.ws.readyState === WebSocket.OPEN) {
      this.send({ type: "BYE" });
      await new Promise<void>((ok) => {
        const t = setTimeout(() => {
          this.ws.terminate();
          ok();
        }, 2000);
        this.ws.once("close", () => {
          clearTimeout(t);
          ok();
        });
      });
    }
    NativeClient.open.delete(this);
  }

  static async closeAll(): Promise<void> {
    await Promise.all([...NativeClient.open].map((c) => c.bye()));
  }
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : Math.round((s[m - 1]! + s[m]!) / 2);
}
