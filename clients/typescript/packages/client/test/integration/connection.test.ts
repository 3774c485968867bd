import { describe, expect, it } from "vitest";
import type { ConnectionState, JoinChange, LeaveChange, RosterChange } from "../../src/index.js";
import { adminToken, mintToken, rest, sleep, testClient, uid, waitFor } from "./harness.js";

/** Leave grace of the test server is 1 s. */
const GRACE_MS = 1000;

describe("connection lifecycle against the real server", () => {
  it("a dropped connection reconnects with the same clientId and resumes: nobody sees a leave", async () => {
    const room = uid("Order");
    const a = testClient(uid("alice"));
    const b = testClient(uid("bob"));
    await Promise.all([a.client.connect(), b.client.connect()]);
    const ra = a.client.room(room, { state: { field: "total" } });
    const rb = b.client.room(room);
    await waitFor(() => ra.members.length === 2 && rb.members.length === 2, "both see both");
    const sessionId = a.client.sessionId;
    const seenByBob: RosterChange[] = [];
    const seenByAlice: RosterChange[] = [];
    for (const e of ["join", "leave", "update"] as const) {
      rb.on(e, (c: RosterChange) => seenByBob.push(c));
      ra.on(e, (c: RosterChange) => seenByAlice.push(c));
    }
    const states: ConnectionState[] = [];
    a.client.on("state", (s) => states.push(s.state));

    // Listen before dropping: the reconnect can complete before a later listener.
    const reopened = new Promise<{ resumed: boolean; sessionId: string }>((r) => a.client.once("open", r));
    a.dropConnection();
    await waitFor(() => states.includes("reconnecting"), "alice notices the drop");
    const welcome = await reopened;
    expect(welcome.resumed).toBe(true);
    expect(welcome.sessionId).toBe(sessionId);
    expect(a.sockets).toHaveLength(2);
    await waitFor(() => ra.status === "joined", "alice resynced");
    // Longer than the grace: a leave would have been sent by now.
    await sleep(GRACE_MS + 500);
    expect(seenByBob).toEqual([]);
    // Alice's fresh snapshot may carry newer latencies (updates); never a join or leave.
    expect(seenByAlice.filter((c) => c.type !== "update")).toEqual([]);
    expect(rb.members.map((m) => m.userId).sort()).toEqual([a.client.userId, b.client.userId].sort());
    expect(states).toEqual(["reconnecting", "open"]);
  });

  it("changes while disconnected are reported exactly once after the resync", async () => {
    const room = uid("Order");
    const a = testClient(uid("alice"));
    const b = testClient(uid("bob"));
    const c = testClient(uid("carol"));
    await Promise.all([a.client.connect(), b.client.connect(), c.client.connect()]);
    const ra = a.client.room(room);
    const rb = b.client.room(room);
    await waitFor(() => ra.members.length === 2 && rb.status === "joined", "alice and bob in");
    const events: Array<JoinChange | LeaveChange> = [];
    ra.on("join", (e) => events.push(e));
    ra.on("leave", (e) => events.push(e));

    a.block(true);
    a.dropConnection();
    await waitFor(() => a.client.state === "reconnecting", "alice offline");
    // Meanwhile (within alice's grace): bob leaves, carol joins.
    await b.client.disconnect();
    const rc = c.client.room(room);
    await waitFor(() => rc.status === "joined", "carol in");
    await sleep(100);
    a.block(false);
    await waitFor(() => a.client.state === "open" && ra.status === "joined", "alice back", 3000);
    expect(a.client.welcome?.resumed).toBe(true);
    await sleep(200);
    expect(events.map((e) => `${e.type} ${e.userId}`)).toEqual([`leave ${b.client.userId}`, `join ${c.client.userId}`]);
    expect(ra.members.map((m) => m.userId).sort()).toEqual([a.client.userId, c.client.userId].sort());
  });

  it("kicked over REST: a kicked event, no reconnect, the other sees reason kicked", async () => {
    const room = uid("Order");
    const a = testClient(uid("alice"));
    const b = testClient(uid("bob"));
    await Promise.all([a.client.connect(), b.client.connect()]);
    const ra = a.client.room(room);
    const rb = b.client.room(room);
    await waitFor(() => rb.members.length === 2 && ra.status === "joined", "both in");
    const leaves: LeaveChange[] = [];
    rb.on("leave", (l) => leaves.push(l));
    const kicked = new Promise<{ code: number }>((r) => a.client.once("kicked", r));
    const res = await rest("DELETE", `/sessions/${a.client.sessionId}`, adminToken());
    expect(res.status).toBeLessThan(300);
    expect((await kicked).code).toBe(4011);
    expect(a.client.state).toBe("closed");
    await waitFor(() => leaves.length === 1, "bob sees the kick");
    expect(leaves[0]).toMatchObject({ userId: a.client.userId, reason: "kicked" });
    await sleep(600);
    expect(a.sockets).toHaveLength(1);
    expect(a.client.state).toBe("closed");
  });

  it("the token provider is called again after an auth failure, and on every reconnect", async () => {
    const user = uid("dora");
    const tokens = [
      mintToken({ sub: user }, "not-the-server-secret"),
      mintToken({ sub: user, exp: Math.floor(Date.now() / 1000) - 60 }),
    ];
    let calls = 0;
    const t = testClient(user, {
      getToken: async () => {
        calls++;
        return tokens.shift() ?? mintToken({ sub: user });
      },
    });
    const authErrors: string[] = [];
    t.client.on("error", (e) => authErrors.push(e.code));
    const closes: number[] = [];
    t.client.on("reconnecting", (e) => closes.push(e.code ?? 0));
    const welcome = await t.client.connect();
    expect(welcome.userId).toBe(user);
    expect(calls).toBe(3);
    expect(authErrors).toEqual(["auth_failed", "auth_failed"]);
    expect(closes).toEqual([4001, 4001]);
    t.dropConnection();
    await waitFor(() => calls === 4 && t.client.state === "open", "reconnected with a fresh token");
  });

  it("a fixed token that the server refuses closes the client without retrying", async () => {
    const t = testClient("eve", { token: mintToken({ sub: "eve" }, "wrong-secret") });
    await expect(t.client.connect()).rejects.toMatchObject({ code: "auth_failed" });
    expect(t.client.state).toBe("closed");
    await sleep(300);
    expect(t.sockets).toHaveLength(1);
  });
});

describe("room types with their own heartbeat interval", () => {
  it("heartbeats at the smallest interval of the open rooms, and back when that room is left", async () => {
    const code = `FAST_${Math.random().toString(36).slice(2, 8).toUpperCase()}`;
    const created = await rest("POST", "/room-types", adminToken(), {
      code,
      capacity: 10,
      idleTtl: "1h",
      heartbeatInterval: "200ms",
      sessionTimeout: "1s",
    });
    expect(created.status).toBe(201);
    const key = uid("Call");
    expect((await rest("POST", "/rooms", adminToken(), { key, type: code })).status).toBe(201);

    const a = testClient(uid("alice"));
    await a.client.connect();
    const welcomeEvery = a.client.welcome!.heartbeatIntervalMs;
    expect(a.client.heartbeatIntervalMs).toBe(welcomeEvery);
    const plain = a.client.room(uid("Doc"));
    await waitFor(() => plain.status === "joined", "joined the plain room");
    expect(a.client.heartbeatIntervalMs).toBe(welcomeEvery);
    const fast = a.client.room(key);
    await waitFor(() => fast.status === "joined", "joined the fast room");
    expect(a.client.heartbeatIntervalMs).toBe(200);
    await fast.leave();
    await waitFor(() => a.client.heartbeatIntervalMs === welcomeEvery, "back to WELCOME's pace");
  });
});
