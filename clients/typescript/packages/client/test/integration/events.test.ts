/**
 * Room events (`EMIT` → `EVENT`) and partial state updates between real clients
 * against the real server.
 */
import { describe, expect, it } from "vitest";
import type { ClientMessage, Room, RoomEvent, RosterError } from "../../src/index.js";
import { mintToken, sleep, testClient, uid, waitFor } from "./harness.js";

/** Connects `userId` (or uses the given client) and joins `room`. */
async function join(c: ReturnType<typeof testClient>, room: string): Promise<Room> {
  await c.client.connect();
  const r = c.client.room(room);
  await waitFor(() => r.status === "joined", `${c.client.userId} joined ${room}`);
  return r;
}

function record(r: Room): RoomEvent[] {
  const got: RoomEvent[] = [];
  r.on("event", (e) => got.push(e));
  return got;
}

describe("room events against the real server", () => {
  it("emit() reaches the room's other members (other users and the sender's other tabs) once, as {room, event, data, from}; never the sender", async () => {
    const room = uid("Order");
    const elsewhere = uid("Order");
    const alice = uid("alice");
    const aTab1 = testClient(alice);
    const aTab2 = testClient(alice);
    const bob = testClient(uid("bob"));
    const carol = testClient(uid("carol"));
    const [r1, r2, rb] = [await join(aTab1, room), await join(aTab2, room), await join(bob, room)];
    const rc = await join(carol, elsewhere);
    await waitFor(() => r1.members.length === 2 && r1.count === 3, "alice sees everyone");
    const [got1, got2, gotB, gotC] = [record(r1), record(r2), record(rb), record(rc)];

    expect(r1.emit("reaction", { emoji: "👍", n: 1 })).toBe(true);
    await waitFor(() => gotB.length === 1 && got2.length === 1, "bob and alice's other tab get it");
    const expected = {
      room,
      event: "reaction",
      data: { emoji: "👍", n: 1 },
      from: { userId: alice, sessionId: aTab1.client.sessionId },
    };
    expect(gotB[0]).toEqual(expected);
    expect(got2[0]).toEqual(expected);

    // Bob answers; events are not coalesced: three quick ones arrive as three, in order.
    rb.emit("typing", true);
    rb.emit("typing", false);
    rb.emit("ping", null);
    await waitFor(() => got1.length === 3 && got2.length === 4, "alice's tabs get bob's three events");
    expect(got1.map((e) => `${e.event}:${JSON.stringify(e.data)}`)).toEqual(["typing:true", "typing:false", "ping:null"]);
    expect(got1.every((e) => e.from?.userId === bob.client.userId && e.from?.sessionId === bob.client.sessionId)).toBe(true);

    // A marker after everything: once it arrived, nothing else is on its way.
    r2.emit("marker", 0);
    await waitFor(() => got1.length === 4 && gotB.length === 2, "marker");
    await sleep(100);
    // Exactly once each, never back to the sender, nothing across rooms.
    expect(gotB.map((e) => e.event)).toEqual(["reaction", "marker"]);
    expect(got1.map((e) => e.event)).toEqual(["typing", "typing", "ping", "marker"]);
    expect(got2.map((e) => e.event)).toEqual(["reaction", "typing", "typing", "ping"]);
    expect(gotC).toEqual([]);
    // Not part of the presence: nobody's roster changed.
    expect(rb.members.map((m) => m.sessions.map((s) => s.state))).toEqual([[{}, {}], [{}]]);
  });

  it("data of exactly 2 KiB of JSON is delivered; the client's limits are the server's (it refuses what the client would)", async () => {
    const room = uid("Order");
    const a = testClient(uid("alice"));
    const b = testClient(uid("bob"));
    const [ra, rb] = [await join(a, room), await join(b, room)];
    await waitFor(() => ra.count === 2, "both in");
    const got = record(rb);
    const errors: RosterError[] = [];
    ra.on("error", (e) => errors.push(e));
    const big = "é".repeat(1023); // 2046 bytes + 2 quotes = 2048
    expect(ra.emit("😀".repeat(64), big)).toBe(true);
    await waitFor(() => got.length === 1, "the 2 KiB event");
    expect(got[0]!.data).toBe(big);
    expect(got[0]!.event).toBe("😀".repeat(64));

    // Past the client's checks (what an older or another client could send): the server refuses the same.
    const raw = (msg: ClientMessage) =>
      (ra as unknown as { host: { send(m: ClientMessage, onError: (e: RosterError) => void): boolean } }).host.send(msg, (e) =>
        errors.push(e),
      );
    expect(() => ra.emit("x", big + "e")).toThrow(expect.objectContaining({ code: "event_too_large" }));
    raw({ type: "EMIT", room, event: "x", data: big + "e" });
    expect(() => ra.emit("y".repeat(65))).toThrow(expect.objectContaining({ code: "invalid_event" }));
    raw({ type: "EMIT", room, event: "y".repeat(65), data: null });
    expect(() => ra.emit("a\u0007b")).toThrow(expect.objectContaining({ code: "invalid_event" }));
    raw({ type: "EMIT", room, event: "a\u0007b", data: null });
    await waitFor(() => errors.length === 3, "three refusals");
    expect(errors.map((e) => `${e.code} ${e.request}`)).toEqual(["state_too_large EMIT", "bad_request EMIT", "bad_request EMIT"]);
    await sleep(100);
    expect(got).toHaveLength(1);
  });

  it("a viewer may not emit: the room's error event has forbidden for the EMIT, and nobody gets the event", async () => {
    const room = uid("Order");
    const viewer = uid("viewer");
    const v = testClient(viewer, { token: mintToken({ sub: viewer, roles: ["viewer"] }) });
    const b = testClient(uid("bob"));
    const [rv, rb] = [await join(v, room), await join(b, room)];
    await waitFor(() => rv.count === 2, "both in");
    const got = record(rb);
    const errors: RosterError[] = [];
    rv.on("error", (e) => errors.push(e));
    expect(rv.emit("reaction", { emoji: "🎉" })).toBe(true);
    await waitFor(() => errors.length === 1, "forbidden");
    expect(errors[0]).toMatchObject({ code: "forbidden", request: "EMIT", room });
    expect(rv.status).toBe("joined");
    // The viewer still receives the others' events.
    const gotV = record(rv);
    rb.emit("hello", 1);
    await waitFor(() => gotV.length === 1, "viewer receives");
    expect(got).toEqual([]);
  });
});

describe("partial state updates against the real server", () => {
  it("updateState merges onto the current state; the other member sees the merged state", async () => {
    const room = uid("Order");
    const a = testClient(uid("alice"));
    const b = testClient(uid("bob"));
    await Promise.all([a.client.connect(), b.client.connect()]);
    type S = { field: string | null; cursor?: { x: number; y: number }; typing?: boolean };
    const ra = a.client.room<S>(room, { state: { field: "total" } });
    const rb = b.client.room<S>(room);
    await waitFor(() => ra.status === "joined" && rb.members.length === 2, "both in");
    const aliceState = () => rb.members.find((m) => m.userId === a.client.userId)?.sessions[0]?.state;
    expect(aliceState()).toEqual({ field: "total" });
    ra.updateState({ cursor: { x: 10, y: 20 } });
    await waitFor(() => aliceState()?.cursor?.x === 10, "cursor");
    expect(aliceState()).toEqual({ field: "total", cursor: { x: 10, y: 20 } });
    ra.updateState({ typing: true, field: undefined });
    await waitFor(() => aliceState()?.typing === true, "typing");
    expect(aliceState()).toEqual({ cursor: { x: 10, y: 20 }, typing: true });
  });
});
