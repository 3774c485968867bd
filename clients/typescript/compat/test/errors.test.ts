/**
 * What the Pusher endpoint refuses: a bad auth signature, an unknown app key, an
 * unknown event; and the isolation of apps (tenants) from each other.
 */
import { afterEach, describe, expect, test } from "vitest";
import {
  GRACE_MS,
  NativeClient,
  PusherClient,
  apps,
  closeAll,
  connect,
  membersOf,
  rawPusher,
  sleep,
  uid,
  waitFor,
} from "./support.js";

afterEach(closeAll);

describe("bad input", () => {
  test("a wrong signature on a presence channel: pusher:subscription_error with status 401", async () => {
    const c = await connect({ user: { user_id: uid("eve") }, signWithSecret: "not-the-secret-123" });
    const err = await c.presence(uid("presence-chat")).then(
      () => null,
      (e: { data: unknown }) => e.data,
    );
    expect(err).toMatchObject({ type: "AuthError", status: 401 });
    expect(c.pusher.connection.state).toBe("connected");
  });

  test("a wrong signature on a private channel: pusher:subscription_error with status 401", async () => {
    const c = await connect({ signWithSecret: "not-the-secret-123" });
    const room = uid("private-doc");
    const err = await c.subscribe(room).then(
      () => null,
      (e: { data: unknown }) => e.data,
    );
    expect(err).toMatchObject({ type: "AuthError", status: 401 });
    expect(c.seen("pusher_internal:subscription_succeeded", room)).toEqual([]);
  });

  test("a signature by another app (its key and secret) is refused", async () => {
    const room = uid("private-doc");
    const c = await connect({ key: apps.acme.key, app: apps.globex });
    const err = await c.subscribe(room).then(
      () => null,
      (e: { data: unknown }) => e.data,
    );
    expect(err).toMatchObject({ status: 401 });
  });

  test("an unknown app key: pusher:error 4001 then close 4001; pusher-js gives up (disconnected, error 4001)", async () => {
    const raw = await rawPusher("no-such-key");
    const closed = await raw.closed;
    expect(closed.code).toBe(4001);
    expect(raw.frames).toEqual([{ event: "pusher:error", data: expect.any(String) }]);
    expect(JSON.parse(raw.frames[0].data)).toMatchObject({ code: 4001 });

    const c = new PusherClient({ key: "no-such-key" });
    await waitFor(() => c.errors.length > 0, "pusher-js to report the error");
    await sleep(1500); // no retry follows
    expect(c.errors).toEqual([
      { type: "WebSocketError", error: { type: "PusherError", data: { code: 4001, message: expect.any(String) } } },
    ]);
    // `refused` (4000-4099): pusher-js disconnects and does not reconnect.
    expect(c.pusher.connection.state).toBe("disconnected");
    expect(c.states).not.toContain("connected");
    expect(c.states).not.toContain("unavailable");
  });

  test("an unknown event: pusher:error, and the connection stays", async () => {
    const c = await connect();
    c.pusher.send_event("pusher:bogus", { x: 1 });
    const err = await c.next("pusher:error");
    expect(err.data.message).toMatch(/unknown event/);
    c.pusher.send_event("just-an-event", {});
    await c.next("pusher:error", undefined, 2);
    // Still usable.
    const room = uid("news");
    await c.subscribe(room);
    expect(c.pusher.connection.state).toBe("connected");
  });

  test("no protocol or an unsupported one is refused with 4008 / 4007", async () => {
    const none = await rawPusher(apps.acme.key, "client=js");
    expect((await none.closed).code).toBe(4008);
    const old = await rawPusher(apps.acme.key, "protocol=4");
    expect((await old.closed).code).toBe(4007);
  });
});

describe("apps are tenants", () => {
  test("a connection of app A never sees app B's channel of the same name", async () => {
    const room = uid("presence-same");
    const a = await connect({ app: apps.acme, user: { user_id: "shared-user", user_info: { app: "acme" } } });
    const g = await connect({ app: apps.globex, user: { user_id: "other-user", user_info: { app: "globex" } } });
    const chA = await a.presence(room);
    const chG = await g.presence(room);
    expect(membersOf(chA)).toEqual({ "shared-user": { app: "acme" } });
    expect(membersOf(chG)).toEqual({ "other-user": { app: "globex" } });

    // Same user id in both apps: still two different users.
    const g2 = await connect({ app: apps.globex, user: { user_id: "shared-user", user_info: { app: "globex" } } });
    const chG2 = await g2.presence(room);
    expect(chG2.members.count).toBe(2);
    expect(chG2.members.get("shared-user")).toEqual({ id: "shared-user", info: { app: "globex" } });
    await g.next("pusher_internal:member_added", room);

    // A native client of tenant acme shares acme's room only.
    const nat = await NativeClient.connect({ sub: uid("nat"), name: "Nat" });
    const snap = await nat.sub(room);
    expect(snap.users.map((u: any) => u.userId).sort()).toEqual([expect.stringMatching(/^nat-/), "shared-user"].sort());
    await a.next("pusher_internal:member_added", room);

    // Client events stay in their app.
    const priv = uid("private-same");
    const pa = await a.subscribe(priv);
    const pg = await g.subscribe(priv);
    await g2.subscribe(priv);
    pa.trigger("client-hello", { from: "acme" });
    pg.trigger("client-hello", { from: "globex" });
    await g2.next("client-hello", priv);
    await sleep(300);
    expect(a.seen("client-hello").map((f) => f.data)).toEqual([]);
    expect(g.seen("client-hello").map((f) => f.data)).toEqual([]);
    expect(g2.seen("client-hello").map((f) => f.data)).toEqual([{ from: "globex" }]);

    // And leaves too: acme's user going away is not seen by globex.
    a.close();
    await sleep(GRACE_MS + 800);
    expect(g.seen("pusher_internal:member_removed")).toEqual([]);
    expect(g2.seen("pusher_internal:member_removed")).toEqual([]);
    expect(a.seen("pusher_internal:member_added", room).map((f) => f.data.user_id)).not.toContain("other-user");
    expect(g.seen("pusher_internal:member_added", room).map((f) => f.data.user_id)).toEqual(["shared-user"]);
  });
});
