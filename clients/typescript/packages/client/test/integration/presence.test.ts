import { describe, expect, it } from "vitest";
import { RosterError, type JoinChange, type LeaveChange, type LockChange, type UpdateChange } from "../../src/index.js";
import { adminToken, mintToken, rest, sleep, testClient, uid, waitFor } from "./harness.js";

describe("presence against the real server", () => {
  it("two clients see each other join and leave", async () => {
    const room = uid("Order");
    const alice = uid("alice");
    const bob = uid("bob");
    const a = testClient(alice);
    const b = testClient(bob);
    const welcome = await a.client.connect();
    expect(welcome.userId).toBe(alice);
    expect(welcome.resumed).toBe(false);
    const ra = a.client.room(room, { state: { field: null } });
    await waitFor(() => ra.status === "joined", "alice joined");
    expect(ra.members.map((m) => m.userId)).toEqual([alice]);
    expect(ra.me?.sessionId).toBe(welcome.sessionId);

    const joins: JoinChange[] = [];
    const leaves: LeaveChange[] = [];
    ra.on("join", (c) => joins.push(c));
    ra.on("leave", (c) => leaves.push(c));

    await b.client.connect();
    const rb = b.client.room(room);
    await waitFor(() => joins.length === 1, "alice sees bob join");
    expect(joins[0]).toMatchObject({ userId: bob, userJoined: true, session: { device: "web", appVersion: "test" } });
    expect(joins[0]!.member.name).toBe(`${bob} name`);
    await waitFor(() => rb.status === "joined", "bob joined");
    expect(rb.members.map((m) => m.userId).sort()).toEqual([alice, bob].sort());
    expect(rb.others.map((m) => m.userId)).toEqual([alice]);
    expect(ra.count).toBe(2);

    await b.client.disconnect();
    await waitFor(() => leaves.length === 1, "alice sees bob leave");
    expect(leaves[0]).toMatchObject({ userId: bob, reason: "left", userLeft: true });
    expect(ra.members.map((m) => m.userId)).toEqual([alice]);
    await sleep(100);
    expect(joins).toHaveLength(1);
    expect(leaves).toHaveLength(1);
  });

  it("setState reaches the other client (throttled, last value wins)", async () => {
    const room = uid("Order");
    const a = testClient(uid("alice"));
    const b = testClient(uid("bob"));
    await Promise.all([a.client.connect(), b.client.connect()]);
    const ra = a.client.room<{ field: string | null; typing?: number }>(room, { state: { field: null } });
    const rb = b.client.room(room);
    await waitFor(() => ra.status === "joined" && rb.status === "joined" && rb.members.length === 2, "both joined");
    const updates: UpdateChange[] = [];
    rb.on("update", (u) => updates.push(u));
    for (let i = 0; i < 10; i++) ra.setState({ field: "totalAmount", typing: i });
    await waitFor(
      () => (rb.members.find((m) => m.userId === a.client.userId)?.sessions[0]?.state as { typing?: number })?.typing === 9,
      "bob sees alice's last state",
    );
    expect(updates.length).toBeLessThanOrEqual(2);
    expect(updates.at(-1)).toMatchObject({ userId: a.client.userId, session: { state: { field: "totalAmount", typing: 9 } } });
  });

  it("lock race: exactly one wins, the other learns the owner; release is seen by both", async () => {
    const room = uid("Order");
    const a = testClient(uid("alice"));
    const b = testClient(uid("bob"));
    await Promise.all([a.client.connect(), b.client.connect()]);
    const ra = a.client.room(room);
    const rb = b.client.room(room);
    await waitFor(() => ra.status === "joined" && rb.status === "joined", "both joined");
    const [la, lb] = await Promise.all([ra.lock("totalAmount"), rb.lock("totalAmount")]);
    expect([la.success, lb.success].filter(Boolean)).toHaveLength(1);
    const [winner, loser] = la.success ? [a, b] : [b, a];
    const [winRoom, loseRoom] = la.success ? [ra, rb] : [rb, ra];
    const loserResult = la.success ? lb : la;
    expect(loserResult.owner).toMatchObject({ userId: winner.client.userId, sessionId: winner.client.sessionId });
    await waitFor(() => loseRoom.lockOwner("totalAmount")?.userId === winner.client.userId, "loser sees the lock");
    expect(winRoom.isLockedByMe("totalAmount")).toBe(true);
    expect(loseRoom.isLockedByOther("totalAmount")).toBe(true);

    // The loser may not unlock it.
    await expect(loseRoom.unlock("totalAmount")).rejects.toMatchObject({ code: "not_lock_owner" });

    const released: LockChange[] = [];
    loseRoom.on("lock", (c) => released.push(c));
    expect(await winRoom.unlock("totalAmount")).toBe(true);
    await waitFor(() => released.some((c) => c.owner === null), "loser sees the release");
    expect(released.find((c) => c.owner === null)?.reason).toBe("released");
    expect(winRoom.locks.size).toBe(0);
    const again = await loseRoom.lock("totalAmount");
    expect(again.success).toBe(true);
    expect(again.owner?.userId).toBe(loser.client.userId);
  });

  it("entity state from a lifecycle event, and count mode", async () => {
    const id = randomNumericId();
    const a = testClient(uid("alice"));
    const c = testClient(uid("carol"));
    await Promise.all([a.client.connect(), c.client.connect()]);
    const ra = a.client.room({ entity: "Order", id });
    await waitFor(() => ra.status === "joined", "joined");
    expect(ra.entity).toEqual({ stale: false, busyBy: null, version: 0 });
    const r = await rest("POST", "/lifecycle", adminToken(), { type: "MUTATING", entity: "Order", id, userId: "etl-bot" });
    expect(r.status).toBeLessThan(300);
    await waitFor(() => ra.stale, "stale");
    expect(ra.busyBy).toBe("etl-bot");

    const rc = c.client.room({ entity: "Order", id }, { mode: "count" });
    await waitFor(() => rc.status === "joined", "count member joined");
    expect(rc.view).toBe("count");
    expect(rc.count).toBe(2);
    expect(rc.members).toEqual([]);
    // Count-mode members are ordinary members.
    await waitFor(() => ra.count === 2, "alice counts carol");
    // A state that is too large is a typed error on the room.
    const err = new Promise((resolve) => ra.once("error", resolve));
    ra.setState({ blob: "x".repeat(4000) });
    expect(await err).toMatchObject({ code: "state_too_large", request: "STATE" });
  });

  it("typed errors from the server: room_full on SUB, forbidden LOCK for a viewer, invalid_room", async () => {
    const key = uid("Small");
    const created = await rest("POST", "/rooms", adminToken(), { key, capacity: 1 });
    expect(created.status).toBeLessThan(300);
    const a = testClient(uid("alice"));
    const b = testClient(uid("bob"), { token: undefined, getToken: () => mintToken({ sub: "viewer-" + key, roles: ["viewer"] }) });
    await Promise.all([a.client.connect(), b.client.connect()]);
    const ra = a.client.room(key);
    await waitFor(() => ra.status === "joined", "alice joined");
    const rb = b.client.room(key);
    const err = await new Promise<RosterError>((r) => rb.once("error", r));
    expect(err).toBeInstanceOf(RosterError);
    expect(err).toMatchObject({ code: "room_full", request: "SUB", room: key, fromServer: true });
    expect(rb.status).toBe("error");
    await rb.leave();
    // A viewer may join but not lock.
    const open = b.client.room(uid("Open"));
    await waitFor(() => open.status === "joined", "viewer joined");
    await expect(open.lock("f")).rejects.toMatchObject({ code: "forbidden", request: "LOCK" });
    expect(() => a.client.room("no spaces allowed")).toThrow(expect.objectContaining({ code: "invalid_room" }));
    expect(await ra.unlock("never-locked")).toBe(false);
  });
});

function randomNumericId(): number {
  return 100_000 + Math.floor(Math.random() * 900_000);
}
