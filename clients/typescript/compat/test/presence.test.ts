/**
 * Presence channels with pusher-js: members, member_added / member_removed, and
 * Roster's leave grace (a reload inside it is invisible; a user with two
 * connections is one member until both have gone).
 */
import type { PresenceChannel } from "pusher-js";
import { afterEach, describe, expect, test } from "vitest";
import { AFTER_GRACE_MS, GRACE_MS, closeAll, connect, membersOf, sleep, uid, type PresenceUser } from "./support.js";

afterEach(closeAll);

function user(name: string): PresenceUser {
  return { user_id: uid(name.toLowerCase()), user_info: { name, avatar: `https://example.test/${name}.png` } };
}

/** Records what pusher-js emitted on a presence channel. */
function record(channel: PresenceChannel) {
  const added: { id: string; info: unknown }[] = [];
  const removed: { id: string; info: unknown }[] = [];
  channel.bind("pusher:member_added", (m: { id: string; info: unknown }) => added.push(m));
  channel.bind("pusher:member_removed", (m: { id: string; info: unknown }) => removed.push(m));
  return { added, removed };
}

describe("presence channels", () => {
  test("two clients see each other; member_added with user_info; member_removed after the grace", async () => {
    const room = uid("presence-chat");
    const alice = user("Alice");
    const bob = user("Bob");

    const a = await connect({ user: alice });
    const chA = await a.presence(room);
    expect(chA.members.count).toBe(1);
    expect(chA.members.me).toEqual({ id: alice.user_id, info: alice.user_info });
    const seenByA = record(chA);

    const b = await connect({ user: bob });
    const chB = await b.presence(room);
    expect(chB.members.count).toBe(2);
    expect(chB.members.me).toEqual({ id: bob.user_id, info: bob.user_info });
    expect(membersOf(chB)).toEqual({ [alice.user_id]: alice.user_info, [bob.user_id]: bob.user_info });
    expect(chB.members.get(alice.user_id)).toEqual({ id: alice.user_id, info: alice.user_info });

    await a.next("pusher_internal:member_added", room);
    expect(seenByA.added).toEqual([{ id: bob.user_id, info: bob.user_info }]);
    expect(chA.members.count).toBe(2);
    expect(membersOf(chA)).toEqual({ [alice.user_id]: alice.user_info, [bob.user_id]: bob.user_info });
    // The newcomer is not told about itself.
    expect(b.seen("pusher_internal:member_added", room)).toEqual([]);

    const closedAt = Date.now();
    b.close();
    await a.next("pusher_internal:member_removed", room, 1, GRACE_MS + 5000);
    const after = Date.now() - closedAt;
    expect(after).toBeGreaterThanOrEqual(GRACE_MS - 100);
    expect(seenByA.removed).toEqual([{ id: bob.user_id, info: bob.user_info }]);
    expect(a.seen("pusher_internal:member_removed", room)[0]!.data).toEqual({ user_id: bob.user_id });
    expect(chA.members.count).toBe(1);
    expect(membersOf(chA)).toEqual({ [alice.user_id]: alice.user_info });
  });

  test("a reload inside the grace shows no member_removed and no second member_added", async () => {
    const room = uid("presence-chat");
    const alice = user("Alice");
    const bob = user("Bob");

    const a = await connect({ user: alice });
    const chA = await a.presence(room);
    const seenByA = record(chA);
    const b1 = await connect({ user: bob });
    await b1.presence(room);
    await a.next("pusher_internal:member_added", room);

    // The reload: the old connection drops, a new one of the same user comes within the grace.
    b1.close();
    await sleep(GRACE_MS / 4);
    const b2 = await connect({ user: bob });
    const chB2 = await b2.presence(room);
    expect(chB2.members.count).toBe(2);
    expect(membersOf(chB2)).toEqual({ [alice.user_id]: alice.user_info, [bob.user_id]: bob.user_info });

    // Past the old connection's grace: its session has left by now.
    await sleep(AFTER_GRACE_MS);
    expect(a.seen("pusher_internal:member_removed", room)).toEqual([]);
    expect(a.seen("pusher_internal:member_added", room)).toHaveLength(1);
    expect(seenByA.added).toEqual([{ id: bob.user_id, info: bob.user_info }]);
    expect(seenByA.removed).toEqual([]);
    expect(chA.members.count).toBe(2);

    // The new connection leaving is a leave, as usual.
    b2.close();
    await a.next("pusher_internal:member_removed", room, 1, GRACE_MS + 5000);
    expect(chA.members.count).toBe(1);
  });

  test("two connections of one user are one member; member_removed only when both have left", async () => {
    const room = uid("presence-chat");
    const alice = user("Alice");
    const carol = user("Carol");

    const a = await connect({ user: alice });
    const chA = await a.presence(room);
    const seenByA = record(chA);

    const c1 = await connect({ user: carol });
    const chC1 = await c1.presence(room);
    await a.next("pusher_internal:member_added", room);
    const c2 = await connect({ user: carol });
    const chC2 = await c2.presence(room);
    expect(chC2.members.count).toBe(2);
    expect(membersOf(chC2)).toEqual({ [alice.user_id]: alice.user_info, [carol.user_id]: carol.user_info });

    await sleep(300);
    expect(seenByA.added).toEqual([{ id: carol.user_id, info: carol.user_info }]);
    expect(chA.members.count).toBe(2);
    // Carol's first connection is not told that Carol joined again.
    expect(c1.seen("pusher_internal:member_added", room)).toEqual([]);
    expect(chC1.members.count).toBe(2);

    c1.close();
    await sleep(AFTER_GRACE_MS);
    expect(a.seen("pusher_internal:member_removed", room)).toEqual([]);
    expect(chA.members.count).toBe(2);
    expect(c2.seen("pusher_internal:member_removed", room)).toEqual([]);

    const closedAt = Date.now();
    c2.close();
    await a.next("pusher_internal:member_removed", room, 1, GRACE_MS + 5000);
    expect(Date.now() - closedAt).toBeGreaterThanOrEqual(GRACE_MS - 100);
    expect(seenByA.removed).toEqual([{ id: carol.user_id, info: carol.user_info }]);
    expect(chA.members.count).toBe(1);
  });

  test("pusher:unsubscribe is a leave at once (no grace); a new subscription is a join again", async () => {
    const room = uid("presence-chat");
    const alice = user("Alice");
    const bob = user("Bob");
    const a = await connect({ user: alice });
    const chA = await a.presence(room);
    const seenByA = record(chA);
    const b = await connect({ user: bob });
    await b.presence(room);
    await a.next("pusher_internal:member_added", room);

    const at = Date.now();
    b.pusher.unsubscribe(room);
    await a.next("pusher_internal:member_removed", room);
    expect(Date.now() - at).toBeLessThan(GRACE_MS);
    expect(chA.members.count).toBe(1);

    const again = await b.presence(room);
    expect(again.members.count).toBe(2);
    await a.next("pusher_internal:member_added", room, 2);
    expect(seenByA.added.map((m) => m.id)).toEqual([bob.user_id, bob.user_id]);
    expect(seenByA.removed.map((m) => m.id)).toEqual([bob.user_id]);
  });

  test("an idle pusher-js connection is kept (pusher:ping / WebSocket pings), not timed out", async () => {
    const room = uid("presence-chat");
    const alice = user("Alice");
    const bob = user("Bob");
    const a = await connect({ user: alice });
    await a.presence(room);
    const b = await connect({ user: bob });
    await b.presence(room);
    await a.next("pusher_internal:member_added", room);
    // Twice the server's session timeout (2 s) without a message from either client.
    await sleep(4500);
    expect(a.seen("pusher_internal:member_removed")).toEqual([]);
    expect(b.pusher.connection.state).toBe("connected");
    expect(b.states).toEqual(["connected"]);
  });
});
