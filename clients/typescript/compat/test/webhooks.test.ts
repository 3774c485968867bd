/**
 * Pusher webhooks (docs/PUSHER.md "Webhooks"): app `initech` has a `webhook_url`
 * pointing at the receiver of `./globalSetup.ts`, which keeps every POST. Each POST
 * is checked with the official SDK, unchanged: `pusher.webhook({headers, rawBody})
 * .isValid()` (X-Pusher-Key, X-Pusher-Signature, content type), then `getEvents()`.
 *
 * The events of a channel, in order: channel_occupied, member_added once per user
 * (even with two connections of that user), member_removed once the user's last
 * connection is gone and the leave grace is over, channel_vacated.
 */
import PusherServer from "pusher";
import { afterEach, describe, expect, inject, test } from "vitest";
import type { ReceivedWebhook } from "./globalSetup.js";
import { GRACE_MS, NativeClient, apps, backend, closeAll, connect, sleep, uid } from "./support.js";

afterEach(closeAll);

const receiver = inject("webhookReceiver");
const app = apps.initech;
/** The SDK a backend would check webhooks with. */
const sdk = new PusherServer({ appId: app.appId, key: app.key, secret: app.secret, host: "127.0.0.1", useTLS: false });

interface HookEvent {
  name: string;
  channel: string;
  user_id?: string;
  /** The POST's `time_ms`. */
  time_ms: number;
  /** The POST's arrival order at the receiver. */
  seq: number;
  /** `Date.now()` at the POST's arrival. */
  at: number;
}

/** Every POST so far. */
async function received(): Promise<ReceivedWebhook[]> {
  const res = await fetch(`${receiver.origin}/received`);
  expect(res.status).toBe(200);
  return (await res.json()) as ReceivedWebhook[];
}

/** Every POST so far, each checked with the SDK; their events, in arrival order. */
async function hookEvents(): Promise<HookEvent[]> {
  const out: HookEvent[] = [];
  for (const post of await received()) {
    const hook = sdk.webhook({ headers: post.headers, rawBody: post.rawBody });
    if (!hook.isValid()) {
      throw new Error(`webhook POST #${post.seq} fails pusher.webhook().isValid(): headers ${JSON.stringify(post.headers)} body ${post.rawBody}`);
    }
    const time = hook.getTime();
    for (const e of hook.getEvents() as any[]) out.push({ ...e, time_ms: time.getTime(), seq: post.seq, at: post.at });
  }
  return out;
}

/** The events of one channel (name, user_id), in order. */
async function eventsOf(channel: string): Promise<HookEvent[]> {
  return (await hookEvents()).filter((e) => e.channel === channel);
}

const brief = (es: HookEvent[]) => es.map((e) => (e.user_id === undefined ? [e.name] : [e.name, e.user_id]));

/** Polls until the channel's events satisfy `done`; returns them. */
async function until(channel: string, done: (es: HookEvent[]) => boolean, what: string, timeoutMs = 10_000): Promise<HookEvent[]> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const es = await eventsOf(channel);
    if (done(es)) return es;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; webhook events of ${channel}: ${JSON.stringify(brief(es))}`);
    await sleep(50);
  }
}

const has = (name: string, user?: string) => (es: HookEvent[]) => es.some((e) => e.name === name && (user === undefined || e.user_id === user));

/** `subscription_count` of a channel of the app, over the HTTP API. */
async function sessionsIn(channel: string): Promise<number> {
  const res = await backend(app).get({ path: `/channels/${channel}`, params: { info: "subscription_count" } });
  const body = (await res.json()) as { occupied: boolean; subscription_count?: number };
  return body.subscription_count ?? 0;
}

describe("Pusher webhooks", () => {
  test("every POST passes the SDK's webhook().isValid(): X-Pusher-Key, X-Pusher-Signature, application/json", async () => {
    const room = uid("presence-sig");
    const c = await connect({ app, user: { user_id: uid("u"), user_info: {} } });
    await c.presence(room);
    await until(room, has("member_added"), "member_added");

    const posts = await received();
    expect(posts.length).toBeGreaterThan(0);
    for (const post of posts) {
      expect(post.headers["x-pusher-key"]).toBe(app.key);
      expect(post.headers["x-pusher-signature"]).toMatch(/^[0-9a-f]{64}$/);
      expect(post.headers["content-type"]).toBe("application/json");
      const body = JSON.parse(post.rawBody);
      expect(Object.keys(body).sort()).toEqual(["events", "time_ms"]);
      expect(typeof body.time_ms).toBe("number");
      expect(Math.abs(body.time_ms - post.at)).toBeLessThan(60_000);
      expect(sdk.webhook({ headers: post.headers, rawBody: post.rawBody }).isValid()).toBe(true);
      // The same POST checked with another secret, or a changed body, is not valid.
      const wrong = new PusherServer({ appId: app.appId, key: app.key, secret: "not-the-secret", host: "127.0.0.1", useTLS: false });
      expect(wrong.webhook({ headers: post.headers, rawBody: post.rawBody }).isValid()).toBe(false);
      expect(sdk.webhook({ headers: post.headers, rawBody: post.rawBody.replace("}", ' }') + " " }).isValid()).toBe(false);
    }
  });

  test("a presence channel: occupied, member_added once per user, member_removed after the grace of the last connection, vacated", async () => {
    const room = uid("presence-hooks");
    const alice = uid("alice");
    const bob = uid("bob");
    const a1 = await connect({ app, user: { user_id: alice, user_info: { name: "Alice" } } });
    await a1.presence(room);
    const a2 = await connect({ app, user: { user_id: alice, user_info: { name: "Alice" } } }); // a second tab
    await a2.presence(room);
    const b = await connect({ app, user: { user_id: bob, user_info: { name: "Bob" } } });
    await b.presence(room);

    let es = await until(room, has("member_added", bob), "member_added of bob");
    expect(brief(es)).toEqual([["channel_occupied"], ["member_added", alice], ["member_added", bob]]);

    // Alice's first tab goes: her session there ends after the grace, and she is still in.
    a1.close();
    const end = Date.now() + GRACE_MS + 10_000;
    while ((await sessionsIn(room)) !== 2) {
      if (Date.now() > end) throw new Error(`subscription_count of ${room} never went from 3 to 2`);
      await sleep(50);
    }
    // Bob goes: member_removed for him after the grace, and none for alice before it.
    const bobLeft = Date.now();
    b.close();
    es = await until(room, has("member_removed", bob), "member_removed of bob", GRACE_MS + 10_000);
    const bobRemoved = es.find((e) => e.name === "member_removed" && e.user_id === bob)!;
    expect(bobRemoved.at - bobLeft).toBeGreaterThanOrEqual(GRACE_MS - 100);
    expect(brief(es)).toEqual([["channel_occupied"], ["member_added", alice], ["member_added", bob], ["member_removed", bob]]);

    // Alice's last tab goes: member_removed after the grace, then channel_vacated.
    const aliceLeft = Date.now();
    a2.close();
    es = await until(room, has("channel_vacated"), "channel_vacated", GRACE_MS + 10_000);
    const aliceRemoved = es.find((e) => e.name === "member_removed" && e.user_id === alice);
    expect(aliceRemoved).toBeDefined();
    expect(aliceRemoved!.at - aliceLeft).toBeGreaterThanOrEqual(GRACE_MS - 100);
    expect(brief(es)).toEqual([
      ["channel_occupied"],
      ["member_added", alice],
      ["member_added", bob],
      ["member_removed", bob],
      ["member_removed", alice],
      ["channel_vacated"],
    ]);
    // The POSTs' time_ms do not go back.
    for (let i = 1; i < es.length; i++) expect(es[i]!.time_ms).toBeGreaterThanOrEqual(es[i - 1]!.time_ms);
  });

  test("a private channel: occupied and vacated, no member events", async () => {
    const room = uid("private-hooks");
    const c1 = await connect({ app });
    await c1.subscribe(room);
    const c2 = await connect({ app });
    await c2.subscribe(room);
    await until(room, has("channel_occupied"), "channel_occupied");
    c1.close();
    c2.close();
    const es = await until(room, has("channel_vacated"), "channel_vacated", GRACE_MS + 10_000);
    expect(brief(es)).toEqual([["channel_occupied"], ["channel_vacated"]]);
  });

  test("a native member of the app's tenant counts too; other tenants' channels are not sent", async () => {
    const room = uid("presence-mixed");
    const acmeRoom = uid("presence-mixed-acme");
    // acme has no webhook_url: its channels must never reach initech's receiver.
    const acmeClient = await connect({ user: { user_id: uid("acme-u"), user_info: {} } });
    await acmeClient.presence(acmeRoom);

    const natId = uid("nat");
    const nat = await NativeClient.connect({ sub: natId, tenant: app.tenant });
    expect((await nat.sub(room)).type).toBe("PRESENCE");
    const pamId = uid("pam");
    const pam = await connect({ app, user: { user_id: pamId, user_info: {} } });
    await pam.presence(room);
    let es = await until(room, has("member_added", pamId), "member_added of pam");
    expect(brief(es)).toEqual([["channel_occupied"], ["member_added", natId], ["member_added", pamId]]);

    nat.close();
    pam.close();
    es = await until(room, has("channel_vacated"), "channel_vacated", GRACE_MS + 10_000);
    expect(es.map((e) => e.name)).toEqual(["channel_occupied", "member_added", "member_added", "member_removed", "member_removed", "channel_vacated"]);
    expect(es.filter((e) => e.name === "member_removed").map((e) => e.user_id).sort()).toEqual([natId, pamId].sort());

    // acme's channel was occupied before all of this: had it been sent, it would be there.
    expect((await hookEvents()).filter((e) => e.channel === acmeRoom)).toEqual([]);
    for (const post of await received()) expect(post.headers["x-pusher-key"]).toBe(app.key);
  });
});
