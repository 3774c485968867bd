import { describe, expect, it } from "vitest";
import { RosterState, type RosterChange } from "../../src/roster.js";
import { diff, member, presence, session, user } from "../helpers/wire.js";

const R = "Order:1";

function ids(r: RosterState): string[] {
  return r.members.flatMap((m) => m.sessions.map((s) => `${m.userId}/${s.sessionId}`));
}

function summary(changes: RosterChange[]): string[] {
  return changes.map((c) => `${c.type}:${c.userId}/${c.type === "leave" ? c.sessionId : c.session.sessionId}`);
}

function applied(r: RosterState, d: Parameters<RosterState["applyDiff"]>[0]): RosterChange[] {
  const out = r.applyDiff(d);
  if (out.kind !== "applied") throw new Error(`expected applied, got ${JSON.stringify(out)}`);
  return out.changes;
}

describe("RosterState: snapshots", () => {
  it("replaces the roster and remembers seq", () => {
    const r = new RosterState();
    expect(r.seq).toBeNull();
    expect(r.awaitingSnapshot).toBe(true);
    r.applySnapshot(presence(R, 7, [user("alice", [session("a1"), session("a2")]), user("bob", [session("b1")])]));
    expect(r.seq).toBe(7);
    expect(r.awaitingSnapshot).toBe(false);
    expect(ids(r)).toEqual(["alice/a1", "alice/a2", "bob/b1"]);
    expect(r.sessionCount).toBe(3);
    expect(r.memberOf("bob")?.sessions[0]?.userId).toBe("bob");
  });

  it("reports only the net changes against the previous roster", () => {
    const r = new RosterState();
    r.applySnapshot(presence(R, 1, [user("alice", [session("a1")]), user("bob", [session("b1", { f: 1 })])]));
    const changes = r.applySnapshot(
      presence(R, 9, [user("bob", [session("b1", { f: 2 })]), user("carol", [session("c1")])]),
    );
    expect(summary(changes)).toEqual(["leave:alice/a1", "join:carol/c1", "update:bob/b1"]);
    const leave = changes[0]!;
    expect(leave.type === "leave" && leave.reason).toBeNull();
    expect(leave.type === "leave" && leave.userLeft).toBe(true);
  });

  it("an identical snapshot reports nothing and keeps the members array", () => {
    const r = new RosterState();
    const p = presence(R, 3, [user("alice", [session("a1", { x: [1, { y: 2 }] })])]);
    r.applySnapshot(p);
    const before = r.members;
    expect(r.applySnapshot(structuredClone({ ...p, seq: 4 }))).toEqual([]);
    expect(r.members).toBe(before);
  });

  it("state key order does not count as a change", () => {
    const r = new RosterState();
    r.applySnapshot(presence(R, 1, [user("a", [session("a1", { x: 1, y: 2 })])]));
    expect(r.applySnapshot(presence(R, 2, [user("a", [session("a1", { y: 2, x: 1 })])]))).toEqual([]);
  });

  it("keeps the first-seen order of users and sessions across snapshots", () => {
    const r = new RosterState();
    r.applySnapshot(presence(R, 1, [user("zed", [session("z1")]), user("amy", [session("a1")])]));
    r.applySnapshot(presence(R, 2, [user("amy", [session("a2"), session("a1")]), user("bob", [session("b1")]), user("zed", [session("z1")])]));
    expect(ids(r)).toEqual(["zed/z1", "amy/a1", "amy/a2", "bob/b1"]);
  });

  it("a status change of a user is an update", () => {
    const r = new RosterState();
    r.applySnapshot(presence(R, 1, [user("a", [session("a1")], "online")]));
    const changes = r.applySnapshot(presence(R, 2, [user("a", [session("a1")], "away")]));
    expect(changes).toHaveLength(1);
    const c = changes[0]!;
    expect(c.type).toBe("update");
    if (c.type === "update") {
      expect(c.previousStatus).toBe("online");
      expect(c.member.status).toBe("away");
    }
  });
});

describe("RosterState: diffs", () => {
  function base(): RosterState {
    const r = new RosterState();
    r.applySnapshot(presence(R, 10, [user("alice", [session("a1")])]));
    return r;
  }

  it("ignores diffs before the first snapshot", () => {
    const r = new RosterState();
    expect(r.applyDiff(diff(R, 1, { joins: [member("bob", session("b1"))] }))).toEqual({
      kind: "ignored",
      why: "no_snapshot",
    });
    expect(r.members).toEqual([]);
  });

  it("applies seq S+1 and advances", () => {
    const r = base();
    const changes = applied(r, diff(R, 11, { joins: [member("bob", session("b1"), "online", "Bob")] }));
    expect(summary(changes)).toEqual(["join:bob/b1"]);
    const j = changes[0]!;
    expect(j.type === "join" && j.userJoined).toBe(true);
    expect(r.seq).toBe(11);
    expect(r.memberOf("bob")?.name).toBe("Bob");
  });

  it("ignores diffs with seq <= S (already in the snapshot, duplicates, reordered)", () => {
    const r = base();
    expect(r.applyDiff(diff(R, 10, { joins: [member("bob", session("b1"))] }))).toEqual({ kind: "ignored", why: "stale" });
    expect(r.applyDiff(diff(R, 3, { leaves: [{ userId: "alice", sessionId: "a1", reason: "left" }] }))).toEqual({
      kind: "ignored",
      why: "stale",
    });
    applied(r, diff(R, 11, { joins: [member("bob", session("b1"))] }));
    // The same diff delivered twice.
    expect(r.applyDiff(diff(R, 11, { joins: [member("bob", session("b1"))] }))).toEqual({ kind: "ignored", why: "stale" });
    expect(ids(r)).toEqual(["alice/a1", "bob/b1"]);
  });

  it("a gap asks for a re-SUB once and ignores diffs until the next snapshot", () => {
    const r = base();
    expect(r.applyDiff(diff(R, 13, { joins: [member("bob", session("b1"))] }))).toEqual({
      kind: "gap",
      expected: 11,
      got: 13,
    });
    expect(r.awaitingSnapshot).toBe(true);
    // Later diffs, even the "missing" one, are not applied: the snapshot will have them.
    expect(r.applyDiff(diff(R, 11, { joins: [member("carol", session("c1"))] }))).toEqual({
      kind: "ignored",
      why: "awaiting_snapshot",
    });
    expect(r.applyDiff(diff(R, 14, {}))).toEqual({ kind: "ignored", why: "awaiting_snapshot" });
    expect(ids(r)).toEqual(["alice/a1"]);
    const changes = r.applySnapshot(presence(R, 14, [user("alice", [session("a1")]), user("bob", [session("b1")]), user("carol", [session("c1")])]));
    expect(summary(changes)).toEqual(["join:bob/b1", "join:carol/c1"]);
    expect(summary(applied(r, diff(R, 15, { leaves: [{ userId: "bob", sessionId: "b1", reason: "timeout" }] })))).toEqual([
      "leave:bob/b1",
    ]);
  });

  it("an empty diff advances seq and changes nothing", () => {
    const r = base();
    const before = r.members;
    expect(applied(r, diff(R, 11))).toEqual([]);
    expect(r.seq).toBe(11);
    expect(r.members).toBe(before);
  });

  it("applies leaves, then joins, then updates", () => {
    const r = new RosterState();
    r.applySnapshot(presence(R, 1, [user("a", [session("a1")]), user("b", [session("b1")])]));
    const changes = applied(
      r,
      diff(R, 2, {
        updates: [member("a", session("a1", { v: 2 }))],
        joins: [member("c", session("c1"))],
        leaves: [{ userId: "b", sessionId: "b1", reason: "disconnected" }],
      }),
    );
    expect(summary(changes)).toEqual(["leave:b/b1", "join:c/c1", "update:a/a1"]);
    const leave = changes[0]!;
    expect(leave.type === "leave" && leave.reason).toBe("disconnected");
    expect(ids(r)).toEqual(["a/a1", "c/c1"]);
  });

  it("leave + join of the same session in one diff (UNSUB then SUB) keeps the session", () => {
    const r = new RosterState();
    r.applySnapshot(presence(R, 1, [user("a", [session("a1", { v: 1 })]), user("b", [session("b1")])]));
    const before = r.members;
    // Same view: no event at all, and not even a reorder.
    expect(
      applied(
        r,
        diff(R, 2, {
          leaves: [{ userId: "a", sessionId: "a1", reason: "left" }],
          joins: [member("a", session("a1", { v: 1 }))],
        }),
      ),
    ).toEqual([]);
    expect(r.members).toBe(before);
    expect(ids(r)).toEqual(["a/a1", "b/b1"]);
    // A different view: one update.
    const changes = applied(
      r,
      diff(R, 3, {
        leaves: [{ userId: "a", sessionId: "a1", reason: "left" }],
        joins: [member("a", session("a1", { v: 2 }))],
      }),
    );
    expect(summary(changes)).toEqual(["update:a/a1"]);
    expect(r.session("a1")?.state).toEqual({ v: 2 });
  });

  it("a leave of a session never seen is a no-op (joined and left inside one window)", () => {
    const r = base();
    expect(applied(r, diff(R, 11, { leaves: [{ userId: "ghost", sessionId: "g1", reason: "left" }] }))).toEqual([]);
    expect(r.seq).toBe(11);
  });

  it("a duplicate join is an upsert without an event", () => {
    const r = base();
    expect(applied(r, diff(R, 11, { joins: [member("alice", session("a1"))] }))).toEqual([]);
    expect(r.sessionCount).toBe(1);
  });

  it("an update for an unknown session is a join; an identical update is nothing", () => {
    const r = base();
    expect(summary(applied(r, diff(R, 11, { updates: [member("bob", session("b1"))] })))).toEqual(["join:bob/b1"]);
    expect(applied(r, diff(R, 12, { updates: [member("bob", session("b1"))] }))).toEqual([]);
  });

  it("groups sessions by user; a user with no session left is removed", () => {
    const r = base();
    const j = applied(r, diff(R, 11, { joins: [member("alice", session("a2", {}, { device: "mobile" }))] }));
    expect(j[0]!.type === "join" && j[0]!.userJoined).toBe(false);
    expect(r.members).toHaveLength(1);
    expect(r.memberOf("alice")?.sessions.map((s) => s.device)).toEqual(["web", "mobile"]);
    const l1 = applied(r, diff(R, 12, { leaves: [{ userId: "alice", sessionId: "a1", reason: "left" }] }));
    expect(l1[0]!.type === "leave" && l1[0]!.userLeft).toBe(false);
    const l2 = applied(r, diff(R, 13, { leaves: [{ userId: "alice", sessionId: "a2", reason: "left" }] }));
    expect(l2[0]!.type === "leave" && l2[0]!.userLeft).toBe(true);
    expect(r.members).toEqual([]);
  });

  it("the user's status is that of the latest member view", () => {
    const r = new RosterState();
    r.applySnapshot(presence(R, 1, [user("a", [session("a1"), session("a2")], "online")]));
    applied(r, diff(R, 2, { updates: [member("a", session("a2"), "away")] }));
    expect(r.memberOf("a")?.status).toBe("away");
    applied(r, diff(R, 3, { updates: [member("a", session("a1"), "online")] }));
    expect(r.memberOf("a")?.status).toBe("online");
  });

  it("a diff re-sending changes already in the snapshot (rule 1) produces no events", () => {
    const r = new RosterState();
    // The snapshot already contains bob's pending join and carol's pending leave.
    r.applySnapshot(presence(R, 4, [user("alice", [session("a1")]), user("bob", [session("b1")])]));
    const changes = applied(
      r,
      diff(R, 5, {
        joins: [member("bob", session("b1"))],
        leaves: [{ userId: "carol", sessionId: "c1", reason: "left" }],
      }),
    );
    expect(changes).toEqual([]);
    expect(ids(r)).toEqual(["alice/a1", "bob/b1"]);
  });

  it("after expectSnapshot (reconnect) diffs wait, and the next snapshot reports only real changes", () => {
    const r = new RosterState();
    r.applySnapshot(presence(R, 1, [user("me", [session("m1")]), user("bob", [session("b1")])]));
    r.expectSnapshot();
    expect(r.applyDiff(diff(R, 2, { leaves: [{ userId: "bob", sessionId: "b1", reason: "left" }] })).kind).toBe("ignored");
    expect(ids(r)).toEqual(["me/m1", "bob/b1"]);
    const changes = r.applySnapshot(presence(R, 6, [user("me", [session("m1")]), user("carol", [session("c1")])]));
    expect(summary(changes)).toEqual(["leave:bob/b1", "join:carol/c1"]);
  });

  it("members are immutable values", () => {
    const r = base();
    const m = r.members;
    expect(Object.isFrozen(m)).toBe(true);
    expect(Object.isFrozen(m[0])).toBe(true);
    expect(Object.isFrozen(m[0]!.sessions[0])).toBe(true);
    applied(r, diff(R, 11, { joins: [member("bob", session("b1"))] }));
    expect(r.members).not.toBe(m);
    expect(m).toHaveLength(1);
  });

  it("replays a long random sequence of diffs to the same result as a snapshot", () => {
    // Model: a set of sessions; random joins/updates/leaves, coalesced per diff
    // like the server does. The roster after the diffs must equal the model.
    let seed = 42;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const model = new Map<string, { user: string; v: number }>();
    const r = new RosterState();
    r.applySnapshot(presence(R, 0, []));
    let seq = 0;
    for (let i = 0; i < 300; i++) {
      const pending = new Map<string, "join" | "update" | "leave" | "leave+join">();
      const steps = Math.floor(rnd() * 5);
      for (let k = 0; k < steps; k++) {
        const sid = `s${Math.floor(rnd() * 8)}`;
        const user = `u${sid.charCodeAt(1) % 3}`;
        if (model.has(sid) && rnd() < 0.4) {
          model.delete(sid);
          pending.set(sid, "leave");
        } else {
          const was = model.has(sid);
          model.set(sid, { user, v: Math.floor(rnd() * 3) });
          const p = pending.get(sid);
          pending.set(sid, p === "leave" ? "leave+join" : p === "join" || !was ? (p ?? "join") : "update");
        }
      }
      seq++;
      const d = diff(R, seq);
      for (const [sid, kind] of pending) {
        const m = model.get(sid);
        if (kind === "leave" || kind === "leave+join") d.leaves.push({ userId: `u${sid.charCodeAt(1) % 3}`, sessionId: sid, reason: "left" });
        if (m && (kind === "join" || kind === "leave+join")) d.joins.push(member(m.user, session(sid, { v: m.v })));
        if (m && kind === "update") d.updates.push(member(m.user, session(sid, { v: m.v })));
      }
      applied(r, d);
      const got = new Map(r.members.flatMap((m) => m.sessions.map((s) => [s.sessionId, { user: m.userId, v: s.state.v }])));
      expect(got).toEqual(model);
    }
  });
});

describe("RosterState: holding members after a reconnect that could not resume", () => {
  it("keeps missing sessions held, lets a user's new session take a held one's place, and expires the rest", () => {
    const r = new RosterState();
    r.applySnapshot(
      presence(R, 5, [
        user("alice", [session("a1")]),
        user("bob", [session("b1", {}, { device: "web" }), session("b2", {}, { device: "mobile" })]),
        user("carol", [session("c1")]),
      ]),
    );
    // The restarted server knows only alice's new session so far.
    const changes = r.applySnapshot(presence(R, 1, [user("alice", [session("a9")])]), true);
    expect(summary(changes)).toEqual(["update:alice/a9"]);
    expect(ids(r)).toEqual(["alice/a9", "bob/b1", "bob/b2", "carol/c1"]);
    expect(r.heldCount).toBe(3);
    // Bob's phone comes back under a new id: it replaces the held phone session.
    const back = applied(r, diff(R, 2, { joins: [member("bob", session("b7", {}, { device: "mobile" }))] }));
    expect(summary(back)).toEqual(["update:bob/b7"]);
    expect(ids(r)).toEqual(["alice/a9", "bob/b1", "bob/b7", "carol/c1"]);
    // A newcomer is a join as ever.
    expect(summary(applied(r, diff(R, 3, { joins: [member("dave", session("d1"))] })))).toEqual(["join:dave/d1"]);
    // The grace is over: who is still missing leaves (reason unknown, inferred).
    const gone = r.expireHeld();
    expect(summary(gone)).toEqual(["leave:bob/b1", "leave:carol/c1"]);
    expect(gone.map((c) => (c.type === "leave" ? [c.reason, c.userLeft] : null))).toEqual([
      [null, false],
      [null, true],
    ]);
    expect(ids(r)).toEqual(["alice/a9", "bob/b7", "dave/d1"]);
    expect(r.heldCount).toBe(0);
    expect(r.expireHeld()).toEqual([]);
  });

  it("without hold a snapshot reports missing sessions as leaves at once", () => {
    const r = new RosterState();
    r.applySnapshot(presence(R, 5, [user("alice", [session("a1")]), user("bob", [session("b1")])]));
    expect(summary(r.applySnapshot(presence(R, 6, [user("alice", [session("a1")])])))).toEqual(["leave:bob/b1"]);
    expect(r.heldCount).toBe(0);
  });
});

describe("RosterState: structural sharing (selector hooks compare by identity)", () => {
  it("a diff rebuilds only the members it touches; sessions and members of the others stay the same objects", () => {
    const r = new RosterState();
    r.applySnapshot(
      presence(R, 1, [
        user("alice", [session("a1", { cursor: { x: 0, y: 0 } })]),
        user("bob", [session("b1", { cursor: { x: 1, y: 1 } }), session("b2")]),
        user("carol", [session("c1")]),
      ]),
    );
    const [alice, bob, carol] = r.members;
    applied(r, diff(R, 2, { updates: [member("alice", session("a1", { cursor: { x: 5, y: 0 } }))] }));
    expect(r.members[0]).not.toBe(alice);
    expect(r.members[0]!.sessions[0]!.state).toEqual({ cursor: { x: 5, y: 0 } });
    expect(r.members[1]).toBe(bob);
    expect(r.members[2]).toBe(carol);
    // A join of a new session rebuilds that user only; a re-sent unchanged update changes nothing.
    const alice2 = r.members[0];
    applied(r, diff(R, 3, { joins: [member("carol", session("c2"))], updates: [member("bob", session("b1", { cursor: { x: 1, y: 1 } }))] }));
    expect(r.members[0]).toBe(alice2);
    expect(r.members[1]).toBe(bob);
    expect(r.members[2]).not.toBe(carol);
    expect(r.members[2]!.sessions[0]).toBe(carol!.sessions[0]);
    // A snapshot with the same data keeps every object; a changed status rebuilds that user only.
    const members = r.members;
    r.applySnapshot(
      presence(R, 9, [
        user("alice", [session("a1", { cursor: { x: 5, y: 0 } })]),
        user("bob", [session("b1", { cursor: { x: 1, y: 1 } }), session("b2")], "away"),
        user("carol", [session("c1"), session("c2")]),
      ]),
    );
    expect(r.members[0]).toBe(members[0]);
    expect(r.members[1]).not.toBe(members[1]);
    expect(r.members[1]!.sessions[0]).toBe(members[1]!.sessions[0]);
    expect(r.members[2]).toBe(members[2]);
    // A user who left and came back is a new object (nothing stale is cached).
    applied(r, diff(R, 10, { leaves: [{ userId: "alice", sessionId: "a1", reason: "left" }] }));
    applied(r, diff(R, 11, { joins: [member("alice", session("a1", { cursor: { x: 5, y: 0 } }))] }));
    expect(r.members.find((m) => m.userId === "alice")).not.toBe(members[0]);
  });
});
