import {
  roomKey,
  type EntityState,
  type PresenceState,
  type Room,
  type RoomAddress,
  type RoomOptions,
  type RoomSnapshot,
  type RosterClient,
} from "@roster/client";
import { useCallback, useEffect, useMemo, useRef } from "react";
import { useOptionalClient } from "./context.js";
import { useSyncExternalStoreWithSelector, type EqualityFn } from "./selector.js";

/**
 * What the hooks accept as a room: an address (`"Order:123"` or
 * `{entity: "Order", id: 123}`), whose handle the hook acquires while mounted; a
 * `Room` the application manages itself (used as is, never left by the hook); or
 * `null`/`undefined` for nothing (the hook returns empty values).
 */
export type RoomInput<S extends PresenceState = PresenceState> = RoomAddress | Room<S> | null | undefined;

/** A `Room` object rather than an address (duck-typed: several copies of the client may be loaded). */
export function isRoom<S extends PresenceState>(x: RoomInput<S>): x is Room<S> {
  return (
    typeof x === "object" &&
    x !== null &&
    typeof (x as Room<S>).snapshot === "function" &&
    typeof (x as Room<S>).subscribe === "function"
  );
}

const NO_ENTITY: EntityState = Object.freeze({ stale: false, busyBy: null, version: 0 });
const NO_LOCKS: ReadonlyMap<string, never> = new Map<string, never>();
const NOBODY: readonly never[] = Object.freeze([]);

/** What a hook shows before it holds the room (first render, or no room). */
function emptySnapshot<S extends PresenceState>(key: string | null): RoomSnapshot<S> {
  return Object.freeze({
    key: key ?? "",
    status: key === null ? "left" : "connecting",
    mode: "list",
    view: "list",
    members: NOBODY,
    others: NOBODY,
    count: 0,
    locks: NO_LOCKS,
    entity: NO_ENTITY,
    myState: undefined,
  });
}

/**
 * Balances a `client.room()` with `room.leave()` a moment later rather than at
 * once: StrictMode's mount → unmount → mount, a remount under a new parent or a
 * handle passed from one component to the next then re-acquire the same handle in
 * between, so the server sees no `UNSUB` + `SUB` (and the others no leave + join).
 */
function releaseSoon(room: Room<never>): void {
  setTimeout(() => {
    room.leave().catch(() => {
      /* not connected or already gone: nothing to undo */
    });
  }, 0);
}

function acquire<S extends PresenceState>(client: RosterClient, key: string, opts: RoomOptions<S> | undefined): Room<S> {
  const room = client.room<S>(key, opts ?? {});
  // The handle may have been opened first by a hook without a state (a child's
  // effects run before its parent's): publish the state this caller brings.
  if (opts?.state !== undefined && room.state === undefined) room.setState(opts.state);
  return room;
}

/** A room as an external store for `useSyncExternalStore`. @internal */
export interface RoomStore<S extends PresenceState> {
  client: RosterClient | null;
  key: string | null;
  /** Acquires the handle (for an address) and listens to its snapshot; the returned function releases it. */
  subscribe(onChange: () => void): () => void;
  getSnapshot(): RoomSnapshot<S>;
  getServerSnapshot(): RoomSnapshot<S>;
  /** The handle to act on now (acquired by this hook, or by another one for the same key). */
  current(): Room<S> | null;
}

/**
 * The store behind every room hook. The handle is acquired when React subscribes
 * (after the first commit) and released when it unsubscribes, so an aborted render
 * never leaks a reference. Until then the snapshot of a handle another component
 * already holds for the same key is shown, else an empty one.
 * @internal
 */
export function useRoomStore<S extends PresenceState>(input: RoomInput<S>, opts?: RoomOptions<S>): RoomStore<S> {
  const client = useOptionalClient();
  const given = isRoom(input) ? input : null;
  const key = given ? given.key : input === null || input === undefined ? null : roomKey(input as RoomAddress);
  if (!given && key !== null && !client) {
    throw new Error("@roster/react: wrap this component in a <RosterProvider>");
  }
  // Read when the handle is acquired; changing options later has no effect on it.
  const optsRef = useRef(opts);
  optsRef.current = opts;

  const current = useCallback((): Room<S> | null => {
    if (given) return given;
    if (key === null || !client) return null;
    return (client.openRooms.get(key) as Room<S> | undefined) ?? null;
  }, [client, given, key]);

  const subscribe = useCallback(
    (onChange: () => void) => {
      if (given) return given.subscribe(onChange);
      if (key === null || !client) return () => {};
      const room = acquire<S>(client, key, optsRef.current);
      const off = room.subscribe(onChange);
      onChange(); // the handle may be new: read its snapshot
      return () => {
        off();
        releaseSoon(room as unknown as Room<never>);
      };
    },
    [client, given, key],
  );

  const empty = useMemo(() => emptySnapshot<S>(key), [key]);
  const getSnapshot = useCallback(() => current()?.snapshot() ?? empty, [current, empty]);
  const getServerSnapshot = useCallback(() => given?.snapshot() ?? empty, [given, empty]);
  return useMemo(
    () => ({ client, key, subscribe, getSnapshot, getServerSnapshot, current }),
    [client, key, subscribe, getSnapshot, getServerSnapshot, current],
  );
}

/**
 * Holds a room handle while mounted without re-rendering on its changes (for
 * listeners): `attach(room)` runs once the handle is held and may return a
 * detach function, run before the handle is released. An address is acquired
 * like the other hooks do (shared per key, released a tick after unmount); a
 * `Room` is used as is.
 * @internal
 */
export function useRoomHandle<S extends PresenceState>(
  input: RoomInput<S>,
  attach: (room: Room<S>) => (() => void) | void,
): void {
  const client = useOptionalClient();
  const given = isRoom(input) ? input : null;
  const key = given ? given.key : input === null || input === undefined ? null : roomKey(input as RoomAddress);
  if (!given && key !== null && !client) {
    throw new Error("@roster/react: wrap this component in a <RosterProvider>");
  }
  const attachRef = useRef(attach);
  attachRef.current = attach;
  useEffect(() => {
    if (given) return attachRef.current(given) ?? undefined;
    if (key === null || !client) return undefined;
    const room = acquire<S>(client, key, undefined);
    const detach = attachRef.current(room);
    return () => {
      detach?.();
      releaseSoon(room as unknown as Room<never>);
    };
  }, [client, given, key]);
}

/**
 * Holds a room handle while mounted and re-renders only when
 * `selector(snapshot, handle)` changes by `isEqual` (default `Object.is`; the
 * identity selector re-renders on every change of the snapshot). Returns the
 * selection and the store (for `current()`).
 * @internal
 */
export function useRoomSelector<S extends PresenceState, T>(
  input: RoomInput<S>,
  selector: (snapshot: RoomSnapshot<S>, room: Room<S> | null) => T,
  isEqual?: EqualityFn<T>,
  opts?: RoomOptions<S>,
): [selection: T, store: RoomStore<S>] {
  const store = useRoomStore(input, opts);
  const { current } = store;
  const select = useCallback((snap: RoomSnapshot<S>) => selector(snap, current()), [selector, current]);
  const value = useSyncExternalStoreWithSelector(
    store.subscribe,
    store.getSnapshot,
    store.getServerSnapshot,
    select,
    isEqual,
  );
  return [value, store];
}
