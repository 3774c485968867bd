import type {
  EntityState,
  LockOwner,
  Member,
  PresenceState,
  Room,
  RoomMode,
  RoomOptions,
  RoomStatus,
  RosterError,
  Session,
  Watch,
  WatchedStatus,
} from "@roster/client";
import { useCallback, useEffect, useMemo, useRef, useState, useSyncExternalStore } from "react";
import { useRosterClient } from "./context.js";
import { useRoomBinding, type RoomInput } from "./room.js";

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

/**
 * The live roster of a room. The handle is acquired on mount and released
 * (`room.leave()`) on unmount; components using the same key share one handle
 * and one subscription on the server. `opts` (`state`, `mode`, `throttleMs`) apply
 * when the handle is opened.
 *
 * ```tsx
 * const { others, count, stale } = usePresence({ entity: "Order", id: 123 });
 * ```
 */
export function usePresence<S extends PresenceState = PresenceState>(
  room: RoomInput<S>,
  opts?: RoomOptions<S>,
): PresenceResult<S> {
  const b = useRoomBinding(room, opts);
  const snap = b.snapshot;
  const sessionId = b.client?.sessionId ?? null;
  return useMemo(() => {
    let me: Session<S> | undefined;
    if (sessionId) {
      for (const m of snap.members) {
        me = m.sessions.find((s) => s.sessionId === sessionId);
        if (me) break;
      }
    }
    return {
      room: b.room,
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
  }, [snap, sessionId, b.room]);
}

// ---------------------------------------------------------------------------
// useMyState

export type SetMyState<S> = (next: S | ((prev: S | undefined) => S)) => void;

/**
 * This session's published state in `room`, and a setter (throttled by the
 * client: the first change goes out at once, a burst's last value on the
 * trailing edge). `initial` is published with the `SUB` when this hook opens the
 * room (or at once when the room is open without a state).
 *
 * ```tsx
 * const [me, setMe] = useMyState(order, { field: null });
 * <input onFocus={() => setMe({ field: "total" })} />
 * ```
 */
export function useMyState<S extends PresenceState = PresenceState>(
  room: RoomInput<S>,
  initial?: S,
): [state: S | undefined, setState: SetMyState<S>] {
  /** Set before this hook held the room (an effect of a child runs before ours). */
  const pending = useRef<S | undefined>(undefined);
  const initialRef = useRef(initial);
  initialRef.current = initial;
  const b = useRoomBinding(room, initial !== undefined ? { state: initial } : undefined);
  const { current } = b;
  // After the binding's subscription (declared before): hand over what was set meanwhile.
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
        r.setState(next);
      } else {
        const prev = pending.current ?? initialRef.current;
        pending.current = typeof next === "function" ? (next as (p: S | undefined) => S)(prev) : next;
      }
    },
    [current],
  );
  return [b.snapshot.myState ?? pending.current ?? initial, setState];
}

// ---------------------------------------------------------------------------
// useEntityState

/**
 * The entity lifecycle of a room: `stale` while someone changes the record
 * (`MUTATING`), `busyBy`, and the `version` after `MUTATED`. Holds the room like
 * {@link usePresence}.
 */
export function useEntityState(room: RoomInput): EntityState {
  return useRoomBinding(room).snapshot.entity;
}

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
  const b = useRoomBinding(room);
  const sessionId = b.client?.sessionId ?? null;
  const { locks, members } = b.snapshot;
  return useMemo(() => lockStateOf(locks, members, field, sessionId), [locks, members, field, sessionId]);
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
  const b = useRoomBinding(room);
  const { current } = b;
  const sessionId = b.client?.sessionId ?? null;
  const { locks, members } = b.snapshot;
  const state = useMemo(() => lockStateOf(locks, members, field, sessionId), [locks, members, field, sessionId]);
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
