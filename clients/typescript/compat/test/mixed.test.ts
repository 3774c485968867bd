/**
 * One room, two protocols: a native client (docs/PROTOCOL.md, HS256 token) and a
 * pusher-js client in `presence-chat` see each other, and a native EMIT and a
 * Pusher client event reach the other side.
 */
import type { PresenceChannel } from "pusher-js";
import { afterEach, describe, expect, test } from "vitest";
import { AFTER_GRACE_MS, GRACE_MS, NativeClient, closeAll, connect, membersOf, sleep, uid } from "./support.js";

afterEach(closeAll);

describe("a room shared by native and Pusher clients", () => {
  test("native first, then Pusher: both see each other, with info = user_info", async () => {
    const room = uid("presence-chat");
    const natId = uid("nat");
    const nat = await NativeClient.connect({ sub: natId, name: "Nat", info: { color: "teal", title: "ops" } });
    const snapshot = await nat.sub(room);
    expect(snapshot.type).toBe("PRESENCE");
    expect(snapshot.users.map((u: any) => u.userId)).toEqual([natId]);

    const pam = { user_id: uid("pam"), user_info: { name: "Pam", avatar: "p.png" } };
    const p = await connect({ user: pam });
    const ch = await p.presence(room);
    // The native member's user_info is its token's `info`.
    expect(membersOf(ch)).toEqual({ [natId]: { color: "teal", title: "ops" }, [pam.user_id]: pam.user_info });
    expect(ch.members.count).toBe(2);
    expect(ch.members.me).toEqual({ id: pam.user_id, info: pam.user_info });

    // The native client sees the Pusher user join, with info = user_info.
    await nat.next((f) => f.type === "PRESENCE_DIFF" && f.joins.some((j: any) => j.userId === pam.user_id), "Pam's join");
    const join = nat.joins(room).find((j) => j.userId === pam.user_id);
    expect(join.info).toEqual(pam.user_info);
    expect(join.name).toBe("Pam");
    expect(join.status).toBe("online");

    // A second native client's PRESENCE lists the Pusher user with its info.
    const natId2 = uid("nat2");
    const nat2 = await NativeClient.connect({ sub: natId2, name: "Ned" });
    const snap2 = await nat2.sub(room);
    const pamThere = snap2.users.find((u: any) => u.userId === pam.user_id);
    expect(pamThere?.info).toEqual(pam.user_info);
    // ...and the Pusher client gets member_added for it, user_info = {name} (the token has no info).
    const added = await p.next("pusher_internal:member_added", room);
    expect(added.data).toEqual({ user_id: natId2, user_info: { name: "Ned" } });
    expect(ch.members.get(natId2)).toEqual({ id: natId2, info: { name: "Ned" } });
  });

  test("Pusher first, then native: PRESENCE lists the Pusher user; member_added for the native user", async () => {
    const room = uid("presence-chat");
    const pam = { user_id: uid("pam"), user_info: { name: "Pam" } };
    const p = await connect({ user: pam });
    const ch = await p.presence(room);
    const added: unknown[] = [];
    ch.bind("pusher:member_added", (m: unknown) => added.push(m));

    const natId = uid("nat");
    const nat = await NativeClient.connect({ sub: natId, name: "Nat", info: { color: "teal" } });
    const snapshot = await nat.sub(room);
    expect(snapshot.users.map((u: any) => u.userId).sort()).toEqual([natId, pam.user_id].sort());
    const pamThere = snapshot.users.find((u: any) => u.userId === pam.user_id);
    expect(pamThere.info).toEqual(pam.user_info);
    expect(pamThere.name).toBe("Pam");

    await p.next("pusher_internal:member_added", room);
    expect(added).toEqual([{ id: natId, info: { color: "teal" } }]);

    // The native user leaving (a dropped connection) is member_removed after the grace.
    const closedAt = Date.now();
    nat.close();
    await p.next("pusher_internal:member_removed", room, 1, GRACE_MS + 5000);
    expect(Date.now() - closedAt).toBeGreaterThanOrEqual(GRACE_MS - 100);
    expect(ch.members.get(natId)).toBeNull();

    // The Pusher user leaving is a native leave after the grace.
    const nat2 = await NativeClient.connect({ sub: uid("nat2") });
    await nat2.sub(room);
    p.close();
    await sleep(GRACE_MS / 2);
    expect(nat2.leaves(room)).toEqual([]);
    await nat2.next((f) => f.type === "PRESENCE_DIFF" && f.leaves.some((l: any) => l.userId === pam.user_id), "Pam's leave", AFTER_GRACE_MS + 3000);
  });

  test("native EMIT reaches Pusher clients as that event; a Pusher client event reaches natives as EVENT", async () => {
    const room = uid("presence-chat");
    const natId = uid("nat");
    const nat = await NativeClient.connect({ sub: natId, name: "Nat" });
    await nat.sub(room);
    const pam = { user_id: uid("pam"), user_info: { name: "Pam" } };
    const p = await connect({ user: pam });
    const ch: PresenceChannel = await p.presence(room);
    const got: { data: unknown; meta: unknown }[] = [];
    ch.bind("reaction", (data: unknown, meta: unknown) => got.push({ data, meta }));

    nat.send({ type: "EMIT", room, event: "reaction", data: { emoji: "👍", n: 1 } });
    await p.next("reaction", room);
    expect(got).toEqual([{ data: { emoji: "👍", n: 1 }, meta: { user_id: natId } }]);
    expect(nat.seen((f) => f.type === "EVENT")).toEqual([]); // not back to its sender
    expect(nat.seen((f) => f.type === "ERROR")).toEqual([]);

    ch.trigger("client-wave", { hand: "left" });
    const ev = await nat.next((f) => f.type === "EVENT", "EVENT client-wave");
    expect(ev).toMatchObject({ type: "EVENT", room, event: "client-wave", data: { hand: "left" }, from: { userId: pam.user_id } });
    expect(typeof ev.from.sessionId).toBe("string");
    await sleep(200);
    expect(p.seen("client-wave")).toEqual([]); // not back to its sender
  });

  test("native EMIT reaches a private channel's Pusher clients (no user_id there)", async () => {
    const room = uid("private-doc");
    const nat = await NativeClient.connect({ sub: uid("nat") });
    await nat.sub(room);
    const p = await connect();
    const ch = await p.subscribe(room);
    const got: { data: unknown; meta: unknown }[] = [];
    ch.bind("saved", (data: unknown, meta: unknown) => got.push({ data, meta }));

    nat.send({ type: "EMIT", room, event: "saved", data: { rev: 7 } });
    await p.next("saved", room);
    expect(got.map((g) => g.data)).toEqual([{ rev: 7 }]);
    expect(p.seen("saved", room)[0]!.user_id).toBeUndefined();

    ch.trigger("client-ping", { n: 1 });
    const ev = await nat.next((f) => f.type === "EVENT", "EVENT client-ping");
    expect(ev).toMatchObject({ room, event: "client-ping", data: { n: 1 } });
  });
});
