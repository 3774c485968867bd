/**
 * Client events (`client-*`) between pusher-js clients: delivered to the channel's
 * other members on private and presence channels, refused on public ones, and
 * limited to 10 per second per connection (Pusher's error 4301).
 */
import type { Channel } from "pusher-js";
import { afterEach, describe, expect, test } from "vitest";
import { closeAll, connect, sleep, uid } from "./support.js";

afterEach(closeAll);

function received(channel: Channel, event: string) {
  const got: { data: unknown; meta: unknown }[] = [];
  channel.bind(event, (data: unknown, meta: unknown) => got.push({ data, meta }));
  return got;
}

describe("client events", () => {
  test("on a private channel: to the other member, not back to the sender", async () => {
    const room = uid("private-doc");
    const a = await connect();
    const b = await connect();
    const chA = await a.subscribe(room);
    const chB = await b.subscribe(room);
    const atA = received(chA, "client-typing");
    const atB = received(chB, "client-typing");

    expect(chA.trigger("client-typing", { line: 3, who: "a" })).toBe(true);
    await b.next("client-typing", room);
    expect(atB.map((e) => e.data)).toEqual([{ line: 3, who: "a" }]);

    chB.trigger("client-typing", { line: 4, who: "b" });
    await a.next("client-typing", room);
    expect(atA.map((e) => e.data)).toEqual([{ line: 4, who: "b" }]);

    await sleep(200);
    expect(atA).toHaveLength(1);
    expect(atB).toHaveLength(1);
    expect(a.pusherErrors()).toEqual([]);
    expect(b.pusherErrors()).toEqual([]);
  });

  test("on a presence channel: with the sender's user_id", async () => {
    const room = uid("presence-doc");
    const alice = { user_id: uid("alice"), user_info: { name: "Alice" } };
    const bob = { user_id: uid("bob"), user_info: { name: "Bob" } };
    const a = await connect({ user: alice });
    const b = await connect({ user: bob });
    const chA = await a.presence(room);
    const chB = await b.presence(room);
    const atA = received(chA, "client-cursor");
    const atB = received(chB, "client-cursor");

    chA.trigger("client-cursor", { x: 10, y: 20 });
    await b.next("client-cursor", room);
    expect(atB).toEqual([{ data: { x: 10, y: 20 }, meta: { user_id: alice.user_id } }]);
    expect(b.seen("client-cursor", room)[0]!.user_id).toBe(alice.user_id);

    chB.trigger("client-cursor", { x: 1, y: 2 });
    await a.next("client-cursor", room);
    expect(atA).toEqual([{ data: { x: 1, y: 2 }, meta: { user_id: bob.user_id } }]);

    await sleep(200);
    expect(atA).toHaveLength(1);
    expect(atB).toHaveLength(1);
  });

  test("a private subscription made before the user is known keeps working after the presence subscription", async () => {
    const priv = uid("private-doc");
    const a = await connect({ user: { user_id: uid("alice"), user_info: { name: "Alice" } } });
    const b = await connect();
    const chA = await a.subscribe(priv); // before any user: an anonymous session
    const chB = await b.subscribe(priv);
    await a.presence(uid("presence-lobby")); // now the connection is Alice
    const atA = received(chA, "client-note");
    const atB = received(chB, "client-note");

    chB.trigger("client-note", { from: "b" });
    await a.next("client-note", priv);
    chA.trigger("client-note", { from: "a" });
    await b.next("client-note", priv);
    expect(atA.map((e) => e.data)).toEqual([{ from: "b" }]);
    expect(atB.map((e) => e.data)).toEqual([{ from: "a" }]);
    expect(a.pusherErrors()).toEqual([]);
  });

  test("on a public channel: refused with pusher:error, delivered to no one", async () => {
    const room = uid("news");
    const a = await connect();
    const b = await connect();
    const chA = await a.subscribe(room);
    const chB = await b.subscribe(room);
    const atB = received(chB, "client-shout");

    chA.trigger("client-shout", { hi: true });
    const err = await a.next("pusher:error");
    expect(err.channel).toBeUndefined();
    expect(typeof err.data.message).toBe("string");
    // pusher-js surfaces it as a connection error, and stays connected.
    expect(a.errors).toContainEqual({ type: "PusherError", data: err.data });
    await sleep(300);
    expect(atB).toEqual([]);
    expect(b.seen("client-shout")).toEqual([]);
    expect(a.pusher.connection.state).toBe("connected");
  });

  test("more than 10 client events a second: the excess gets error 4301", async () => {
    const room = uid("private-burst");
    const a = await connect();
    const b = await connect();
    const chA = await a.subscribe(room);
    const chB = await b.subscribe(room);
    const atB = received(chB, "client-tick");

    for (let i = 0; i < 15; i++) chA.trigger("client-tick", { i });
    await a.next("pusher:error");
    await sleep(500);

    const limited = a.pusherErrors().filter((e) => e.code === 4301);
    expect(limited.length).toBeGreaterThanOrEqual(4);
    expect(a.pusherErrors().every((e) => e.code === 4301)).toBe(true);
    expect(atB.length).toBeGreaterThanOrEqual(10);
    expect(atB.length).toBeLessThanOrEqual(11);
    expect(atB.length + limited.length).toBe(15);
    // The first ten went through, in order.
    expect(atB.slice(0, 10).map((e) => (e.data as { i: number }).i)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(a.pusher.connection.state).toBe("connected");

    // A second later the budget is back.
    await sleep(1000);
    chA.trigger("client-tick", { i: 99 });
    await waitForLength(atB, atB.length + 1);
    expect((atB.at(-1)!.data as { i: number }).i).toBe(99);
  });
});

async function waitForLength(list: unknown[], n: number): Promise<void> {
  const end = Date.now() + 5000;
  while (list.length < n) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${n} items (have ${list.length})`);
    await sleep(10);
  }
}
