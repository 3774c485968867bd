import {
  roomKey,
  type EntityState,
  type Json,
  type LockOwner,
  type Member,
  type PresenceState,
  type Room,
  type RoomAddress,
  type RoomEvent,
  type RoomMode,
  type RoomOptions,
  type RoomSnapshot,
  type RoomStatus,
  type RosterClient,
  type RosterError,
  type Session,
  type Watch,
  type WatchedStatus,
} from "@roster/client";
import { useCallback, useEffect, useMemo, useRef, useState, useSyncExternalStore } from "react";
import { useOptionalClient, useRosterClient } from "./context.js";
import { isRoom, useRoomHandle, useRoomSelector, type RoomInput } from "./room.js";
import { shallowEqual, type EqualityFn } from "./selector.js";

// ---------------------------------------------------------------------------
// usePresence

export interface PresenceResult<S extends PresenceState = PresenceState> {
  /** The handle, once acquired (`null` on the first render and without a room). */
  room: Room<S> | null;
  /** `connecting` \| `joining` \| `joined` \| `resyncing` \| `error` \| `left` (`left` without a room). */
  status: RoomStatus;
  /** Everyone in the room, this session included, in first-seen order. */
  members: readonly Member<S>[];
  /** The room without this session. */
  others: readonly Member<S>[];
  /** This session's entry, once joined. */
  me: Session<S> | undefined;
  /** Sessions in the room. */
  count: number;
  /** `count` when only a count is available (count mode, or above the server's list limit). */
  view: RoomMode;
  /** Field locks: field → holder. */
  locks: ReadonlyMap<string, LockOwner>;
  /** The record is being changed by someone (`MUTATING`): what is shown may be outdated. */
  stale: boolean;
  /** Who is changing it, while `stale`. */
  busyBy: string | null;
  version: number;
}

/** The {@link PresenceResult} of a snapshot, computed once per snapshot (and handle, and session). */
const presenceCache = new WeakMap<
  RoomSnapshot<never>,
  { room: Room<never> | null; sessionId: string | null; result: PresenceResult<never> }
>();

function presenceOf<S extends PresenceState>(
  snap: RoomSnapshot<S>,
  room: Room<S> | null,
  sessionId: string | null,
): PresenceResult<S> {
  const key = snap as unknown as RoomSnapshot<never>;
  const hit = presenceCache.get(key);
  if (hit && hit.room === (room as unknown) && hit.sessionId === sessionId) {
    return hit.result as unknown as PresenceResult<S>;
  }
  let me: Session<S> | undefined;
  if (sessionId) {
    for (const m of snap.members) {
      me = m.sessions.find((s) => s.sessionId === sessionId);
      if (me) break;
    }
  }
  const result: PresenceResult<S> = {
    room,
    status: snap.status,
    members: snap.members,
    others: snap.others,
    me,
    count: snap.count,
    view: snap.view,
    locks: snap.locks,
    stale: snap.entity.stale,
    busyBy: snap.entity.busyBy,
    version: snap.entity.version,
  };
  presenceCache.set(key, {
    room: room as unknown as Room<never> | null,
    sessionId,
    result: result as unknown as PresenceResult<never>,
  });
  return result;
}

const identity = <T,>(x: T): T => x;

/**
 * The live roster of a room. The handle is acquired on mount and released
 * (`room.leave()`) on unmount; components using the same key share one handle
 * and one subscription on the server. `opts` (`state`, `mode`, `throttleMs`) apply
 * when the handle is opened. Re-renders on every change of the room.
 *
 * ```tsx
 * const { others, count, stale } = usePresence({ entity: "Order", id: 123 });
 * ```
 */
export function usePresence<S extends PresenceState = PresenceState>(
  room: RoomInput<S>,
  opts?: RoomOptions<S>,
): PresenceResult<S>;
/**
 * With a selector: only `selector(presence)`, and a re-render only when it
 * changes by `isEqual` (default `Object.is`; {@link shallowEqual} for selectors
 * that build a new object or array). A cursor update of one member then
 * re-renders only the components that read that cursor.
 *
 * ```tsx
 * const count = usePresence(order, (p) => p.count);
 * const editing = usePresence(order, (p) => p.others.filter((m) => m.sessions.some((s) => s.state.field)), shallowEqual);
 * ```
 */
export function usePresence<S extends PresenceState = PresenceState, T = unknown>(
  room: RoomInput<S>,
  selector: (presence: PresenceResult<S>) => T,
  isEqual?: EqualityFn<T>,
  opts?: RoomOptions<S>,
): T;
export function usePresence<S extends PresenceState, T>(
  room: RoomInput<S>,
  selectorOrOpts?: RoomOptions<S> | ((presence: PresenceResult<S>) => T),
  isEqual?: EqualityFn<T>,
  opts?: RoomOptions<S>,
): PresenceResult<S> | T {
  const selector =
    typeof selectorOrOpts === "function" ? selectorOrOpts : (identity as (p: PresenceResult<S>) => PresenceResult<S> | T);
  const options = typeof selectorOrOpts === "function" ? opts : selectorOrOpts;
  const client = useOptionalClient();
  const select = useCallback(
    (snap: RoomSnapshot<S>, handle: Room<S> | null) => selector(presenceOf(snap, handle, client?.sessionId ?? null)),
    [selector, client],
  );
  return useRoomSelector(room, select, isEqual as EqualityFn<PresenceResult<S> | T> | undefined, options)[0];
}

// ---------------------------------------------------------------------------
// useOthers, useOther

const byUser = new WeakMap<readonly Member<never>[], Map<string, Member<never>>>();

function othersByUser<S extends PresenceState>(others: readonly Member<S>[]): Map<string, Member<S>> {
  const key = others as unknown as readonly Member<never>[];
  let m = byUser.get(key);
  if (!m) {
    m = new Map(key.map((o) => [o.userId, o]));
    byUser.set(key, m);
  }
  return m as unknown as Map<string, Member<S>>;
}

/**
 * The room without this session (`others` of {@link usePresence}), held like
 * {@link usePresence}. Without a selector it re-renders on every change of the
 * others; with one, only when `selector(others)` changes by `isEqual` (default
 * `Object.is`).
 *
 * ```tsx
 * const ids = useOthers(order, (others) => others.map((m) => m.userId), shallowEqual);
 * ```
 */
export function useOthers<S extends PresenceState = PresenceState>(room: RoomInput<S>): readonly Member<S>[];
export function useOthers<S extends PresenceState = PresenceState, T = unknown>(
  room: RoomInput<S>,
  selector: (others: readonly Member<S>[]) => T,
  isEqual?: EqualityFn<T>,
): T;
export function useOthers<S extends PresenceState, T>(
  room: RoomInput<S>,
  selector?: (others: readonly Member<S>[]) => T,
  isEqual?: EqualityFn<T>,
): readonly Member<S>[] | T {
  const select = useCallback(
    (snap: RoomSnapshot<S>) => (selector ? selector(snap.others) : snap.others),
    [selector],
  );
  return useRoomSelector(room, select, isEqual as EqualityFn<readonly Member<S>[] | T> | undefined)[0];
}

/**
 * One other member (by user id; this session left out), held like
 * {@link usePresence}: `undefined` while that user is not in the room. Member
 * objects are kept while unchanged, so without a selector it re-renders only when
 * that member changes; with one, only when `selector(member)` changes by
 * `isEqual` (default `Object.is`).
 *
 * ```tsx
 * function Cursor({ userId }: { userId: string }) {
 *   const cursor = useOther(order, userId, (m) => m.sessions[0]?.state.cursor, shallowEqual);
 *   return cursor ? <Pointer x={cursor.x} y={cursor.y} /> : null;
 * }
 * ```
 */
export function useOther<S extends PresenceState = PresenceState>(
  room: RoomInput<S>,
  userId: string | null | undefined,
): Member<S> | undefined;
export function useOther<S extends PresenceState = PresenceState, T = unknown>(
  room: RoomInput<S>,
  userId: string | null | undefined,
  selector: (member: Member<S>) => T,
  isEqual?: EqualityFn<T>,
): T | undefined;
export function useOther<S extends PresenceState, T>(
  room: RoomInput<S>,
  userId: string | null | undefined,
  selector?: (member: Member<S>) => T,
  isEqual?: EqualityFn<T>,
): Member<S> | T | undefined {
  const select = useCallback(
    (snap: RoomSnapshot<S>) => {
      const m = userId ? othersByUser(snap.others).get(userId) : undefined;
      return m === undefined ? undefined : selector ? selector(m) : m;
    },
    [selector, userId],
  );
  const equal = useMemo<EqualityFn<Member<S> | T | undefined> | undefined>(
    () =>
      isEqual
        ? (a, b) => (a === undefined || b === undefined ? a === b : isEqual(a as T, b as T))
        : undefined,
    [isEqual],
  );
  return useRoomSelector(room, select, equal)[0];
}

// ---------------------------------------------------------------------------
// useMyState

/** Replaces this session's state; with a function, of the current state (`S` when `useMyState` got an `initial`). */
export type SetMyState<S, P = S | undefined> = (next: S | ((prev: P) => S)) => void;

/** Merges a patch into this session's state (shallow); with a function, of the current state. */
export type UpdateMyState<S, P = S | undefined> = (patch: Partial<S> | ((prev: P) => Partial<S>)) => void;

const selectMyState = <S extends PresenceState>(snap: RoomSnapshot<S>): S | undefined => snap.myState;

/** `patch` shallowly merged onto `prev`; keys set to `undefined` are removed (like `Room.updateState`). */
function merged<S extends PresenceState>(prev: S | undefined, patch: Partial<S>): S {
  const next: Record<string, unknown> = { ...(prev ?? {}) };
  for (const [k, v] of Object.entries(patch)) {
    if (v === undefined) delete next[k];
    else next[k] = v;
  }
  return next as S;
}

/**
 * This session's published state in `room`, a setter and a partial updater
 * (throttled by the client: the first change goes out at once, a burst's last
 * value on the trailing edge). `initial` is published with the `SUB` when this
 * hook opens the room (or at once when the room is open without a state); with
 * it the state and the `prev` of the functional forms are typed `S`, never
 * `undefined`. Re-renders only when this session's state changes (not on the
 * others' changes).
 *
 * ```tsx
 * const [me, setMe, updateMe] = useMyState(order, { field: null, cursor: null });
 * <input onFocus={() => updateMe({ field: "total" })} />     // keeps the cursor
 * <div onPointerMove={(e) => updateMe({ cursor: { x: e.clientX, y: e.clientY } })} />
 * ```
 */
export function useMyState<S extends PresenceState = PresenceState>(
  room: RoomInput<S>,
  initial: S,
): [state: S, setState: SetMyState<S, S>, updateState: UpdateMyState<S, S>];
export function useMyState<S extends PresenceState = PresenceState>(
  room: RoomInput<S>,
  initial?: S,
): [state: S | undefined, setState: SetMyState<S>, updateState: UpdateMyState<S>];
export function useMyState<S extends PresenceState = PresenceState>(
  room: RoomInput<S>,
  initial?: S,
): [state: S | undefined, setState: SetMyState<S>, updateState: UpdateMyState<S>] {
  /** Set before this hook held the room (an effect of a child runs before ours). */
  const pending = useRef<S | undefined>(undefined);
  const initialRef = useRef(initial);
  initialRef.current = initial;
  const [myState, store] = useRoomSelector(
    room,
    selectMyState<S>,
    undefined,
    initial !== undefined ? { state: initial } : undefined,
  );
  const { current } = store;
  // After the store's subscription (declared before): hand over what was set meanwhile.
  useEffect(() => {
    const r = current();
    if (pending.current !== undefined && r && r.status !== "left") {
      r.setState(pending.current);
      pending.current = undefined;
    }
  });
  const setState = useCallback<SetMyState<S>>(
    (next) => {
      const r = current();
      if (r && r.status !== "left") {
        // `prev` falls back to `initial` (a Room passed in without a state of its own).
        r.setState(typeof next === "function" ? (prev) => next(prev ?? initialRef.current) : next);
      } else {
        const prev = pending.current ?? initialRef.current;
        pending.current = typeof next === "function" ? next(prev) : next;
      }
    },
    [current],
  );
  const updateState = useCallback<UpdateMyState<S>>(
    (patch) => {
      const r = current();
      if (r && r.status !== "left") {
        r.setState((prev) => {
          const base = prev ?? initialRef.current;
          return merged(base, typeof patch === "function" ? patch(base) : patch);
        });
      } else {
        const base = pending.current ?? initialRef.current;
        pending.current = merged(base, typeof patch === "function" ? patch(base) : patch);
      }
    },
    [current],
  );
  return [myState ?? pending.current ?? initial, setState, updateState];
}

// ---------------------------------------------------------------------------
// useEntityState

/**
 * The entity lifecycle of a room: `stale` while someone changes the record
 * (`MUTATING`), `busyBy`, and the `version` after `MUTATED`. Holds the room like
 * {@link usePresence}.
 */
export function useEntityState(room: RoomInput): EntityState {
  return useRoomSelector(room, selectEntity)[0];
}

const selectEntity = (snap: RoomSnapshot): EntityState => snap.entity;

// ---------------------------------------------------------------------------
// Field locks

export interface LockState {
  /** The holder, or `null` when free. */
  owner: LockOwner | null;
  /** The holder's member entry in the room (for the name), when known. */
  ownerMember: Member | null;
  /** The holder's name (`name`, else the user id), or `null` when free. */
  ownerName: string | null;
  /** Held by this very session. */
  lockedByMe: boolean;
  /** Held by someone else: another user, or another tab/device of this user. */
  lockedByOther: boolean;
}

/** @internal the lock state of one field of a bound room. */
function lockStateOf(
  locks: ReadonlyMap<string, LockOwner>,
  members: readonly Member[],
  field: string,
  sessionId: string | null,
): LockState {
  const owner = locks.get(field) ?? null;
  const ownerMember = owner ? (members.find((m) => m.userId === owner.userId) ?? null) : null;
  return {
    owner,
    ownerMember,
    ownerName: owner ? (ownerMember?.name ?? owner.userId) : null,
    lockedByMe: !!owner && owner.sessionId === sessionId,
    lockedByOther: !!owner && owner.sessionId !== sessionId,
  };
}

/**
 * Who holds the lock on `field` (read-only: never acquires it). Holds the room
 * like {@link usePresence}.
 */
export function useLockState(room: RoomInput, field: string): LockState {
  return useLockSelection(room, field)[0];
}

/** The lock state of `field`, re-rendering only when it changes (not on every roster change). */
function useLockSelection(room: RoomInput, field: string) {
  const client = useOptionalClient();
  const select = useCallback(
    (snap: RoomSnapshot) => lockStateOf(snap.locks, snap.members, field, client?.sessionId ?? null),
    [client, field],
  );
  return useRoomSelector(room, select, shallowEqual);
}

export interface FieldLockBindings {
  onFocus: () => void;
  onBlur: () => void;
  readOnly: boolean;
  "aria-readonly": boolean;
}

export interface FieldLock extends LockState {
  /** Same as `lockedByOther`: the field should not be edited here. */
  readOnly: boolean;
  /** A `lock()` is on its way. */
  acquiring: boolean;
  /** The last failed `lock()`/`unlock()` (`forbidden`, `not_subscribed`, a timeout, …). */
  error: RosterError | null;
  /** Acquires the lock; resolves `true` when this session holds it. Never rejects. */
  acquire(): Promise<boolean>;
  /** Releases it if this hook acquired it (or is acquiring it). Never rejects. */
  release(): Promise<void>;
  /** Spread on an input: acquire on focus, release on blur, read-only while someone else holds it. */
  bind: FieldLockBindings;
}

/**
 * A field lock for an input: `bind` acquires on focus, releases on blur, and makes
 * the input read-only while someone else holds the field. The lock is released
 * on unmount (and when `field` changes).
 *
 * ```tsx
 * const total = useFieldLock(order, "totalAmount");
 * <input {...total.bind} value={value} onChange={…} />
 * {total.lockedByOther && <span>{total.ownerName} is editing</span>}
 * ```
 */
export function useFieldLock(room: RoomInput, field: string): FieldLock {
  const [state, { current }] = useLockSelection(room, field);
  const [acquiring, setAcquiring] = useState(false);
  const [error, setError] = useState<RosterError | null>(null);
  /** This hook wants the lock (focused); cleared by release(). */
  const wanted = useRef(false);
  /** This hook acquired the lock and has not released it. */
  const held = useRef(false);
  const mounted = useRef(true);
  /** The bound input got the focus while someone else held the field. */
  const waiting = useRef(false);

  const release = useCallback(async (): Promise<void> => {
    wanted.current = false;
    const r = current();
    if (!held.current || !r || r.status === "left") return;
    held.current = false;
    try {
      await r.unlock(field);
    } catch (e) {
      if (mounted.current) setError(e as RosterError);
    }
  }, [current, field]);

  const acquire = useCallback(async (): Promise<boolean> => {
    const r = current();
    if (!r || r.status === "left") return false;
    wanted.current = true;
    setAcquiring(true);
    try {
      const res = await r.lock(field);
      if (res.success) {
        held.current = true;
        // Blurred (or unmounted) while the LOCK was on its way: give it back.
        if (!wanted.current) {
          await release();
          return false;
        }
        if (mounted.current) setError(null);
      }
      return res.success;
    } catch (e) {
      if (mounted.current) setError(e as RosterError);
      return false;
    } finally {
      if (mounted.current) setAcquiring(false);
    }
  }, [current, field, release]);

  // Release on unmount and when the room or field changes (before the handle is left).
  useEffect(() => {
    mounted.current = true;
    return () => {
      mounted.current = false;
      if (wanted.current || held.current) {
        wanted.current = false;
        void release();
      }
    };
  }, [release]);

  // Focused while someone else held the field, and now it is free: take it.
  const free = state.owner === null;
  useEffect(() => {
    if (free && waiting.current) {
      waiting.current = false;
      void acquire();
    }
  }, [free, acquire]);

  const readOnly = state.lockedByOther;
  const bind = useMemo<FieldLockBindings>(
    () => ({
      onFocus: () => {
        if (current()?.isLockedByOther(field)) {
          waiting.current = true;
          return;
        }
        void acquire();
      },
      onBlur: () => {
        waiting.current = false;
        void release();
      },
      readOnly,
      "aria-readonly": readOnly,
    }),
    [acquire, release, current, field, readOnly],
  );

  return { ...state, readOnly, acquiring, error, acquire, release, bind };
}

// ---------------------------------------------------------------------------
// Online status (watch)

const NO_STATUSES: ReadonlyMap<string, WatchedStatus> = new Map();

function closeSoon(w: Watch): void {
  // Like rooms: a re-subscription right after (StrictMode, new ids) reuses the
  // client's watch counts and cached statuses, with no UNWATCH + WATCH.
  setTimeout(() => w.close(), 0);
}

/**
 * Live statuses (`{status, lastSeen, devices}`) of `userIds`: a `Map` by user id,
 * with the users the server has reported so far. Watched while mounted.
 *
 * ```tsx
 * const statuses = useOnlineStatus(["bob", "carol"]);
 * statuses.get("bob")?.status; // "online" | "away" | "offline"
 * ```
 */
export function useOnlineStatus(userIds: readonly string[]): ReadonlyMap<string, WatchedStatus> {
  const client = useRosterClient();
  const ids = useMemo(() => [...new Set(userIds)], [userIds.join("\u0000")]);
  const watch = useRef<Watch | null>(null);

  const subscribe = useCallback(
    (onChange: () => void) => {
      if (ids.length === 0) return () => {};
      const w = client.watch(ids);
      watch.current = w;
      const off = w.subscribe(onChange);
      onChange();
      return () => {
        off();
        if (watch.current === w) watch.current = null;
        closeSoon(w);
      };
    },
    [client, ids],
  );
  const getSnapshot = useCallback(() => watch.current?.statuses ?? NO_STATUSES, []);
  const all = useSyncExternalStore(subscribe, getSnapshot, () => NO_STATUSES);
  // Between a change of `userIds` and the new subscription the old watch is read.
  return useMemo(() => {
    if ([...all.keys()].every((u) => ids.includes(u))) return all;
    return new Map([...all].filter(([u]) => ids.includes(u)));
  }, [all, ids]);
}

/** The live status of one user (`undefined` until the server reported it). */
export function useUserStatus(userId: string | null | undefined): WatchedStatus | undefined {
  const statuses = useOnlineStatus(userId ? [userId] : []);
  return userId ? statuses.get(userId) : undefined;
}

// ---------------------------------------------------------------------------
// Room events

/**
 * Calls `listener` with every event the room's other members send with
 * `room.emit()` / {@link useEmit} (`{room, event, data, from: {userId,
 * sessionId}}`; never this session's own). The room is held while mounted (an
 * address is acquired like {@link usePresence} does); the latest `listener` is
 * called, so an inline function is fine and never re-subscribes. Never re-renders
 * by itself.
 *
 * ```tsx
 * useEventListener<{ emoji: string }>(order, ({ event, data, from }) => {
 *   if (event === "reaction" && from) showReaction(from.userId, data.emoji);
 * });
 * ```
 */
export function useEventListener<D = Json>(room: RoomInput, listener: (event: RoomEvent<D>) => void): void {
  const latest = useRef(listener);
  latest.current = listener;
  useRoomHandle(room, (r) => r.on("event", (e) => latest.current(e as RoomEvent<D>)));
}

/**
 * `room.emit(event, data)`: sends an ephemeral event to the others (`true` once on its way,
 * `false` while the room is not joined on an open connection; throws a `RosterError` for a
 * bad name or data above 2 KiB).
 */
export type EmitFn = (event: string, data?: unknown) => boolean;

/**
 * A stable function (the same across renders) that sends a room event with
 * `room.emit()`. The room is held while mounted, like {@link usePresence}.
 * Until the room is joined (the first render, while reconnecting) it sends
 * nothing and returns `false`: events are not queued.
 *
 * ```tsx
 * const emit = useEmit(order);
 * <button onClick={() => emit("reaction", { emoji: "👍" })}>👍</button>
 * ```
 */
export function useEmit(room: RoomInput): EmitFn {
  const client = useOptionalClient();
  const held = useRef<Room | null>(null);
  const given = isRoom(room) ? room : null;
  const address = useRef<{ client: RosterClient | null; given: Room | null; room: RoomInput }>({ client, given, room });
  address.current = { client, given, room };
  useRoomHandle(room, (r) => {
    held.current = r as Room;
    return () => {
      if (held.current === r) held.current = null;
    };
  });
  return useCallback<EmitFn>((event, data) => {
    const a = address.current;
    let r = a.given ?? held.current;
    // Before our effect ran: a handle another component holds for the same key.
    if (!r && a.client && a.room !== null && a.room !== undefined) {
      r = (a.client.openRooms.get(roomKey(a.room as RoomAddress)) as Room | undefined) ?? null;
    }
    if (!r || r.status === "left") return false;
    return r.emit(event, data);
  }, []);
}

// ---------------------------------------------------------------------------
// Errors

/**
 * Calls `listener` with the errors the application does not await: the
 * client's `error` events (authentication and token failures, rate limiting, …)
 * and, when `room` is given, that room's (a refused `SUB`, `state_too_large` for
 * a state, `forbidden` for an `EMIT`, …; the room is then held like
 * {@link usePresence}). The latest `listener` is called; never re-renders by
 * itself.
 *
 * ```tsx
 * useErrorListener((e) => toast(`${e.code}: ${e.message}`), order);
 * ```
 */
export function useErrorListener(listener: (error: RosterError) => void, room?: RoomInput): void {
  const client = useRosterClient();
  const latest = useRef(listener);
  latest.current = listener;
  useEffect(() => client.on("error", (e) => latest.current(e)), [client]);
  useRoomHandle(room ?? null, (r) => r.on("error", (e) => latest.current(e)));
}
