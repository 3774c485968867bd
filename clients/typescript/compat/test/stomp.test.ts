/**
 * `@stomp/stompjs`, unchanged, against Roster's STOMP endpoint (`/stomp`,
 * docs/STOMP.md): the flows of the seed designs — online status and watching
 * (seed 004), room hello / heartbeat / leave with the room topic (seed 002) —
 * and one room shared with native and Pusher clients.
 */
import { Client, type IMessage, type StompSubscription } from "@stomp/stompjs";
import WebSocket from "ws";
import { afterEach, describe, expect, it } from "vitest";
import { AFTER_GRACE_MS, closeAll, connect, mintToken, NativeClient, server, sleep, uid, waitFor } from "./support.js";

/** A stompjs client that records what each destination delivered. */
class Stomp {
  readonly client: Client;
  readonly got = new Map<string, any[]>();
  readonly receipts: string[] = [];
  readonly errors: string[] = [];
  connected = false;

  constructor(user: string, how: "header" | "passcode" = "header") {
    const token = mintToken({ sub: user });
    this.client = new Client({
      webSocketFactory: () => new WebSocket(`ws://${server.addr}/stomp`, ["v12.stomp", "v11.stomp", "v10.stomp"]),
      connectHeaders: how === "header" ? { Authorization: `Bearer ${token}` } : { login: user, passcode: token },
      reconnectDelay: 0,
      heartbeatIncoming: 1000,
      heartbeatOutgoing: 1000,
      onConnect: () => (this.connected = true),
      onStompError: (f) => this.errors.push(f.headers.message ?? ""),
    });
    this.client.onUnhandledReceipt = (f) => this.receipts.push(f.headers["receipt-id"]);
    stomps.add(this);
  }

  async start(): Promise<this> {
    this.client.activate();
    await waitFor(() => this.connected, "CONNECTED");
    return this;
  }

  subscribe(destination: string): StompSubscription {
    this.got.set(destination, []);
    return this.client.subscribe(destination, (m: IMessage) => this.got.get(destination)!.push(JSON.parse(m.body)));
  }

  send(destination: string, body?: unknown): void {
    this.client.publish({ destination, body: body === undefined ? "" : JSON.stringify(body) });
  }

  seen(destination: string, pred: (m: any) => boolean = () => true): any[] {
    return (this.got.get(destination) ?? []).filter(pred);
  }

  next(destination: string, pred: (m: any) => boolean, what: string): Promise<any> {
    return waitFor(() => this.seen(destination, pred)[0], what);
  }
}

const stomps = new Set<Stomp>();
afterEach(async () => {
  for (const s of stomps) await s.client.deactivate();
  stomps.clear();
  closeAll();
});

describe("seed 004: online status over STOMP", () => {
  it("watches users, sees them come online and go offline, and heartbeats keep a session", async () => {
    const [alice, bob] = [uid("alice"), uid("bob")];
    const a = await new Stomp(alice).start();
    a.subscribe("/user/queue/online-status");
    a.send("/app/presence.subscribe", { userIds: [bob] });
    const first = await a.next("/user/queue/online-status", (m) => m.userId === bob, "bob's initial status");
    expect(first.online).toBe(false);

    const b = await new Stomp(bob, "passcode").start();
    b.send("/app/online-status", { online: true });
    b.send("/app/heartbeat");
    const online = await a.next("/user/queue/online-status", (m) => m.userId === bob && m.online, "bob online");
    expect(online.status).toBe("online");
    expect(typeof online.timestamp).toBe("string");

    // stop(): the session ends at once.
    b.send("/app/online-status", { online: false });
    await a.next("/user/queue/online-status", (m) => m.userId === bob && m.online === false && m !== first, "bob offline");
  });
});

describe("seed 002: rooms over STOMP", () => {
  it("hello joins, the topic shows native and Pusher members, leave leaves", async () => {
    const room = `presence-${uid("room")}`;
    const [sam, nina, pete] = [uid("sam"), uid("nina"), uid("pete")];
    const s = await new Stomp(sam).start();
    s.subscribe("/user/queue/ack");
    s.subscribe(`/topic/room/${room}`);
    s.send("/app/presence/hello", { roomCode: room });
    const ack = await s.next("/user/queue/ack", (m) => m.type === "ACK", "ACK");
    expect(ack.room).toBe(room);
    await s.next(`/topic/room/${room}`, (m) => m.type === "PRESENCE", "PRESENCE");

    // A native client and a pusher-js client join the same room.
    const n = await NativeClient.connect({ sub: nina });
    const snap = await n.sub(room);
    expect(snap.users.map((u: any) => u.userId)).toContain(sam);
    const p = await connect({ user: { user_id: pete, user_info: { name: "Pete" } } });
    const channel = await p.subscribe(room);
    expect(Object.keys((channel as any).members.members)).toEqual(expect.arrayContaining([sam, nina, pete]));
    const joined = () =>
      s.seen(`/topic/room/${room}`, (m) => m.type === "PRESENCE_DIFF").flatMap((d) => d.joins.map((j: any) => j.userId));
    await waitFor(() => joined().includes(nina) && joined().includes(pete), "both joins on the topic");

    // Room events cross all three protocols.
    s.send("/app/presence/emit", { room, event: "client-wave", data: { from: "stomp" } });
    await n.next((f) => f.type === "EVENT" && f.event === "client-wave", "native gets the STOMP emit");
    await waitFor(() => p.frames.find((f) => f.event === "client-wave"), "pusher gets the STOMP emit");
    n.send({ type: "EMIT", room, event: "nudge", data: 1 });
    await s.next(`/topic/room/${room}`, (m) => m.type === "EVENT" && m.event === "nudge", "STOMP gets the native emit");

    // Heartbeats keep it; leave is seen by the others at once.
    s.send("/app/presence/heartbeat", { roomCode: room, latencyMs: 12 });
    s.send("/app/presence/leave", { roomCode: room });
    await n.next((f) => f.type === "PRESENCE_DIFF" && f.leaves.some((l: any) => l.userId === sam && l.reason === "left"), "native sees the leave");
    await waitFor(() => p.frames.find((f) => f.event === "pusher_internal:member_removed" && f.data?.user_id === sam), "pusher sees the leave");
  });

  it("a dropped STOMP connection leaves only after the grace", async () => {
    const room = `Order:${uid("o")}`;
    const [sam, nina] = [uid("sam"), uid("nina")];
    const s = await new Stomp(sam).start();
    s.subscribe(`/topic/room/${room}`);
    await s.next(`/topic/room/${room}`, (m) => m.type === "PRESENCE", "PRESENCE");
    const n = await NativeClient.connect({ sub: nina });
    await n.sub(room);
    // The socket goes away without DISCONNECT.
    (s.client.webSocket as unknown as WebSocket).terminate();
    await sleep(300);
    expect(n.leaves(room).filter((l) => l.userId === sam)).toEqual([]);
    await n.next((f) => f.type === "PRESENCE_DIFF" && f.leaves.some((l: any) => l.userId === sam), "the leave after the grace", AFTER_GRACE_MS + 3000);
  });
});

describe("bad frames", () => {
  it("a bad token gets an ERROR frame, and Roster errors go to /user/queue/errors", async () => {
    const bad = new Client({
      webSocketFactory: () => new WebSocket(`ws://${server.addr}/stomp`, ["v12.stomp"]),
      connectHeaders: { Authorization: "Bearer nope" },
      reconnectDelay: 0,
    });
    const errors: string[] = [];
    bad.onStompError = (f) => errors.push(f.headers.message ?? "");
    bad.activate();
    await waitFor(() => errors[0], "ERROR");
    expect(errors[0]).toBe("auth_failed");
    await bad.deactivate();

    const s = await new Stomp(uid("eve")).start();
    s.subscribe("/user/queue/errors");
    s.send("/app/presence/hello", { room: "bad room" });
    const e = await s.next("/user/queue/errors", (m) => m.type === "ERROR", "an error message");
    expect(e.code).toBe("invalid_room");
    s.send("/app/nowhere", {});
    await s.next("/user/queue/errors", (m) => m.code === "unknown_type", "unknown destination");
    expect(s.client.connected).toBe(true);
  });
});
