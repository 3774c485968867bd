/**
 * The hooks with real users: every `RosterClient` talks to the real `roster`
 * server (test-support/globalSetup.ts) over real sockets, and what the server
 * holds is read back over REST. Waits are for conditions, with a deadline.
 */
import type { JoinChange, LeaveChange, Room, RosterClient, WatchedStatus } from "@roster/client";
import { fireEvent, render, renderHook, screen, waitFor, within } from "@testing-library/react";
import { StrictMode, useState, type ReactNode } from "react";
import { describe, expect, it, onTestFinished } from "vitest";
import {
  RosterProvider,
  useEntityState,
  useFieldLock,
  useMyState,
  useOnlineStatus,
  usePresence,
  useRoster,
  type PresenceResult,
  type RoomInput,
} from "../src/index.js";
import { flushTimers, renderWith } from "./helpers/render.js";
import {
  clientOf,
  clientOptions,
  newOrder,
  rest,
  roomLocks,
  roomPresence,
  serviceToken,
  sessionsIn,
  sessionsOf,
  uid,
  user,
  type TestUser,
} from "./helpers/roster.js";

const keyOf = (order: { entity: string; id: number }) => `${order.entity}:${order.id}`;

function names(p: PresenceResult): string {
  return p.members.map((m) => `${m.userId}${m.sessions.map((s) => `[${JSON.stringify(s.state)}]`).join("")}`).join(" ");
}

/** Renders what usePresence returns as text, and reports every value to `seen`. */
function Presence({ room, seen }: { room: RoomInput; seen?: PresenceResult[] }): ReactNode {
  const p = usePresence(room);
  seen?.push(p);
  return (
    <div data-testid="presence">
      {p.status} | {p.count} | {names(p)} | others: {p.others.map((m) => m.userId).join(",")} | me: {p.me?.sessionId ?? "-"}
    </div>
  );
}

/** Connects `u` and joins `key` outside React (another user's browser). */
async function joined(u: TestUser, key: string) {
  await u.client.connect();
  const room = u.client.room(key);
  await waitFor(() => expect(room.status).toBe("joined"));
  return room;
}

/** Joins and leaves `room` reports, registered before anything happens. */
function recordRoster(room: Room) {
  const joins: JoinChange[] = [];
  const leaves: LeaveChange[] = [];
  room.on("join", (c) => joins.push(c));
  room.on("leave", (c) => leaves.push(c));
  return { joins, leaves };
}

describe("RosterProvider and useRoster", () => {
  it("connects on mount, reports the connection state, and disconnects (BYE) on unmount", async () => {
    const alice = user("alice");
    const states: string[] = [];
    function State(): ReactNode {
      const { state, userId, client: c } = useRoster();
      states.push(state);
      return <p>{`${state} ${userId ?? "-"} ${c === alice.client}`}</p>;
    }
    const r = render(
      <RosterProvider client={alice.client}>
        <State />
      </RosterProvider>,
    );
    expect(await screen.findByText(`open ${alice.id} true`)).toBeTruthy();
    expect(states[0]).toBe("idle");
    expect(states).toContain("open");
    // The server holds the session.
    await waitFor(async () => expect((await sessionsOf(alice.id)).map((s) => s.sessionId)).toEqual([alice.client.sessionId]));

    r.unmount();
    await waitFor(() => expect(alice.client.state).toBe("closed"));
    expect(alice.sent("BYE")).toHaveLength(1);
    await waitFor(async () => expect(await sessionsOf(alice.id)).toEqual([]));
  });

  it("creates its own client from `options`; StrictMode's double mount still ends open with one session", async () => {
    const carol = uid("carol");
    const { options, wire } = clientOptions(carol);
    // Bob watches carol: a BYE and a second HELLO would show as offline → online.
    const bob = user("bob");
    await bob.client.connect();
    const watch = bob.client.watch([carol]);
    const seen: string[] = [];
    watch.on("status", (c) => seen.push(c.status));
    await waitFor(() => expect(watch.get(carol)?.status).toBe("offline"));

    let owned: RosterClient | null = null;
    function Who(): ReactNode {
      const { state, userId, client } = useRoster();
      owned = client;
      return <p>{`${state} ${userId ?? "-"}`}</p>;
    }
    const r = render(
      <StrictMode>
        <RosterProvider options={options}>
          <Who />
        </RosterProvider>
      </StrictMode>,
    );
    onTestFinished(() => r.unmount());
    expect(await screen.findByText(`open ${carol}`)).toBeTruthy();
    await waitFor(() => expect(watch.get(carol)?.status).toBe("online"));
    await flushTimers();
    // One connection, one HELLO, no BYE …
    expect(wire.sockets).toHaveLength(1);
    expect(wire.sent("HELLO")).toHaveLength(1);
    expect(wire.sent("BYE")).toHaveLength(0);
    // … and the server has one session of carol, the one the provider's client holds.
    expect((await sessionsOf(carol)).map((s) => s.sessionId)).toEqual([owned!.sessionId]);
    expect(owned!.state).toBe("open");
    // Offline (the snapshot), then online: never offline again.
    expect(seen[0]).toBe("offline");
    expect(seen.slice(1).filter((s) => s === "offline")).toEqual([]);
    expect(seen).toContain("online");
  });

  it("useRoster outside a provider throws a helpful error", () => {
    const err = console.error;
    console.error = () => {};
    try {
      expect(() => renderHook(() => useRoster())).toThrow(/RosterProvider/);
    } finally {
      console.error = err;
    }
  });
});

describe("usePresence", () => {
  it("re-renders when another user joins, changes state and leaves; others and me exclude/identify this session", async () => {
    const alice = user("alice");
    const bob = user("bob");
    const order = newOrder();
    renderWith(alice.client, <Presence room={order} />);
    const el = screen.getByTestId("presence");
    await waitFor(() => expect(el.textContent).toBe(`joined | 1 | ${alice.id}[{}] | others:  | me: ${alice.client.sessionId}`));

    const bobRoom = await joined(bob, keyOf(order));
    await waitFor(() =>
      expect(el.textContent).toBe(`joined | 2 | ${alice.id}[{}] ${bob.id}[{}] | others: ${bob.id} | me: ${alice.client.sessionId}`),
    );

    bobRoom.setState({ field: "total" });
    await waitFor(() => expect(el.textContent).toContain(`${bob.id}[{"field":"total"}]`));

    await bob.client.disconnect();
    await waitFor(() => expect(el.textContent).toBe(`joined | 1 | ${alice.id}[{}] | others:  | me: ${alice.client.sessionId}`));
  });

  it("acquires the room on mount and releases it (UNSUB) on unmount: the other user sees the leave", async () => {
    const alice = user("alice");
    const bob = user("bob");
    const key = keyOf(newOrder());
    const bobRoom = await joined(bob, key);
    const { joins, leaves } = recordRoster(bobRoom);
    const r = renderWith(alice.client, <Presence room={key} />);
    await waitFor(() => expect(screen.getByTestId("presence").textContent).toMatch(/^joined \| 2 /));
    // Bob sees her (else a join and a leave in one diff window would cancel out).
    await waitFor(() => expect(joins.map((j) => j.userId)).toEqual([alice.id]));
    expect(alice.client.openRooms.has(key)).toBe(true);
    expect(alice.sent("SUB", key)).toHaveLength(1);
    expect((await sessionsIn(key)).sort()).toEqual([alice.client.sessionId, bob.client.sessionId].sort());

    r.update(<p>gone</p>);
    await waitFor(() => expect(leaves.map((l) => `${l.userId} ${l.reason}`)).toEqual([`${alice.id} left`]));
    expect(alice.client.openRooms.has(key)).toBe(false);
    expect(alice.sent("UNSUB", key)).toHaveLength(1);
    expect(await sessionsIn(key)).toEqual([bob.client.sessionId]);
    // Only the room was released: the provider (and the connection) stay.
    expect(alice.client.state).toBe("open");
  });

  it("two components with the same key share one handle and one SUB; the room is left when the last unmounts", async () => {
    const alice = user("alice");
    const order = newOrder();
    const key = keyOf(order);
    const a: PresenceResult[] = [];
    const b: PresenceResult[] = [];
    function Both({ first, second }: { first: boolean; second: boolean }): ReactNode {
      return (
        <>
          {first && <Presence room={order} seen={a} />}
          {second && <Presence room={key} seen={b} />}
        </>
      );
    }
    const r = renderWith(alice.client, <Both first second />);
    await waitFor(() => expect(a.at(-1)!.status).toBe("joined"));
    await waitFor(() => expect(b.at(-1)!.status).toBe("joined"));
    expect(a.at(-1)!.room).toBe(b.at(-1)!.room);
    expect(a.at(-1)!.room).toBe(alice.client.openRooms.get(key));
    expect(alice.sent("SUB")).toHaveLength(1);
    // The server has this session in the room once.
    expect(await sessionsIn(key)).toEqual([alice.client.sessionId]);

    r.update(<Both first={false} second />);
    await flushTimers();
    expect(alice.sent("UNSUB")).toHaveLength(0);
    expect(alice.client.openRooms.get(key)?.status).toBe("joined");
    expect(await sessionsIn(key)).toEqual([alice.client.sessionId]);

    r.update(<Both first={false} second={false} />);
    await waitFor(() => expect(alice.sent("UNSUB", key)).toHaveLength(1));
    expect(alice.client.openRooms.size).toBe(0);
    await waitFor(async () => expect(await sessionsIn(key)).toEqual([]));
  });

  it("under StrictMode (mount, unmount, mount) on an open connection sends one SUB and no UNSUB: the others see one join, no leave", async () => {
    const alice = user("alice");
    const bob = user("bob");
    const order = newOrder();
    const key = keyOf(order);
    const bobRoom = await joined(bob, key);
    const { joins, leaves } = recordRoster(bobRoom);
    await alice.client.connect(); // already open: an immediate leave() would UNSUB at once
    renderWith(alice.client, <Presence room={order} />, { strict: true });
    await waitFor(() => expect(screen.getByTestId("presence").textContent).toMatch(/^joined \| 2 /));
    await flushTimers();
    expect(alice.sent("SUB")).toHaveLength(1);
    expect(alice.sent("UNSUB")).toHaveLength(0);
    // Nor does the provider BYE and reconnect.
    expect(alice.sent("HELLO")).toHaveLength(1);
    expect(alice.sent("BYE")).toHaveLength(0);

    // A state change of alice's after all that: once bob sees it, he has seen
    // everything the server sent about her before it (diffs are sequenced).
    alice.client.openRooms.get(key)!.setState({ mark: 1 });
    await waitFor(() => expect(bobRoom.members.find((m) => m.userId === alice.id)?.sessions[0]?.state).toEqual({ mark: 1 }));
    expect(joins.map((j) => j.userId)).toEqual([alice.id]);
    expect(leaves).toEqual([]);
    expect((await sessionsIn(key)).filter((s) => s === alice.client.sessionId)).toHaveLength(1);
    expect((await sessionsOf(alice.id)).map((s) => s.sessionId)).toEqual([alice.client.sessionId]);
  });

  it("follows the room key: a new key leaves the old room and joins the new one", async () => {
    const alice = user("alice");
    const [one, two] = [newOrder(), newOrder()];
    const r = renderWith(alice.client, <Presence room={one} />);
    await waitFor(() => expect(alice.client.openRooms.get(keyOf(one))?.status).toBe("joined"));
    r.update(<Presence room={two} />);
    await waitFor(() => expect(alice.client.openRooms.get(keyOf(two))?.status).toBe("joined"));
    await waitFor(() => expect([...alice.client.openRooms.keys()]).toEqual([keyOf(two)]));
    expect(alice.sent("UNSUB").map((m) => m.room)).toEqual([keyOf(one)]);
    await waitFor(async () => {
      expect(await sessionsIn(keyOf(one))).toEqual([]);
      expect(await sessionsIn(keyOf(two))).toEqual([alice.client.sessionId]);
    });
  });

  it("uses a Room object as given, without leaving it", async () => {
    const alice = user("alice");
    const key = keyOf(newOrder());
    await alice.client.connect();
    const room = alice.client.room(key);
    const r = renderWith(alice.client, <Presence room={room} />);
    await waitFor(() => expect(screen.getByTestId("presence").textContent).toMatch(/^joined \| 1 /));
    r.unmount();
    // The provider disconnected the client (BYE), but the hook never left the room.
    await waitFor(() => expect(alice.client.state).toBe("closed"));
    expect(alice.sent("BYE")).toHaveLength(1);
    expect(room.status).not.toBe("left");
    expect(alice.client.openRooms.get(key)).toBe(room);
    expect(alice.sent("UNSUB")).toHaveLength(0);
  });
});

describe("useEntityState", () => {
  it("shows stale / busyBy / version from the backend's lifecycle events (REST POST /lifecycle)", async () => {
    const alice = user("alice");
    const order = newOrder();
    function Banner(): ReactNode {
      const e = useEntityState(order);
      return <p data-testid="entity">{e.stale ? `stale: ${e.busyBy} is changing it` : `fresh v${e.version}`}</p>;
    }
    renderWith(alice.client, <Banner />);
    await waitFor(() => expect(alice.client.openRooms.get(keyOf(order))?.status).toBe("joined"));
    expect(screen.getByTestId("entity").textContent).toBe("fresh v0");
    const lifecycle = (type: "MUTATING" | "MUTATED") =>
      rest("POST", "/lifecycle", serviceToken(), { type, entity: "Order", id: order.id, userId: "erp" });

    expect((await lifecycle("MUTATING")).status).toBe(202);
    await waitFor(() => expect(screen.getByTestId("entity").textContent).toBe("stale: erp is changing it"));
    expect((await lifecycle("MUTATED")).status).toBe(202);
    await waitFor(() => expect(screen.getByTestId("entity").textContent).toBe("fresh v1"));
    expect(await roomPresence(keyOf(order))).toMatchObject({ stale: false, busyBy: null, version: 1 });
  });
});

describe("useMyState", () => {
  it("publishes the initial state with the SUB and later states (throttled) to the others", async () => {
    const alice = user("alice");
    const bob = user("bob");
    const order = newOrder();
    const key = keyOf(order);
    function Editor(): ReactNode {
      const [me, setMe] = useMyState<{ field: string | null; n?: number }>(order, { field: null });
      return (
        <>
          <p data-testid="mine">{JSON.stringify(me)}</p>
          <button onClick={() => setMe({ field: "total" })}>total</button>
          <button onClick={() => setMe((prev) => ({ field: prev?.field ?? null, n: (prev?.n ?? 0) + 1 }))}>inc</button>
        </>
      );
    }
    renderWith(alice.client, <Editor />);
    await waitFor(() => expect(alice.client.openRooms.get(key)?.status).toBe("joined"));
    expect(alice.sent("SUB")).toHaveLength(1);
    expect(alice.sent("SUB")[0]!.state).toEqual({ field: null });
    expect(screen.getByTestId("mine").textContent).toBe('{"field":null}');
    // The server holds it.
    expect((await roomPresence(key))!.users.find((u) => u.userId === alice.id)?.sessions[0]?.state).toEqual({ field: null });

    const bobRoom = await joined(bob, key);
    const aliceState = () => bobRoom.members.find((m) => m.userId === alice.id)?.sessions[0]?.state;
    expect(aliceState()).toEqual({ field: null });

    fireEvent.click(screen.getByText("total"));
    expect(screen.getByTestId("mine").textContent).toBe('{"field":"total"}');
    await waitFor(() => expect(aliceState()).toEqual({ field: "total" }));

    // A burst: the first goes out at once, the rest coalesce into the last value.
    const before = alice.sent("STATE").length;
    for (let i = 0; i < 5; i++) fireEvent.click(screen.getByText("inc"));
    expect(screen.getByTestId("mine").textContent).toBe('{"field":"total","n":5}');
    await waitFor(() => expect(aliceState()).toEqual({ field: "total", n: 5 }));
    expect(alice.sent("STATE").length - before).toBeLessThanOrEqual(2);
  });
});

describe("useMyState: partial updates and types", () => {
  type Editing = { field: string | null; cursor: { x: number; y: number } | null; n: number };

  it("updateState merges a patch (the others see the merged state); re-renders only for this session's state", async () => {
    const alice = user("alice");
    const bob = user("bob");
    const order = newOrder();
    const key = keyOf(order);
    let renders = 0;
    function Editor(): ReactNode {
      const [me, setMe, updateMe] = useMyState<Editing>(order, { field: null, cursor: null, n: 0 });
      renders++;
      // With `initial`, the state and `prev` are `Editing`, never undefined (checked by the type-check).
      const n: number = me.n;
      return (
        <>
          <p data-testid="mine">{JSON.stringify(me)}</p>
          <button onClick={() => updateMe({ cursor: { x: 1, y: 2 } })}>move</button>
          <button onClick={() => updateMe({ field: "total" })}>focus</button>
          <button onClick={() => updateMe((prev) => ({ n: prev.n + 10 }))}>add10</button>
          <button onClick={() => setMe((prev) => ({ ...prev, n: prev.n + 1, cursor: null }))}>inc</button>
          <i>{n}</i>
        </>
      );
    }
    renderWith(alice.client, <Editor />);
    await waitFor(() => expect(alice.client.openRooms.get(key)?.status).toBe("joined"));
    const bobRoom = await joined(bob, key);
    const aliceState = () => bobRoom.members.find((m) => m.userId === alice.id)?.sessions[0]?.state;
    expect(aliceState()).toEqual({ field: null, cursor: null, n: 0 });

    fireEvent.click(screen.getByText("move"));
    fireEvent.click(screen.getByText("focus"));
    fireEvent.click(screen.getByText("add10"));
    expect(screen.getByTestId("mine").textContent).toBe('{"field":"total","cursor":{"x":1,"y":2},"n":10}');
    await waitFor(() => expect(aliceState()).toEqual({ field: "total", cursor: { x: 1, y: 2 }, n: 10 }));
    fireEvent.click(screen.getByText("inc"));
    await waitFor(() => expect(aliceState()).toEqual({ field: "total", cursor: null, n: 11 }));

    // Bob's state changes re-render nothing here: the hook selects this session's state only.
    const before = renders;
    bobRoom.setState({ cursor: { x: 9, y: 9 } });
    await waitFor(() =>
      expect(alice.client.openRooms.get(key)!.members.find((m) => m.userId === bob.id)?.sessions[0]?.state).toEqual({ cursor: { x: 9, y: 9 } }),
    );
    await flushTimers();
    expect(renders).toBe(before);
  });

  it("with `initial` and a Room that has no state yet, prev is `initial` (never undefined)", async () => {
    const alice = user("alice");
    const key = keyOf(newOrder());
    await alice.client.connect();
    const room = alice.client.room<{ n: number; tag?: string }>(key);
    await waitFor(() => expect(room.status).toBe("joined"));
    function Counter(): ReactNode {
      const [me, setMe, updateMe] = useMyState(room, { n: 5 });
      return (
        <>
          <p data-testid="n">{me.n}</p>
          <button onClick={() => setMe((prev) => ({ n: prev.n + 1 }))}>inc</button>
          <button onClick={() => updateMe((prev) => ({ tag: `at ${prev.n}` }))}>tag</button>
        </>
      );
    }
    renderWith(alice.client, <Counter />);
    expect(screen.getByTestId("n").textContent).toBe("5");
    fireEvent.click(screen.getByText("inc"));
    expect(room.state).toEqual({ n: 6 });
    fireEvent.click(screen.getByText("tag"));
    expect(room.state).toEqual({ n: 6, tag: "at 6" });
    expect(screen.getByTestId("n").textContent).toBe("6");
  });

  it("without `initial` the state and prev may be undefined (type-level)", () => {
    // Never rendered: this only has to type-check (`npm run typecheck` covers the tests).
    function NoInitial(): ReactNode {
      const [me, setMe, updateMe] = useMyState<{ n: number }>("Order:1");
      // @ts-expect-error me may be undefined without `initial`
      void me.n;
      // @ts-expect-error prev may be undefined without `initial`
      setMe((prev) => ({ n: prev.n + 1 }));
      setMe((prev) => ({ n: (prev?.n ?? 0) + 1 }));
      // @ts-expect-error prev may be undefined without `initial`
      updateMe((prev) => ({ n: prev.n }));
      return null;
    }
    expect(typeof NoInitial).toBe("function");
  });
});

describe("useFieldLock", () => {
  function Field({ room, field = "total" }: { room: RoomInput; field?: string }): ReactNode {
    const lock = useFieldLock(room, field);
    const [value, setValue] = useState("");
    return (
      <label>
        {field}
        <input aria-label={field} value={value} onChange={(e) => setValue(e.target.value)} {...lock.bind} />
        <span data-testid="lock">
          {lock.lockedByMe ? "mine" : lock.lockedByOther ? `held by ${lock.ownerName}` : "free"}
          {lock.readOnly ? " (read-only)" : ""}
        </span>
      </label>
    );
  }

  /** Alice and Bob, each in their own provider (own connection), editing the same order. */
  async function twoEditors() {
    const alice = user("alice", { name: "Alice" });
    const bob = user("bob", { name: "Bob" });
    const order = newOrder();
    const key = keyOf(order);
    const ra = renderWith(alice.client, <Field room={order} />);
    const rb = renderWith(bob.client, <Field room={order} />);
    await waitFor(() => {
      expect(alice.client.openRooms.get(key)?.members).toHaveLength(2);
      expect(bob.client.openRooms.get(key)?.members).toHaveLength(2);
    });
    return { alice, bob, key, a: within(ra.container), b: within(rb.container), ra };
  }

  it("acquires on focus (the server holds it), is read-only for the other user, releases on blur", async () => {
    const { alice, key, a, b } = await twoEditors();
    const aInput = a.getByLabelText("total") as HTMLInputElement;
    const bInput = b.getByLabelText("total") as HTMLInputElement;
    expect(bInput.readOnly).toBe(false);

    fireEvent.focus(aInput);
    await waitFor(() => expect(a.getByTestId("lock").textContent).toBe("mine"));
    expect(alice.sent("LOCK")).toHaveLength(1);
    expect(await roomLocks(key)).toEqual({ total: alice.client.sessionId });
    await waitFor(() => expect(b.getByTestId("lock").textContent).toBe("held by Alice (read-only)"));
    expect(bInput.readOnly).toBe(true);
    expect(bInput.getAttribute("aria-readonly")).toBe("true");
    expect(aInput.readOnly).toBe(false);

    fireEvent.blur(aInput);
    await waitFor(() => expect(b.getByTestId("lock").textContent).toBe("free"));
    expect(alice.sent("UNLOCK")).toHaveLength(1);
    expect(await roomLocks(key)).toEqual({});
    expect(bInput.readOnly).toBe(false);
    expect(bInput.getAttribute("aria-readonly")).toBe("false");
  });

  it("focusing a field someone else holds sends no LOCK, and takes the lock once it is released", async () => {
    const { bob, key, a, b } = await twoEditors();
    fireEvent.focus(a.getByLabelText("total"));
    await waitFor(() => expect(b.getByTestId("lock").textContent).toBe("held by Alice (read-only)"));
    fireEvent.focus(b.getByLabelText("total"));
    await flushTimers();
    expect(bob.sent("LOCK")).toHaveLength(0);

    fireEvent.blur(a.getByLabelText("total"));
    await waitFor(() => expect(b.getByTestId("lock").textContent).toBe("mine"));
    expect(bob.sent("LOCK")).toHaveLength(1);
    expect(await roomLocks(key)).toEqual({ total: bob.client.sessionId });
    await waitFor(() => expect(a.getByTestId("lock").textContent).toBe("held by Bob (read-only)"));
  });

  it("releases the lock on unmount (and the room after it)", async () => {
    const { alice, bob, key, a, b, ra } = await twoEditors();
    const { leaves } = recordRoster(bob.client.openRooms.get(key)!);
    fireEvent.focus(a.getByLabelText("total"));
    await waitFor(() => expect(b.getByTestId("lock").textContent).toBe("held by Alice (read-only)"));
    // Alice's field goes away while focused; her provider (and connection) stay.
    ra.update(<p>gone</p>);
    await waitFor(() => expect(b.getByTestId("lock").textContent).toBe("free"));
    await waitFor(() => expect(leaves.map((l) => l.userId)).toEqual([alice.id]));
    expect(await roomLocks(key)).toEqual({});
    expect(alice.sent("UNLOCK")).toHaveLength(1);
    expect(alice.sent("UNSUB")).toHaveLength(1);
    // UNLOCK went out before UNSUB (the socket's own order).
    const types = alice.frames.map((f) => f.type);
    expect(types.indexOf("UNLOCK")).toBeLessThan(types.indexOf("UNSUB"));
    expect(alice.client.state).toBe("open");
  });

  it("a blur before the LOCK_ACK arrives gives the lock back", async () => {
    const { alice, key, a, b } = await twoEditors();
    const input = a.getByLabelText("total");
    fireEvent.focus(input);
    fireEvent.blur(input); // same tick: the LOCK is still on its way
    // The UNLOCK goes out once the LOCK_ACK is in: the server granted it first.
    await waitFor(() => expect(alice.sent("UNLOCK")).toHaveLength(1));
    expect(alice.sent("LOCK")).toHaveLength(1);
    await waitFor(async () => expect(await roomLocks(key)).toEqual({}));
    await waitFor(() => {
      expect(a.getByTestId("lock").textContent).toBe("free");
      expect(b.getByTestId("lock").textContent).toBe("free");
    });
  });
});

describe("useOnlineStatus", () => {
  it("shows never-seen users offline, then live statuses as real users connect and disconnect; UNWATCH on unmount", async () => {
    const alice = user("alice");
    const [bob, carol, dave] = [uid("bob"), uid("carol"), uid("dave")];
    let latest: ReadonlyMap<string, WatchedStatus> = new Map();
    function Friends({ ids }: { ids: string[] }): ReactNode {
      const statuses = useOnlineStatus(ids);
      latest = statuses;
      return (
        <ul>
          {ids.map((id) => {
            const s = statuses.get(id);
            return <li key={id}>{s ? `${id}: ${s.status} ${s.devices.join("+") || "-"} ${s.lastSeen ? "seen" : "never"}` : `${id}: ?`}</li>;
          })}
        </ul>
      );
    }
    const r = renderWith(alice.client, <Friends ids={[bob, carol]} />);
    expect(await screen.findByText(`${bob}: offline - never`)).toBeTruthy();
    expect(screen.getByText(`${carol}: offline - never`)).toBeTruthy();
    expect(alice.sent("WATCH")).toHaveLength(1);

    // Bob opens the app on his phone and in a browser.
    const bobWeb = clientOf(bob);
    const bobPhone = clientOf(bob, { device: "mobile" });
    await Promise.all([bobWeb.client.connect(), bobPhone.client.connect()]);
    expect(await screen.findByText(`${bob}: online mobile+web seen`)).toBeTruthy();

    // … and closes both: offline, last seen when his last session ended.
    const before = Date.now();
    await Promise.all([bobWeb.client.disconnect(), bobPhone.client.disconnect()]);
    expect(await screen.findByText(`${bob}: offline - seen`)).toBeTruthy();
    expect(Math.abs(latest.get(bob)!.lastSeen!.getTime() - before)).toBeLessThan(5000);

    const carolWeb = clientOf(carol);
    await carolWeb.client.connect();
    expect(await screen.findByText(`${carol}: online web seen`)).toBeTruthy();

    // New ids: carol stays watched (no UNWATCH + WATCH for her), dave is added.
    r.update(<Friends ids={[carol, dave]} />);
    expect(await screen.findByText(`${dave}: offline - never`)).toBeTruthy();
    expect(screen.getByText(`${carol}: online web seen`)).toBeTruthy();
    await flushTimers();
    expect(alice.sent("UNWATCH").flatMap((m) => m.users as string[])).toEqual([bob]);
    expect(alice.sent("WATCH").flatMap((m) => m.users as string[]).sort()).toEqual([bob, carol, dave].sort());
    // Still live for carol.
    await carolWeb.client.disconnect();
    expect(await screen.findByText(`${carol}: offline - seen`)).toBeTruthy();

    r.update(<p>none</p>);
    await waitFor(() => expect(alice.sent("UNWATCH").flatMap((m) => m.users as string[]).sort()).toEqual([bob, carol, dave].sort()));
  });
});
