/**
 * The Pusher HTTP API (docs/PUSHER.md "HTTP API") through the official `pusher`
 * Node SDK, unchanged, configured `{appId, key, secret, host, port, useTLS: false}`
 * against the test server: trigger (one channel, several, `socket_id` exclusion),
 * triggerBatch, the channel and user queries, terminateUserConnections, and a
 * request signed with a wrong secret.
 *
 * Every triggered event is checked where it lands: pusher-js clients (through
 * `channel.bind`) and native clients of the same room (`EVENT {room, event, data,
 * from: null}`, `data` the string the SDK sent). What must *not* arrive is checked
 * without fixed sleeps where the order of one connection allows it: an excluded
 * connection gets a later event, and must have got nothing before it.
 */
import type { Channel } from "pusher-js";
import { afterEach, describe, expect, test } from "vitest";
import {
  AFTER_GRACE_MS,
  GRACE_MS,
  NativeClient,
  PusherClient,
  apps,
  backend,
  closeAll,
  connect,
  sleep,
  uid,
  waitFor,
} from "./support.js";

afterEach(closeAll);

/** Polls an async check until it returns a truthy value. */
async function eventually<T>(check: () => Promise<T | undefined | null | false>, what: string, timeoutMs = 8000): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${String(last)})` : ""}`);
    await sleep(50);
  }
}

/** What `channel.bind(event, …)` handed to the application. */
function record(channel: Channel, event: string): { data: unknown; meta: unknown }[] {
  const got: { data: unknown; meta: unknown }[] = [];
  channel.bind(event, (data: unknown, meta: unknown) => got.push({ data, meta }));
  return got;
}

/** A presence member of `room` with its own user id (or the given one). */
async function member(room: string, userId = uid("u")): Promise<{ c: PusherClient; ch: Channel; userId: string }> {
  const c = await connect({ user: { user_id: userId, user_info: { name: userId } } });
  const ch = await c.presence(room);
  return { c, ch, userId };
}

/** The native EVENT frames of `room` (and event). */
function nativeEvents(n: NativeClient, room: string, event?: string): any[] {
  return n.seen((f) => f.type === "EVENT" && f.room === room && (event === undefined || f.event === event));
}

/** The SDK's answer as JSON. */
async function json(res: { status: number; json(): Promise<unknown> }): Promise<any> {
  expect(res.status).toBe(200);
  return res.json();
}

describe("trigger", () => {
  test("one channel: every pusher-js member gets it through channel.bind; a native member gets EVENT from null", async () => {
    const room = uid("presence-orders");
    const a = await member(room);
    const b = await member(room);
    const nat = await NativeClient.connect({ sub: uid("nat") });
    expect((await nat.sub(room)).type).toBe("PRESENCE");
    const gotA = record(a.ch, "order-updated");
    const gotB = record(b.ch, "order-updated");

    const res = await backend().trigger(room, "order-updated", { id: 123, total: 9.5 });
    expect(await json(res)).toEqual({});

    await waitFor(() => gotA.length && gotB.length, "order-updated at both pusher-js clients");
    // A backend's event: pusher-js parses the JSON text; no user_id (it is from no member).
    expect(gotA).toEqual([{ data: { id: 123, total: 9.5 }, meta: {} }]);
    expect(gotB).toEqual([{ data: { id: 123, total: 9.5 }, meta: {} }]);
    expect(a.c.seen("order-updated", room)[0]!.user_id).toBeUndefined();

    const ev = await nat.next((f) => f.type === "EVENT" && f.room === room, "EVENT order-updated");
    expect(ev).toMatchObject({ type: "EVENT", room, event: "order-updated", data: JSON.stringify({ id: 123, total: 9.5 }) });
    expect(ev.from).toBeNull();

    // A string is sent as is: pusher-js hands over the string, the native client too.
    await backend().trigger(room, "note", "hello there");
    const note = await b.c.next("note", room);
    expect(note.data).toBe("hello there");
    const nev = await nat.next((f) => f.type === "EVENT" && f.event === "note", "EVENT note");
    expect(nev).toMatchObject({ room, event: "note", data: "hello there", from: null });
    expect(nat.seen((f) => f.type === "ERROR")).toEqual([]);
  });

  test("several channels (presence, private, public): each channel's clients get it once, on that channel", async () => {
    const presence = uid("presence-board");
    const priv = uid("private-doc");
    const pub = uid("ticker");
    const a = await member(presence);
    const b = await connect();
    const bPriv = await b.subscribe(priv);
    const bPub = await b.subscribe(pub);
    const nat = await NativeClient.connect({ sub: uid("nat") });
    await nat.sub(presence);
    await nat.sub(pub);
    const gotA = record(a.ch, "refresh");
    const gotPriv = record(bPriv, "refresh");
    const gotPub = record(bPub, "refresh");

    expect(await json(await backend().trigger([presence, priv, pub], "refresh", { v: 2 }))).toEqual({});

    await waitFor(() => gotA.length && gotPriv.length && gotPub.length, "refresh on all three channels");
    await waitFor(() => nativeEvents(nat, presence).length && nativeEvents(nat, pub).length, "native EVENTs of both rooms");
    expect(gotA.map((g) => g.data)).toEqual([{ v: 2 }]);
    expect(gotPriv.map((g) => g.data)).toEqual([{ v: 2 }]);
    expect(gotPub.map((g) => g.data)).toEqual([{ v: 2 }]);
    for (const r of [presence, pub]) {
      expect(nativeEvents(nat, r)).toEqual([expect.objectContaining({ type: "EVENT", room: r, event: "refresh", data: '{"v":2}', from: null })]);
    }
    // Once per channel: a later event shows nothing more came before it.
    await backend().trigger([presence, priv, pub], "done", {});
    await b.next("done", priv);
    await b.next("done", pub);
    await a.c.next("done", presence);
    await waitFor(() => nativeEvents(nat, presence, "done").length && nativeEvents(nat, pub, "done").length, "native done x2");
    expect(b.seen("refresh")).toHaveLength(2); // one on each of its channels
    expect(a.c.seen("refresh")).toHaveLength(1);
    expect(nativeEvents(nat, presence, "refresh")).toHaveLength(1);
    expect(nativeEvents(nat, pub, "refresh")).toHaveLength(1);
    expect(nat.seen((f) => f.type === "EVENT" && f.room === priv)).toEqual([]); // not subscribed there
  });

  test("socket_id excludes that connection only: the same user's other connection, other members and natives get it", async () => {
    const room = uid("presence-edit");
    const userId = uid("alice");
    const a1 = await member(room, userId);
    const a2 = await member(room, userId); // the same user, a second tab
    const b = await member(room);
    const nat = await NativeClient.connect({ sub: uid("nat") });
    await nat.sub(room);
    const got1 = record(a1.ch, "saved");

    await backend().trigger(room, "saved", { rev: 1 }, { socket_id: a1.c.socketId });
    await a2.c.next("saved", room);
    await b.c.next("saved", room);
    const ev = await nat.next((f) => f.type === "EVENT" && f.event === "saved", "native EVENT saved");
    expect(ev).toMatchObject({ room, event: "saved", data: '{"rev":1}', from: null });

    // The excluded connection gets the next event (not excluded), and got nothing before it.
    await backend().trigger(room, "saved-2", { rev: 2 });
    await a1.c.next("saved-2", room);
    expect(got1).toEqual([]);
    expect(a1.c.seen("saved")).toEqual([]);
    expect(a2.c.seen("saved")).toHaveLength(1);
    expect(b.c.seen("saved")).toHaveLength(1);
    expect(nativeEvents(nat, room, "saved")).toHaveLength(1);
  });

  test("socket_id with several channels: excluded from all of them", async () => {
    const r1 = uid("presence-a");
    const r2 = uid("private-b");
    const x = await connect({ user: { user_id: uid("x"), user_info: {} } });
    await x.presence(r1);
    await x.subscribe(r2);
    const y = await connect({ user: { user_id: uid("y"), user_info: {} } });
    await y.presence(r1);
    await y.subscribe(r2);

    await backend().trigger([r1, r2], "ping", { n: 1 }, { socket_id: x.socketId });
    await y.next("ping", r1);
    await y.next("ping", r2);
    await backend().trigger([r1, r2], "pong", { n: 2 });
    await x.next("pong", r1);
    await x.next("pong", r2);
    expect(x.seen("ping")).toEqual([]);
  });
});

describe("triggerBatch", () => {
  test("every event of the batch goes to its channel, socket_id per event; answer {batch: []}", async () => {
    const r1 = uid("presence-batch");
    const r2 = uid("private-batch");
    const a = await member(r1);
    const a2 = await member(r1);
    const b = await connect();
    const bCh = await b.subscribe(r2);
    const nat = await NativeClient.connect({ sub: uid("nat") });
    await nat.sub(r1);
    await nat.sub(r2);
    const gotB = record(bCh, "b2");

    const res = await backend().triggerBatch([
      { channel: r1, name: "b1", data: { n: 1 } },
      { channel: r2, name: "b2", data: "plain text" },
      { channel: r1, name: "b3", data: { n: 3 }, socket_id: a.c.socketId },
    ]);
    expect(await json(res)).toEqual({ batch: [] });

    await a2.c.next("b3", r1);
    expect(a2.c.seen("b1", r1).map((f) => f.data)).toEqual([{ n: 1 }]);
    expect(a2.c.seen("b3", r1).map((f) => f.data)).toEqual([{ n: 3 }]);
    await waitFor(() => gotB.length, "b2 at the private channel");
    expect(gotB.map((g) => g.data)).toEqual(["plain text"]);
    await waitFor(() => nativeEvents(nat, r1, "b3").length && nativeEvents(nat, r2, "b2").length, "native b2 and b3");
    expect(nativeEvents(nat, r1).map((f) => [f.event, f.data, f.from])).toEqual([
      ["b1", '{"n":1}', null],
      ["b3", '{"n":3}', null],
    ]);
    expect(nativeEvents(nat, r2).map((f) => [f.event, f.data, f.from])).toEqual([["b2", "plain text", null]]);

    // `a` was excluded from b3 only: it got b1, and nothing more before the next event.
    await a.c.next("b1", r1);
    await backend().trigger(r1, "after", {});
    await a.c.next("after", r1);
    expect(a.c.seen("b3")).toEqual([]);
    expect(a.c.seen("b1")).toHaveLength(1);
  });
});

describe("channel queries", () => {
  test("GET /channels: occupied channels of the app, filter_by_prefix, user_count per user (not per connection)", async () => {
    const tag = uid("q").slice(2);
    const busy = `presence-${tag}-busy`;
    const quiet = `presence-${tag}-quiet`;
    const priv = `private-${tag}-doc`;
    const alice = uid("alice");
    await member(busy, alice);
    await member(busy, alice); // alice's second connection: still one user
    await member(busy);
    const q = await member(quiet);
    const p = await connect();
    await p.subscribe(priv);

    const list = await json(await backend().get({ path: "/channels", params: { filter_by_prefix: "presence-", info: "user_count" } }));
    expect(Object.keys(list)).toEqual(["channels"]);
    expect(list.channels[busy]).toEqual({ user_count: 2 });
    expect(list.channels[quiet]).toEqual({ user_count: 1 });
    expect(list.channels[priv]).toBeUndefined();
    for (const name of Object.keys(list.channels)) expect(name.startsWith("presence-")).toBe(true);

    // Another prefix, no info: exactly this test's private channel, with no attributes.
    const privList = await json(await backend().get({ path: "/channels", params: { filter_by_prefix: `private-${tag}` } }));
    expect(privList).toEqual({ channels: { [priv]: {} } });
    // No filter: all of the app's occupied channels.
    const all = await json(await backend().get({ path: "/channels" }));
    expect(all.channels).toMatchObject({ [busy]: {}, [quiet]: {}, [priv]: {} });
    // Pusher's rule: user_count only with filter_by_prefix=presence-.
    const err = await backend()
      .get({ path: "/channels", params: { filter_by_prefix: "private-", info: "user_count" } })
      .then(() => null, (e) => e);
    expect(err).toMatchObject({ status: 400 });

    // Another app (tenant) sees none of them.
    const globex = await json(await backend(apps.globex).get({ path: "/channels", params: { filter_by_prefix: `presence-${tag}` } }));
    expect(globex).toEqual({ channels: {} });

    // The last member leaving: the channel is listed until the leave grace is over, then not.
    q.c.close();
    await eventually(async () => {
      const l = await json(await backend().get({ path: "/channels", params: { filter_by_prefix: `presence-${tag}` } }));
      return l.channels[quiet] === undefined && l.channels[busy] !== undefined;
    }, "the quiet channel to go", GRACE_MS + 8000);
  });

  test("GET /channels/{c}: occupied, user_count (users) and subscription_count (sessions), natives included", async () => {
    const room = uid("presence-info");
    const alice = uid("alice");
    await member(room, alice);
    await member(room, alice);
    await member(room);
    const nat = await NativeClient.connect({ sub: uid("nat") });
    await nat.sub(room);

    const info = await json(await backend().get({ path: `/channels/${room}`, params: { info: "user_count,subscription_count" } }));
    expect(info).toEqual({ occupied: true, user_count: 3, subscription_count: 4 });
    expect(await json(await backend().get({ path: `/channels/${room}` }))).toEqual({ occupied: true });

    const empty = await json(await backend().get({ path: `/channels/${uid("presence-nobody")}`, params: { info: "user_count,subscription_count" } }));
    expect(empty.occupied).toBe(false);

    // A private channel: subscription_count; user_count is for presence channels (400, as Pusher).
    const priv = uid("private-info");
    const p1 = await connect();
    await p1.subscribe(priv);
    const p2 = await connect();
    await p2.subscribe(priv);
    expect(await json(await backend().get({ path: `/channels/${priv}`, params: { info: "subscription_count" } }))).toEqual({
      occupied: true,
      subscription_count: 2,
    });
    const err = await backend()
      .get({ path: `/channels/${priv}`, params: { info: "user_count" } })
      .then(() => null, (e) => e);
    expect(err).toMatchObject({ status: 400 });
  });

  test("GET /channels/{c}/users: each user once (pusher-js and native members)", async () => {
    const room = uid("presence-users");
    const alice = uid("alice");
    const bob = uid("bob");
    const natId = uid("nat");
    await member(room, alice);
    await member(room, alice);
    await member(room, bob);
    const nat = await NativeClient.connect({ sub: natId });
    await nat.sub(room);

    const users = await json(await backend().get({ path: `/channels/${room}/users` }));
    expect(Object.keys(users)).toEqual(["users"]);
    expect([...users.users].sort((x: any, y: any) => x.id.localeCompare(y.id))).toEqual(
      [alice, bob, natId].sort().map((id) => ({ id })),
    );

    const none = await json(await backend().get({ path: `/channels/${uid("presence-empty")}/users` }));
    expect(none).toEqual({ users: [] });
    const err = await backend()
      .get({ path: `/channels/${uid("private-x")}/users` })
      .then(() => null, (e) => e);
    expect(err).toMatchObject({ status: 400 });
  });
});

describe("terminateUserConnections", () => {
  test("closes every connection of the user (pusher-js 4009, native 4011); another user's stay", async () => {
    const room = uid("presence-kick");
    const victim = uid("victim");
    const other = uid("other");
    const v1 = await member(room, victim);
    const v2 = await member(room, victim);
    const o = await member(room, other);
    const vNat = await NativeClient.connect({ sub: victim });
    await vNat.sub(room);
    const oNat = await NativeClient.connect({ sub: other });
    await oNat.sub(room);
    const removed: unknown[] = [];
    o.ch.bind("pusher:member_removed", (m: unknown) => removed.push(m));

    expect(await json(await backend().terminateUserConnections(victim))).toEqual({});

    for (const v of [v1, v2]) {
      await waitFor(() => v.c.pusher.connection.state === "disconnected", "the victim's pusher-js to be disconnected");
      // Close 4009 is `refused` for pusher-js: it reports the code and does not reconnect.
      expect(v.c.errors).toContainEqual({ type: "WebSocketError", error: { type: "PusherError", data: { code: 4009, message: expect.any(String) } } });
    }
    await waitFor(() => vNat.closeCode !== undefined, "the victim's native connection to close");
    expect(vNat.closeCode).toBe(4011);

    // The other user's connections stay, and see the victim leave (a kick ends its sessions: no grace).
    await o.c.next("pusher_internal:member_removed", room, 1, AFTER_GRACE_MS + 5000);
    expect(removed).toEqual([{ id: victim, info: { name: victim } }]);
    await oNat.next((f) => f.type === "PRESENCE_DIFF" && f.leaves.some((l: any) => l.userId === victim), "native leave of the victim", 5000);
    expect(o.c.pusher.connection.state).toBe("connected");
    expect(o.c.errors).toEqual([]);
    expect(oNat.closeCode).toBeUndefined();
    expect(v1.c.states.filter((s) => s === "connected")).toHaveLength(1); // never reconnected
    expect(v2.c.states.filter((s) => s === "connected")).toHaveLength(1);

    // ...and still get events; the room lists only them.
    await backend().trigger(room, "still-here", {});
    await o.c.next("still-here", room);
    await oNat.next((f) => f.type === "EVENT" && f.event === "still-here", "native still-here");
    const users = await json(await backend().get({ path: `/channels/${room}/users` }));
    expect(users).toEqual({ users: [{ id: other }] });
  });
});

describe("signatures", () => {
  test("a request signed with a wrong secret: 401 (RequestError status 401), nothing delivered", async () => {
    const room = uid("presence-sig");
    const a = await member(room);
    const nat = await NativeClient.connect({ sub: uid("nat") });
    await nat.sub(room);
    const forger = backend(apps.acme, "not-the-secret-of-acme");

    const err: any = await forger.trigger(room, "forged", { evil: true }).then(
      () => null,
      (e) => e,
    );
    expect(err).not.toBeNull();
    expect(err.name).toBe("PusherRequestError");
    expect(err.status).toBe(401);
    expect(typeof err.body).toBe("string");
    expect(err.body).toMatch(/signature/i);

    // Queries too; and another app's secret is as wrong.
    for (const req of [
      () => forger.get({ path: "/channels" }),
      () => forger.terminateUserConnections(a.userId),
      () => backend(apps.acme, apps.globex.secret).get({ path: `/channels/${room}` }),
    ]) {
      const e: any = await req().then(
        () => null,
        (x) => x,
      );
      expect(e).toMatchObject({ name: "PusherRequestError", status: 401 });
    }

    // Nothing was delivered, and nobody was kicked: the next, well-signed event is the first.
    await backend().trigger(room, "real", {});
    await a.c.next("real", room);
    await nat.next((f) => f.type === "EVENT" && f.event === "real", "native real");
    expect(a.c.seen("forged")).toEqual([]);
    expect(nativeEvents(nat, room, "forged")).toEqual([]);
    expect(a.c.pusher.connection.state).toBe("connected");
  });

  test("an unknown app id: 404", async () => {
    const err: any = await backend({ ...apps.acme, appId: "no-such-app" })
      .trigger(uid("presence-x"), "e", {})
      .then(
        () => null,
        (e) => e,
      );
    expect(err).toMatchObject({ status: 404 });
  });
});
