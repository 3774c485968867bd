/**
 * Room events (`useEventListener`, `useEmit`), `useErrorListener` and
 * `useConnectionStatus` with real users against the real server.
 */
import type { Room, RoomEvent, RosterError } from "@roster/client";
import { fireEvent, screen, waitFor } from "@testing-library/react";
import { useState, type ReactNode } from "react";
import { describe, expect, it } from "vitest";
import {
  useConnectionStatus,
  useEmit,
  useErrorListener,
  useEventListener,
  type EmitFn,
  type RoomInput,
} from "../src/index.js";
import { flushTimers, renderWith } from "./helpers/render.js";
import { mintToken, newOrder, uid, user, type TestUser } from "./helpers/roster.js";

const keyOf = (order: { entity: string; id: number }) => `${order.entity}:${order.id}`;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function joined(u: TestUser, key: string): Promise<Room> {
  await u.client.connect();
  const room = u.client.room(key);
  await waitFor(() => expect(room.status).toBe("joined"));
  return room;
}

function record(room: Room): RoomEvent[] {
  const got: RoomEvent[] = [];
  room.on("event", (e) => got.push(e));
  return got;
}

describe("useEventListener and useEmit", () => {
  it("a click emits to the other user (outside React); the other user's events reach the listener; never one's own", async () => {
    const alice = user("alice");
    const bob = user("bob");
    const order = newOrder();
    const key = keyOf(order);
    const bobRoom = await joined(bob, key);
    const bobGot = record(bobRoom);
    const heard: RoomEvent<{ emoji: string }>[] = [];
    const emits = new Set<EmitFn>();
    let renders = 0;

    function Reactions({ room, tag }: { room: RoomInput; tag: string }): ReactNode {
      renders++;
      // A new inline listener on every render: the latest one is called, no re-subscription.
      useEventListener<{ emoji: string }>(room, (e) => heard.push({ ...e, event: `${tag}:${e.event}` }));
      const emit = useEmit(room);
      emits.add(emit);
      const [sent, setSent] = useState<string>("-");
      return (
        <>
          <button onClick={() => setSent(String(emit("reaction", { emoji: "👍" })))}>like</button>
          <p data-testid="sent">{sent}</p>
        </>
      );
    }
    const r = renderWith(alice.client, <Reactions room={order} tag="v1" />);
    await waitFor(() => expect(bobRoom.count).toBe(2));
    const aliceRoom = alice.client.openRooms.get(key)!;
    expect(aliceRoom.listenerCount("event")).toBe(1);

    fireEvent.click(screen.getByText("like"));
    expect(screen.getByTestId("sent").textContent).toBe("true");
    await waitFor(() => expect(bobGot).toHaveLength(1));
    expect(bobGot[0]).toEqual({
      room: key,
      event: "reaction",
      data: { emoji: "👍" },
      from: { userId: alice.id, sessionId: alice.client.sessionId },
    });
    expect(alice.sent("EMIT", key)).toEqual([{ type: "EMIT", ref: expect.any(Number), room: key, event: "reaction", data: { emoji: "👍" } }]);

    // Re-rendered with a new listener: the same emit function, still one subscription, the new listener is called.
    r.update(<Reactions room={order} tag="v2" />);
    expect(renders).toBeGreaterThanOrEqual(3);
    expect(emits.size).toBe(1);
    expect(aliceRoom.listenerCount("event")).toBe(1);
    bobRoom.emit("reaction", { emoji: "🎉" });
    await waitFor(() => expect(heard).toHaveLength(1));
    expect(heard[0]).toEqual({
      room: key,
      event: "v2:reaction",
      data: { emoji: "🎉" },
      from: { userId: bob.id, sessionId: bob.client.sessionId },
    });

    // Alice's own event never comes back to her.
    fireEvent.click(screen.getByText("like"));
    await waitFor(() => expect(bobGot).toHaveLength(2));
    bobRoom.emit("marker", null);
    await waitFor(() => expect(heard).toHaveLength(2));
    await sleep(50);
    expect(heard.map((e) => e.event)).toEqual(["v2:reaction", "v2:marker"]);

    // Unmounted: the listener is gone, the room released.
    r.update(<p>gone</p>);
    await flushTimers();
    expect(alice.client.openRooms.has(key)).toBe(false);
    expect(aliceRoom.listenerCount("event")).toBe(0);
  });

  it("shares the handle with the other hooks of the same key (one SUB) and works with a Room object", async () => {
    const alice = user("alice");
    const bob = user("bob");
    const key = keyOf(newOrder());
    const bobRoom = await joined(bob, key);
    const bobGot = record(bobRoom);
    await alice.client.connect();
    const room = alice.client.room(key);
    let emit: EmitFn | null = null;
    function Both(): ReactNode {
      useEventListener(key, () => {});
      emit = useEmit(room);
      return null;
    }
    renderWith(alice.client, <Both />);
    await waitFor(() => expect(room.status).toBe("joined"));
    await waitFor(() => expect(emit!("ping", 1)).toBe(true));
    await waitFor(() => expect(bobGot.map((e) => e.event)).toContain("ping"));
    expect(alice.sent("SUB", key)).toHaveLength(1);
  });
});

describe("useErrorListener", () => {
  it("gets the room's errors: an EMIT of a viewer is forbidden", async () => {
    const viewer = uid("viewer");
    const v = user("v", { token: mintToken({ sub: viewer, roles: ["viewer"] }) });
    const order = newOrder();
    const errors: RosterError[] = [];
    function Viewer(): ReactNode {
      useErrorListener((e) => errors.push(e), order);
      const emit = useEmit(order);
      return <button onClick={() => emit("reaction", { emoji: "👀" })}>react</button>;
    }
    renderWith(v.client, <Viewer />);
    await waitFor(() => expect(v.client.openRooms.get(keyOf(order))?.status).toBe("joined"));
    fireEvent.click(screen.getByText("react"));
    await waitFor(() => expect(errors).toHaveLength(1));
    expect(errors[0]).toMatchObject({ code: "forbidden", request: "EMIT", room: keyOf(order) });
  });

  it("gets the client's errors: a token provider that fails once (token_unavailable), then the client recovers", async () => {
    const id = uid("alice");
    let calls = 0;
    const u = user("x", {
      getToken: () => {
        calls++;
        if (calls === 1) throw new Error("auth service down");
        return mintToken({ sub: id });
      },
    });
    const errors: RosterError[] = [];
    function App(): ReactNode {
      useErrorListener((e) => errors.push(e));
      return <p>{useConnectionStatus()}</p>;
    }
    renderWith(u.client, <App />);
    await waitFor(() => expect(errors).toHaveLength(1));
    expect(errors[0]).toMatchObject({ code: "token_unavailable", message: expect.stringMatching(/auth service down/) });
    expect(await screen.findByText("open")).toBeTruthy();
    expect(u.client.userId).toBe(id);
  });
});

describe("useConnectionStatus", () => {
  it("follows the connection (open → reconnecting → open → closed) and re-renders only when it changes", async () => {
    const alice = user("alice");
    const seen: string[] = [];
    function Status(): ReactNode {
      const status = useConnectionStatus();
      seen.push(status);
      return <p data-testid="status">{status}</p>;
    }
    const r = renderWith(alice.client, <Status />);
    await waitFor(() => expect(screen.getByTestId("status").textContent).toBe("open"));
    // Heartbeats go back and forth meanwhile: no re-render for them.
    await sleep(1200);
    alice.sockets.at(-1)!.terminate();
    await waitFor(() => expect(seen).toContain("reconnecting"));
    await waitFor(() => expect(screen.getByTestId("status").textContent).toBe("open"));
    expect(seen.filter((s, i) => s !== seen[i - 1])).toEqual(["idle", "connecting", "open", "reconnecting", "open"]);
    // One render per distinct state (React may render the first one twice before committing).
    expect(seen.length).toBeLessThanOrEqual(6);
    r.unmount();
    await waitFor(() => expect(alice.client.state).toBe("closed"));
  });
});
