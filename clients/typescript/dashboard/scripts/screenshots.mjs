#!/usr/bin/env node
// Takes the dashboard's screenshots for the docs from a seeded demo:
//
//   node scripts/screenshots.mjs --bin ../../../target/release/roster --out ../../../docs
//
// (scripts/dashboard-screenshots.sh builds the binary and calls this.) Starts
// the roster binary on 127.0.0.1:0 with a fresh SQLite database, declares a few
// rooms of different types and capacities, connects ~30 native-protocol clients
// with different devices, OSes and app versions and keeps them open, takes a
// field lock, marks one entity stale, adds alert rules so that a capacity alert
// fires, lets some users leave (activity), then writes dashboard-light.png
// (overview, light theme) and dashboard-dark.png (a room's panel: members,
// locks, charts; dark theme), 1280×800, with playwright-core and Debian's
// /usr/bin/chromium.

import { spawn } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";
import WebSocket from "ws";

const { values: args } = parseArgs({
  options: {
    bin: { type: "string" },
    out: { type: "string" },
    chromium: { type: "string", default: process.env.CHROMIUM_BIN ?? "/usr/bin/chromium" },
  },
});
if (!args.bin || !args.out) {
  console.error("usage: screenshots.mjs --bin <roster binary> --out <directory>");
  process.exit(2);
}
const BIN = resolve(args.bin);
const OUT = resolve(args.out);
const TENANT = "acme";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- server ---------------------------------------------------------------

const dir = mkdtempSync(join(tmpdir(), "roster-demo-"));
const secret = randomBytes(24).toString("hex");
const env = {};
for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("ROSTER_")) env[k] = v;
Object.assign(env, {
  ROSTER_AUTH_JWT_SECRET: secret,
  ROSTER_DATABASE_URL: `sqlite://${join(dir, "roster.db")}`,
  ROSTER_LOG_LEVEL: "warn",
  ROSTER_TIMING_HEARTBEAT_INTERVAL: "1s",
  ROSTER_TIMING_DIFF_WINDOW: "20ms",
  ROSTER_ALERTS_EVAL_INTERVAL: "200ms",
  ROSTER_DASHBOARD_UPDATE_INTERVAL: "200ms",
});
const child = spawn(BIN, ["--listen", "127.0.0.1:0"], { cwd: dir, env, stdio: ["ignore", "ignore", "pipe"] });
const log = [];
const addr = await new Promise((ok, fail) => {
  const timer = setTimeout(() => fail(new Error(`roster did not start:\n${log.join("\n")}`)), 20_000);
  let buf = "";
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk) => {
    buf += chunk;
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      log.push(line);
      const m = /roster listening on http:\/\/(\S+)/.exec(line);
      if (m) {
        clearTimeout(timer);
        ok(m[1]);
      }
    }
  });
  child.on("exit", (code) => fail(new Error(`roster exited (${code}):\n${log.join("\n")}`)));
});
const base = `http://${addr}`;
console.log(`[demo] roster on ${base}`);

let browser;
const clients = [];
async function cleanup() {
  for (const ws of clients) ws.terminate();
  await browser?.close().catch(() => {});
  child.kill("SIGTERM");
  await new Promise((r) => (child.exitCode !== null ? r() : child.once("exit", r)));
  rmSync(dir, { recursive: true, force: true });
}

// ---- helpers --------------------------------------------------------------

const b64url = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
function token(claims) {
  const body = { tenant: TENANT, exp: Math.floor(Date.now() / 1000) + 3600, ...claims };
  const head = `${b64url({ alg: "HS256", typ: "JWT" })}.${b64url(body)}`;
  return `${head}.${createHmac("sha256", secret).update(head).digest("base64url")}`;
}
const admin = token({ sub: "root", roles: ["admin"] });
const service = token({ sub: "erp", roles: ["service"] });
const monitor = token({ sub: "ops-on-call", name: "On-call operator", roles: ["monitor"] });

async function rest(method, path, tok, body) {
  const res = await fetch(`${base}/api/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${tok}`, ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** A native-protocol client (docs/PROTOCOL.md): HELLO with device fields, SUB to rooms; kept open. */
async function client(user, name, device, rooms) {
  const ws = new WebSocket(`ws://${addr}/ws`);
  clients.push(ws);
  const frames = [];
  ws.on("message", (raw) => frames.push(JSON.parse(raw.toString())));
  await new Promise((ok, fail) => {
    ws.once("open", ok);
    ws.once("error", fail);
  });
  let ref = 1;
  const send = (m) => ws.send(JSON.stringify({ ref: ref++, ...m }));
  const wait = async (pred, what) => {
    for (let i = 0; i < 500; i++) {
      const f = frames.find(pred);
      if (f) return f;
      await sleep(10);
    }
    throw new Error(`timed out waiting for ${what}`);
  };
  send({ type: "HELLO", token: token({ sub: user, name }), ...device });
  await wait((f) => f.type === "WELCOME", "WELCOME");
  for (const room of rooms) {
    const r = ref;
    send({ type: "SUB", room, state: room.startsWith("Order:") ? { field: "lines" } : {} });
    const f = await wait((f) => f.ref === r && (f.type === "PRESENCE" || f.type === "PRESENCE_COUNT" || f.type === "ERROR"), `SUB ${room}`);
    if (f.type === "ERROR") console.warn(`[demo] ${user} could not join ${room}: ${f.code ?? JSON.stringify(f)}`);
  }
  return { ws, send, wait, frames, ref: () => ref };
}

// ---- seed -----------------------------------------------------------------

try {
  const rooms = [
    { key: "Order:1042", type: "COLLABORATION", capacity: 12, tags: ["orders"] },
    { key: "Order:1043", type: "COLLABORATION", capacity: 12, tags: ["orders"] },
    { key: "Invoice:2026-118", type: "GENERIC", capacity: 20 },
    { key: "Call:standup", type: "WEBRTC", capacity: 6 },
    { key: "Support:ticket-5521", type: "SUPPORT", capacity: 8 },
    { key: "Board:sprint-48", type: "CHAT", capacity: 40 },
    { key: "Match:ranked-7", type: "GAMING", capacity: 4 },
    { key: "Doc:roadmap-2027", type: "COLLABORATION", capacity: 10 },
  ];
  for (const r of rooms) await rest("POST", "/rooms", admin, r);

  await rest("POST", "/alert-rules", admin, {
    name: "Stand-up call full",
    kind: "capacity",
    threshold: 90,
    scope: "room",
    target: "Call:standup",
    severity: "critical",
  });
  await rest("POST", "/alert-rules", admin, {
    name: "Collaboration rooms busy",
    kind: "capacity",
    threshold: 75,
    scope: "roomType",
    target: "COLLABORATION",
    severity: "warning",
  });
  await rest("POST", "/alert-rules", admin, {
    name: "Slow clients",
    kind: "latency",
    threshold: 800,
    scope: "tenant",
    severity: "info",
  });

  const devices = [
    { device: "web", os: "macOS 15.2", appVersion: "5.4.1" },
    { device: "mobile", os: "iOS 18.1", appVersion: "5.4.0" },
    { device: "desktop", os: "Windows 11", appVersion: "5.4.1" },
    { device: "mobile", os: "Android 15", appVersion: "5.3.2" },
    { device: "web", os: "Ubuntu 24.04", appVersion: "5.4.1" },
    { device: "tablet", os: "iPadOS 18.1", appVersion: "5.2.9" },
  ];
  const people = [
    ["alice", "Alice Martin"], ["bruno", "Bruno Silva"], ["chloe", "Chloé Dubois"], ["dmitri", "Dmitri Ivanov"],
    ["emma", "Emma Weber"], ["farid", "Farid Haddad"], ["grace", "Grace Kim"], ["hiro", "Hiro Tanaka"],
    ["ines", "Inès Moreau"], ["jonas", "Jonas Berg"], ["kofi", "Kofi Mensah"], ["lena", "Lena Fischer"],
    ["mateo", "Mateo Rossi"], ["nadia", "Nadia Rahman"], ["oscar", "Oscar Lind"], ["priya", "Priya Nair"],
    ["quentin", "Quentin Roux"], ["rosa", "Rosa García"], ["sven", "Sven Olsen"], ["tara", "Tara Singh"],
    ["umar", "Umar Farouk"], ["vera", "Vera Novak"], ["wei", "Wei Zhang"], ["yara", "Yara Costa"],
  ];
  // Who joins where (a few users on two devices).
  const plan = [
    ["Order:1042", 10], ["Order:1043", 3], ["Invoice:2026-118", 4], ["Call:standup", 6],
    ["Support:ticket-5521", 2], ["Board:sprint-48", 5], ["Match:ranked-7", 2], ["Doc:roadmap-2027", 0],
  ];
  const held = [];
  let n = 0;
  for (const [room, count] of plan) {
    for (let i = 0; i < count; i++) {
      const [user, name] = people[n % people.length];
      held.push({ user, room, c: await client(user, name, devices[n % devices.length], [room]) });
      n++;
      await sleep(40);
    }
  }
  // Some leave again (activity), and a lock is taken in Order:1042.
  for (const h of held.filter((h) => h.room === "Board:sprint-48").slice(0, 2)) h.c.send({ type: "BYE" });
  const editor = held.find((h) => h.room === "Order:1042");
  editor.c.send({ type: "LOCK", room: "Order:1042", field: "totalAmount" });
  // A record changed behind the users' backs: Order:1043 goes stale.
  await rest("POST", "/lifecycle", service, { type: "MUTATING", entity: "Order", id: 1043, userId: "erp-sync" });
  console.log(`[demo] ${clients.length} clients connected`);

  // Room statistics are written per minute, once the minute is over: churn a
  // little (joins, leaves: activity and chart data) until Order:1042 has two
  // 1-minute buckets, or at most 150 s.
  const churnRoom = "Board:sprint-48";
  const deadline = Date.now() + 150_000;
  for (let i = 0; Date.now() < deadline; i++) {
    const stats = await rest("GET", `/rooms/${encodeURIComponent("Order:1042")}/stats?bucket=1m`, monitor);
    if (stats.items.length >= 2) break;
    if (i % 10 === 0) console.log(`[demo] waiting for minute statistics (${stats.items.length} bucket(s) so far)`);
    const [user, name] = people[(n + i) % people.length];
    const c = await client(user, name, devices[i % devices.length], [churnRoom, "Order:1042"]);
    await sleep(2500);
    c.send({ type: "BYE" });
    await sleep(2500);
  }
  // Let latency measurements (server pings) and the alert evaluation happen.
  await sleep(2000);
  const firing = await rest("GET", "/alerts?state=firing", monitor);
  console.log(`[demo] firing alerts: ${firing.items.map((a) => a.ruleName).join(", ") || "none"}`);

  // ---- screenshots --------------------------------------------------------
  browser = await chromium.launch({
    executablePath: args.chromium,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
  });
  mkdirSync(OUT, { recursive: true });
  for (const theme of ["light", "dark"]) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, colorScheme: theme, deviceScaleFactor: 1 });
    const page = await context.newPage();
    page.on("pageerror", (e) => console.warn(`[demo] page error: ${e.message}`));
    await page.goto(`${base}/dashboard`);
    await page.getByTestId("login-token").fill(monitor);
    await page.getByTestId("login-submit").click();
    await page.waitForFunction(() => document.querySelector("[data-testid=stream-status]")?.getAttribute("data-state") === "connected");
    await page.locator("[data-testid=room-row]").first().waitFor();
    await page.locator("[data-testid=alert-item]").first().waitFor({ timeout: 10_000 }).catch(() => console.warn("[demo] no alert shown"));
    if (theme === "dark") {
      await page.locator('[data-testid=room-row][data-key="Order:1042"]').click();
      await page.locator("[data-testid=member-row]").first().waitFor();
      await page
        .waitForFunction(() => [...document.querySelectorAll("[data-testid=member-latency]")].every((e) => /ms$/.test(e.textContent ?? "")), undefined, {
          timeout: 10_000,
        })
        .catch(() => console.warn("[demo] some latencies not measured yet"));
      await page.waitForFunction(() => document.querySelector("#chart-online canvas") || document.querySelector("#charts-note")?.textContent);
    }
    await sleep(700); // let the feed's highlight fade
    await page.mouse.move(0, 799);
    const file = join(OUT, `dashboard-${theme}.png`);
    await page.screenshot({ path: file });
    console.log(`[demo] wrote ${file}`);
    await context.close();
  }
} catch (e) {
  console.error(e);
  process.exitCode = 1;
} finally {
  await cleanup();
}
