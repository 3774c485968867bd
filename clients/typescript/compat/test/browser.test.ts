/**
 * pusher-js in a real browser: its browser bundle (`pusher-js/dist/web/pusher.min.js`,
 * unchanged) in headless Chromium (Debian's /usr/bin/chromium, installed by
 * scripts/ensure-chromium.sh; `CHROMIUM_BIN` to use another), driven by
 * playwright-core as in examples/order-editor.
 *
 * A small Node HTTP server on 127.0.0.1:0 serves the page, the bundle and the
 * page's auth endpoint (`POST /pusher/auth`, pusher-js's default form-encoded
 * `socket_id` and `channel_name`, signed with the `pusher` SDK's
 * `authorizeChannel`, as a backend would). The page subscribes to a presence
 * channel and records what it sees in `window.__seen` (through `channel.bind`); the test polls it in the
 * page (waitForFunction) while a Node-side pusher-js client joins the channel
 * and sends a client event.
 */
import { existsSync, readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { createRequire } from "node:module";
import type { AddressInfo } from "node:net";
import { dirname, join } from "node:path";
import PusherServer from "pusher";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { WS_PORT, apps, closeAll, connect, membersOf, server, uid } from "./support.js";

const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
const BUNDLE = join(dirname(createRequire(import.meta.url).resolve("pusher-js/package.json")), "dist", "web", "pusher.min.js");
const app = apps.acme;
const signer = new PusherServer({ appId: app.appId, key: app.key, secret: app.secret, host: "127.0.0.1", useTLS: false });

/** What the page records (`window.__seen`). */
interface Seen {
  states: string[];
  errors: unknown[];
  subscribed: { me: { id: string; info: unknown }; members: Record<string, unknown> } | null;
  subscriptionError: unknown;
  added: { id: string; info: unknown }[];
  removed: { id: string; info: unknown }[];
  events: { event: string; data: unknown; meta: unknown }[];
}

/**
 * The page: loads the bundle, connects to the server's Pusher endpoint and
 * subscribes to `?channel=` as `?user=` (the auth endpoint signs `channel_data`
 * for that user).
 */
const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>pusher-js compat</title><link rel="icon" href="data:,"></head>
<body>
<script src="/pusher.min.js"></script>
<script>
  const q = new URLSearchParams(location.search);
  const seen = (window.__seen = { states: [], errors: [], subscribed: null, subscriptionError: null, added: [], removed: [], events: [] });
  const pusher = (window.__pusher = new Pusher(q.get("key"), {
    cluster: "mt1",
    wsHost: q.get("wsHost"),
    wsPort: Number(q.get("wsPort")),
    forceTLS: false,
    enabledTransports: ["ws"],
    enableStats: false,
    channelAuthorization: { endpoint: "/pusher/auth", transport: "ajax", params: { user: q.get("user") } },
  }));
  pusher.connection.bind("state_change", (s) => seen.states.push(s.current));
  pusher.connection.bind("error", (e) => seen.errors.push(JSON.parse(JSON.stringify(e))));
  const channel = (window.__channel = pusher.subscribe(q.get("channel")));
  channel.bind("pusher:subscription_succeeded", (members) => {
    const all = {};
    members.each((m) => (all[m.id] = m.info));
    seen.subscribed = { me: members.me, members: all };
  });
  channel.bind("pusher:subscription_error", (e) => (seen.subscriptionError = e));
  channel.bind("pusher:member_added", (m) => seen.added.push(m));
  channel.bind("pusher:member_removed", (m) => seen.removed.push(m));
  // Per event (bind_global hands over no metadata): the data and the metadata ({user_id}).
  for (const event of (q.get("events") || "").split(",").filter(Boolean)) {
    channel.bind(event, (data, meta) => seen.events.push({ event, data, meta: meta ?? null }));
  }
</script>
</body></html>`;

/** Page, bundle and auth endpoint on 127.0.0.1:0. */
async function servePage(): Promise<{ origin: string; auths: { socketId: string; channel: string; user: string }[]; close: () => Promise<void> }> {
  const auths: { socketId: string; channel: string; user: string }[] = [];
  const http: Server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    if (req.method === "GET" && url.pathname === "/") {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" }).end(PAGE);
    } else if (req.method === "GET" && url.pathname === "/pusher.min.js") {
      res.writeHead(200, { "content-type": "text/javascript; charset=utf-8" }).end(readFileSync(BUNDLE));
    } else if (req.method === "POST" && url.pathname === "/pusher/auth") {
      let body = "";
      req.setEncoding("utf8");
      req.on("data", (c: string) => (body += c));
      req.on("end", () => {
        const form = new URLSearchParams(body);
        const socketId = form.get("socket_id") ?? "";
        const channel = form.get("channel_name") ?? "";
        const user = form.get("user") ?? "";
        auths.push({ socketId, channel, user });
        try {
          const signed = signer.authorizeChannel(socketId, channel, { user_id: user, user_info: { name: `Browser ${user}`, via: "chromium" } });
          res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(signed));
        } catch (e) {
          res.writeHead(403, { "content-type": "text/plain" }).end(String(e));
        }
      });
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((ok, fail) => {
    http.once("error", fail);
    http.listen(0, "127.0.0.1", ok);
  });
  const { port } = http.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${port}`,
    auths,
    close: () =>
      new Promise<void>((ok) => {
        http.closeAllConnections();
        http.close(() => ok());
      }),
  };
}

let browser: Browser;
let site: Awaited<ReturnType<typeof servePage>>;
let context: BrowserContext | undefined;
const pageErrors: string[] = [];

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: run scripts/ensure-chromium.sh from the repository root`);
  [browser, site] = await Promise.all([
    chromium.launch({
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
    }),
    servePage(),
  ]);
});

afterAll(async () => {
  await browser?.close();
  await site?.close();
});

afterEach(async () => {
  closeAll();
  await context?.close().catch(() => {});
  context = undefined;
  pageErrors.length = 0;
});

/** Opens the page as `user`, subscribing to `channel` and recording `events` (client events). */
async function openPage(channel: string, user: string, events: string[]): Promise<Page> {
  context = await browser.newContext();
  const page = await context.newPage();
  page.on("pageerror", (e) => pageErrors.push(`pageerror: ${e.message}`));
  page.on("response", (r) => {
    if (r.status() >= 400) pageErrors.push(`HTTP ${r.status()} for ${r.url()}`);
  });
  page.on("console", (m) => {
    if (m.type() === "error") pageErrors.push(`console: ${m.text()}`);
  });
  const [host] = server.addr.split(":");
  const q = new URLSearchParams({ key: app.key, wsHost: host!, wsPort: String(WS_PORT), channel, user, events: events.join(",") });
  await page.goto(`${site.origin}/?${q}`);
  return page;
}

const seen = (page: Page): Promise<Seen> => page.evaluate(() => JSON.parse(JSON.stringify((window as any).__seen)) as Seen);

/** Waits, in the page, until `window.__seen` satisfies `pred` (a function of `seen` and `arg`). */
async function pageWaits<A>(page: Page, pred: (seen: Seen, arg: A) => boolean, arg: A, what: string, timeout = 15_000): Promise<void> {
  try {
    await page.waitForFunction(
      ([src, a]) => new Function("seen", "arg", `return (${src})(seen, arg)`)((window as any).__seen, a),
      [pred.toString(), arg] as const,
      { timeout, polling: 25 },
    );
  } catch (e) {
    throw new Error(`${what}: ${(e as Error).message}\nwindow.__seen = ${JSON.stringify(await seen(page).catch(() => null))}\npage errors: ${JSON.stringify(pageErrors)}`);
  }
}

describe("pusher-js in headless Chromium", () => {
  test("the browser subscribes to a presence channel, sees a Node pusher-js member join and its client event", async () => {
    const channel = uid("presence-browser");
    const browserUser = uid("web");
    const page = await openPage(channel, browserUser, ["client-hello"]);

    await pageWaits(page, (s) => s.subscribed !== null || s.subscriptionError !== null, null, "the browser's subscription");
    let s = await seen(page);
    expect(s.subscriptionError).toBeNull();
    expect(s.subscribed).toEqual({
      me: { id: browserUser, info: { name: `Browser ${browserUser}`, via: "chromium" } },
      members: { [browserUser]: { name: `Browser ${browserUser}`, via: "chromium" } },
    });
    // (pusher-js is already `connecting` when the page binds state_change.)
    expect(s.states).toEqual(["connected"]);
    // The auth endpoint signed for the browser's own socket id.
    expect(site.auths).toHaveLength(1);
    expect(site.auths[0]).toMatchObject({ channel, user: browserUser });
    expect(site.auths[0]!.socketId).toMatch(/^\d+\.\d+$/);
    expect(await page.evaluate(() => (window as any).__pusher.connection.socket_id)).toBe(site.auths[0]!.socketId);

    // A Node-side pusher-js member joins: the browser gets pusher:member_added.
    const nodeUser = { user_id: uid("node"), user_info: { name: "Node", runtime: "node" } };
    const node = await connect({ app, user: nodeUser });
    const ch = await node.presence(channel);
    expect(membersOf(ch)).toEqual({ [browserUser]: { name: `Browser ${browserUser}`, via: "chromium" }, [nodeUser.user_id]: nodeUser.user_info });
    await pageWaits(page, (s, id) => s.added.some((m) => m.id === id), nodeUser.user_id, "member_added of the Node user");
    s = await seen(page);
    expect(s.added).toEqual([{ id: nodeUser.user_id, info: nodeUser.user_info }]);

    // Its client event reaches the browser, with the sender's user_id.
    expect(ch.trigger("client-hello", { from: "node", n: 1 })).toBe(true);
    await pageWaits(page, (s) => s.events.some((e) => e.event === "client-hello"), null, "client-hello in the browser");
    s = await seen(page);
    expect(s.events).toEqual([{ event: "client-hello", data: { from: "node", n: 1 }, meta: { user_id: nodeUser.user_id } }]);

    // And back: the browser's client event reaches the Node client.
    await page.evaluate(() => (window as any).__channel.trigger("client-reply", { from: "browser" }));
    const reply = await node.next("client-reply", channel);
    expect(reply.data).toEqual({ from: "browser" });
    expect(reply.user_id).toBe(browserUser);

    // The Node user leaving is member_removed in the browser (after the leave grace).
    node.close();
    await pageWaits(page, (s, id) => s.removed.some((m) => m.id === id), nodeUser.user_id, "member_removed of the Node user");
    s = await seen(page);
    expect(s.removed).toEqual([{ id: nodeUser.user_id, info: nodeUser.user_info }]);
    expect(s.errors).toEqual([]);
    expect(pageErrors).toEqual([]);
  });
});
