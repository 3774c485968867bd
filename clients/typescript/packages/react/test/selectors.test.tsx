/**
 * Selector hooks (`useOther`, `useOthers`, `usePresence(room, selector, isEqual)`)
 * and `shallowEqual`: a change re-renders only the components whose selection
 * changed. Measured with 50 real members moving their cursors against the real
 * server, and checked exactly on a scripted room.
 */
import type { Member, RoomSnapshot, Session } from "@roster/client";
import { act, render, waitFor } from "@testing-library/react";
import { Fragment, useState, type ReactNode } from "react";
import { describe, expect, it } from "vitest";
import { shallowEqual, useOther, useOthers, usePresence, type RoomInput } from "../src/index.js";
import { renderWith } from "./helpers/render.js";
import { newOrder, user } from "./helpers/roster.js";

type Cursor = { x: number; y: number };
type CursorState = { cursor: Cursor | null; name?: string };

const keyOf = (order: { entity: string; id: number }) => `${order.entity}:${order.id}`;
const cursorOf = (m: Member<CursorState>) => m.sessions[0]?.state.cursor ?? null;
const show = (c: Cursor | null | undefined) => (c ? `${c.x},${c.y}` : "-");

describe("shallowEqual", () => {
  it("compares arrays, plain objects and maps one level deep, everything else with Object.is", () => {
    expect(shallowEqual(1, 1)).toBe(true);
    expect(shallowEqual(NaN, NaN)).toBe(true);
    expect(shallowEqual("a", "b")).toBe(false);
    expect(shallowEqual({ x: 1, y: 2 }, { y: 2, x: 1 })).toBe(true);
    expect(shallowEqual({ x: 1 }, { x: 1, y: undefined })).toBe(false);
    expect(shallowEqual({ c: { x: 1 } }, { c: { x: 1 } })).toBe(false); // one level only
    const inner = { x: 1 };
    expect(shallowEqual({ c: inner }, { c: inner })).toBe(true);
    expect(shallowEqual([1, inner], [1, inner])).toBe(true);
    expect(shallowEqual([1, 2], [1, 2, 3])).toBe(false);
    expect(shallowEqual([1], { 0: 1 })).toBe(false);
    expect(shallowEqual(new Map([["a", inner]]), new Map([["a", inner]]))).toBe(true);
    expect(shallowEqual(new Map([["a", 1]]), new Map([["a", 2]]))).toBe(false);
    expect(shallowEqual(new Date(1), new Date(1))).toBe(false); // not a plain object
    expect(shallowEqual(null, {})).toBe(false);
    expect(shallowEqual(undefined, null)).toBe(false);
  });
});

// ---------------------------------------------------------------------------
// A scripted room: exact render counts, no network.

function session(sessionId: string, userId: string, state: CursorState): Session<CursorState> {
  return Object.freeze({ sessionId, userId, device: "web", os: null, appVersion: null, latencyMs: null, joinedAt: "", state });
}

function memberOf(userId: string, state: CursorState): Member<CursorState> {
  return Object.freeze({ userId, status: "online" as const, sessions: Object.freeze([session(`${userId}-s`, userId, state)]) });
}

/** A Room look-alike (the hooks accept any object with `key`, `snapshot()` and `subscribe()`). */
class ScriptedRoom {
  readonly key = "Scripted:1";
  private listeners = new Set<() => void>();
  private snap: RoomSnapshot<CursorState>;
  constructor(others: Member<CursorState>[]) {
    this.snap = this.build(others);
  }
  private build(others: Member<CursorState>[]): RoomSnapshot<CursorState> {
    return Object.freeze({
      key: this.key,
      status: "joined" as const,
      mode: "list" as const,
      view: "list" as const,
      members: others,
      others,
      count: others.length,
      locks: new Map(),
      entity: { stale: false, busyBy: null, version: 0 },
      myState: undefined,
    });
  }
  snapshot(): RoomSnapshot<CursorState> {
    return this.snap;
  }
  subscribe(l: () => void): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }
  /** Replaces the others (keep unchanged member objects to model the client's structural sharing, or not). */
  set(others: Member<CursorState>[]): void {
    this.snap = this.build(others);
    for (const l of [...this.listeners]) l();
  }
  get others(): readonly Member<CursorState>[] {
    return this.snap.others;
  }
}

describe("selector hooks on a scripted room (exact)", () => {
  it("useOther / useOthers / usePresence with a selector re-render only when their selection changes; unselected usePresence on every change", async () => {
    const ids = ["u0", "u1", "u2", "u3"];
    const room = new ScriptedRoom(ids.map((id, i) => memberOf(id, { cursor: { x: 0, y: i } })));
    const input = room as unknown as RoomInput<CursorState>;
    const renders: Record<string, number> = {};
    const bump = (k: string) => (renders[k] = (renders[k] ?? 0) + 1);

    function ViaOther({ id }: { id: string }): ReactNode {
      // A new object each time (not the state's own): shallowEqual keeps the rendered one.
      const c = useOther(input, id, (m) => ({ ...cursorOf(m)! }), shallowEqual);
      bump(`other:${id}`);
      return <i>{show(c)}</i>;
    }
    function ViaOthers({ id }: { id: string }): ReactNode {
      const c = useOthers(input, (others) => others.find((m) => m.userId === id)?.sessions[0]?.state.cursor);
      bump(`others:${id}`);
      return <i>{show(c)}</i>;
    }
    function ViaPresence({ id }: { id: string }): ReactNode {
      const c = usePresence(input, (p) => {
        const s = p.others.find((m) => m.userId === id)?.sessions[0]?.state.cursor;
        return s ? [s.x, s.y] : null;
      }, shallowEqual);
      bump(`presence:${id}`);
      return <i>{c ? c.join(",") : "-"}</i>;
    }
    function Unselected({ id }: { id: string }): ReactNode {
      const p = usePresence(input);
      bump(`all:${id}`);
      return <i>{show(p.others.find((m) => m.userId === id)?.sessions[0]?.state.cursor)}</i>;
    }
    function Count(): ReactNode {
      const n = usePresence(input, (p) => p.count);
      bump("count");
      return <b>{n}</b>;
    }
    const r = render(
      <>
        {ids.map((id) => (
          <Fragment key={id}>
            <ViaOther id={id} />
            <ViaOthers id={id} />
            <ViaPresence id={id} />
            <Unselected id={id} />
          </Fragment>
        ))}
        <Count />
      </>,
    );
    for (const k of Object.keys(renders)) renders[k] = 0;

    // u2 moves; the other members keep their objects (as the client does).
    const move = (id: string, c: Cursor) =>
      act(() => room.set(room.others.map((m) => (m.userId === id ? memberOf(id, { cursor: c }) : m))));
    await move("u2", { x: 5, y: 5 });
    await move("u2", { x: 6, y: 5 });
    await move("u0", { x: 1, y: 1 });
    // A change with equal values (a fresh snapshot): new objects, same cursors.
    await act(() => room.set(room.others.map((m) => memberOf(m.userId, { cursor: { ...cursorOf(m)! } }))));
    const expected = { u0: 1, u1: 0, u2: 2, u3: 0 } as Record<string, number>;
    for (const id of ids) {
      expect(renders[`other:${id}`] ?? 0, `useOther ${id}`).toBe(expected[id]);
      expect(renders[`presence:${id}`] ?? 0, `usePresence(selector) ${id}`).toBe(expected[id]);
      expect(renders[`all:${id}`], `usePresence() ${id}`).toBe(4);
    }
    // useOthers with the default Object.is: the cursor objects of a fresh snapshot are new, so it renders once more.
    for (const id of ids) expect(renders[`others:${id}`] ?? 0).toBe(expected[id]! + 1);
    expect(renders.count ?? 0).toBe(0);
    expect(r.container.textContent).toContain("6,5");

    // A leave: only the leaver's components (and the count).
    await act(() => room.set(room.others.filter((m) => m.userId !== "u3")));
    expect(renders["other:u3"]).toBe(1);
    expect(renders["other:u1"] ?? 0).toBe(0);
    expect(renders.count).toBe(1);
  });

  it("a selector that depends on props is re-applied when the props change", async () => {
    const room = new ScriptedRoom([memberOf("a", { cursor: { x: 1, y: 1 } }), memberOf("b", { cursor: { x: 2, y: 2 } })]);
    const input = room as unknown as RoomInput<CursorState>;
    let setId: (id: string) => void = () => {};
    function Pick(): ReactNode {
      const [id, set] = useState("a");
      setId = set;
      return <i data-testid="pick">{show(useOther(input, id, cursorOf))}</i>;
    }
    const r = render(<Pick />);
    expect(r.getByTestId("pick").textContent).toBe("1,1");
    await act(() => setId("b"));
    expect(r.getByTestId("pick").textContent).toBe("2,2");
    await act(() => setId("nobody"));
    expect(r.getByTestId("pick").textContent).toBe("-");
  });
});

// ---------------------------------------------------------------------------
// Measured against the real server.

describe("renders per cursor update, 50 members moving cursors (real server)", () => {
  it("a component reading one member's cursor re-renders only for that member's updates", { timeout: 120_000 }, async () => {
    const N = 50;
    const ROUNDS = 2;
    const alice = user("alice");
    const order = newOrder();
    const key = keyOf(order);
    const people = Array.from({ length: N }, (_, i) => user(`m${i}`, { stateThrottleMs: 0 }));
    await Promise.all(people.map((p) => p.client.connect()));
    const rooms = people.map((p, i) => p.client.room<CursorState>(key, { state: { cursor: { x: 0, y: i } } }));
    const ids = people.map((p) => p.id);

    const renders = { useOther: 0, useOthers: 0, usePresenceSelector: 0, usePresence: 0 };
    const perMember = new Map<string, number>();
    function ViaOther({ id }: { id: string }): ReactNode {
      const c = useOther(order, id, cursorOf, shallowEqual);
      renders.useOther++;
      perMember.set(id, (perMember.get(id) ?? 0) + 1);
      return <i data-testid={`a-${id}`}>{show(c)}</i>;
    }
    function ViaOthers({ id }: { id: string }): ReactNode {
      const c = useOthers(order, (others: readonly Member<CursorState>[]) => others.find((m) => m.userId === id)?.sessions[0]?.state.cursor, shallowEqual);
      renders.useOthers++;
      return <i data-testid={`b-${id}`}>{show(c)}</i>;
    }
    function ViaPresence({ id }: { id: string }): ReactNode {
      const c = usePresence(order, (p) => (p.others as readonly Member<CursorState>[]).find((m) => m.userId === id)?.sessions[0]?.state.cursor, shallowEqual);
      renders.usePresenceSelector++;
      return <i data-testid={`c-${id}`}>{show(c)}</i>;
    }
    function Unselected({ id }: { id: string }): ReactNode {
      const p = usePresence<CursorState>(order);
      renders.usePresence++;
      return <i data-testid={`d-${id}`}>{show(p.others.find((m) => m.userId === id)?.sessions[0]?.state.cursor)}</i>;
    }
    function Board(): ReactNode {
      return (
        <>
          {ids.map((id) => (
            <Fragment key={id}>
              <ViaOther id={id} />
              <ViaOthers id={id} />
              <ViaPresence id={id} />
              <Unselected id={id} />
            </Fragment>
          ))}
        </>
      );
    }
    const r = renderWith(alice.client, <Board />);
    const shows = (id: string, text: string) =>
      ["a", "b", "c", "d"].every((g) => r.getByTestId(`${g}-${id}`).textContent === text);
    await waitFor(() => expect(ids.every((id, i) => shows(id, `0,${i}`))).toBe(true), { timeout: 20_000 });
    expect(alice.client.openRooms.get(key)!.count).toBe(N + 1);

    renders.useOther = renders.useOthers = renders.usePresenceSelector = renders.usePresence = 0;
    perMember.clear();
    let updates = 0;
    for (let round = 1; round <= ROUNDS; round++) {
      for (let i = 0; i < N; i++) {
        rooms[i]!.updateState({ cursor: { x: round, y: i } });
        updates++;
        await waitFor(() => expect(shows(ids[i]!, `${round},${i}`)).toBe(true));
      }
    }

    const per = (n: number) => Math.round((n / updates) * 100) / 100;
    const figures = {
      members: N,
      updates,
      "useOther(room, id, selector, shallowEqual)": per(renders.useOther),
      "useOthers(room, selector, shallowEqual)": per(renders.useOthers),
      "usePresence(room, selector, shallowEqual)": per(renders.usePresenceSelector),
      "usePresence(room) (no selector)": per(renders.usePresence),
    };
    console.log(`[roster] renders per cursor update (${N} members, one component per member and hook):`, JSON.stringify(figures, null, 2));

    // Exactly one render per update with a selector: the component of the member who moved.
    expect(renders.useOther).toBe(updates);
    expect(renders.useOthers).toBe(updates);
    expect(renders.usePresenceSelector).toBe(updates);
    expect([...perMember.values()]).toEqual(ids.map(() => ROUNDS));
    // Without one, every component re-renders on every change of the room: at least N per update.
    expect(renders.usePresence).toBeGreaterThanOrEqual(N * updates);
  });
});
