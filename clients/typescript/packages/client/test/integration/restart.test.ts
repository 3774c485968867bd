/**
 * A deploy is not a leave (SPEC §3 close code 1001, §10): a single-node server is
 * stopped and started again on the same port while clients are in a room. The
 * restarted server has lost the roster (memory engine), so every client gets a
 * new session and re-joins; none of them reports the others leaving and joining.
 */
import { afterEach, describe, expect, it } from "vitest";
import type { RosterChange } from "../../src/index.js";
import { ownServer, sleep, testClient, uid, waitFor, type OwnServer } from "./harness.js";

let own: OwnServer | null = null;
afterEach(async () => {
  await own?.close();
  own = null;
});

describe("a server restart", () => {
  it("shows no leave and no join of members who come back; one who does not is reported after the grace", async () => {
    own = await ownServer();
    const s = own;
    const room = uid("Order");
    const [alice, bob, carol] = [uid("alice"), uid("bob"), uid("carol")];
    const client = (user: string) => testClient(user, { url: s.wsUrl, token: s.token({ sub: user, name: user }) });
    const a = client(alice);
    const b = client(bob);
    const c = client(carol);
    const first = await a.client.connect();
    // The grace the client will hold absent members for comes from the server.
    expect(first.leaveGraceMs).toBe(1000);
    await Promise.all([b.client.connect(), c.client.connect()]);
    const ra = a.client.room(room);
    const rb = b.client.room(room);
    c.client.room(room);
    const everyone = [alice, bob, carol].sort();
    await waitFor(
      () => [ra, rb].every((r) => r.status === "joined" && r.members.map((m) => m.userId).sort().join() === everyone.join()),
      "all three see each other",
    );
    const seen: Record<string, RosterChange[]> = { alice: [], bob: [] };
    for (const [who, r] of [
      ["alice", ra],
      ["bob", rb],
    ] as const) {
      r.on("join", (ch) => seen[who]!.push(ch));
      r.on("leave", (ch) => seen[who]!.push(ch));
    }
    const oldSessions = [a.client.sessionId, b.client.sessionId];
    // Alice is editing a field (useFieldLock holds it through room.lock()).
    expect((await ra.lock("totalAmount")).success).toBe(true);

    // Carol's network is down across the restart: she will not come back.
    c.block(true);
    await s.stop();
    await s.start();
    // Alice and bob reconnect on their own (new sessions: the roster was lost).
    await waitFor(
      () =>
        [a, b].every((t) => t.client.state === "open" && !oldSessions.includes(t.client.sessionId)) &&
        [ra, rb].every((r) => r.status === "joined"),
      "both back on the restarted server",
      10_000,
    );
    expect(a.client.welcome?.resumed).toBe(false);
    await waitFor(
      () => [ra, rb].every((r) => r.members.some((m) => m.sessions.some((x) => x.sessionId === (r === ra ? b : a).client.sessionId))),
      "each sees the other's new session",
    );
    // The restarted server forgot the lock; alice's client takes it again.
    await waitFor(
      () => ra.isLockedByMe("totalAmount") && rb.lockOwner("totalAmount")?.sessionId === a.client.sessionId,
      "alice holds her field again, as bob sees",
    );
    // Within the grace carol is still listed, and nobody saw anything come or go.
    expect(ra.members.map((m) => m.userId).sort()).toEqual(everyone);
    expect(seen).toEqual({ alice: [], bob: [] });

    // After the grace (1 s): only carol, who did not come back, is reported gone.
    await sleep(1500);
    for (const who of ["alice", "bob"] as const) {
      expect(seen[who]!.map((ch) => `${ch.type} ${ch.userId}`), who).toEqual([`leave ${carol}`]);
    }
    expect(ra.members.map((m) => m.userId).sort()).toEqual([alice, bob].sort());
    expect(rb.members.map((m) => m.userId).sort()).toEqual([alice, bob].sort());
  });
});
