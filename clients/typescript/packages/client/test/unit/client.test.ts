import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { RosterClient, type RosterClientOptions } from "../../src/client.js";
import { RosterError } from "../../src/errors.js";
import type { RosterChange } from "../../src/roster.js";
import type { WatchStatusChange } from "../../src/watch.js";
import { FakeServer, type FakeSocket } from "../helpers/fakeSocket.js";
import { diff, member, presence, session, user } from "../helpers/wire.js";

function makeClient(server: FakeServer, extra: Partial<RosterClientOptions> = {}): RosterClient {
  return new RosterClient({
    url: "ws://roster.test/ws",
    token: "tok",
    WebSocket: server.WebSocket,
    clientIdStorage: null,
    heartbeat: { activity: false },
    random: () => 0.5,
    ...extra,
  });
}

/** Lets timers of 0 ms and promise callbacks run. */
async function tick(ms = 0): Promise<void> {
  await vi.advanceTimersByTimeAsync(ms);
}

/** connect() with the fake timers running until WELCOME. */
async function connect(client: RosterClient) {
  const p = client.connect();
  await tick();
  return p;
}

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe("connecting", () => {
  it("sends HELLO with token, clientId and metadata; type first, ref second; connect() resolves on WELCOME", async () => {
    const server = new FakeServer();
    const client = makeClient(server, { device: "web", appVersion: "3.2.0", os: "macOS", clientId: "tab-1" });
    const states: string[] = [];
    client.on("state", (s) => states.push(s.state));
    const p = client.connect();
    expect(client.state).toBe("connecting");
    await tick();
    const welcome = await p;
    expect(welcome.sessionId).toBe("sess-1");
    expect(client.state).toBe("open");
    expect(states).toEqual(["connecting", "open"]);
    expect(client.sessionId).toBe("sess-1");
    expect(client.userId).toBe("alice");
    const raw = server.last.sent[0]!;
    expect(Object.keys(raw).slice(0, 2)).toEqual(["type", "ref"]);
    expect(raw).toMatchObject({ type: "HELLO", token: "tok", clientId: "tab-1", device: "web", os: "macOS", appVersion: "3.2.0" });
    expect(server.last.url).toBe("ws://roster.test/ws");
  });

  it("disconnect() right after connect() (React StrictMode) leaves no unhandled rejection; connect() works again", async () => {
    const server = new FakeServer();
    const client = makeClient(server);
    void client.connect();
    const d = client.disconnect();
    await tick(10);
    await d;
    expect(client.state).toBe("closed");
    // The token was still being resolved: no socket was ever opened.
    expect(server.sockets).toHaveLength(0);
    const w = await connect(client);
    expect(w.sessionId).toBe("sess-1");
    expect(client.state).toBe("open");
    const d2 = client.disconnect();
    await tick(10);
    await d2;
    expect(server.sockets[0]!.of("BYE")).toHaveLength(1);
    expect(server.sockets[0]!.readyState).toBe(3);
  });

  it("normalises http(s) URLs and bare origins to the /ws endpoint", () => {
    const server = new FakeServer();
    expect(makeClient(server, { url: "http://127.0.0.1:7400" }).url).toBe("ws://127.0.0.1:7400/ws");
    expect(makeClient(server, { url: "https://x.example/ws" }).url).toBe("wss://x.example/ws");
    expect(makeClient(server, { url: "ws://x:1/custom/ws" }).url).toBe("ws://x:1/custom/ws");
  });

  it("requires a token or a token provider, and a WebSocket implementation", async () => {
    expect(() => new RosterClient({ url: "ws://x/ws" } as RosterClientOptions)).toThrow(/token/);
    const g = globalThis as { WebSocket?: unknown };
    const saved = g.WebSocket;
    g.WebSocket = undefined;
    try {
      const c = new RosterClient({ url: "ws://x/ws", token: "t", clientIdStorage: null });
      await expect(c.connect()).rejects.toMatchObject({ code: "no_websocket" });
    } finally {
      g.WebSocket = saved;
    }
  });

  it("a stable clientId per tab comes from sessionStorage, generated once", async () => {
    const store = new Map<string, string>();
    const storage = { getItem: (k: string) => store.get(k) ?? null, setItem: (k: string, v: string) => void store.set(k, v) };
    const server = new FakeServer();
    const a = makeClient(server, { clientIdStorage: storage });
    const b = makeClient(server, { clientIdStorage: storage });
    expect(a.clientId).toMatch(/^[0-9a-f-]{32,36}$/);
    expect(b.clientId).toBe(a.clientId); // a reload reads the same id
    expect(store.get("roster:clientId")).toBe(a.clientId);
    const other = makeClient(server, { clientIdStorage: null });
    expect(other.clientId).not.toBe(a.clientId);
  });
});

describe("requests and refs", () => {
  it("every message gets a unique ref; replies resolve and ERRORs reject the right promise", async () => {
    const server = new FakeServer({
      onMessage: (sock, msg) => {
        if (msg.type === "SUB") sock.deliver({ ...presence(String(msg.room), 0, [user("alice", [session("sess-1")])]), ref: msg.ref });
      },
    });
    const client = makeClient(server);
    await connect(client);
    const room = client.room("Order:1");
    await tick();
    const l1 = room.lock("a");
    const l2 = room.lock("b");
    const u3 = room.unlock("c");
    const [m1, m2, m3] = server.last.of("LOCK").concat(server.last.of("UNLOCK"));
    // Answer out of order.
    server.last.deliver({ type: "ERROR", ref: m3!.ref, code: "not_lock_owner", message: "held by bob" });
    server.last.deliver({
      type: "LOCK_ACK",
      ref: m2!.ref,
      room: "Order:1",
      field: "b",
      success: false,
      owner: { userId: "bob", sessionId: "b1", expiresAt: "2026-11-26T14:05:09.002Z" },
      expiresAt: "2026-11-26T14:05:09.002Z",
    });
    server.last.deliver({
      type: "LOCK_ACK",
      ref: m1!.ref,
      room: "Order:1",
      field: "a",
      success: true,
      owner: { userId: "alice", sessionId: "sess-1", expiresAt: "2026-11-26T14:05:09.002Z" },
      expiresAt: "2026-11-26T14:05:09.002Z",
    });
    await expect(l1).resolves.toMatchObject({ success: true, owner: { userId: "alice" } });
    await expect(l2).resolves.toMatchObject({ success: false, owner: { userId: "bob" } });
    const e = await u3.catch((x: unknown) => x);
    expect(e).toBeInstanceOf(RosterError);
    expect(e).toMatchObject({ code: "not_lock_owner", request: "UNLOCK", room: "Order:1", fromServer: true });
    const refs = server.allSent.map((m) => m.ref);
    expect(refs.every((r) => r !== undefined)).toBe(true);
    expect(new Set(refs).size).toBe(refs.length);
    expect(room.isLockedByMe("a")).toBe(true);
    expect(room.isLockedByOther("b")).toBe(true);
  });

  it("a request without a reply times out", async () => {
    const server = new FakeServer();
    const client = makeClient(server, { requestTimeoutMs: 300 });
    await connect(client);
    const room = client.room("Order:1");
    const p = room.lock("f").catch((e: unknown) => e);
    await tick(299);
    await tick(1);
    expect(await p).toMatchObject({ code: "timeout", request: "LOCK" });
  });

  it("requests made while disconnected wait for the connection; in-flight ones fail when it drops", async () => {
    const server = new FakeServer();
    const client = makeClient(server);
    const room = client.room("Order:1");
    const early = room.lock("x");
    void client.connect();
    await tick();
    const lock = server.last.of("LOCK")[0]!;
    // SUB goes out before the queued LOCK.
    expect(server.last.sent.map((m) => m.type)).toEqual(["HELLO", "HB", "SUB", "LOCK"]);
    server.last.deliver({ type: "LOCK_ACK", ref: lock.ref, room: "Order:1", field: "x", success: true, owner: null, expiresAt: null });
    await expect(early).resolves.toMatchObject({ success: true });
    const inflight = room.lock("y").catch((e: unknown) => e);
    server.last.drop(1006);
    expect(await inflight).toMatchObject({ code: "connection_closed" });
  });

  it("unsolicited ERRORs and errors of fire-and-forget messages surface as events", async () => {
    const server = new FakeServer();
    const client = makeClient(server);
    await connect(client);
    const errors: RosterError[] = [];
    client.on("error", (e) => errors.push(e));
    server.last.deliver({ type: "ERROR", code: "rate_limited", message: "slow down" });
    server.last.deliver({ type: "ERROR", code: "something_new", message: "?" });
    expect(errors.map((e) => e.code)).toEqual(["rate_limited", "protocol"]);
    const room = client.room("Order:1");
    const roomErrors: RosterError[] = [];
    room.on("error", (e) => roomErrors.push(e));
    const sub = server.last.of("SUB")[0]!;
    server.last.deliver(presence("Order:1", 0, [], { ref: sub.ref as number }));
    room.setState({ big: "x" });
    const st = server.last.of("STATE")[0]!;
    server.last.deliver({ type: "ERROR", ref: st.ref, code: "state_too_large", message: "too big" });
    expect(roomErrors.map((e) => [e.code, e.request])).toEqual([["state_too_large", "STATE"]]);
    expect(room.status).toBe("joined");
  });

  it("a refused SUB puts the room in error", async () => {
    const server = new FakeServer({
      onMessage: (sock, msg) => {
        if (msg.type === "SUB") sock.deliver({ type: "ERROR", ref: msg.ref, code: "room_full", message: "full" });
      },
    });
    const client = makeClient(server);
    await connect(client);
    const room = client.room("Order:1");
    const errs: string[] = [];
    room.on("error", (e) => errs.push(e.code));
    await tick();
    expect(room.status).toBe("error");
    expect(errs).toEqual(["room_full"]);
  });
});

describe("reconnecting", () => {
  it("after a drop: back-off with full jitter, token provider re-called, same clientId", async () => {
    const server = new FakeServer();
    let calls = 0;
    const client = makeClient(server, {
      token: undefined,
      getToken: async () => `tok-${++calls}`,
      reconnect: { baseMs: 1000, maxMs: 8000 },
      random: () => 0.999,
    });
    await connect(client);
    const events: Array<{ attempt: number; delayMs: number }> = [];
    client.on("reconnecting", (e) => events.push({ attempt: e.attempt, delayMs: e.delayMs }));
    server.last.drop(1006);
    expect(client.state).toBe("reconnecting");
    expect(events).toEqual([{ attempt: 1, delayMs: 999 }]);
    await tick(998);
    expect(server.sockets).toHaveLength(1);
    await tick(2);
    expect(server.sockets).toHaveLength(2);
    expect(client.state).toBe("open");
    expect(calls).toBe(2);
    expect(server.last.sent[0]).toMatchObject({ type: "HELLO", token: "tok-2", clientId: client.clientId });
    expect(server.sockets[0]!.sent[0]!.clientId).toBe(client.clientId);
  });

  it("gives up after maxAttempts consecutive failures; delays grow; connect() rejects", async () => {
    const server = new FakeServer({ autoOpen: false });
    const client = makeClient(server, { reconnect: { maxAttempts: 3, baseMs: 100, maxMs: 10_000 }, random: () => 0.999 });
    const delays: number[] = [];
    client.on("reconnecting", (e) => delays.push(e.delayMs));
    const closed = vi.fn();
    client.on("closed", closed);
    const p = client.connect().catch((e: unknown) => e);
    for (let i = 0; i < 4; i++) {
      await tick();
      server.last.drop(1006); // refused before opening
      await tick(1000);
    }
    expect(server.sockets).toHaveLength(4); // the first try + 3 retries
    expect(delays).toEqual([99, 199, 399]);
    expect(client.state).toBe("closed");
    expect(await p).toMatchObject({ code: "max_attempts" });
    expect(closed.mock.calls[0]![0].error.code).toBe("max_attempts");
  });

  it("the attempt counter resets after a successful connection", async () => {
    const server = new FakeServer();
    const client = makeClient(server, { reconnect: { maxAttempts: 1, baseMs: 10 } });
    await connect(client);
    for (let i = 0; i < 3; i++) {
      server.last.drop(1006);
      await tick(20);
      expect(client.state).toBe("open");
    }
  });

  it("auth_failed with a token provider: provider called again and the client recovers", async () => {
    let n = 0;
    const server = new FakeServer({
      onHello: (sock, hello) => {
        if (hello.token === "expired") {
          sock.deliver({ type: "ERROR", ref: hello.ref, code: "auth_failed", message: "token expired" });
          sock.drop(4001, "auth_failed");
          return true;
        }
      },
    });
    const client = makeClient(server, {
      token: undefined,
      getToken: () => (++n === 1 ? "expired" : "fresh"),
      reconnect: { baseMs: 10 },
    });
    const errors: string[] = [];
    client.on("error", (e) => errors.push(e.code));
    const welcome = await (async () => {
      const p = client.connect();
      await tick(50);
      return p;
    })();
    expect(welcome.sessionId).toBeDefined();
    expect(n).toBe(2);
    expect(errors).toContain("auth_failed");
    expect(server.sockets.map((s) => s.sent[0]!.token)).toEqual(["expired", "fresh"]);
  });

  it("auth_failed with a fixed token: closed, no retry", async () => {
    const server = new FakeServer({
      onHello: (sock, hello) => {
        sock.deliver({ type: "ERROR", ref: hello.ref, code: "auth_failed", message: "bad signature" });
        sock.drop(4001, "auth_failed");
        return true;
      },
    });
    const client = makeClient(server);
    const p = client.connect().catch((e: unknown) => e);
    await tick(5000);
    expect(await p).toMatchObject({ code: "auth_failed" });
    expect(client.state).toBe("closed");
    expect(server.sockets).toHaveLength(1);
  });

  it("kicked (4011): a kicked event, closed, never reconnects", async () => {
    const server = new FakeServer();
    const client = makeClient(server, { reconnect: { baseMs: 10 } });
    await connect(client);
    const kicked = vi.fn();
    client.on("kicked", kicked);
    server.last.drop(4011, "kicked");
    await tick(10_000);
    expect(kicked).toHaveBeenCalledWith({ code: 4011, reason: "kicked" });
    expect(client.state).toBe("closed");
    expect(server.sockets).toHaveLength(1);
  });

  it("disconnect() sends BYE and never reconnects; pending requests reject", async () => {
    const server = new FakeServer();
    const client = makeClient(server, { reconnect: { baseMs: 10 } });
    await connect(client);
    const room = client.room("Order:1");
    const pending = room.lock("f").catch((e: unknown) => e);
    const done = client.disconnect();
    expect(server.last.sent.at(-1)).toMatchObject({ type: "BYE" });
    expect(await pending).toMatchObject({ code: "client_closed" });
    server.last.drop(1000, "bye");
    await done;
    await tick(10_000);
    expect(client.state).toBe("closed");
    expect(server.sockets).toHaveLength(1);
  });

  it("replaced (4012) by another tab: continues under a fresh clientId", async () => {
    const store = new Map<string, string>();
    const storage = { getItem: (k: string) => store.get(k) ?? null, setItem: (k: string, v: string) => void store.set(k, v) };
    const server = new FakeServer();
    const client = makeClient(server, { clientIdStorage: storage, reconnect: { baseMs: 10 } });
    const before = client.clientId;
    await connect(client);
    const replaced = vi.fn();
    client.on("replaced", replaced);
    server.last.drop(4012, "replaced");
    await tick(20);
    expect(client.state).toBe("open");
    expect(client.clientId).not.toBe(before);
    expect(store.get("roster:clientId")).toBe(client.clientId);
    expect(server.last.sent[0]!.clientId).toBe(client.clientId);
    expect(replaced.mock.calls[0]![0].newClientId).toBe(client.clientId);
  });

  it("no frame for a whole session timeout: the socket is dropped and replaced", async () => {
    const server = new FakeServer({ welcome: { heartbeatIntervalMs: 1000, sessionTimeoutMs: 3000 } });
    const client = makeClient(server, { reconnect: { baseMs: 10 } });
    await connect(client);
    await tick(3999);
    expect(server.sockets).toHaveLength(1);
    await tick(50);
    expect(server.sockets[0]!.closedWith?.code).toBe(4000);
    expect(server.sockets).toHaveLength(2);
    expect(client.state).toBe("open");
  });

  it("a missing WELCOME is retried like a failed connection", async () => {
    let n = 0;
    const server = new FakeServer({ onHello: () => (++n === 1 ? true : undefined) });
    const client = makeClient(server, { requestTimeoutMs: 500, reconnect: { baseMs: 10 } });
    const p = client.connect();
    await tick(600);
    await p;
    expect(server.sockets).toHaveLength(2);
  });
});

describe("heartbeats", () => {
  it("HB right after WELCOME and every heartbeatIntervalMs, with t, active and the measured latency", async () => {
    const ackDelay = 40;
    const server = new FakeServer({
      welcome: { heartbeatIntervalMs: 1000 },
      onMessage: (sock, msg) => {
        if (msg.type === "HB") {
          setTimeout(() => sock.deliver({ type: "HB_ACK", ref: msg.ref, t: msg.t, serverTime: new Date().toISOString() }), ackDelay);
        }
      },
    });
    const client = makeClient(server);
    await connect(client);
    expect(server.last.of("HB")).toHaveLength(1);
    expect(server.last.of("HB")[0]).not.toHaveProperty("latencyMs");
    await tick(100);
    expect(client.latencyMs).toBe(ackDelay);
    await tick(900);
    const hbs = server.last.of("HB");
    expect(hbs).toHaveLength(2);
    expect(hbs[1]).toMatchObject({ type: "HB", active: true, latencyMs: 40 });
    expect(typeof hbs[1]!.t).toBe("number");
    await tick(3000);
    expect(server.last.of("HB")).toHaveLength(5);
  });

  it("latency is a rolling average of the last round trips", async () => {
    const delays = [10, 20, 30, 40, 50, 60, 70];
    const server = new FakeServer({
      welcome: { heartbeatIntervalMs: 1000 },
      onMessage: (sock, msg) => {
        if (msg.type === "HB") {
          const d = delays.shift() ?? 0;
          setTimeout(() => sock.deliver({ type: "HB_ACK", ref: msg.ref, t: msg.t, serverTime: "" }), d);
        }
      },
    });
    const client = makeClient(server);
    const seen: number[] = [];
    client.on("latency", (l) => seen.push(l));
    await connect(client);
    await tick(6500);
    expect(seen).toEqual([10, 15, 20, 25, 30, 40, 50]);
  });

  it("active comes from user activity in a page (fake document)", async () => {
    const listeners = new Map<string, Set<() => void>>();
    const doc = {
      visibilityState: "visible",
      addEventListener: (t: string, l: () => void) => {
        if (!listeners.has(t)) listeners.set(t, new Set());
        listeners.get(t)!.add(l);
      },
      removeEventListener: (t: string, l: () => void) => listeners.get(t)?.delete(l),
    };
    const fire = (t: string) => listeners.get(t)?.forEach((l) => l());
    const server = new FakeServer({ welcome: { heartbeatIntervalMs: 1000 } });
    const client = makeClient(server, { heartbeat: { activity: { document: doc, window: null } } });
    await connect(client);
    const actives = () => server.last.of("HB").map((h) => h.active);
    fire("keydown"); // activity during an active period: reported at the next tick
    await tick(1000);
    expect(actives()).toEqual([true, true]);
    await tick(1000); // nothing happened since the last HB
    expect(actives()).toEqual([true, true, false]);
    // Activity after an inactive HB is reported at once, not at the next tick.
    fire("pointermove");
    expect(actives()).toEqual([true, true, false, true]);
    await tick(1000);
    expect(actives()).toEqual([true, true, false, true, false]);
    // A hidden page is inactive.
    doc.visibilityState = "hidden";
    fire("visibilitychange");
    await tick(1000);
    expect(actives()).toEqual([true, true, false, true, false, false]);
  });

  it("in Node it is always active unless the application says otherwise", async () => {
    const server = new FakeServer({ welcome: { heartbeatIntervalMs: 1000 } });
    const client = makeClient(server);
    await connect(client);
    await tick(1000);
    client.setActive(false);
    await tick(1000);
    client.setActive(null);
    await tick(1000);
    expect(server.last.of("HB").map((h) => h.active)).toEqual([true, true, false, true]);
  });
});

describe("rooms over a connection", () => {
  function roomServer(roster: () => ReturnType<typeof user>[]): FakeServer {
    return new FakeServer({
      onMessage: (sock, msg) => {
        if (msg.type === "SUB") sock.deliver({ ...presence(String(msg.room), 5, roster()), ref: msg.ref });
      },
    });
  }

  it("SUB carries state and mode; the first snapshot is a change, not joins", async () => {
    const server = roomServer(() => [user("alice", [session("sess-1", { f: 1 })]), user("bob", [session("b1")])]);
    const client = makeClient(server);
    const room = client.room({ entity: "Order", id: 123 }, { state: { f: 1 } });
    expect(room.key).toBe("Order:123");
    const joins = vi.fn();
    const changes = vi.fn();
    room.on("join", joins);
    room.on("change", changes);
    await connect(client);
    expect(server.last.of("SUB")[0]).toMatchObject({ room: "Order:123", state: { f: 1 } });
    expect(server.last.of("SUB")[0]).not.toHaveProperty("mode");
    expect(room.status).toBe("joined");
    expect(joins).not.toHaveBeenCalled();
    expect(changes).toHaveBeenCalledTimes(1);
    expect(room.members.map((m) => m.userId)).toEqual(["alice", "bob"]);
    expect(room.others.map((m) => m.userId)).toEqual(["bob"]);
    expect(room.me?.state).toEqual({ f: 1 });
    expect(room.count).toBe(2);
  });

  it("a seq gap sends one re-SUB without state and resyncs from the new snapshot", async () => {
    let roster = [user("alice", [session("sess-1")])];
    let seq = 5;
    const server = new FakeServer({
      onMessage: (sock, msg) => {
        if (msg.type === "SUB") sock.deliver({ ...presence("R:1", seq, roster), ref: msg.ref });
      },
    });
    const client = makeClient(server);
    const room = client.room("R:1", { state: { me: true } });
    await connect(client);
    const events: string[] = [];
    room.on("join", (c) => events.push(`join ${c.userId}`));
    room.on("leave", (c) => events.push(`leave ${c.userId}`));
    // Diff 6 is lost; 7 arrives: gap.
    roster = [user("alice", [session("sess-1")]), user("bob", [session("b1")])];
    seq = 7;
    server.last.deliver(diff("R:1", 7, { joins: [member("bob", session("b1"))] }));
    const subs = server.last.of("SUB");
    expect(subs).toHaveLength(2);
    expect(subs[1]).toEqual({ type: "SUB", ref: subs[1]!.ref, room: "R:1" });
    expect(events).toEqual(["join bob"]);
    expect(room.seq).toBe(7);
    server.last.deliver(diff("R:1", 8, { leaves: [{ userId: "bob", sessionId: "b1", reason: "left" }] }));
    expect(events).toEqual(["join bob", "leave bob"]);
  });

  it("diffs that arrive before the snapshot are ignored", async () => {
    let send: FakeSocket | null = null;
    const server = new FakeServer({
      onMessage: (sock, msg) => {
        if (msg.type === "SUB") {
          send = sock;
          sock.deliver(diff("R:1", 3, { joins: [member("ghost", session("g1"))] }));
          sock.deliver({ ...presence("R:1", 3, [user("alice", [session("sess-1")])]), ref: msg.ref });
          sock.deliver(diff("R:1", 3, { joins: [member("ghost", session("g1"))] }));
        }
      },
    });
    const client = makeClient(server);
    const room = client.room("R:1");
    await connect(client);
    expect(send).not.toBeNull();
    expect(room.members.map((m) => m.userId)).toEqual(["alice"]);
  });

  it("after a reconnect rooms are re-SUBbed and only real changes are emitted", async () => {
    let roster = [user("alice", [session("sess-1", { f: "a" })]), user("bob", [session("b1")]), user("carol", [session("c1")])];
    const server = new FakeServer({
      onMessage: (sock, msg) => {
        if (msg.type === "SUB") sock.deliver({ ...presence("R:1", 10, roster), ref: msg.ref });
      },
      welcome: { sessionId: "sess-1" },
    });
    const client = makeClient(server, { reconnect: { baseMs: 10 }, leaveGraceMs: 100 });
    const room = client.room("R:1", { state: { f: "a" } });
    await connect(client);
    const events: RosterChange[] = [];
    room.on("join", (c) => events.push(c));
    room.on("leave", (c) => events.push(c));
    room.on("update", (c) => events.push(c));
    const statuses: string[] = [];
    room.on("status", (s) => statuses.push(s));
    const before = room.members;

    // Identical roster after the reconnect: no event at all, same members array.
    server.last.drop(1006);
    expect(room.status).toBe("resyncing");
    await tick(20);
    expect(server.last.of("SUB")[0]).toMatchObject({ room: "R:1", state: { f: "a" } });
    expect(events).toEqual([]);
    expect(room.members).toBe(before);
    expect(statuses).toEqual(["resyncing", "joined"]);

    // Bob left and dave came while we were away: exactly those two events. The
    // session was not resumed (a new one), so bob may be reconnecting himself:
    // his leave waits for the leave grace (the client's default, the server sent
    // none), and he stays listed meanwhile.
    roster = [user("alice", [session("sess-1", { f: "a" })]), user("carol", [session("c1")]), user("dave", [session("d1")])];
    server.last.drop(1006);
    await tick(20);
    expect(events.map((e) => `${e.type} ${e.userId}`)).toEqual(["join dave"]);
    expect(room.members.map((m) => m.userId)).toEqual(["alice", "bob", "carol", "dave"]);
    await tick(150);
    expect(events.map((e) => `${e.type} ${e.userId}`)).toEqual(["join dave", "leave bob"]);
    expect(room.members.map((m) => m.userId)).toEqual(["alice", "carol", "dave"]);
  });

  it("after a server restart (not resumed) members who come back under new sessions are no leave and no join", async () => {
    let roster = [user("alice", [session("a1")]), user("bob", [session("b1", { f: 1 })])];
    const server = new FakeServer({
      onMessage: (sock, msg) => {
        if (msg.type === "SUB") sock.deliver({ ...presence("R:1", 3, roster), ref: msg.ref });
        if (msg.type === "LOCK")
          sock.deliver({
            type: "LOCK_ACK",
            ref: msg.ref,
            room: "R:1",
            field: msg.field,
            success: true,
            owner: { userId: "alice", sessionId: client.sessionId ?? "", expiresAt: "2026-11-26T14:05:09.002Z" },
            expiresAt: "2026-11-26T14:05:09.002Z",
          });
      },
      welcome: { sessionId: "a1", leaveGraceMs: 300 },
    });
    const client = makeClient(server, { reconnect: { baseMs: 10 } });
    const room = client.room("R:1");
    await connect(client);
    await room.lock("title");
    const events: RosterChange[] = [];
    room.on("join", (c) => events.push(c));
    room.on("leave", (c) => events.push(c));
    room.on("update", (c) => events.push(c));

    // The restarted server knows only alice again (a new session); bob is on his way.
    server.opts.welcome = { sessionId: "a2", leaveGraceMs: 300 };
    roster = [user("alice", [session("a2")])];
    server.last.drop(1001);
    await tick(30);
    expect(events.map((e) => `${e.type} ${e.userId}`)).toEqual(["update alice"]);
    expect(room.members.map((m) => m.userId)).toEqual(["alice", "bob"]);
    expect(room.me?.sessionId).toBe("a2");
    // The field alice was editing is hers again.
    expect(server.last.of("LOCK")).toMatchObject([{ room: "R:1", field: "title" }]);
    expect(room.isLockedByMe("title")).toBe(true);
    // Bob re-joins within the grace under a new session: an update, not a join.
    server.last.deliver({
      type: "PRESENCE_DIFF",
      room: "R:1",
      seq: 4,
      joins: [{ userId: "bob", status: "online", session: session("b2", { f: 1 }) }],
      leaves: [],
      updates: [],
    });
    await tick(400);
    expect(events.map((e) => `${e.type} ${e.userId}`)).toEqual(["update alice", "update bob"]);
    expect(room.members.map((m) => m.sessions.map((s) => s.sessionId))).toEqual([["a2"], ["b2"]]);
  });

  it("resumed WELCOME: open rooms re-SUB; rooms nobody re-opened are left after the grace", async () => {
    const server = new FakeServer({
      welcome: { resumed: true, rooms: ["Keep:1", "Orphan:1", "Late:1"], heartbeatIntervalMs: 60_000, sessionTimeoutMs: 120_000 },
      onMessage: (sock, msg) => {
        if (msg.type === "SUB") sock.deliver({ ...presence(String(msg.room), 1, []), ref: msg.ref });
      },
    });
    const client = makeClient(server, { orphanRoomGraceMs: 1000 });
    client.room("Keep:1");
    await connect(client);
    await tick(500);
    client.room("Late:1");
    await tick(600);
    const sock = server.last;
    expect(sock.of("SUB").map((m) => m.room)).toEqual(["Keep:1", "Late:1"]);
    expect(sock.of("UNSUB").map((m) => m.room)).toEqual(["Orphan:1"]);
  });

  it("locks: snapshot, LOCK events, and forgotten locks of a resumed session are released", async () => {
    const lockOf = (userId: string, sessionId: string) => ({ userId, sessionId, expiresAt: "2026-11-26T14:05:09.002Z" });
    const server = new FakeServer({
      welcome: { sessionId: "me-1", resumed: true, rooms: ["R:1"] },
      onMessage: (sock, msg) => {
        if (msg.type === "SUB")
          sock.deliver({
            ...presence("R:1", 1, [user("alice", [session("me-1")]), user("bob", [session("b1")])], {
              locks: { title: lockOf("bob", "b1"), notes: lockOf("alice", "me-1") },
            }),
            ref: msg.ref,
          });
      },
    });
    const client = makeClient(server);
    const room = client.room("R:1");
    const changes: Array<[string, string | null, string | null]> = [];
    room.on("lock", (c) => changes.push([c.field, c.owner?.userId ?? null, c.reason]));
    await connect(client);
    expect(room.lockOwner("title")?.userId).toBe("bob");
    expect(room.isLockedByOther("title")).toBe(true);
    // "notes" is held by this resumed session but this page never locked it.
    expect(server.last.of("UNLOCK")).toEqual([expect.objectContaining({ room: "R:1", field: "notes" })]);
    server.last.deliver({ type: "LOCK", room: "R:1", field: "notes", owner: null, reason: "released" });
    server.last.deliver({ type: "LOCK", room: "R:1", field: "title", owner: null, reason: "expired" });
    server.last.deliver({ type: "LOCK", room: "R:1", field: "total", owner: lockOf("bob", "b1") });
    expect(changes).toEqual([
      ["notes", null, "released"],
      ["title", null, "expired"],
      ["total", "bob", null],
    ]);
    expect([...room.locks.keys()]).toEqual(["total"]);
  });

  it("entity state from PRESENCE and ENTITY events", async () => {
    const server = new FakeServer({
      onMessage: (sock, msg) => {
        if (msg.type === "SUB") sock.deliver({ ...presence("Order:7", 0, [], { stale: true, busyBy: "etl", version: 3 }), ref: msg.ref });
      },
    });
    const client = makeClient(server);
    const room = client.room("Order:7");
    const seen = vi.fn();
    room.on("entity", seen);
    await connect(client);
    expect([room.stale, room.busyBy, room.version]).toEqual([true, "etl", 3]);
    server.last.deliver({ type: "ENTITY", room: "Order:7", stale: false, busyBy: null, version: 4 });
    expect([room.stale, room.busyBy, room.version]).toEqual([false, null, 4]);
    expect(seen).toHaveBeenCalledWith({ stale: false, busyBy: null, version: 4 });
  });

  it("count mode: SUB mode count, PRESENCE_COUNT updates, gaps ignored", async () => {
    const server = new FakeServer({
      onMessage: (sock, msg) => {
        if (msg.type === "SUB") sock.deliver({ type: "PRESENCE_COUNT", ref: msg.ref, room: "Web:1", count: 5312, seq: 918 });
      },
    });
    const client = makeClient(server);
    const room = client.room("Web:1", { mode: "count" });
    const counts: number[] = [];
    room.on("count", (n) => counts.push(n));
    await connect(client);
    expect(server.last.of("SUB")[0]).toMatchObject({ mode: "count" });
    expect(room.view).toBe("count");
    server.last.deliver({ type: "PRESENCE_COUNT", room: "Web:1", count: 5400, seq: 990 });
    expect(counts).toEqual([5312, 5400]);
    expect(room.count).toBe(5400);
    expect(server.last.of("SUB")).toHaveLength(1);
    expect(room.status).toBe("joined");
  });

  it("list mode above the list limit switches to a count and back", async () => {
    const server = new FakeServer({
      onMessage: (sock, msg) => {
        if (msg.type === "SUB") sock.deliver({ ...presence("Big:1", 1, [user("alice", [session("sess-1")])]), ref: msg.ref });
      },
    });
    const client = makeClient(server);
    const room = client.room("Big:1");
    await connect(client);
    expect(room.view).toBe("list");
    server.last.deliver({ type: "PRESENCE_COUNT", room: "Big:1", count: 5001, seq: 40 });
    expect(room.view).toBe("count");
    expect(room.count).toBe(5001);
    const joins = vi.fn();
    room.on("join", joins);
    server.last.deliver(presence("Big:1", 60, [user("alice", [session("sess-1")]), user("bob", [session("b1")])]));
    expect(room.view).toBe("list");
    expect(joins).toHaveBeenCalledTimes(1);
    expect(room.count).toBe(2);
  });

  it("setState is throttled: one STATE per interval, the last value wins", async () => {
    const server = new FakeServer({
      onMessage: (sock, msg) => {
        if (msg.type === "SUB") sock.deliver({ ...presence("R:1", 0, []), ref: msg.ref });
      },
    });
    const client = makeClient(server, { stateThrottleMs: 100 });
    const room = client.room("R:1", { state: { n: 0 } });
    await connect(client);
    for (let i = 1; i <= 20; i++) {
      room.setState({ n: i });
      await tick(10);
    }
    await tick(200);
    const states = server.last.of("STATE").map((m) => (m.state as { n: number }).n);
    expect(states[0]).toBe(1);
    expect(states.at(-1)).toBe(20);
    expect(states.length).toBeLessThanOrEqual(3);
    expect(room.state).toEqual({ n: 20 });
    // Functional update and no resend of an unchanged state.
    room.setState((s) => ({ n: (s?.n ?? 0) + 1 }));
    await tick(200);
    room.setState({ n: 21 });
    await tick(200);
    expect(server.last.of("STATE").map((m) => (m.state as { n: number }).n).slice(-1)).toEqual([21]);
    expect(server.last.of("STATE").filter((m) => (m.state as { n: number }).n === 21)).toHaveLength(1);
  });

  it("room() returns the same handle per key, counted; the last leave() sends UNSUB", async () => {
    const server = new FakeServer({
      onMessage: (sock, msg) => {
        if (msg.type === "SUB") sock.deliver({ ...presence("R:1", 0, []), ref: msg.ref });
        if (msg.type === "UNSUB") sock.deliver({ type: "UNSUB_ACK", ref: msg.ref, room: msg.room });
      },
    });
    const client = makeClient(server);
    await connect(client);
    const a = client.room("R:1");
    const b = client.room("R:1");
    expect(a).toBe(b);
    await a.leave();
    expect(server.last.of("UNSUB")).toHaveLength(0);
    await b.leave();
    expect(server.last.of("UNSUB")).toEqual([expect.objectContaining({ room: "R:1" })]);
    expect(a.status).toBe("left");
    expect(() => a.setState({})).toThrow(RosterError);
    expect(() => client.room("bad key!")).toThrow(/invalid room/);
  });
});

describe("room events (EMIT / EVENT)", () => {
  function eventServer(): FakeServer {
    return new FakeServer({
      onMessage: (sock, msg) => {
        if (msg.type === "SUB") sock.deliver({ ...presence(String(msg.room), 0, [user("alice", [session("sess-1")])]), ref: msg.ref });
        if (msg.type === "UNSUB") sock.deliver({ type: "UNSUB_ACK", ref: msg.ref, room: msg.room });
      },
    });
  }

  it("emit() sends EMIT {room, event, data} with type first and a ref; data defaults to null", async () => {
    const server = eventServer();
    const client = makeClient(server);
    const room = client.room("Order:1");
    await connect(client);
    expect(room.emit("reaction", { emoji: "👍" })).toBe(true);
    expect(room.emit("ping")).toBe(true);
    const sent = server.last.of("EMIT");
    expect(sent).toEqual([
      { type: "EMIT", ref: expect.any(Number), room: "Order:1", event: "reaction", data: { emoji: "👍" } },
      { type: "EMIT", ref: expect.any(Number), room: "Order:1", event: "ping", data: null },
    ]);
    expect(Object.keys(sent[0]!).slice(0, 2)).toEqual(["type", "ref"]);
    // What goes out is the JSON of the data (toJSON applied, undefined keys dropped).
    room.emit("at", { when: new Date("2026-11-26T14:03:05.123Z"), gone: undefined });
    expect(server.last.of("EMIT")[2]!.data).toEqual({ when: "2026-11-26T14:03:05.123Z" });
  });

  it("EVENT from another member reaches room.on('event') as {room, event, data, from}; other rooms' events do not", async () => {
    const server = eventServer();
    const client = makeClient(server);
    const room = client.room("Order:1");
    const other = client.room("Order:2");
    await connect(client);
    const got = vi.fn();
    const otherGot = vi.fn();
    room.on("event", got);
    other.on("event", otherGot);
    server.last.deliver({ type: "EVENT", room: "Order:1", event: "typing", data: { on: true }, from: { userId: "bob", sessionId: "b1" } });
    server.last.deliver({ type: "EVENT", room: "Order:9", event: "typing", data: 1, from: { userId: "bob", sessionId: "b1" } });
    expect(got).toHaveBeenCalledTimes(1);
    expect(got).toHaveBeenCalledWith({ room: "Order:1", event: "typing", data: { on: true }, from: { userId: "bob", sessionId: "b1" } });
    expect(otherGot).not.toHaveBeenCalled();
    // Malformed events are ignored; a missing data is null.
    server.last.deliver({ type: "EVENT", room: "Order:1", event: 5, data: 1, from: { userId: "bob", sessionId: "b1" } });
    server.last.deliver({ type: "EVENT", room: "Order:1", event: "bad", data: 1, from: "bob" });
    server.last.deliver({ type: "EVENT", room: "Order:1", event: "x", from: { userId: "bob", sessionId: "b1" } });
    expect(got).toHaveBeenCalledTimes(2);
    expect(got.mock.calls[1]![0]).toMatchObject({ event: "x", data: null });
    // An event of the back end (no member sent it): from is null.
    server.last.deliver({ type: "EVENT", room: "Order:1", event: "refresh", data: { v: 2 }, from: null });
    expect(got).toHaveBeenCalledTimes(3);
    expect(got.mock.calls[2]![0]).toEqual({ room: "Order:1", event: "refresh", data: { v: 2 }, from: null });
    // Events change nothing a UI renders from the snapshot.
    const snap = room.snapshot();
    server.last.deliver({ type: "EVENT", room: "Order:1", event: "y", data: 2, from: { userId: "bob", sessionId: "b1" } });
    expect(room.snapshot()).toBe(snap);
    // After leave() nothing more.
    await room.leave();
    server.last.deliver({ type: "EVENT", room: "Order:1", event: "z", data: 3, from: { userId: "bob", sessionId: "b1" } });
    expect(got).toHaveBeenCalledTimes(4);
  });

  it("validates the event client-side with a clear RosterError: name 1-64 characters without control characters, data JSON of at most 2 KiB", async () => {
    const server = eventServer();
    const client = makeClient(server);
    const room = client.room("Order:1");
    await connect(client);
    const err = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return e as RosterError;
      }
      throw new Error("did not throw");
    };
    expect(err(() => room.emit(""))).toMatchObject({ code: "invalid_event", request: "EMIT", room: "Order:1", message: expect.stringMatching(/1-64 characters, got 0/) });
    expect(err(() => room.emit("x".repeat(65)))).toMatchObject({ code: "invalid_event", message: expect.stringMatching(/got 65/) });
    expect(err(() => room.emit("a\nb")).code).toBe("invalid_event");
    expect(err(() => room.emit(42 as unknown as string)).code).toBe("invalid_event");
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(err(() => room.emit("c", cyclic))).toMatchObject({ code: "invalid_event", message: expect.stringMatching(/not JSON/) });
    expect(err(() => room.emit("c", () => 1)).code).toBe("invalid_event");
    expect(err(() => room.emit("c", 10n)).code).toBe("invalid_event");
    // 64 characters counted as the server counts them (code points, not UTF-16 units).
    expect(room.emit("😀".repeat(64))).toBe(true);
    // 2048 bytes of JSON (UTF-8) pass, 2049 do not; "é" is two bytes.
    expect(room.emit("big", "x".repeat(2046))).toBe(true); // "…" quotes: 2048 bytes
    const tooBig = err(() => room.emit("big", "x".repeat(2047)));
    expect(tooBig).toBeInstanceOf(RosterError);
    expect(tooBig).toMatchObject({ code: "event_too_large", message: expect.stringMatching(/2049 bytes of JSON; at most 2048/) });
    expect(tooBig.fromServer).toBe(false);
    expect(err(() => room.emit("big", "é".repeat(1024))).code).toBe("event_too_large");
    // Nothing invalid was sent.
    expect(server.last.of("EMIT").map((m) => m.event)).toEqual(["😀".repeat(64), "big"]);
  });

  it("not subscribed on an open connection: emit() returns false and sends nothing (not queued); after leave() it throws room_left", async () => {
    const server = eventServer();
    const client = makeClient(server, { reconnect: { baseMs: 10 } });
    const room = client.room("Order:1");
    expect(room.emit("early")).toBe(false);
    await connect(client);
    expect(room.emit("now")).toBe(true);
    server.last.drop(1006);
    expect(room.emit("while-down")).toBe(false);
    await tick(20);
    expect(client.state).toBe("open");
    expect(room.emit("again")).toBe(true);
    expect(server.allSent.filter((m) => m.type === "EMIT").map((m) => m.event)).toEqual(["now", "again"]);
    await room.leave();
    expect(() => room.emit("gone")).toThrow(expect.objectContaining({ code: "room_left" }));
  });

  it("an ERROR for an EMIT (forbidden, rate_limited, …) is the room's error event with request EMIT; the room stays joined", async () => {
    const server = new FakeServer({
      onMessage: (sock, msg) => {
        if (msg.type === "SUB") sock.deliver({ ...presence(String(msg.room), 0, []), ref: msg.ref });
        if (msg.type === "EMIT") sock.deliver({ type: "ERROR", ref: msg.ref, code: "forbidden", message: "role viewer may not send room events" });
      },
    });
    const client = makeClient(server);
    const room = client.room("Order:1");
    const roomErrors: RosterError[] = [];
    const clientErrors: RosterError[] = [];
    room.on("error", (e) => roomErrors.push(e));
    client.on("error", (e) => clientErrors.push(e));
    await connect(client);
    room.emit("reaction", 1);
    expect(roomErrors).toHaveLength(1);
    expect(roomErrors[0]).toMatchObject({ code: "forbidden", request: "EMIT", room: "Order:1" });
    expect(roomErrors[0]!.fromServer).toBe(true);
    expect(clientErrors).toEqual([]);
    expect(room.status).toBe("joined");
  });
});

describe("partial state updates", () => {
  it("updateState(patch) merges shallowly onto the current state and is throttled like setState", async () => {
    const server = new FakeServer({
      onMessage: (sock, msg) => {
        if (msg.type === "SUB") sock.deliver({ ...presence(String(msg.room), 0, []), ref: msg.ref });
        if (msg.type === "UNSUB") sock.deliver({ type: "UNSUB_ACK", ref: msg.ref, room: msg.room });
      },
    });
    const client = makeClient(server, { stateThrottleMs: 100 });
    const room = client.room<{ cursor?: { x: number; y: number } | null; field?: string | null; typing?: boolean }>("R:1", {
      state: { field: "total", cursor: null },
    });
    await connect(client);
    room.updateState({ cursor: { x: 1, y: 2 } });
    expect(room.state).toEqual({ field: "total", cursor: { x: 1, y: 2 } });
    expect(server.last.of("STATE").at(-1)!.state).toEqual({ field: "total", cursor: { x: 1, y: 2 } });
    // A burst of patches: coalesced, the merged last value wins; the nested cursor is replaced, not merged.
    room.updateState({ cursor: { x: 5, y: 5 } });
    room.updateState((prev) => ({ typing: !prev?.typing }));
    room.updateState({ field: undefined });
    expect(room.state).toEqual({ cursor: { x: 5, y: 5 }, typing: true });
    expect(Object.keys(room.state!)).not.toContain("field");
    await tick(200);
    expect(server.last.of("STATE").map((m) => m.state)).toEqual([
      { field: "total", cursor: { x: 1, y: 2 } },
      { cursor: { x: 5, y: 5 }, typing: true },
    ]);
    expect(room.snapshot().myState).toEqual({ cursor: { x: 5, y: 5 }, typing: true });
    // With no state yet it merges onto {}.
    const bare = client.room<{ a?: number; b?: number }>("R:2");
    bare.updateState({ a: 1 });
    expect(bare.state).toEqual({ a: 1 });
    await bare.leave();
    expect(() => bare.updateState({ b: 1 })).toThrow(RosterError);
  });
});

describe("structural sharing", () => {
  it("an update of one member keeps every other member object (and the others' array entries) identical", async () => {
    const server = new FakeServer({
      onMessage: (sock, msg) => {
        if (msg.type === "SUB")
          sock.deliver({
            ...presence("R:1", 1, [
              user("alice", [session("sess-1"), session("a2", { tab: 2 })]),
              user("bob", [session("b1", { c: 0 })]),
              user("carol", [session("c1", { c: 0 })]),
            ]),
            ref: msg.ref,
          });
      },
    });
    const client = makeClient(server);
    const room = client.room("R:1");
    await connect(client);
    const before = room.snapshot();
    expect(before.others.map((m) => m.userId)).toEqual(["alice", "bob", "carol"]);
    expect(before.others[0]!.sessions.map((s) => s.sessionId)).toEqual(["a2"]);
    server.last.deliver(diff("R:1", 2, { updates: [member("bob", session("b1", { c: 1 }))] }));
    const after = room.snapshot();
    expect(after).not.toBe(before);
    expect(after.members[1]).not.toBe(before.members[1]);
    expect(after.members[1]!.sessions[0]!.state).toEqual({ c: 1 });
    expect(after.members[0]).toBe(before.members[0]);
    expect(after.members[2]).toBe(before.members[2]);
    // alice without this session: the same filtered object too.
    expect(after.others[0]).toBe(before.others[0]);
    expect(after.others[2]).toBe(before.others[2]);
    // A fresh snapshot with the same people keeps them all.
    server.last.drop(1006);
    await tick(1000);
    expect(room.status).toBe("joined");
    const resynced = room.snapshot();
    expect(resynced.members[0]).toBe(after.members[0]);
    expect(resynced.members[2]).toBe(after.members[2]);
  });
});

describe("watch", () => {
  it("snapshot, live STATUS events, re-WATCH after reconnect, UNWATCH when closed", async () => {
    const server = new FakeServer({
      onMessage: (sock, msg) => {
        if (msg.type === "WATCH") {
          const users: Record<string, unknown> = {};
          for (const u of msg.users as string[])
            users[u] = u === "bob" ? { status: "online", lastSeen: "2026-11-26T14:03:30.000Z", devices: ["web"] } : { status: "offline", lastSeen: null, devices: [] };
          sock.deliver({ type: "STATUS_SNAPSHOT", ref: msg.ref, users });
        }
      },
    });
    const client = makeClient(server, { reconnect: { baseMs: 10 } });
    const w = client.watch(["bob", "dave"]);
    const changes: string[] = [];
    const events: WatchStatusChange[] = [];
    w.on("status", (c) => {
      events.push(c);
      changes.push(`${c.userId}:${c.status}`);
    });
    await connect(client);
    expect(server.last.of("WATCH")[0]).toMatchObject({ users: ["bob", "dave"] });
    expect(w.get("bob")).toEqual({ status: "online", lastSeen: new Date("2026-11-26T14:03:30.000Z"), devices: ["web"] });
    expect(w.get("dave")?.lastSeen).toBeNull();
    expect(w.online).toEqual(["bob"]);
    server.last.deliver({ type: "STATUS", userId: "bob", status: "offline", lastSeen: "2026-11-26T14:09:12.417Z", devices: [] });
    expect(w.get("bob")?.status).toBe("offline");
    // The event's shape, as documented: {userId, status, previous, lastSeen, devices, entry, previousEntry}.
    expect(events.at(-1)).toEqual({
      userId: "bob",
      status: "offline",
      previous: "online",
      lastSeen: new Date("2026-11-26T14:09:12.417Z"),
      devices: [],
      entry: w.get("bob"),
      previousEntry: { status: "online", lastSeen: new Date("2026-11-26T14:03:30.000Z"), devices: ["web"] },
    });
    expect(events[0]).toMatchObject({ userId: "bob", status: "online", previous: undefined, previousEntry: undefined });
    // A second watch over an already watched user starts from the cache, no extra WATCH.
    const w2 = client.watch(["bob"]);
    expect(w2.get("bob")?.status).toBe("offline");
    expect(server.last.of("WATCH")).toHaveLength(1);
    w2.close();
    expect(server.last.of("UNWATCH")).toHaveLength(0);
    server.last.drop(1006);
    await tick(20);
    expect(server.last.of("WATCH")[0]).toMatchObject({ users: ["bob", "dave"] });
    expect(changes).toEqual(["bob:online", "dave:offline", "bob:offline", "bob:online"]);
    w.close();
    expect(server.last.of("UNWATCH")[0]).toMatchObject({ users: ["bob", "dave"] });
  });
});
